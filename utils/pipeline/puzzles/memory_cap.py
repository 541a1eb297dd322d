"""Puzzle 1: stay under a memory cap with the smallest bubble (one stage per rank; F/B, or I and W)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import cache

from utils import inputs as arg
from utils.pipeline.costs import CostModel
from utils.pipeline.generators.common import check_counts, linear_schedule
from utils.pipeline.puzzles.base import (
    TOL,
    UNIT_COSTS,
    Puzzle,
    Verdict,
    draw_schedule,
    rank_lists,
    run_design,
)
from utils.pipeline.schedule import Action, OverlappedAction, Schedule, action_parts
from utils.pipeline.simulate import simulate
from utils.pipeline.timeline import Timeline
from utils.pipeline.virtual_stages import inner_idle


def capped_one_f_one_b(n_ranks: int, n_microbatches: int, cap: int, split: bool = False) -> list[list[str]]:
    """The reference design under a cap of ``cap`` activations per rank: 1F1B with each warm-up clipped to
    ``cap - 1`` forwards (the first steady forward makes ``cap``); with ``split``, backwards as I then W, rank
    r deferring as many W as the cap leaves room for, at most r (ZB1P's deferral, Qi et al. 2024, Sec. 3.1).
    With cap >= PP it is 1F1B (or ZB1P) itself."""
    n_ranks, n_microbatches = check_counts("capped_one_f_one_b", n_ranks, n_microbatches)
    cap = arg.whole(cap, "cap", low=1, where="capped_one_f_one_b", why="a rank holds at least the activation "
                    "its forward makes")
    arg.flag(split, "split", where="capped_one_f_one_b")
    lists = []
    for r in range(n_ranks):
        warmup = min(n_ranks - 1 - r, cap - 1, n_microbatches)
        deferred = min(r, cap - 1 - warmup) if split else 0
        acts = [Action(r, "F", k) for k in range(warmup)]
        pending: deque[int] = deque()
        for k in range(n_microbatches):
            if warmup + k < n_microbatches:
                acts.append(Action(r, "F", warmup + k))
            if not split:
                acts.append(Action(r, "B", k))
                continue
            acts.append(Action(r, "I", k))
            pending.append(k)
            if len(pending) > deferred:
                acts.append(Action(r, "W", pending.popleft()))
        acts += [Action(r, "W", k) for k in pending]
        lists.append([str(a) for a in acts])
    return lists


def memory_cap_puzzle(n_ranks: int = 4, n_microbatches: int = 8, cap: int = 3, split: bool = False,
                      costs: CostModel = UNIT_COSTS, key: str | None = None,
                      proven: Callable[[], list[list[str]]] | None = None) -> Puzzle:
    """Write a schedule (one stage per rank) whose every rank holds at most ``cap`` activations and whose
    worst-rank idle is as small as the reference's (``capped_one_f_one_b``); ``split`` allows I and W.
    ``proven``, where given, returns rank lists a solver proved optimal under the cap (``utils.pipeline.optimal``):
    the statement and the verdicts then name that optimum too, which beats the reference."""
    capped_one_f_one_b(n_ranks, n_microbatches, cap, split)  # the rules of the counts, before any answer
    arg.instance(costs, "costs", CostModel, "a CostModel", where="memory_cap_puzzle")
    kinds = "F, I, W (and B)" if split else "F and B"
    gpipe_peak = n_microbatches

    def schedule_of(answer) -> Schedule:
        return linear_schedule("yours", n_ranks, n_microbatches, rank_lists(answer, n_ranks))

    @cache  # computed from the reference solution on first use
    def target() -> Timeline:
        return simulate(schedule_of(capped_one_f_one_b(n_ranks, n_microbatches, cap, split)), costs)

    @cache  # the solver's optimum, where one is given, on first use
    def optimum() -> float | None:
        return None if proven is None else simulate(schedule_of(proven()), costs).worst_idle

    def beyond(yours: float) -> str:
        best = optimum()
        if best is None:
            return " That beats our reference: tell us how!" if yours < target().worst_idle - TOL else ""
        if yours <= best + TOL:
            return " That is the optimum a solver proves under this cap (notebook 05b)."
        return (f" A solver proves {best:g} possible under this cap (notebook 05b): its micro-batches do not "
                f"all run in order. Can you get closer?")

    def judge(answer) -> Verdict:
        try:
            schedule = schedule_of(answer)
        except ValueError as err:
            return Verdict(False, f"{err}.")
        used = {p.kind for acts in schedule.actions for a in acts for p in action_parts(a)}
        paired = any(isinstance(a, OverlappedAction) for acts in schedule.actions for a in acts)
        if paired or (not split and used & {"I", "W"}):
            return Verdict(False, f"this puzzle uses {kinds} only"
                                  + ("" if split else ": splitting the backward into I and W comes in notebook 04")
                                  + (", and no overlapped pairs" if paired else "") + ".")
        timeline, why = run_design(schedule, costs)
        if timeline is None:
            return Verdict(False, why)
        peaks = [timeline.peak_activations(r) for r in range(n_ranks)]
        worst = max(range(n_ranks), key=lambda r: peaks[r])
        if peaks[worst] > cap:
            return Verdict(False, f"your schedule runs, but rank {worst} holds {peaks[worst]} activations at "
                                  f"its peak, over the cap of {cap}: a rank may run at most {cap} forwards "
                                  f"ahead of the backwards that release them (GPipe holds {gpipe_peak}).")
        best, yours = target().worst_idle, timeline.worst_idle
        if yours > best + TOL:
            waits = max(range(n_ranks), key=lambda r: inner_idle(timeline, r))  # waits most mid-step
            return Verdict(False, f"your schedule runs under the cap (peak {max(peaks)}), but its worst rank "
                                  f"idles {yours:g} time units where {best:g} is possible. Look at rank "
                                  f"{waits}'s timeline: what is it waiting for, and could a forward run "
                                  f"earlier without breaking the cap?")
        known = "our reference design" if proven is not None else "the best we know under this cap"
        return Verdict(True, f"peak {max(peaks)} <= {cap} on every rank, worst-rank idle {yours:g} ({known}: "
                             f"{best:g}).{beyond(yours)}")

    title = f"Puzzle: the smallest bubble in {cap} activations{' (with I and W)' if split else ''}"
    statement = (
        f"{n_ranks} ranks, {n_microbatches} micro-batches, one stage per rank (stage r on rank r), costs "
        f"F = {costs.F:g}, B = {costs.B:g}" + (f", W = {costs.W:g} (I = B - W = {costs.I:g})" if split else "")
        + f". Each GPU has room for only **{cap}** micro-batches of activations (GPipe would hold "
        f"{gpipe_peak}). Write one list of actions per rank ({kinds}) that never holds more than {cap} and "
        f"whose worst-rank idle time is as small as possible. The grader validates your lists, simulates them, "
        f"checks the cap and compares the idle time with " + (
            "its reference design (1F1B's order, the warm-up clipped to the cap"
            + (", I then W" if split else "") + "); it passes at or below the "
            "reference's idle and tells you how far a solver's proven optimum lies below." if proven is not None
            else "the best design it knows.")
    )
    stub = ("def my_schedule():\n"
            f"    \"\"\"One list of action strings per rank, e.g. [\"0F0\", \"0F1\", ...]: {n_ranks} lists.\"\"\"\n"
            "    raise NotImplementedError  # your design here")
    hints = (
        "An activation is held from a stage's forward until its backward ends (with a split backward, notebook "
        "04, until its W): to hold fewer, start backwards earlier.",
        f"Let rank r run a few warm-up forwards, then alternate one forward and one backward. How many warm-up "
        f"forwards keep the peak at {cap}?",
        f"Rank r can run min(PP-1-r, {cap - 1}) warm-up forwards: the first steady forward makes {cap}."
        + (" Split every backward into I then W: the previous rank waits only for I." if split else ""),
    )
    return Puzzle(key=key or f"memory-cap-{cap}{'-split' if split else ''}", title=title, statement=statement,
                  stub=stub, hints=hints, goal=f"peak <= {cap} on every rank, with the smallest worst-rank idle",
                  reference=lambda: capped_one_f_one_b(n_ranks, n_microbatches, cap, split), judge=judge,
                  draw=draw_schedule(schedule_of, costs, memory=True))
