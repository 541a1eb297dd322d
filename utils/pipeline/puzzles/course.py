"""The puzzles of the course's notebooks (03, 04, 04b, 05, 07), by key: ``PUZZLES["gpipe-memory-cap"]``."""

from __future__ import annotations

from functools import partial

from utils.pipeline.costs import CostModel
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
    "c": Reason("all ranks alike: each computes the same work (m forwards, m backwards) in the same step", True,
                "every rank runs M forwards and M backwards, the same work in the same step, so the same idle "
                "time, only at different moments: rank 0 in the middle, the last rank at both ends."),
    "d": Reason("the middle ranks: they wait for both neighbours", False,
                "waiting for two neighbours does not add up: every rank's idle time is the step time minus its "
                "own work, and the work is the same on every rank."),
}


#: Notebook 05's prediction: the communication baseline on a GPU that gives half its SMs to communication, with a small
#: all-to-all (0.5 per chunk): a pair then costs more compute than the communication it hides.
SLOW_PAIR_COSTS = CostModel(F=1.0, B=2.0, W=1.0, dispatch=0.25, combine=0.25, comm_share=0.5)
SLOW_PAIR_IDLE_REASONS = {
    "a": Reason("the last rank: it runs the most F&B pairs, which hide its all-to-all", False,
                "the last rank does run the most pairs and hides the most all-to-all, but here each pair computes "
                "twice as long (half the SMs run the communication): it is busy longest. Add up each rank's "
                "compute and exposed communication."),
    "b": Reason("rank 0: it runs the deepest warm-up and waits longest for its first backward", False,
                "where a rank waits does not change how long: count what each rank is busy with, compute plus "
                "exposed communication."),
    "c": Reason("rank 0: it runs the fewest pairs; a pair here costs more compute than the all-to-all it hides, "
                "so rank 0 is busy for the least time", True,
                "a pair computes 2 x 3 = 6 where its two chunks alone take 3 plus 0.5 + 0.5 of all-to-all = 4: the "
                "rank with the fewest pairs, rank 0, is busy least and idles most in a step every rank shares. "
                "With DeepSeek-V3's 20 of 132 SMs and a larger all-to-all it is the other way round (notebook 05)."),
    "d": Reason("all ranks alike: they run the same forwards and backwards", False,
                "every rank runs the same chunks, but not as the same mix of pairs and lone chunks: count each "
                "rank's pairs."),
}

ONE_F_ONE_B_OVERLAP_HINTS = (
    "Start from 1F1B's lists: warm-up forwards, then one forward and one backward, then the cool-down "
    "backwards.",
    "In the steady state the forward and the backward run as one pair: `(rF{w+k};rB{k})OVERLAP_F_B`.",
    "The warm-up is deeper than 1F1B's: 2(PP-1-r)+1 forwards (never more than M), because a pair waits for a "
    "gradient that the next rank computes in its own pair.",
)


def _stored_optimum(key: str) -> list[list[str]]:
    """The schedule CP-SAT proves optimal for stored search `key`, as rank lists: notebook 05b's searches
    on 4 ranks, 8 micro-batches, at most 3 activations ("cap/1f1b/3": full backward; "cap/zb1p/3": I and W),
    at costs twice the puzzles' (F = 2, B = 4, W = 2), so the same schedule is optimal."""
    from utils.pipeline.optimal.precomputed import load_precomputed

    return [[str(a) for a in row] for row in load_precomputed()[key].schedule.actions]


def _course_puzzles() -> dict[str, Puzzle]:
    puzzles = [
        memory_cap_puzzle(4, 8, cap=3, split=False, key="gpipe-memory-cap",              # notebook 03
                          proven=partial(_stored_optimum, "cap/1f1b/3")),
        idle_puzzle("gpipe", 4, 8, UNIT_COSTS, GPIPE_IDLE_REASONS, key="gpipe-idlest-rank"),  # 03
        memory_cap_puzzle(4, 8, cap=3, split=True, key="zero-bubble-memory-cap",          # 04
                          proven=partial(_stored_optimum, "cap/zb1p/3")),
        deadlock_puzzle("1f1b", 4, 8, key="1f1b-deadlock"),                              # 04
        deadlock_puzzle("interleaved1f1b", 4, 8, key="interleaved-deadlock"),            # 04b
        rank_list_puzzle("dualpipev", 4, 8, key="dualpipev-rank-lists"),                 # 05
        idle_puzzle("1f1b-overlap", 4, 8, SLOW_PAIR_COSTS, SLOW_PAIR_IDLE_REASONS,                      # 05
                    key="overlap-idlest-rank"),
        rank_list_puzzle("1f1b-overlap", 4, 8, key="1f1b-overlap-rank-lists",          # 07
                         hints=ONE_F_ONE_B_OVERLAP_HINTS),
    ]
    return {p.key: p for p in puzzles}


#: The puzzles of notebooks 03-07, by key.
PUZZLES: dict[str, Puzzle] = _course_puzzles()
