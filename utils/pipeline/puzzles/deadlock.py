"""Puzzle 2: fix a schedule the validator rejects for a deadlock (a warm-up counted from the wrong end)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from utils.pipeline.costs import CostModel
from utils.pipeline.generators.virtual import interleaved_rank_actions, interleaved_rounds
from utils.pipeline.puzzles.base import (
    TOL,
    UNIT_COSTS,
    Puzzle,
    Verdict,
    draw_schedule,
    lines_of,
    rank_lists,
    run_design,
)
from utils.pipeline.registry import make_schedule
from utils.pipeline.schedule import Action, Schedule
from utils.pipeline.simulate import simulate
from utils.pipeline.validation import validate


def flipped_warmup(name: str, n_ranks: int, n_microbatches: int) -> Schedule:
    """``name`` (1f1b or interleaved1f1b) with each rank's warm-up counted from the wrong end: rank r runs the
    warm-up of rank PP-1-r. The last rank then waits for forwards that the rank before it will only run
    after a backward that never comes: a deadlock the validator explains."""
    good = make_schedule(name, n_ranks, n_microbatches)
    pp, m = n_ranks, n_microbatches
    if good.name == "1f1b":
        lists = [_one_f_one_b_with(pp, m, r, warmup=r) for r in range(pp)]
    elif good.name == "interleaved1f1b":
        per_round = interleaved_rounds(pp, m)[1]
        lists = [interleaved_rank_actions(r, pp, m, 2, warmup=per_round + 2 * r) for r in range(pp)]
    else:
        raise ValueError(f"deadlock puzzles flip the warm-up of 1f1b or interleaved1f1b; got {name!r}.")
    return replace(good, name=f"{good.name} (broken)", actions=tuple(tuple(a) for a in lists))


def _one_f_one_b_with(n_ranks: int, m: int, rank: int, warmup: int) -> list[Action]:
    """Rank ``rank`` of 1F1B with ``warmup`` warm-up forwards."""
    warmup = min(warmup, m)
    acts = [Action(rank, "F", k) for k in range(warmup)]
    for k in range(m - warmup):
        acts += [Action(rank, "F", warmup + k), Action(rank, "B", k)]
    return acts + [Action(rank, "B", k) for k in range(m - warmup, m)]


def deadlock_puzzle(name: str = "1f1b", n_ranks: int = 4, n_microbatches: int = 8,
                    costs: CostModel = UNIT_COSTS, key: str | None = None) -> Puzzle:
    """Fix ``flipped_warmup(name, ...)``: reorder each rank's actions (adding or removing none) so the
    schedule runs, with a worst-rank idle no larger than the library's ``name``."""
    broken = flipped_warmup(name, n_ranks, n_microbatches)
    try:
        validate(broken)
    except ValueError as err:
        said = str(err)
    else:
        raise ValueError(
            f"deadlock_puzzle: with {n_ranks} rank(s) and {n_microbatches} micro-batch(es) the flipped warm-up "
            f"still runs, so there is nothing to fix: a deadlock needs two ranks waiting for each other and "
            f"two micro-batches in flight (use at least 2 of each).")
    reference = make_schedule(name, n_ranks, n_microbatches)

    def schedule_of(answer) -> Schedule:
        return replace(broken, name="yours", actions=tuple(rank_lists(answer, n_ranks)))

    def judge(answer) -> Verdict:
        try:
            schedule = schedule_of(answer)
        except ValueError as err:
            return Verdict(False, f"{err}.")
        for r in range(n_ranks):
            mine, theirs = Counter(map(str, schedule.actions[r])), Counter(map(str, broken.actions[r]))
            if mine != theirs:
                dropped, added = sorted((theirs - mine).elements()), sorted((mine - theirs).elements())
                what = "; ".join(part for part in (f"dropped {' '.join(dropped)}" if dropped else "",
                                                   f"added {' '.join(added)}" if added else "") if part)
                return Verdict(False, f"rank {r}: you {what}. A fix only reorders a rank's actions: every "
                                      f"forward and backward still has to run once.")
        if [list(map(str, a)) for a in schedule.actions] == lines_of(broken):
            return Verdict(False, f"this is the broken schedule, unchanged. The validator says: {said}")
        timeline, why = run_design(schedule, costs)
        if timeline is None:
            return Verdict(False, why)
        best = simulate(reference, costs).worst_idle
        if timeline.worst_idle > best + TOL:
            return Verdict(False, f"it runs now, but its worst rank idles {timeline.worst_idle:g} where "
                                  f"{best:g} is possible: how many forwards does each rank run before its first "
                                  f"backward, and how many could it run?")
        return Verdict(True, f"it runs, with a worst-rank idle of {timeline.worst_idle:g} (as good as "
                             f"{reference.name}'s {best:g}).")

    lines = "\n".join(f"    rank {r}: " + " ".join(map(str, acts)) for r, acts in enumerate(broken.actions))
    statement = (
        f"Someone wrote this {reference.name} schedule ({n_ranks} ranks, {n_microbatches} micro-batches) and it "
        f"hangs:\n\n{lines}\n\nThe validator says: *{said}*\n\nReorder the actions of the ranks (add or remove "
        f"none) so that it runs, and idles no more than {reference.name} does."
    )
    stub = ("def my_fix():\n"
            f"    \"\"\"The repaired schedule: one list of action strings per rank ({n_ranks} lists).\"\"\"\n"
            "    raise NotImplementedError  # your fix here")
    hints = (
        "Read the validator's message: which two ranks wait for each other, and for what?",
        "The last rank runs the most forwards before its first backward. Should it? The loss is right there.",
        "Each rank's warm-up is counted from the wrong end of the pipeline: rank r runs what rank PP-1-r "
        "should.",
    )
    return Puzzle(key=key or f"{reference.name}-deadlock", title=f"Puzzle: fix the deadlocked {reference.name}",
                  statement=statement, stub=stub, hints=hints,
                  goal=f"runs, same actions per rank, idles no more than {reference.name}",
                  reference=lambda: lines_of(reference), judge=judge, draw=draw_schedule(schedule_of, costs))
