"""The best schedule the kit's cost model allows, found by a solver: ``optimal_schedule(...) -> OptimalSchedule``.

Given ranks, micro-batches, costs and a placement, and what a schedule may do (split the backward into I and W,
run a forward and a backward as one overlapped pair, hold at most so many activations per rank), CP-SAT
(``utils.pipeline.optimal.model``) searches every choice and every order and returns the schedule of least
simulated step time, as a kit ``Schedule``: the validator accepts it and ``simulate`` gives its step time.
"Is DualPipe optimal?" (DeepSeek-V3 report Sec. 3.2.1) becomes a question with an answer at sizes a laptop
solves exactly: ``optimal_for(make_schedule("dualpipe", 4, 8), costs)``.

The search starts from the best schedule the kit already knows for these rules (its named schedules with
this placement, and one micro-batch at a time), so it never answers worse than them; it stops when it has
proven its schedule optimal, or at ``time_limit`` with the best found and CP-SAT's lower bound. One worker
and a fixed seed (``model.SEED``) make an answer proven within the limit the same on every run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields, replace

from utils import inputs as arg
from utils.pipeline.costs import CostModel
from utils.pipeline.optimal.problem import MAX_TIME_LIMIT, SearchSpace, own_rules, search_space
from utils.pipeline.registry import SCHEDULE_NAMES, make_schedule
from utils.pipeline.schedule import Action, ActionLike, OverlappedAction, Schedule
from utils.pipeline.simulate import simulate
from utils.pipeline.timeline import Timeline
from utils.pipeline.validation import validate


@dataclass(frozen=True)
class OptimalSchedule:
    """What a search found: ``schedule`` (a kit Schedule) and its simulated ``timeline``; ``proven_optimal``
    when CP-SAT proved that no schedule under these rules is shorter; ``lower_bound``, the step time it proved
    no schedule can beat (equal to the makespan when proven); ``start``, the known schedule it started from,
    and its step time ``start_makespan``; ``settings``, what was searched."""

    schedule: Schedule
    timeline: Timeline
    proven_optimal: bool
    lower_bound: float
    start: str
    start_makespan: float
    wall_seconds: float
    settings: dict

    @property
    def makespan(self) -> float:
        """The step time: the simulator's, of ``schedule`` (the solver's too, when proven)."""
        return self.timeline.makespan

    @property
    def status(self) -> str:
        """"OPTIMAL" (proven) or "FEASIBLE" (the best found within the time limit)."""
        return "OPTIMAL" if self.proven_optimal else "FEASIBLE"

    def as_dict(self) -> dict:
        """The answer as plain data (the command line's ``--json``): the makespan, the proof, the schedule as
        action strings per rank, and the per-rank budget of ``python -m utils.simulate --json``."""
        tl = self.timeline
        return {"makespan": self.makespan, "proven_optimal": self.proven_optimal, "status": self.status,
                "lower_bound": self.lower_bound, "start": self.start, "start_makespan": self.start_makespan,
                "schedule": [[str(a) for a in row] for row in self.schedule.actions],
                "worst_idle": tl.worst_idle, "bubble_ratio": tl.bubble_ratio, "budget_shares": tl.budget_shares(),
                "ranks": tl.summary(), "settings": self.settings}


def optimal_schedule(n_ranks: int, n_microbatches: int, costs: CostModel, placement="linear", *,
                     split_backward: bool = False, pairs: bool = False, max_activations: int | None = None,
                     time_limit: float = 10.0) -> OptimalSchedule:
    """The schedule of least simulated step time for ``n_ranks`` and ``n_microbatches`` under ``costs``.

    ``placement``: "linear", "v", "bidirectional" (``problem.PLACEMENTS``) or a Schedule whose placement to
    keep. ``split_backward``: a backward may run as I then W (zero bubble, Qi et al. 2024); ``pairs``: a forward
    and a backward of two micro-batches may run as one overlapped F&B pair (DeepSeek-V3 report Sec. 3.2.1);
    ``max_activations``: at most that many activations held per rank. ``time_limit``: seconds CP-SAT may search
    before it answers with the best found (``proven_optimal`` False) and its lower bound.
    """
    where = "optimal_schedule"
    space = search_space(placement, n_ranks, n_microbatches, costs, split_backward, pairs, max_activations, where)
    time_limit = arg.real(time_limit, "time_limit", low=0, low_open=True, high=MAX_TIME_LIMIT, where=where,
                          why="seconds the solver may search before it answers with the best schedule found")
    return _solve(space, time_limit)


def optimal_for(schedule: Schedule, costs: CostModel, *, same_memory: bool = False,
                time_limit: float = 10.0) -> OptimalSchedule:
    """The best schedule under ``schedule``'s own rules (``problem.own_rules``: its placement, I and W if it
    splits a backward, pairs if it has any) and, with ``same_memory``, its own worst-rank peak of activations
    as the cap: the schedule to hold ``schedule`` against (``simulate(schedule).makespan >= its makespan``)."""
    where = "optimal_for"
    rules = own_rules(schedule)
    if arg.flag(same_memory, "same_memory", where=where):
        timeline = simulate(schedule, costs)
        rules["max_activations"] = max(timeline.peak_activations(r) for r in range(schedule.n_ranks))
    return optimal_schedule(schedule.n_ranks, schedule.n_microbatches, costs, time_limit=time_limit, **rules)


#: Step times that differ by less are the same (the simulator sums floats such as 99/28; the solver counts ticks).
_SAME = 1e-9


def _solve(space: SearchSpace, time_limit: float) -> OptimalSchedule:
    """Start from the best known schedule, search, read the answer back and check it with the kit."""
    from utils.pipeline.optimal.model import ScheduleModel  # CP-SAT loads only when a search runs

    began = time.perf_counter()
    seed, seed_timeline = best_known(space)
    # room to search: a horizon far above the known step keeps CP-SAT's presolve from probing a tight box
    model = ScheduleModel(space, 4 * math.ceil(seed_timeline.makespan * space.ticks))
    model.hint(seed_timeline)
    solver, status = model.solve(time_limit)
    found, proven, bound = seed, False, 0.0
    if status in ("OPTIMAL", "FEASIBLE"):
        found = replace(seed, name="optimal", actions=model.actions(solver))
        proven, bound = status == "OPTIMAL", float(solver.best_objective_bound) / space.ticks
    elif status != "UNKNOWN":  # INFEASIBLE or MODEL_INVALID: the known schedule proves it wrong
        raise RuntimeError(f"CP-SAT answered {status} for a search that has a solution "
                           f"({seed.name}, step {seed_timeline.makespan:g}): a bug in utils.pipeline.optimal.model")
    validate(found)
    timeline = simulate(found, space.costs)
    if timeline.makespan > seed_timeline.makespan + _SAME:  # only when stopped before reaching the hint's quality
        found, timeline = seed, seed_timeline
    if proven and abs(timeline.makespan - solver.objective_value / space.ticks) > _SAME:
        raise RuntimeError(f"the solver's step time {solver.objective_value / space.ticks:g} is not the "
                           f"simulator's {timeline.makespan:g}: a bug in utils.pipeline.optimal.model")
    held = max(timeline.peak_activations(r) for r in range(timeline.n_ranks))
    if space.max_activations is not None and held > space.max_activations:
        raise RuntimeError(f"the schedule found holds {held} activations, over the cap of {space.max_activations} "
                           f"(Timeline.peak_activations): a bug in utils.pipeline.optimal.model")
    settings = {"ranks": space.layout.n_ranks, "microbatches": space.layout.n_microbatches,
                "placement": space.layout.name.removesuffix(" placement"), "split_backward": space.split_backward,
                "pairs": space.pairs, "max_activations": space.max_activations, "time_limit": time_limit,
                "costs": {f.name: getattr(space.costs, f.name) for f in fields(space.costs)}}
    return OptimalSchedule(replace(found, name="optimal"), timeline, proven, min(bound, timeline.makespan),
                           seed.name, seed_timeline.makespan, time.perf_counter() - began, settings)


# ------------------------------------------------------------------------------------------ where to start

def best_known(space: SearchSpace) -> tuple[Schedule, Timeline]:
    """The shortest schedule the kit already has for ``space`` (its named schedules with this placement, and
    one micro-batch at a time), each rewritten in the search's terms (``fit``), with its timeline."""
    candidates = [one_at_a_time(space)]
    layout = space.layout
    for name in SCHEDULE_NAMES:
        try:
            known = make_schedule(name, layout.n_ranks, layout.n_microbatches)
        except ValueError:  # a size this schedule does not take (DualPipe's M >= 2 PP...)
            continue
        if (known.stage_to_rank, known.routes) == (layout.stage_to_rank, layout.routes):
            candidates.append(fit(known, space))
    best = None
    for schedule in filter(None, candidates):
        timeline = simulate(schedule, space.costs)
        peak = max(timeline.peak_activations(r) for r in range(layout.n_ranks))
        if space.max_activations is not None and peak > space.max_activations:
            continue
        if best is None or timeline.makespan < best[1].makespan:
            best = (schedule, timeline)
    return best


def one_at_a_time(space: SearchSpace) -> Schedule:
    """One micro-batch at a time: down its route, then back (I then W when split): the schedule that meets
    every cap a schedule of this placement can meet (``problem.min_activations``)."""
    rows: list[list[ActionLike]] = [[] for _ in range(space.layout.n_ranks)]
    for m, route in enumerate(space.layout.routes):
        for s in route:
            rows[space.layout.stage_to_rank[s]].append(Action(s, "F", m))
        for s in reversed(route):
            kinds = ("I", "W") if space.split_backward else ("B",)
            rows[space.layout.stage_to_rank[s]] += [Action(s, k, m) for k in kinds]
    return replace(space.layout, name="one at a time", actions=tuple(map(tuple, rows)))


def fit(schedule: Schedule, space: SearchSpace) -> Schedule | None:
    """``schedule`` in the search's terms, never slower: with split backward a full B becomes I then W (as
    long, the gradient sent earlier); a pair the search does not try runs as its parts one after the other,
    or as F&I then W (``SearchSpace.pair_kinds``: never longer). None when it splits a backward the search
    may not split."""
    rows = []
    for acts in schedule.actions:
        row: list[ActionLike] = []
        for a in acts:
            if isinstance(a, OverlappedAction):
                f, b = a.forward, a.backward
                if b.kind in space.pair_kinds:
                    row.append(a)
                    continue
                if b.kind == "B" and "I" in space.pair_kinds:
                    row += [OverlappedAction(f, Action(b.stage, "I", b.microbatch)), Action(b.stage, "W", b.microbatch)]
                    continue
                row.append(f)
                a = b
            if a.kind in "IW" and not space.split_backward:
                return None
            if a.kind == "B" and space.split_backward:
                row += [Action(a.stage, "I", a.microbatch), Action(a.stage, "W", a.microbatch)]
            else:
                row.append(a)
        rows.append(tuple(row))
    return replace(schedule, actions=tuple(rows))
