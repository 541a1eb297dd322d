"""Puzzle 4: write a schedule's rank lists (graded against the library's, with the validator's words)."""

from __future__ import annotations

from dataclasses import replace

from utils.pipeline.costs import CostModel
from utils.pipeline.puzzles.base import (
    PAIR_COSTS,
    Puzzle,
    Verdict,
    draw_schedule,
    lines_of,
    rank_lists,
    run_design,
)
from utils.pipeline.registry import make_schedule, schedule_name
from utils.pipeline.schedule import Action, OverlappedAction, Schedule
from utils.pipeline.simulate import simulate

DUALPIPEV_HINTS = (
    "Start from the picture: in which order does rank 0 see its two stages' forwards and backwards?",
    "DualPipeV runs DualPipe's eight phases on every rank: warm-up forwards, forwards of both stages, "
    "zero-bubble I W F, overlapped pairs, cool-down, backwards, deferred W.",
    "Each phase's length is a formula of the rank: see dualpipe_phase_steps in "
    "utils.pipeline.generators.bidirectional (half_ranks = N, the number of ranks; DualPipeV has PP = 2N "
    "stages). Rank r's warm-up is 2(N-1-r) forwards of its first stage: 6 on rank 0 of 4.",
)


def rank_list_puzzle(name: str = "dualpipev", n_ranks: int = 4, n_microbatches: int = 8,
                     costs: CostModel = PAIR_COSTS, key: str | None = None,
                     hints: tuple[str, ...] = DUALPIPEV_HINTS) -> Puzzle:
    """Write every rank's list of ``name`` for ``n_ranks`` and ``n_microbatches``; graded against the
    library's schedule, with the validator's and the simulator's words on the way. ``hints``: the ladder
    (DualPipeV's by default)."""
    reference = make_schedule(name, n_ranks, n_microbatches)
    label = schedule_name(name)

    def schedule_of(answer) -> Schedule:
        return replace(reference, name="yours", actions=tuple(rank_lists(answer, n_ranks)))

    def judge(answer) -> Verdict:
        try:
            schedule = schedule_of(answer)
        except ValueError as err:
            return Verdict(False, f"{err}.")
        timeline, why = run_design(schedule, costs)
        if timeline is None:
            return Verdict(False, why)
        if schedule.actions == reference.actions:
            return Verdict(True, f"every rank's list is {label}'s.")
        return Verdict(False, _first_difference(schedule, reference, label) + f" (Your schedule runs: step "
                              f"{timeline.makespan:g} against {simulate(reference, costs).makespan:g}.)")

    pair = next((a for acts in reference.actions for a in acts if isinstance(a, OverlappedAction)), None)
    pairs = (f" Overlapped pairs are written as one action, e.g. `{pair}`." if pair is not None else "")
    statement = (
        f"Write {label}'s action lists for {n_ranks} ranks and {n_microbatches} micro-batches: rank r holds stages "
        f"{', '.join(' and '.join(map(str, reference.stages_on(r))) for r in range(n_ranks))} (rank 0 first)."
        f"{pairs} The grader validates your lists, simulates them and compares them with the library's {label}."
    )
    stub = ("def my_lists():\n"
            f"    \"\"\"{n_ranks} lists of action strings, one per rank.\"\"\"\n"
            "    raise NotImplementedError  # your lists here")
    return Puzzle(key=key or f"{label}-rank-lists", title=f"Puzzle: write {label}'s rank lists",
                  statement=statement, stub=stub, hints=hints, goal=f"{label}'s lists, rank by rank",
                  reference=lambda: lines_of(reference), judge=judge, draw=draw_schedule(schedule_of, costs))


def _first_difference(yours: Schedule, reference: Schedule, label: str) -> str:
    """Where the first rank list leaves the reference, and the likely slip in words."""
    for r, (mine, theirs) in enumerate(zip(yours.actions, reference.actions, strict=True)):
        for i in range(max(len(mine), len(theirs))):
            a = mine[i] if i < len(mine) else None
            b = theirs[i] if i < len(theirs) else None
            if a == b:
                continue
            if isinstance(b, OverlappedAction) and a == b.forward:
                return (f"rank {r}, position {i}: you run {a} on its own where {label} overlaps it with a "
                        f"backward in one F&B pair: write the pair as one action.")
            if isinstance(a, Action) and isinstance(b, Action) and (a.kind, b.kind) in (("B", "I"), ("I", "B")):
                split = "splits" if b.kind == "I" else "does not split"
                return (f"rank {r}, position {i}: {label} {split} this backward into I and W ({a} vs the "
                        f"{'I' if b.kind == 'I' else 'full B'} of stage {b.stage}, micro-batch {b.microbatch}).")
            if a is None:
                return f"rank {r}: your list ends after {len(mine)} actions; {label}'s has {len(theirs)}."
            if b is None:
                return f"rank {r}: your list has {len(mine)} actions; {label}'s ends after {len(theirs)}."
            return f"rank {r}, position {i}: you run {a}, {label} runs another action here."
    return "the lists differ."
