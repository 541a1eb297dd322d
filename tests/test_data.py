"""The synthetic multi-task dataset: deterministic, correct answers, balanced tasks, cached copy in data/."""

import csv
from pathlib import Path

import pytest
import torch

from utils.moe.data import HEAD_CSV, IGNORE_INDEX, TASKS, answer_for, head_rows, make_dataset

DATA = Path(__file__).resolve().parent.parent / "data"


def test_same_seed_same_data_other_seed_other_data():
    assert torch.equal(make_dataset(64, seed=5).tokens, make_dataset(64, seed=5).tokens)
    assert not torch.equal(make_dataset(64, seed=5).tokens, make_dataset(64, seed=6).tokens)


def test_answers_follow_each_task_definition():
    data = make_dataset(200, n_digits=5, n_symbols=7, seed=1)
    n = data.n_digits
    for row, task in zip(data.tokens.tolist(), data.task.tolist(), strict=True):
        assert row[0] == data.vocab.task_token(task)
        assert row[n + 1] == data.vocab.sep
        x, y = row[1 : n + 1], row[n + 2 :]
        name = TASKS[task]
        if name == "copy":
            assert y == x
        elif name == "reverse":
            assert y == x[::-1]
        elif name == "sort":
            assert y == sorted(x)
        else:
            assert all(y[i] == (x[i] + x[n - 1 - i]) % 7 for i in range(n))


def test_targets_score_exactly_the_answer_digits():
    data = make_dataset(16)
    scored = data.targets != IGNORE_INDEX
    assert scored.sum(1).tolist() == [data.n_digits] * 16
    assert torch.equal(data.targets[scored].view(16, -1), data.tokens[:, data.n_digits + 2 :])
    assert torch.equal(data.inputs, data.tokens[:, :-1])


def test_tasks_come_in_equal_shares():
    counts = torch.bincount(make_dataset(400).task, minlength=len(TASKS))
    assert counts.tolist() == [100] * len(TASKS)


def test_batches_are_reproducible():
    data = make_dataset(100)
    first = [b[0] for b in data.sample_batches(8, 3, seed=2)]
    again = [b[0] for b in data.sample_batches(8, 3, seed=2)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_cached_copy_in_data_matches_the_generator():
    with open(DATA / HEAD_CSV, newline="") as f:
        assert list(csv.DictReader(f)) == head_rows()


@pytest.mark.parametrize(
    ("call", "rule"),
    [
        (lambda: make_dataset(0), "at least one sequence"),
        (lambda: make_dataset(4, n_symbols=1), ">= 2 symbols"),
        (lambda: answer_for("multiply", [1], 10), "unknown task"),
        (lambda: next(make_dataset(4).sample_batches(5, 1, 0)), "batch_size"),
    ],
)
def test_bad_input_names_the_rule(call, rule):
    with pytest.raises(ValueError, match=rule):
        call()
