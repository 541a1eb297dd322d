"""Puzzle: match the solver by hand (notebook 05b). The grader's target is the optimum CP-SAT proves
(``utils.pipeline.optimal``), and the learner's design is judged by the validator and the simulator."""

from __future__ import annotations

from functools import cache

from utils import inputs as arg
from utils.pipeline.costs import CostModel
from utils.pipeline.generators.common import check_counts, linear_schedule
from utils.pipeline.optimal.problem import action_lengths
from utils.pipeline.optimal.solve import OptimalSchedule, optimal_schedule
from utils.pipeline.puzzles.base import (
    PAIR_COSTS,
    TOL,
    Puzzle,
    Verdict,
    draw_schedule,
    rank_lists,
    run_design,
)
from utils.pipeline.registry import make_schedule
from utils.pipeline.schedule import OverlappedAction, Schedule
from utils.pipeline.simulate import simulate


def match_the_solver_puzzle(n_ranks: int = 2, n_microbatches: int = 4, costs: CostModel = PAIR_COSTS,
                            key: str = "match-the-solver") -> Puzzle:
    """Write a linear schedule with split backward (F, I, W; no pairs) as short as the solver's optimum, on
    ``n_ranks`` and ``n_microbatches`` under ``costs`` (by default with an all-to-all that makes F, I and W
    unequal, where ZB1P is one unit off the optimum on 2 ranks and 4 micro-batches)."""
    where = "match_the_solver_puzzle"
    n_ranks, n_microbatches = check_counts(where, n_ranks, n_microbatches)
    arg.instance(costs, "costs", CostModel, "a CostModel", where=where)
    if n_ranks * n_microbatches > 16:
        arg.fail("n_ranks x n_microbatches", "at most 16", n_ranks * n_microbatches, where=where,
                 why="a schedule to write by hand, and a solve the grader runs in a blink")

    @cache  # the target: the solver's proven optimum, found on first use
    def solved() -> OptimalSchedule:
        return optimal_schedule(n_ranks, n_microbatches, costs, "linear", split_backward=True, time_limit=30)

    zb1p = simulate(make_schedule("zb1p", n_ranks, n_microbatches), costs).makespan

    def schedule_of(answer) -> Schedule:
        return linear_schedule("yours", n_ranks, n_microbatches, rank_lists(answer, n_ranks))

    def judge(answer) -> Verdict:
        try:
            schedule = schedule_of(answer)
        except ValueError as err:
            return Verdict(False, f"{err}.")
        if any(isinstance(a, OverlappedAction) or a.kind == "B" for row in schedule.actions for a in row):
            return Verdict(False, "this puzzle uses F, I and W only: split every backward, and no overlapped "
                                  "pairs.")
        timeline, why = run_design(schedule, costs)
        if timeline is None:
            return Verdict(False, why)
        best, yours = solved().makespan, timeline.makespan
        if yours > best + TOL:
            rank = max(range(n_ranks), key=timeline.idle)
            return Verdict(False, f"your schedule runs in {yours:g} time units (ZB1P: {zb1p:g}); the solver "
                                  f"proved {best:g} possible. Rank {rank} idles most ({timeline.idle(rank):g}): "
                                  f"what is it waiting for, and what could it run instead?")
        peak = max(timeline.peak_activations(r) for r in range(n_ranks))
        return Verdict(True, f"{yours:g} time units: the optimum CP-SAT proves (ZB1P takes {zb1p:g}). Your "
                             f"schedule holds {peak} activations at its peak; what did the unit cost in memory?")

    n_actions = 3 * n_microbatches
    lengths = action_lengths(costs)  # what the simulator charges, all-to-all included
    statement = (
        f"{n_ranks} ranks, {n_microbatches} micro-batches, one stage per rank, every backward split into I and W, "
        f"and an expert all-to-all in every F and I: on a rank an F lasts {lengths['F']:g}, an I "
        f"{lengths['I']:g} and a W {lengths['W']:g} time units. ZB1P takes **{zb1p:g}**. A solver searched "
        f"every schedule and proved a shorter one. Write one list of {n_actions} actions per rank (F, I, W) "
        f"that is as short as the solver's. The grader validates your lists, simulates them and compares the "
        f"step time with the proven optimum.")
    stub = ("def my_schedule():\n"
            f"    \"\"\"One list of action strings per rank, e.g. [\"0F0\", \"0F1\", ...]: {n_ranks} lists.\"\"\"\n"
            "    raise NotImplementedError  # your design here")
    hints = (
        "Start from ZB1P (`print(make_schedule('zb1p', 2, 4))`) and simulate it: where does each rank wait?",
        "Rank 0 waits for its first gradient after two forwards. What changed from notebook 04 is W: it lasts "
        "half an F here (I still equals F), so the W passes ZB1P slots into the waits no longer fill them: "
        "could rank 0 run one more forward first?",
        "Give rank 0 three warm-up forwards; rank 1 can run its W passes last, where nothing waits for them.",
    )
    return Puzzle(key=key, title="Puzzle: match the solver by hand", statement=statement, stub=stub,
                  hints=hints, goal="a step as short as the optimum the solver proves",
                  reference=lambda: [[str(a) for a in row] for row in solved().schedule.actions], judge=judge,
                  draw=draw_schedule(schedule_of, costs))

