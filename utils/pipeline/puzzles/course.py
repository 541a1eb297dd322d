"""The puzzles of the course's notebooks (03, 04, 04b, 05, 07), by key: ``PUZZLES["gpipe-memory-cap"]``."""

from __future__ import annotations

from utils.pipeline.puzzles.base import PAIR_COSTS, UNIT_COSTS, Puzzle
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


OVERLAP_IDLE_REASONS = {
    "a": Reason("rank 0: it runs the deepest warm-up and waits longest for its first backward", False,
                "rank 0 does wait longest for its first backward, but it also computes the longest: its warm-up "
                "forwards run alone, each with its all-to-all exposed. Count each rank's pairs."),
    "b": Reason("the last rank: its warm-up is shortest, so it runs the most F&B pairs, whose all-to-all hides "
                "behind the partner chunk; it is busy for the least time in the same step", True,
                "the last rank runs the most pairs (its warm-up is the shortest), and inside a pair each chunk's "
                "all-to-all runs while the other chunk computes: a little more compute (a pair runs on the SMs "
                "communication leaves), much less exposed communication, so less time busy and more time "
                "waiting in a step every rank shares."),
    "c": Reason("all ranks alike: every rank runs the same forwards and backwards", False,
                "every rank runs the same chunks, but not every rank hides the same communication: plain actions "
                "wait for their all-to-all, pairs do not. Count each rank's pairs."),
    "d": Reason("the middle ranks: they wait for both neighbours", False,
                "a rank's idle time is the step time minus the time it is busy; look at what makes one rank "
                "busy for less time than another."),
}

ONE_F_ONE_B_OVERLAP_HINTS = (
    "Start from 1F1B's lists: warm-up forwards, then one forward and one backward, then the cool-down "
    "backwards.",
    "In the steady state the forward and the backward run as one pair: `(rF{w+k};rB{k})OVERLAP_F_B`.",
    "The warm-up is deeper than 1F1B's: 2(PP-1-r)+1 forwards (never more than M), because a pair waits for a "
    "gradient that the next rank computes in its own pair.",
)


def _capped_zb1p_optimum() -> list[list[str]]:
    """The schedule CP-SAT proves optimal on 4 ranks, 8 micro-batches, I and W, at most 3 activations, stored
    for notebook 05b (costs F = 2, B = 4, W = 2: twice the puzzle's, so the same schedule is optimal)."""
    from utils.pipeline.optimal.precomputed import load_precomputed

    return [[str(a) for a in row] for row in load_precomputed()["cap/zb1p/3"].schedule.actions]


def _course_puzzles() -> dict[str, Puzzle]:
    puzzles = [
        memory_cap_puzzle(4, 8, cap=3, split=False, key="gpipe-memory-cap"),             # notebook 03
        idle_puzzle("gpipe", 4, 8, UNIT_COSTS, GPIPE_IDLE_REASONS, key="gpipe-idlest-rank"),  # 03
        memory_cap_puzzle(4, 8, cap=3, split=True, key="zero-bubble-memory-cap",          # 04
                          proven=_capped_zb1p_optimum),
        deadlock_puzzle("1f1b", 4, 8, key="1f1b-deadlock"),                              # 04
        deadlock_puzzle("interleaved1f1b", 4, 8, key="interleaved-deadlock"),            # 04b
        rank_list_puzzle("dualpipev", 4, 8, key="dualpipev-rank-lists"),                 # 05
        idle_puzzle("1f1b-overlap", 4, 8, PAIR_COSTS, OVERLAP_IDLE_REASONS, key="overlap-idlest-rank"),  # 05
        rank_list_puzzle("1f1b-overlap", 4, 8, key="1f1b-overlap-rank-lists",          # 07
                         hints=ONE_F_ONE_B_OVERLAP_HINTS),
    ]
    return {p.key: p for p in puzzles}


#: The puzzles of notebooks 03-07, by key.
PUZZLES: dict[str, Puzzle] = _course_puzzles()
