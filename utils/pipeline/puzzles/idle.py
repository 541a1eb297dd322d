"""Puzzle 3: predict which rank idles most, and why (graded by the simulator)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from utils import inputs as arg
from utils.pipeline.costs import CostModel
from utils.pipeline.puzzles.base import TOL, Puzzle, Verdict
from utils.pipeline.registry import make_schedule
from utils.pipeline.simulate import simulate


@dataclass(frozen=True)
class Reason:
    """One answer to "why": its text, whether it is right, and what to say to someone who picks it."""

    text: str
    right: bool
    reply: str


def idle_puzzle(name: str, n_ranks: int, n_microbatches: int, costs: CostModel,
                reasons: Mapping[str, Reason], key: str | None = None) -> Puzzle:
    """Predict which rank of ``name`` idles most (or "all" when they tie) and pick the reason."""
    schedule = make_schedule(name, n_ranks, n_microbatches)
    arg.instance(costs, "costs", CostModel, "a CostModel", where="idle_puzzle")

    @cache  # computed from the reference solution on first use
    def idles() -> list[float]:
        timeline = simulate(schedule, costs)
        return [timeline.idle(r) for r in range(n_ranks)]

    def idlest() -> set[int]:
        top = max(idles())
        return {r for r, v in enumerate(idles()) if v >= top - TOL}

    def right_rank() -> int | str:
        most = idlest()
        return "all" if len(most) == n_ranks else min(most)

    def judge(answer) -> Verdict:
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            return Verdict(False, 'return a pair (rank, reason): a rank number or "all", and a letter from '
                                  f"{', '.join(reasons)}.")
        rank, letter = answer
        letter = str(letter).strip().lower()
        if letter not in reasons:
            return Verdict(False, f"the reason must be one of {', '.join(reasons)}; got {letter!r}.")
        values, most = idles(), idlest()
        if str(rank).lower() == "all":
            if len(most) != n_ranks:
                r = min(set(range(n_ranks)) - most)
                return Verdict(False, f"not all ranks idle alike: rank {r} idles {values[r]:g}, rank "
                                      f"{min(most)} {values[min(most)]:g}.")
        elif not isinstance(rank, int) or not 0 <= rank < n_ranks:
            return Verdict(False, f'the rank must be 0..{n_ranks - 1} or "all"; got {rank!r}.')
        elif rank not in most:
            return Verdict(False, f"rank {rank} idles {values[rank]:g} time units, and another rank idles "
                                  f"longer: compare what each rank is busy with.")
        elif len(most) > 1:   # a tie: say so without naming the others, so the learner still counts the work
            return Verdict(False, f"rank {rank} idles {values[rank]:g} time units, but it is not the only rank "
                                  "that idles that long: compare the work each rank does in the step.")
        reason = reasons[letter]
        if not reason.right:
            return Verdict(False, f"right rank, but not ({letter}): {reason.reply}")
        return Verdict(True, reason.reply)

    options = "\n".join(f"- ({k}) {r.text}" for k, r in reasons.items())
    # Name only the costs this schedule uses: a learner meets W with the split backward and F&B with pairs.
    texts = [str(action) for rank_actions in schedule.actions for action in rank_actions]
    communicates = costs.dispatch + costs.combine > 0
    statement = (
        f"{name} on {n_ranks} ranks with {n_microbatches} micro-batches, costs F = {costs.F:g}, B = {costs.B:g}"
        + (f", W = {costs.W:g}" if any("W" in t for t in texts) else "")
        + (f", F&B = {costs.FB:g}" if any("OVERLAP" in t for t in texts) else "")
        + (f", an expert all-to-all per chunk of dispatch {costs.dispatch:g} and combine {costs.combine:g}"
           if communicates else "")
        + (f"; a pair that hides it computes {costs.pair_slowdown:.3g} times as long (a share "
           f"{costs.comm_share:.3g} of the SMs runs the communication; DeepSeek-V3 gives it 20 of 132, report "
           f"Sec. 3.2.2 and 3.5.1)"
           if communicates and costs.comm_share > 0 and any("OVERLAP" in t for t in texts) else "")
        + ". **Predict before you simulate:** which rank idles most during the "
        + f'step (the rank number, or "all" if they tie), and why?\n\n{options}'
    )
    stub = ("def my_prediction():\n"
            "    \"\"\"(rank or \\\"all\\\", reason letter), e.g. (0, \\\"a\\\").\"\"\"\n"
            "    raise NotImplementedError  # your prediction here")
    hints = (
        "A rank's idle time is the step time minus the time it computes.",
        "Count the work each rank does in one step. Do some ranks compute less than others?",
        "Where a rank waits (start, middle, end of the step) does not change how long it waits.",
    ) if not communicates else (
        "A rank's idle time is the step time minus its computation and minus the communication it waits for "
        "because nothing hides it (the time budget: compute + exposed communication + idle = step).",
        "Count what each rank leaves exposed: a plain forward or backward waits for its all-to-all, an F&B "
        "pair hides each chunk's all-to-all behind the other chunk. Rank r runs 2(PP-1-r)+1 lone forwards and as "
        "many lone backwards (PP = ranks here), the rest as pairs.",
        f"A pair computes {costs.pair_slowdown:.3g} x F&B = {costs.length('FB'):.3g} (the SMs it gives to "
        f"communication), where its two chunks alone take F + B plus their all-to-all = "
        f"{costs.length('F') + costs.length('B'):.3g}: add up each rank's compute plus exposed communication; "
        "the rank busy for the least time idles most, wherever in the step it waits.",
    )
    right = next(k for k, r in reasons.items() if r.right)
    return Puzzle(key=key or f"{schedule.name}-idlest-rank", title=f"Puzzle: which rank of {schedule.name} "
                  "idles most?", statement=statement, stub=stub, hints=hints,
                  goal="the rank (or ranks) the simulator finds idlest, and the reason",
                  reference=lambda: (right_rank(), right), judge=judge)
