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
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from utils.pipeline.costs import CostModel
from utils.pipeline.generators.common import linear_schedule
from utils.pipeline.generators.virtual import interleaved_rank_actions, interleaved_rounds
from utils.pipeline.registry import make_schedule, schedule_name
from utils.pipeline.schedule import Action, OverlappedAction, Schedule, action_parts, parse_action
from utils.pipeline.simulate import simulate
from utils.pipeline.timeline import Timeline
from utils.pipeline.validation import validate
from utils.pipeline.virtual_stages import inner_idle

UNIT_COSTS = CostModel(F=1.0, B=2.0, W=1.0)
PAIR_COSTS = CostModel(F=1.0, B=2.0, W=1.0, FB=2.5)  # an overlapped pair saves half a unit
_TOL = 1e-9


@dataclass(frozen=True)
class Verdict:
    """What the grader found: ``passed`` and one kind, specific paragraph saying why."""

    passed: bool
    message: str


@dataclass(frozen=True, eq=False)
class Puzzle:
    """One design puzzle: ``statement`` (markdown), ``stub`` (the code a learner starts from), ``hints`` (a
    ladder: each says more), ``goal`` (what a right answer achieves, in words: shown instead of a solution),
    ``reference`` (returns an answer that passes: the solution the target is computed from) and ``judge``
    (answer -> Verdict). ``draw(answer)`` returns a figure of the learner's design, or None."""

    key: str
    title: str
    statement: str
    stub: str
    hints: tuple[str, ...]
    goal: str
    reference: Callable[[], Any]
    judge: Callable[[Any], Verdict]
    draw: Callable[[Any], Any] | None = None

    def grade(self, answer: Any) -> Verdict:
        """Judge ``answer`` (what the learner's function returned); never raises."""
        try:
            return self.judge(answer)
        except Exception as error:  # a learner's odd value gets words, not a traceback
            return Verdict(False, f"could not read your answer ({type(error).__name__}: {error}).")

    def show(self, answer: Any, _goal: Any = None) -> None:
        """Draw the learner's design (called by ``utils.checks.check_puzzle`` on a wrong answer)."""
        if self.draw is None:
            return
        try:
            figure = self.draw(answer)
        except Exception:
            return  # the verdict already says why it cannot be drawn
        if figure is not None:
            import matplotlib.pyplot as plt

            plt.show()

    def __repr__(self) -> str:
        return f"{self.title}\n\n{self.statement}"

    def _repr_markdown_(self) -> str:
        return f"**{self.title}**\n\n{self.statement}"


# ------------------------------------------------------------------------------ reading an answer

def rank_lists(answer: Any, n_ranks: int) -> list[tuple]:
    """The learner's rank lists as actions: a list (or dict by rank) of lists of strings or actions.

    Raises ValueError saying what is wrong (how many lists, which item cannot be read)."""
    if isinstance(answer, Mapping):
        answer = [answer.get(r, answer.get(str(r), [])) for r in range(n_ranks)]
    if isinstance(answer, (str, bytes)) or not hasattr(answer, "__len__"):
        raise ValueError(f"return one list of action strings per rank ({n_ranks} lists); got "
                         f"{type(answer).__name__}")
    if len(answer) != n_ranks:
        raise ValueError(f"return one list per rank: {n_ranks} lists, got {len(answer)}")
    lists = []
    for r, items in enumerate(answer):
        if isinstance(items, str):
            items = items.split()
        row = []
        for i, item in enumerate(items):
            if isinstance(item, (Action, OverlappedAction)):
                row.append(item)
                continue
            try:
                row.append(parse_action(str(item)))
            except ValueError as err:
                raise ValueError(f"rank {r}, item {i}: {err}") from None
        lists.append(tuple(row))
    return lists


def _lines(schedule: Schedule) -> list[list[str]]:
    return [[str(a) for a in acts] for acts in schedule.actions]


def _run(schedule: Schedule, costs: CostModel) -> tuple[Timeline | None, str]:
    """(timeline, "") if ``schedule`` runs, else (None, the validator's words)."""
    try:
        validate(schedule)
    except ValueError as err:
        return None, f"your schedule cannot run. The validator says: {err}"
    return simulate(schedule, costs), ""


def draw_schedule(schedule_of: Callable[[Any], Schedule], costs: CostModel, memory: bool = False):
    """A ``Puzzle.draw``: the learner's timeline (and, with ``memory``, activations held per rank)."""

    def draw(answer):
        import matplotlib.pyplot as plt

        from utils.pipeline.plots import plot_memory, plot_timeline

        timeline = simulate(schedule_of(answer), costs)
        if not memory:
            return plot_timeline(timeline, title="your schedule").figure
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), layout="constrained")
        plot_timeline(timeline, ax=top, title="your schedule")
        plot_memory(timeline, ax=bottom, title="activations held per rank")
        return fig

    return draw


# ----------------------------------------------------------------- 1. under a memory cap, smallest bubble

def capped_one_f_one_b(n_ranks: int, n_microbatches: int, cap: int, split: bool = False) -> list[list[str]]:
    """The reference design under a cap of ``cap`` activations per rank: 1F1B with each warm-up clipped to
    ``cap - 1`` forwards (the first steady forward makes ``cap``); with ``split``, backwards as I then W, rank
    r deferring as many W as the cap leaves room for, at most r (ZB1P's deferral, Qi et al. 2024, Sec. 3.1).
    With cap >= PP it is 1F1B (or ZB1P) itself."""
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
                      costs: CostModel = UNIT_COSTS, key: str | None = None) -> Puzzle:
    """Write a schedule (one stage per rank) whose every rank holds at most ``cap`` activations and whose
    worst-rank idle is as small as the reference's (``capped_one_f_one_b``); ``split`` allows I and W."""
    kinds = "F, I, W (and B)" if split else "F and B"
    gpipe_peak = n_microbatches

    def schedule_of(answer) -> Schedule:
        return linear_schedule("yours", n_ranks, n_microbatches, rank_lists(answer, n_ranks))

    @cache  # computed from the reference solution on first use
    def target() -> Timeline:
        return simulate(schedule_of(capped_one_f_one_b(n_ranks, n_microbatches, cap, split)), costs)

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
        timeline, why = _run(schedule, costs)
        if timeline is None:
            return Verdict(False, why)
        peaks = [timeline.peak_activations(r) for r in range(n_ranks)]
        worst = max(range(n_ranks), key=lambda r: peaks[r])
        if peaks[worst] > cap:
            return Verdict(False, f"your schedule runs, but rank {worst} holds {peaks[worst]} activations at "
                                  f"its peak, over the cap of {cap}: a rank may run at most {cap} forwards "
                                  f"ahead of the backwards that release them (GPipe holds {gpipe_peak}).")
        best, yours = target().worst_idle, timeline.worst_idle
        if yours > best + _TOL:
            waits = max(range(n_ranks), key=lambda r: inner_idle(timeline, r))  # waits most mid-step
            return Verdict(False, f"your schedule runs under the cap (peak {max(peaks)}), but its worst rank "
                                  f"idles {yours:g} time units where {best:g} is possible. Look at rank "
                                  f"{waits}'s timeline: what is it waiting for, and could a forward run "
                                  f"earlier without breaking the cap?")
        better = " That beats our reference: tell us how!" if yours < best - _TOL else ""
        return Verdict(True, f"peak {max(peaks)} <= {cap} on every rank, worst-rank idle {yours:g} (the best "
                             f"we know under this cap: {best:g}).{better}")

    title = f"Puzzle: the smallest bubble in {cap} activations{' (with I and W)' if split else ''}"
    statement = (
        f"{n_ranks} ranks, {n_microbatches} micro-batches, one stage per rank (stage r on rank r), costs "
        f"F = {costs.F:g}, B = {costs.B:g}" + (f", W = {costs.W:g} (I = B - W = {costs.I:g})" if split else "")
        + f". Each GPU has room for only **{cap}** micro-batches of activations (GPipe would hold "
        f"{gpipe_peak}). Write one list of actions per rank ({kinds}) that never holds more than {cap} and "
        f"whose worst-rank idle time is as small as possible. The grader validates your lists, simulates them, "
        f"checks the cap and compares the idle time with the best design it knows."
    )
    stub = ("def my_schedule():\n"
            f"    \"\"\"One list of action strings per rank, e.g. [\"0F0\", \"0F1\", ...]: {n_ranks} lists.\"\"\"\n"
            "    raise NotImplementedError  # your design here")
    hints = (
        "An activation is held from a stage's forward until its backward (its W, when split) ends: to hold "
        "fewer, start backwards earlier.",
        f"Let rank r run a few warm-up forwards, then alternate one forward and one backward. How many warm-up "
        f"forwards keep the peak at {cap}?",
        f"Rank r can run min(PP-1-r, {cap - 1}) warm-up forwards: the first steady forward makes {cap}."
        + (" Split every backward into I then W: the previous rank waits only for I." if split else ""),
    )
    return Puzzle(key=key or f"memory-cap-{cap}{'-split' if split else ''}", title=title, statement=statement,
                  stub=stub, hints=hints, goal=f"peak <= {cap} on every rank, with the smallest worst-rank idle",
                  reference=lambda: capped_one_f_one_b(n_ranks, n_microbatches, cap, split), judge=judge,
                  draw=draw_schedule(schedule_of, costs, memory=True))


# ------------------------------------------------------------------------------- 2. fix a deadlock

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
        if [list(map(str, a)) for a in schedule.actions] == _lines(broken):
            return Verdict(False, f"this is the broken schedule, unchanged. The validator says: {said}")
        timeline, why = _run(schedule, costs)
        if timeline is None:
            return Verdict(False, why)
        best = simulate(reference, costs).worst_idle
        if timeline.worst_idle > best + _TOL:
            return Verdict(False, f"it runs now, but its worst rank idles {timeline.worst_idle:g} where "
                                  f"{best:g} is possible: which ranks start their backwards too late?")
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
                  reference=lambda: _lines(reference), judge=judge, draw=draw_schedule(schedule_of, costs))


# ---------------------------------------------------------------------------- 3. which rank idles most

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

    @cache  # computed from the reference solution on first use
    def idles() -> list[float]:
        timeline = simulate(schedule, costs)
        return [timeline.idle(r) for r in range(n_ranks)]

    def idlest() -> set[int]:
        top = max(idles())
        return {r for r, v in enumerate(idles()) if v >= top - _TOL}

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
            r = min(most)
            return Verdict(False, f"rank {rank} idles {values[rank]:g} time units, but rank {r} idles "
                                  f"{values[r]:g}.")
        elif len(most) > 1:
            tied = ", ".join(map(str, sorted(most)))
            return Verdict(False, f"rank {rank} idles {values[rank]:g} time units, and so do ranks {tied}"
                                  + (': the answer is "all".' if len(most) == n_ranks else "."))
        reason = reasons[letter]
        if not reason.right:
            return Verdict(False, f"right rank, but not ({letter}): {reason.reply}")
        return Verdict(True, reason.reply)

    options = "\n".join(f"- ({k}) {r.text}" for k, r in reasons.items())
    statement = (
        f"{name} on {n_ranks} ranks with {n_microbatches} micro-batches, costs F = {costs.F:g}, B = {costs.B:g}, "
        f"W = {costs.W:g}, F&B = {costs.FB:g}. **Predict before you simulate:** which rank idles most during the "
        f'step (the rank number, or "all" if they tie), and why?\n\n{options}'
    )
    stub = ("def my_prediction():\n"
            "    \"\"\"(rank or \\\"all\\\", reason letter), e.g. (0, \\\"a\\\").\"\"\"\n"
            "    raise NotImplementedError  # your prediction here")
    hints = (
        "A rank's idle time is the step time minus the time it computes.",
        "Count the work each rank does in one step. Do some ranks compute less than others?",
        "Where a rank waits (start, middle, end of the step) does not change how long it waits.",
    )
    right = next(k for k, r in reasons.items() if r.right)
    return Puzzle(key=key or f"{schedule.name}-idlest-rank", title=f"Puzzle: which rank of {schedule.name} "
                  "idles most?", statement=statement, stub=stub, hints=hints,
                  goal="the rank (or ranks) the simulator finds idlest, and the reason",
                  reference=lambda: (right_rank(), right), judge=judge)


# ---------------------------------------------------------------------------- 4. write the rank lists

def rank_list_puzzle(name: str = "dualpipev", n_ranks: int = 4, n_microbatches: int = 8,
                     costs: CostModel = PAIR_COSTS,
                     key: str | None = None) -> Puzzle:
    """Write every rank's list of ``name`` for ``n_ranks`` and ``n_microbatches``; graded against the
    library's schedule, with the validator's and the simulator's words on the way."""
    reference = make_schedule(name, n_ranks, n_microbatches)
    label = schedule_name(name)

    def schedule_of(answer) -> Schedule:
        return replace(reference, name="yours", actions=tuple(rank_lists(answer, n_ranks)))

    def judge(answer) -> Verdict:
        try:
            schedule = schedule_of(answer)
        except ValueError as err:
            return Verdict(False, f"{err}.")
        timeline, why = _run(schedule, costs)
        if timeline is None:
            return Verdict(False, why)
        if schedule.actions == reference.actions:
            return Verdict(True, f"every rank's list is {label}'s.")
        return Verdict(False, _first_difference(schedule, reference, label) + f" (Your schedule runs: step "
                              f"{timeline.makespan:g} against {simulate(reference, costs).makespan:g}.)")

    statement = (
        f"Write {label}'s action lists for {n_ranks} ranks and {n_microbatches} micro-batches: rank r holds stages "
        f"{', '.join(' and '.join(map(str, reference.stages_on(r))) for r in range(n_ranks))} (rank 0 first). "
        f"Overlapped pairs are written as one action, e.g. `(0F4;7B0)OVERLAP_F_B`. The grader validates your "
        f"lists, simulates them and compares them with the library's {label}."
    )
    stub = ("def my_lists():\n"
            f"    \"\"\"{n_ranks} lists of action strings, one per rank.\"\"\"\n"
            "    raise NotImplementedError  # your lists here")
    hints = (
        "Start from the picture: in which order does rank 0 see its two stages' forwards and backwards?",
        "DualPipeV runs DualPipe's eight phases on every rank: warm-up forwards, forwards of both stages, "
        "zero-bubble I W F, overlapped pairs, cool-down, backwards, deferred W.",
        "Each phase's length is a formula of the rank: see dualpipe_phase_steps in utils.pipeline.generators "
        "and count rank 0's warm-up: 2(PP-1-r) forwards of its first stage.",
    )
    return Puzzle(key=key or f"{label}-rank-lists", title=f"Puzzle: write {label}'s rank lists",
                  statement=statement, stub=stub, hints=hints, goal=f"{label}'s lists, rank by rank",
                  reference=lambda: _lines(reference), judge=judge, draw=draw_schedule(schedule_of, costs))


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


# ------------------------------------------------------------------------------------ the course's set

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
