"""Notebook 08's puzzles: the reference passes, the answers the hint ladders lead to pass, the naive ones fail."""

import pytest

from utils.scale.puzzles import (
    balanced_layer_counts,
    chunks_of,
    cut_puzzle,
    dualpipe_at,
    memory_puzzle,
    rank_balanced_layer_counts,
)


def test_chunks_of_places_the_embedding_first_and_the_tail_last():
    chunks = chunks_of(rank_balanced_layer_counts())
    assert chunks[0].embedding and chunks[0].n_dense == 2 and chunks[-1].tail and chunks[-1].n_layers == 0
    assert sum(c.n_layers for c in chunks) == 61
    with pytest.raises(ValueError, match="sum to 61"):
        chunks_of([4] * 16)
    with pytest.raises(ValueError, match="only the last chunk"):
        chunks_of([0] + [5] * 12 + [1, 0, 0])


@pytest.mark.parametrize("answer", [
    rank_balanced_layer_counts(),
    [2, 5, 5, 5] + [4] * 11 + [0],  # hint 3 read literally: 2 in chunk 0, pairs of 8 or 9 layers
    [2] + [4] * 7 + [5, 5, 5] + [4] * 4 + [0],
])
def test_the_cut_puzzle_accepts_what_its_hints_lead_to(answer):
    assert cut_puzzle().grade(answer).passed


@pytest.mark.parametrize("answer", [
    balanced_layer_counts(),  # hint 1: the tail alone, chunks balanced but not ranks
    [4] * 13 + [3] * 3,  # the stub: equal layers, the tail beside 3 layers
    [4] * 15,  # not 16 chunks
])
def test_the_cut_puzzle_rejects_chunk_balanced_and_naive_cuts(answer):
    verdict = cut_puzzle().grade(answer)
    assert not verdict.passed and verdict.message


def test_the_memory_puzzle_accepts_its_reference_and_hint():
    puzzle = memory_puzzle()
    assert puzzle.grade(puzzle.reference()).passed
    assert puzzle.grade({"zero_stage": 2}).passed  # hint 3
    step, gb = dualpipe_at({"zero_stage": 2})
    base_step, base_gb = dualpipe_at({})
    assert gb < base_gb - 15 and step == pytest.approx(base_step)  # FP32 gradients: the largest lever


@pytest.mark.parametrize("answer", [
    {"tokens_per_microbatch": 2048},  # half a sequence
    {"pp": 32, "dp": 64},  # fits, longer step
    {"grad_bytes": 2},  # a precision: not allowed
    {"fp8_cache": False},  # more memory
    {},
])
def test_the_memory_puzzle_rejects_the_rest(answer):
    assert not memory_puzzle().grade(answer).passed


@pytest.mark.parametrize("answer", [{"pp": 32}, {"dp": 256}, {"pp": 32, "dp": 128, "zero_stage": 2}])
def test_the_memory_puzzle_keeps_the_reports_gpus(answer):
    """More GPUs shorten the step by themselves ({"pp": 32} alone fits in 57 GB with a shorter step): refused."""
    verdict = memory_puzzle().grade(answer)
    assert not verdict.passed and "2048 GPUs" in verdict.message


def test_the_memory_puzzle_prices_a_deeper_pipeline_on_the_same_gpus():
    """The lesson's numbers: PP 32 with DP 64 fits but lengthens the step."""
    step, gb = dualpipe_at({"pp": 32, "dp": 64})
    assert gb == pytest.approx(59.8, abs=0.05) and step / 1e3 == pytest.approx(11.06, abs=0.005)
    assert step > dualpipe_at({})[0]
