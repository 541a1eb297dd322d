"""A deterministic synthetic multi-task sequence dataset for the toy MoE decoder.

Every sequence is tagged by its task, so we can ask which experts each task's tokens go to:

    [TASK]  x_1 ... x_n  [SEP]  y_1 ... y_n

with digits x_i in 0..n_symbols-1 and the answer y given by the task:

    copy     y = x
    reverse  y = x reversed
    sort     y = x sorted ascending
    add      y_i = (x_i + x_{n+1-i}) mod n_symbols   (each digit plus its mirror image)

The model reads the sequence left to right and is scored only on predicting the answer digits.
The same seed always gives the same sequences (numpy's PCG64 generator); `data/README.md` records the
recipe and `data/toy_tasks_seed0_head.csv` the first rows, which a test regenerates.

This module imports nothing from the kit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from utils import inputs as arg

TASKS = ("copy", "reverse", "sort", "add")
IGNORE_INDEX = -100  # positions the loss skips (torch's cross_entropy default)


def answer_for(task: str, digits: list[int], n_symbols: int) -> list[int]:
    """The answer digits of `task` for the input `digits`."""
    n_symbols = arg.whole(n_symbols, "n_symbols", low=2, where="answer_for", why="digits need two symbols")
    digits = arg.sequence(digits, "digits", where="answer_for", nonempty=False)
    for d in digits:
        arg.whole(d, "every digit", low=0, high=n_symbols - 1, where="answer_for")
    if task == "copy":
        return list(digits)
    if task == "reverse":
        return list(reversed(digits))
    if task == "sort":
        return sorted(digits)
    if task == "add":
        return [(a + b) % n_symbols for a, b in zip(digits, reversed(digits), strict=True)]
    raise ValueError(f"unknown task {task!r}: the tasks are {TASKS}")


@dataclass(frozen=True)
class TaskVocabulary:
    """Token ids: digits 0..n_symbols-1, then SEP, then one tag per task."""

    n_symbols: int = 10

    def __post_init__(self):
        arg.whole(self.n_symbols, "n_symbols", low=2, high=1000, where="TaskVocabulary",
                  why="digits 0..n_symbols-1 need at least two symbols; the vocabulary has one row each")

    @property
    def sep(self) -> int:
        return self.n_symbols

    def task_token(self, task_id: int) -> int:
        """The token id of task `task_id` (an index into TASKS)."""
        task_id = arg.whole(task_id, "task_id", low=0, high=len(TASKS) - 1, where="task_token",
                            why=f"an index into TASKS {TASKS}")
        return self.n_symbols + 1 + task_id

    @property
    def size(self) -> int:
        return self.n_symbols + 1 + len(TASKS)


@dataclass
class TaskDataset:
    """`tokens` (N, 2n+2) int64 and `task` (N,) int64 (an index into TASKS)."""

    tokens: torch.Tensor
    task: torch.Tensor
    n_digits: int
    vocab: TaskVocabulary

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def inputs(self) -> torch.Tensor:
        """What the model reads: every token but the last."""
        return self.tokens[:, :-1]

    @property
    def targets(self) -> torch.Tensor:
        """Next-token targets, with IGNORE_INDEX everywhere except the answer digits."""
        targets = self.tokens[:, 1:].clone()
        targets[:, : self.n_digits + 1] = IGNORE_INDEX  # the task tag predicts nothing scored, nor do x, SEP
        return targets

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs, targets, task) for the sequences at `index`."""
        arg.tensor(index, "index", where="TaskDataset.batch", dims=1, integer=True)
        if int(index.min()) < 0 or int(index.max()) >= len(self):
            arg.fail("index", f"row numbers from 0 to {len(self) - 1}", index, where="TaskDataset.batch")
        return self.inputs[index], self.targets[index], self.task[index]

    def sample_batches(self, batch_size: int, steps: int, seed: int):
        """Yield `steps` random batches (inputs, targets, task), the same ones for the same seed."""
        where = "sample_batches"
        arg.whole(batch_size, "batch_size", low=1, high=len(self), where=where, why="the dataset's size")
        arg.whole(steps, "steps", low=0, high=arg.MAX_TRAIN_STEPS, where=where)
        seed = arg.whole(seed, "seed", low=0, where=where, why="seeds are whole numbers >= 0")
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            yield self.batch(torch.randint(len(self), (batch_size,), generator=generator))

    def describe(self, i: int) -> dict:
        """Row `i` in readable form: task, input digits, answer digits."""
        i = arg.whole(i, "i", low=0, high=len(self) - 1, where="TaskDataset.describe")
        row = self.tokens[i].tolist()
        n = self.n_digits
        return {
            "task": TASKS[int(self.task[i])],
            "input": " ".join(map(str, row[1 : n + 1])),
            "answer": " ".join(map(str, row[n + 2 :])),
        }


def make_dataset(n_sequences: int, n_digits: int = 6, n_symbols: int = 10, seed: int = 0) -> TaskDataset:
    """`n_sequences` sequences, tasks in equal shares (cycled, then shuffled), digits uniform."""
    where = "make_dataset"
    n_sequences = arg.whole(n_sequences, "n_sequences", low=1, high=arg.MAX_SEQUENCES, where=where,
                            why="a dataset needs at least one sequence")
    n_digits = arg.whole(n_digits, "n_digits", low=1, high=64, where=where,
                         why="each sequence holds at least one digit; attention over sequences longer than "
                             "about 130 tokens is slow on a CPU")
    n_symbols = arg.whole(n_symbols, "n_symbols", low=2, high=1000, where=where,
                          why="need >= 1 digit from >= 2 symbols")
    seed = arg.whole(seed, "seed", low=0, where=where, why="seeds are whole numbers >= 0 (numpy's rule)")
    vocab = TaskVocabulary(n_symbols)
    rng = np.random.default_rng(seed)
    task_ids = rng.permutation(np.arange(n_sequences) % len(TASKS))
    digits = rng.integers(0, n_symbols, size=(n_sequences, n_digits))
    rows = []
    for task_id, x in zip(task_ids.tolist(), digits.tolist(), strict=True):
        y = answer_for(TASKS[task_id], x, n_symbols)
        rows.append([vocab.task_token(task_id), *x, vocab.sep, *y])
    return TaskDataset(torch.tensor(rows), torch.tensor(task_ids), n_digits, vocab)


HEAD_CSV = "toy_tasks_seed0_head.csv"  # in data/: the first rows of make_dataset(4096, seed=0)
HEAD_ROWS = 32


def head_rows(n_rows: int = HEAD_ROWS) -> list[dict]:
    """The first `n_rows` training sequences in readable form (what data/toy_tasks_seed0_head.csv holds)."""
    n_rows = arg.whole(n_rows, "n_rows", low=1, high=4096, where="head_rows", why="rows of a 4096-row dataset")
    data = make_dataset(4096, seed=0)
    return [data.describe(i) for i in range(n_rows)]


def write_head_csv(path) -> None:
    """Write `head_rows()` as CSV (task,input,answer) to `path`; `python -m utils.moe.data data/` does this."""
    import csv
    import os

    arg.instance(path, "path", (str, os.PathLike), "a file path (a string or a pathlib.Path)",
                 where="write_head_csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "input", "answer"])
        writer.writeheader()
        writer.writerows(head_rows())


def main(argv: list[str] | None = None) -> int:
    """``python -m utils.moe.data [FOLDER]``: write the first rows of the training set as CSV into FOLDER
    (default data/). Bad input gives exit status 2 and one line ``error: <the rule>``."""
    return arg.run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    from pathlib import Path

    parser = arg.ArgumentParser(prog="python -m utils.moe.data", description=main.__doc__)
    parser.add_argument("folder", nargs="?", default="data", help="an existing folder (default data/)")
    folder = Path(parser.parse_args(argv).folder)
    if not folder.is_dir():
        raise arg.InputError(f"{folder} is not a folder: the CSV is written into an existing folder "
                             "(the course's is data/)")
    write_head_csv(folder / HEAD_CSV)
    print(f"wrote {folder / HEAD_CSV}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
