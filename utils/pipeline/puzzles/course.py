"""The puzzles of the course's notebooks (03, 04, 04b, 05), by key: ``PUZZLES["gpipe-memory-cap"]``."""

from __future__ import annotations

from utils.pipeline.puzzles.base import UNIT_COSTS, Puzzle
from utils.pipeline.puzzles.deadlock import deadlock_puzzle
from utils.pipeline.puzzles.idle import Reason, idle_puzzle
from utils.pipeline.puzzles.memory_cap import memory_cap_puzzle
from utils.pipeline.puzzles.writing import rank_list_puzzle

GPIPE_IDLE_REASONS = {
    "a": Reason("rank 0: it waits in the middle of the step for the first backward to come back", False,
                "rank 0 does wait in the middle of the step, but the last rank waits as long, at the start "
                "(for the first forward) and at the end. Where a rank waits does not change how long."),
    "b": Reason("the last rank: it waits at the start for the first micro-batch to cross the pipeline", False,
                "the last rank waits at the start and at the end, and rank 0 as long in the middle: count "
                "each rank's work and the step time."),
    "c": Reason("all ranks alike: each computes the same work (M forwards, M backwards) in the same step", True,
                "every rank runs M forwards and M backwards, the same work in the same step, so the same idle "
                "time, only at different moments: rank 0 in the middle, the last rank at both ends."),
    "d": Reason("the middle ranks: they wait for both neighbours", False,
                "waiting for two neighbours does not add up: every rank's idle time is the step time minus its "
                "own work, and the work is the same on every rank."),
}


def _course_puzzles() -> dict[str, Puzzle]:
    puzzles = [
        memory_cap_puzzle(4, 8, cap=3, split=False, key="gpipe-memory-cap"),             # notebook 03
        idle_puzzle("gpipe", 4, 8, UNIT_COSTS, GPIPE_IDLE_REASONS, key="gpipe-idlest-rank"),  # 03
        memory_cap_puzzle(4, 8, cap=3, split=True, key="zero-bubble-memory-cap"),        # 04
        deadlock_puzzle("1f1b", 4, 8, key="1f1b-deadlock"),                              # 04
        deadlock_puzzle("interleaved1f1b", 4, 8, key="interleaved-deadlock"),            # 04b
        rank_list_puzzle("dualpipev", 4, 8, key="dualpipev-rank-lists"),                 # 05
    ]
    return {p.key: p for p in puzzles}


#: The puzzles of notebooks 03-07, by key.
PUZZLES: dict[str, Puzzle] = _course_puzzles()
