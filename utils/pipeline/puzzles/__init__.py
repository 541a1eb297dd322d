"""Schedule design puzzles, in the spirit of srush's LLM-Training-Puzzles: a spec, a stub, a grader, a picture.

Each ``Puzzle`` holds its statement, the stub a learner starts from, a hint ladder and a grader. The grader
reads the learner's design, runs it through the validator and the simulator, and computes its target from
the puzzle's reference solution (never a number written down here), so it stays right when the library
changes. A wrong answer gets a message saying what is wrong, in words, without printing the solution:

    from utils.checks import check_puzzle
    from utils.pipeline.puzzles import PUZZLES

    puzzle = PUZZLES["gpipe-memory-cap"]     # shows its statement in a notebook
    def my_schedule():
        return [["0F0", "0B0", ...], ...]    # one list of action strings per rank
    check_puzzle(puzzle, my_schedule, hint=1)

Four kinds: stay under a memory cap with the smallest bubble (``memory_cap_puzzle``), fix a schedule the
validator rejects for a deadlock (``deadlock_puzzle``), predict which rank idles most and why
(``idle_puzzle``), write a schedule's rank lists (``rank_list_puzzle``). Solutions are in lessons/.

    base        Puzzle, Verdict, reading an answer (rank_lists), drawing a design
    memory_cap  stay under a memory cap with the smallest bubble (memory_cap_puzzle, capped_one_f_one_b)
    deadlock    fix a schedule the validator rejects (deadlock_puzzle, flipped_warmup)
    idle        predict which rank idles most and why (idle_puzzle, Reason)
    writing     write a schedule's rank lists (rank_list_puzzle)
    course      the puzzles of notebooks 03-07 (PUZZLES)
    optimal     match the schedule search by hand (match_the_solver_puzzle, notebook 05b)
    capstone    pick a schedule under a memory cap, size the batch for a compute share (CAPSTONE_PUZZLES, 07)

May import: utils.pipeline below ``explore`` (validation, simulate, registry, generators, plots, ...).
"""

from utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    **{name: "base" for name in ("Puzzle", "Verdict", "rank_lists", "draw_schedule", "UNIT_COSTS", "PAIR_COSTS")},
    **{name: "memory_cap" for name in ("memory_cap_puzzle", "capped_one_f_one_b")},
    **{name: "deadlock" for name in ("deadlock_puzzle", "flipped_warmup")},
    **{name: "idle" for name in ("idle_puzzle", "Reason")},
    "rank_list_puzzle": "writing",
    "match_the_solver_puzzle": "optimal",
    **{name: "capstone" for name in ("memory_cap_choice_puzzle", "compute_share_puzzle", "CAPSTONE_PUZZLES")},
    **{name: "course" for name in ("PUZZLES", "GPIPE_IDLE_REASONS")},
})
