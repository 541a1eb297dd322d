"""What the schedule search may choose from: the placement, the parts to place, how long each takes, what each
waits for, and the rules that let the solver skip choices that never help.

Everything here is read from the kit's one definition of each rule, never restated:

* the **dependency rule** from ``Schedule.inputs_of`` (``utils.pipeline.schedule``), asked once for every
  (stage, kind, micro-batch) the search may place, on a schedule that holds only the placement;
* the **durations** from the simulator itself (``action_lengths``, its ``action_length``): ``CostModel.duration``
  plus the all-to-all the simulator adds to an action (DeepSeek-V3 report Sec. 3.2.1: hidden inside an F&B
  pair up to the partner's compute, on the SMs the communication leaves), so a change of either rule reaches
  the solver unchanged;
* the **p2p latency** as the simulator applies it: an input from another rank (``Dependency.remote``) arrives
  ``costs.p2p`` after its producer ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from utils import inputs as arg
from utils.pipeline.costs import CostModel
from utils.pipeline.generators.common import check_counts, linear_schedule, v_schedule
from utils.pipeline.schedule import MAKES, Action, OverlappedAction, Schedule, action_parts
from utils.pipeline.simulate import action_length

#: The placements the search takes by name: one stage per rank (1F1B, ZB1P), the V of ZB-V and DualPipeV
#: (rank r holds stages r and 2R-1-r), DualPipe's two directions (rank r holds stage r of each).
PLACEMENTS = ("linear", "v", "bidirectional")
#: Stage-passes (micro-batches x stages on a route) the search places at most.
MAX_STAGE_PASSES = arg.MAX_STAGE_PASSES
#: The finest tick the solver counts time in: lengths must be whole multiples of 1/MAX_TICKS time units
#: (e.g. a pair that computes 3 x 132/112 = 99/28 units is counted in 28ths).
MAX_TICKS = arg.MAX_TICKS
#: The longest search allowed, in seconds.
MAX_TIME_LIMIT = 3600.0

#: A part of the work the search places: the forward ``F``, the backward ``back`` (a full B, or its input
#: half I) and the weight half ``W`` of one stage for one micro-batch.
ROLES = ("F", "back", "W")
ROLE_OF_KIND = {"F": "F", "B": "back", "I": "back", "W": "W"}
#: Which role makes each result (``schedule.MAKES``): a forward makes the activation, a backward the gradient.
MADE_BY = {result: ROLE_OF_KIND[kind] for kind, result in MAKES.items() if result is not None}


class Part(NamedTuple):
    """One part of the work: ``role`` (F, back or W) of stage ``stage`` for micro-batch ``microbatch``."""

    stage: int
    role: str
    microbatch: int

    def action(self, kind: str | None = None) -> Action:
        """The kit's Action of this part (``kind``: B or I for a backward)."""
        return Action(self.stage, kind or self.role, self.microbatch)


class Edge(NamedTuple):
    """``consumer`` (as ``kind``) waits for ``producer``'s result, plus ``lag`` (p2p) from another rank."""

    consumer: Part
    kind: str
    producer: Part
    lag: int


def placement(name: str, n_ranks: int, n_microbatches: int) -> Schedule:
    """A schedule with empty action lists that holds only a placement: where each stage lives and the route of
    every micro-batch (``PLACEMENTS``): what the search keeps fixed while it chooses every action and its order.

    ``linear``: stage r on rank r (1F1B, ZB1P); ``v``: rank r holds stages r and 2R-1-r, every micro-batch goes
    down and back up (ZB-V, DualPipeV; Qi et al. 2024 Sec. 6); ``bidirectional``: DualPipe's (DeepSeek-V3
    report Sec. 3.2.1): rank r holds stage r of direction 0 and stage R-1-r of direction 1, half of the
    micro-batches enter at each end.
    """
    where = "placement"
    arg.choice(name, "placement", PLACEMENTS, where=where, why="where the stages live")
    n_ranks, n_microbatches = check_counts(where, n_ranks, n_microbatches)
    empty = [[] for _ in range(n_ranks)]
    if name == "linear":
        return linear_schedule("linear placement", n_ranks, n_microbatches, empty)
    if name == "v":
        return v_schedule("v placement", n_ranks, n_microbatches, empty)
    if n_ranks % 2 or n_microbatches % 2:
        raise arg.InputError(
            f"placement: the bidirectional placement needs an even number of ranks and of micro-batches (the two "
            f"directions meet in the middle of the pipeline, and half of the micro-batches enter at each end, as "
            f"in DualPipe); got {n_ranks} ranks and {n_microbatches} micro-batches.")
    half = n_microbatches // 2
    down, up = tuple(range(n_ranks)), tuple(range(n_ranks, 2 * n_ranks))
    return Schedule("bidirectional placement", n_ranks, n_microbatches,
                    stage_to_rank=down + tuple(n_ranks - 1 - s for s in range(n_ranks)),
                    stage_to_chunk=down * 2, routes=(down,) * half + (up,) * half, actions=tuple(empty))


def placement_of(schedule: Schedule) -> Schedule:
    """``schedule``'s placement alone (its action lists emptied): the search may reorder everything else."""
    arg.instance(schedule, "schedule", Schedule, "a Schedule (e.g. make_schedule('dualpipe', 4, 8))",
                 where="placement_of")
    name = schedule.name if schedule.name.endswith(" placement") else f"{schedule.name} placement"
    return Schedule(name, schedule.n_ranks, schedule.n_microbatches,
                    schedule.stage_to_rank, schedule.stage_to_chunk, schedule.routes,
                    tuple(() for _ in range(schedule.n_ranks)))


def own_rules(schedule: Schedule) -> dict:
    """The rules ``schedule`` itself follows, as keyword arguments of ``optimal_schedule``: its placement,
    ``split_backward`` when it runs any I or W (zero bubble), ``pairs`` when it runs any overlapped F&B pair."""
    arg.instance(schedule, "schedule", Schedule, "a Schedule (e.g. make_schedule('dualpipe', 4, 8))",
                 where="own_rules")
    actions = [a for row in schedule.actions for a in row]
    return {"placement": placement_of(schedule),
            "split_backward": any(p.kind in "IW" for a in actions for p in action_parts(a)),
            "pairs": any(isinstance(a, OverlappedAction) for a in actions)}


def min_activations(layout: Schedule) -> int:
    """The smallest cap on activations any schedule of this placement meets: a rank holds a micro-batch's
    activation of each of its stages on the route until the backward comes back (2 on the V's ranks)."""
    arg.instance(layout, "layout", Schedule, "a placement (utils.pipeline.optimal.placement)",
                 where="min_activations")
    return max(sum(layout.stage_to_rank[s] == r for s in route)
               for route in set(layout.routes) for r in range(layout.n_ranks))


def action_lengths(costs: CostModel) -> dict[str, float]:
    """How long the simulator holds a rank for each action kind (F, B, I, W, FB, FI): its own rule,
    ``utils.pipeline.simulate.action_length`` (``CostModel.duration`` plus the all-to-all it does not hide)."""
    arg.instance(costs, "costs", CostModel, "a CostModel (e.g. CostModel(F=1, B=2, W=1))", where="action_lengths")
    return {kind: action_length(costs, kind) for kind in ("F", "B", "I", "W", "FB", "FI")}


def ticks_per_unit(values) -> int | None:
    """The smallest whole q <= MAX_TICKS with every value times q a whole number (to 1e-9), or None."""
    for q in range(1, int(MAX_TICKS) + 1):
        if all(abs(v * q - round(v * q)) <= 1e-9 * max(1.0, abs(v * q)) for v in values):
            return q
    return None


@dataclass(frozen=True)
class SearchSpace:
    """A checked search: the placement (``layout``), the costs, and what the schedule may do.

    ``lengths`` and ``p2p`` are whole ticks (the solver's integers), ``ticks`` of them per time unit (1 when
    every length is a whole number of units; 28 for a pair of 99/28 units). ``pair_kinds``: the backward kinds
    an overlapped pair may take, only those that can beat running the two parts one after the other.
    """

    layout: Schedule
    costs: CostModel
    split_backward: bool
    pairs: bool
    max_activations: int | None
    lengths: dict[str, int]
    p2p: int
    ticks: int = 1

    @property
    def alone_kind(self) -> str:
        """A backward run alone is an I when the backward may split: I then W takes as long as B, and sends
        the gradient earlier (Qi et al. 2024, Sec. 2), so a lone full B never helps."""
        return "I" if self.split_backward else "B"

    @cached_property
    def pair_kinds(self) -> tuple[str, ...]:
        """Backward kinds of the pairs worth trying: a pair lasting as long as its parts one after the other
        only delays the forward's result; with split backward, F&B is dropped when F&I then W is as short."""
        if not self.pairs:
            return ()
        L = self.lengths
        kinds = [k for k in (("B", "I") if self.split_backward else ("B",)) if L["F" + k] < L["F"] + L[k]]
        if "B" in kinds and "I" in kinds and L["FB"] >= L["FI"] + L["W"]:
            kinds.remove("B")
        return tuple(kinds)

    def back_kinds(self) -> tuple[str, ...]:
        """The kinds a backward part may take: its alone kind, and B inside an F&B pair."""
        return tuple(dict.fromkeys((self.alone_kind, *self.pair_kinds)))

    @cached_property
    def parts(self) -> tuple[Part, ...]:
        """Every part to place, micro-batch by micro-batch along its route."""
        roles = ROLES if self.split_backward else ROLES[:2]
        return tuple(Part(s, role, m) for m, route in enumerate(self.layout.routes) for s in route for role in roles)

    def rank_of(self, part: Part) -> int:
        return self.layout.stage_to_rank[part.stage]

    def kinds_of(self, part: Part) -> tuple[str, ...]:
        """The action kinds ``part`` may run as."""
        return self.back_kinds() if part.role == "back" else (part.role,)

    @cached_property
    def edges(self) -> tuple[Edge, ...]:
        """Every (consumer, kind, producer, lag): ``Schedule.inputs_of`` of each part in each kind it may take."""
        found = []
        for part in self.parts:
            for kind in self.kinds_of(part):
                for need in self.layout.inputs_of(part.action(kind)):
                    producer = Part(need.stage, MADE_BY[need.kind], need.microbatch)
                    found.append(Edge(part, kind, producer, self.p2p if need.remote else 0))
        return tuple(found)

    def lengths_of(self, part: Part) -> tuple[int, ...]:
        """Every length ``part``'s action may take: alone, or as a pair it belongs to."""
        L = self.lengths
        alone = L["F"] if part.role == "F" else L[self.alone_kind] if part.role == "back" else L["W"]
        return (alone, *(L["F" + k] for k in (self.pair_kinds if part.role != "W" else ())))


def search_space(layout, n_ranks, n_microbatches, costs, split_backward, pairs, max_activations,
                 where: str) -> SearchSpace:
    """Check a search's settings (``optimal_schedule``'s arguments) and return its ``SearchSpace``.

    ``layout`` is a placement name (``PLACEMENTS``) or a Schedule whose placement is kept. Each refusal says
    the rule: whole time units (the solver counts in integers), actions that take time (a rank's order is
    read from the start times), a cap no schedule could meet, a size beyond ``MAX_STAGE_PASSES``.
    """
    n_ranks, n_microbatches = check_counts(where, n_ranks, n_microbatches)
    arg.instance(costs, "costs", CostModel, "a CostModel (e.g. CostModel(F=1, B=2, W=1))", where=where)
    split_backward = arg.flag(split_backward, "split_backward", where=where)
    pairs = arg.flag(pairs, "pairs", where=where)
    if isinstance(layout, Schedule):
        if (layout.n_ranks, layout.n_microbatches) != (n_ranks, n_microbatches):
            raise arg.InputError(
                f"{where}: the placement schedule has {layout.n_ranks} ranks and {layout.n_microbatches} "
                f"micro-batches, the search asks for {n_ranks} and {n_microbatches}; they must agree.")
        layout = placement_of(layout)
    elif isinstance(layout, str):
        layout = placement(layout, n_ranks, n_microbatches)
    else:
        arg.fail("placement", f"one of {', '.join(PLACEMENTS)}, or a Schedule whose placement to keep", layout,
                 where=where, error=arg.InputTypeError)
    passes = sum(map(len, layout.routes))
    if passes > MAX_STAGE_PASSES:
        arg.fail("micro-batches x stages on a route", f"at most {MAX_STAGE_PASSES:,}", passes, where=where,
                 why=f"{MAX_STAGE_PASSES.name}: {MAX_STAGE_PASSES.why}")
    lowest = min_activations(layout)
    if max_activations is not None:
        max_activations = arg.whole(
            max_activations, "max_activations", low=lowest, where=where,
            why=f"a rank of this placement holds {lowest} activation{'s' * (lowest > 1)} of one micro-batch "
                f"before its first backward can start, so no schedule meets a smaller cap")
    found = action_lengths(costs)
    used = {"F", "B" if not split_backward else "I", *(("W",) if split_backward else ()),
            *(("FB",) if pairs else ()), *(("FI",) if pairs and split_backward else ())}
    if not costs.uniform:
        raise arg.InputError(
            f"{where}: the search prices actions by kind, so every model chunk must cost the same (chunk_scale "
            f"None or all ones); simulate a schedule with uneven chunks instead (utils.pipeline.simulate).")
    for kind in sorted(used):
        if found[kind] <= 0:
            raise arg.InputError(
                f"{where}: every action the solver may place must take time (a rank's order is read from the "
                f"start times); {kind} lasts 0 with these costs: "
                + ("with W = 0 or W = B there is nothing to split, so leave split_backward off." if kind in "IW"
                   else "give it a positive cost."))
    q = ticks_per_unit([found[k] for k in sorted(used)] + [costs.p2p])
    if q is None:
        raise arg.InputError(
            f"{where}: the solver counts time in whole ticks of at least 1/{int(MAX_TICKS)} of a unit, so every "
            f"action length and the p2p latency must be a multiple of such a tick; these are "
            + ", ".join(f"{k} {found[k]:g}" for k in sorted(used)) + f", p2p {costs.p2p:g}. Round the costs "
            f"(e.g. to tenths).")
    return SearchSpace(layout, costs, split_backward, pairs, max_activations,
                       {k: round(v * q) for k, v in found.items()}, round(costs.p2p * q), q)
