"""Pipeline schedules as data: what each rank will compute, in which order.

A schedule is the plan of a pipeline-parallel training step (DeepSeek-V3 report, Sec. 3.2.1; "Zero Bubble
Pipeline Parallelism", Qi et al., Sec. 2): for every rank, the ordered list of compute actions it runs.
An action is (stage, kind, micro-batch) with the kinds

* ``F`` forward, ``B`` full backward,
* ``I`` backward for the input (the part the previous stage is waiting for),
* ``W`` backward for the weights (needed only before the optimizer step, so it can be deferred),

and the overlapped pair of DualPipe (and of 1F1B with overlapped pairs): one forward chunk and one backward
chunk run as one unit (``F&B``).
The string forms are those of ``torch.distributed.pipelining`` so learners can read both:
``1F0``, ``2I3``, ``2W3``, ``(0F7;7B3)OVERLAP_F_B``.

This module holds the types, their string forms and the one dependency rule (``dependency_rule``, asked
through ``Schedule.inputs_of`` and ``Schedule.dependency_plan``) that the validator, the simulator and the
executor all follow. The generators live in ``utils.pipeline.generators``, the checks in
``utils.pipeline.validation``, the names and the command line in ``utils.pipeline.registry``.
Ground layer: imports nothing from the kit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from utils import inputs as arg

KINDS = ("F", "B", "I", "W")
KIND_NAMES = {"F": "forward", "B": "full backward", "I": "backward for input", "W": "backward for weights"}

_ACTION_RE = re.compile(r"^(\d+)([FBIW])(\d+)$")
_OVERLAP_RE = re.compile(r"^\((\d+F\d+);(\d+[BI]\d+)\)OVERLAP_F_B$")


@dataclass(frozen=True)
class Action:
    """One compute action: run ``kind`` of stage ``stage`` on micro-batch ``microbatch``."""

    stage: int
    kind: str
    microbatch: int

    def __post_init__(self):
        if self.kind not in KINDS:
            raise arg.InputError(
                f"Action kind must be one of {', '.join(KINDS)} (forward, full backward, backward for input, "
                f"backward for weights); got {self.kind!r}."
            )
        if type(self.stage) is not int or type(self.microbatch) is not int:  # the fast path is a plain int
            for name in ("stage", "microbatch"):
                value = arg.whole(getattr(self, name), name, where="Action",
                                  why="stages and micro-batches are numbered 0, 1, 2, ...")
                object.__setattr__(self, name, value)
        if self.stage < 0 or self.microbatch < 0:
            raise ValueError(
                f"Action stage and micro-batch are indices, so they must be >= 0; got stage={self.stage}, "
                f"microbatch={self.microbatch}."
            )

    def __str__(self) -> str:
        return f"{self.stage}{self.kind}{self.microbatch}"


@dataclass(frozen=True)
class OverlappedAction:
    """DualPipe's F&B: a forward chunk and a backward chunk run together as one unit.

    Their computation and communication interleave (DeepSeek-V3 report, Sec. 3.2.1, Figure 4): one chunk's
    all-to-all runs while the other computes. The pair computes for ``F&B`` (F + B unless the two chunks'
    computations overlap too; see ``utils.pipeline.costs.CostModel``) and both results are ready when the
    pair ends. DualPipe pairs chunks of two directions; ``1f1b-overlap`` pairs a forward and a backward of
    different micro-batches on the same stage.
    """

    forward: Action
    backward: Action

    def __post_init__(self):
        for name in ("forward", "backward"):
            arg.instance(getattr(self, name), name, Action, "an Action (e.g. Action(0, 'F', 7))",
                         where="OverlappedAction")
        if self.forward.kind != "F":
            raise ValueError(f"An overlapped pair's first action must be a forward (F); got {self.forward}.")
        if self.backward.kind not in ("B", "I"):
            raise ValueError(
                f"An overlapped pair's second action must be a backward (B or I); got {self.backward}."
            )

    def __str__(self) -> str:
        return f"({self.forward};{self.backward})OVERLAP_F_B"

    @property
    def parts(self) -> tuple[Action, Action]:
        return (self.forward, self.backward)


ActionLike = Action | OverlappedAction


def action_parts(action: ActionLike) -> tuple[Action, ...]:
    """The plain actions inside ``action``: itself, or the forward and backward of an overlapped pair."""
    if isinstance(action, OverlappedAction):
        return action.parts
    return (arg.instance(action, "action", Action, "an Action or an OverlappedAction", where="action_parts"),)


def action_kind(action: ActionLike) -> str:
    """F, B, I or W for a plain action; FB or FI for an overlapped pair (a forward with a B or with an I)."""
    if type(action) is OverlappedAction:
        return "F" + action.backward.kind
    if type(action) is not Action:
        arg.instance(action, "action", (Action, OverlappedAction), "an Action or an OverlappedAction",
                     where="action_kind")
    return action.kind


# ------------------------------------------------------------------------------------ the dependency rule

#: The two results one action hands to another: ``ACT`` the output of a stage's forward (the activation
#: the next stage on the route takes, and which its own backward needs), ``GRAD`` the gradient at a
#: stage's input (computed by its B or its I; the previous stage on the route takes it, its W needs it).
ACT, GRAD = "act", "grad"
#: What each kind of action makes: a W makes nothing another action waits for.
MAKES = {"F": ACT, "B": GRAD, "I": GRAD, "W": None}


def dependency_rule(kind: str, stage: int, prev: int | None, nxt: int | None) -> tuple[tuple[int, str], ...]:
    """The results a plain action waits for, as (stage, ACT or GRAD): the one rule every consumer follows.

    ``kind`` and ``stage`` are the action's; ``prev`` and ``nxt`` the stages before and after ``stage`` on
    its micro-batch's route (None at an end of the route). DeepSeek-V3 report Sec. 3.2.1; "Zero Bubble
    Pipeline Parallelism" (Qi et al.), Sec. 2:

    * F needs the output of the previous stage on the route (the first stage reads the micro-batch itself);
    * B or I needs its own F's output (the activations it saved) and the gradient at the next stage's input
      (the last stage holds the loss, so it needs nothing from outside);
    * W needs its own I (the output gradients I kept).
    """
    if kind == "F":
        return () if prev is None else ((prev, ACT),)
    if kind == "W":
        return ((stage, GRAD),)
    return ((stage, ACT),) if nxt is None else ((stage, ACT), (nxt, GRAD))


def _shifted(needs: tuple[tuple[int, bool], ...], shift: int) -> tuple[tuple[int, bool], ...]:
    """``needs`` (result keys of micro-batch 0, remote flags) for the micro-batch whose keys are ``shift``
    higher. A plain action needs at most two results; spelled out, this runs faster than a loop."""
    if len(needs) == 2:
        (k1, r1), (k2, r2) = needs
        return ((k1 + shift, r1), (k2 + shift, r2))
    if needs:
        return ((needs[0][0] + shift, needs[0][1]),)
    return ()


class Dependency(NamedTuple):
    """A result an action waits for: ``kind`` (ACT or GRAD) of ``stage`` for ``microbatch``.

    ``remote`` is True when ``stage`` lives on another rank than the waiting action's stage, so the result
    travels as a message (point-to-point latency in the simulator, an ``irecv`` in the executor).
    """

    stage: int
    kind: str
    microbatch: int
    remote: bool


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def parse_action(text: str) -> ActionLike:
    """Inverse of ``str(action)``: ``"1F0"`` -> Action(1, "F", 0); ``"(0F7;7B3)OVERLAP_F_B"`` -> pair."""
    arg.instance(text, "text", str, "a string such as '1F0' or '(0F7;7B3)OVERLAP_F_B'", where="parse_action")
    s = text.strip()
    if m := _ACTION_RE.match(s):
        return Action(int(m.group(1)), m.group(2), int(m.group(3)))
    if m := _OVERLAP_RE.match(s):
        return OverlappedAction(parse_action(m.group(1)), parse_action(m.group(2)))
    raise ValueError(
        f"Cannot read action {text!r}: expected <stage><kind><microbatch> with kind F, B, I or W "
        f"(e.g. '1F0', '2I3') or an overlapped pair '(<stage>F<mb>;<stage>B<mb>)OVERLAP_F_B' "
        f"(e.g. '(0F7;7B3)OVERLAP_F_B')."
    )


@dataclass(frozen=True)
class Schedule:
    """Per-rank action lists plus where every stage lives and which stages each micro-batch crosses.

    Stage ids: ``stage_to_rank[s]`` is the rank holding stage ``s``; ``stage_to_chunk[s]`` the model chunk
    (set of layers) it runs (DualPipe's mirrored copies share a chunk); ``routes[m]`` the stage ids
    micro-batch ``m`` passes through, in forward order; ``actions[r]`` what rank ``r`` runs, in order.
    """

    name: str
    n_ranks: int
    n_microbatches: int
    stage_to_rank: tuple[int, ...]
    stage_to_chunk: tuple[int, ...]
    routes: tuple[tuple[int, ...], ...]
    actions: tuple[tuple[ActionLike, ...], ...]

    def __post_init__(self):
        _check_fields(self)

    @property
    def n_stages(self) -> int:
        return len(self.stage_to_rank)

    @property
    def n_chunks(self) -> int:
        return len(set(self.stage_to_chunk))

    @cached_property
    def _stages_by_rank(self) -> tuple[tuple[int, ...], ...]:
        by_rank: list[list[int]] = [[] for _ in range(self.n_ranks)]
        for stage, rank in enumerate(self.stage_to_rank):
            if 0 <= rank < self.n_ranks:
                by_rank[rank].append(stage)
        return tuple(tuple(s) for s in by_rank)

    @cached_property
    def _neighbours(self) -> dict[tuple[int, int], tuple[int | None, int | None]]:
        table: dict[tuple[int, int], tuple[int | None, int | None]] = {}
        for mb, route in enumerate(self.routes):
            for i, stage in enumerate(route):
                prev = route[i - 1] if i > 0 else None
                nxt = route[i + 1] if i + 1 < len(route) else None
                table[(stage, mb)] = (prev, nxt)
        return table

    def stages_on(self, rank: int) -> tuple[int, ...]:
        """Stage ids held by ``rank`` (their count is the rank's parameter copies)."""
        if type(rank) is not int or not 0 <= rank < self.n_ranks:
            arg.whole(rank, "rank", low=0, high=self.n_ranks - 1, where="stages_on",
                      why=f"the schedule has ranks 0..{self.n_ranks - 1}")
        return self._stages_by_rank[rank]

    @cached_property
    def route_links(self) -> tuple[list[dict[int, int]], list[dict[int, int]]]:
        """(prev_of, next_of): per micro-batch, dicts stage -> the previous / next stage on its route.

        Micro-batches sharing a route share the same two dicts, so the validator and the simulator walk
        thousands of micro-batches without rebuilding them.
        """
        links: dict[tuple[int, ...], tuple[dict[int, int], dict[int, int]]] = {}
        for route in self.routes:
            if route not in links:
                links[route] = (
                    dict(zip(route[1:], route[:-1], strict=True)),
                    dict(zip(route[:-1], route[1:], strict=True)),
                )
        return [links[r][0] for r in self.routes], [links[r][1] for r in self.routes]

    def route_of(self, microbatch: int) -> tuple[int, ...]:
        """Stage ids micro-batch ``microbatch`` passes through, in forward order."""
        arg.whole(microbatch, "microbatch", low=0, high=self.n_microbatches - 1, where="route_of",
                  why=f"the schedule has micro-batches 0..{self.n_microbatches - 1}")
        return self.routes[microbatch]

    def prev_stage(self, stage: int, microbatch: int) -> int | None:
        """The stage before ``stage`` on the micro-batch's route (None at the first stage)."""
        return self._neighbour(stage, microbatch)[0]

    def next_stage(self, stage: int, microbatch: int) -> int | None:
        """The stage after ``stage`` on the micro-batch's route (None at the last stage: the loss)."""
        return self._neighbour(stage, microbatch)[1]

    def _neighbour(self, stage: int, microbatch: int) -> tuple[int | None, int | None]:
        try:
            return self._neighbours[(stage, microbatch)]
        except (KeyError, TypeError):
            raise arg.InputError(
                f"stage {stage!r} is not on the route of micro-batch {microbatch!r}: micro-batches are "
                f"0..{self.n_microbatches - 1}, and each passes only the stages of its route") from None

    # -- the dependency rule, asked per action (readable) or for the whole schedule at once (fast)
    def inputs_of(self, part: Action) -> tuple[Dependency, ...]:
        """The results the plain action ``part`` waits for, by ``dependency_rule`` on its micro-batch's route.

        ``schedule.inputs_of(Action(1, "B", 0))`` on a 4-stage 1F1B is
        ``(Dependency(1, "act", 0, False), Dependency(2, "grad", 0, True))``: 1B0 needs its own 1F0 and the
        input gradient that 2B0 (on rank 2) sends back.
        """
        st, mb = part.stage, part.microbatch
        prev_of, next_of = self.route_links
        rank_of = self.stage_to_rank
        rank = rank_of[st]
        rule = dependency_rule(part.kind, st, prev_of[mb].get(st), next_of[mb].get(st))
        return tuple(Dependency(other, kind, mb, rank_of[other] != rank) for other, kind in rule)

    def result_key(self, stage: int, kind: str, microbatch: int) -> int:
        """The integer name of a result in ``dependency_plan``: ``2 * (stage * M + microbatch)``, +1 for GRAD."""
        return 2 * (stage * self.n_microbatches + microbatch) + (kind == GRAD)

    def result_of_key(self, key: int) -> tuple[int, str, int]:
        """Inverse of ``result_key``: (stage, ACT or GRAD, microbatch)."""
        stage, mb = divmod(key // 2, self.n_microbatches)
        return stage, (GRAD if key % 2 else ACT), mb

    @cached_property
    def dependency_plan(self) -> tuple[tuple[tuple[tuple[tuple[int, bool], ...], tuple[int, ...], str], ...], ...]:
        """Per rank, per action of its list: ``(needs, makes, kind)``, the rule of ``inputs_of`` for all actions.

        ``needs``: the results the action waits for, as (``result_key``, from another rank?); ``makes``: the
        keys of the results it produces (``MAKES``); ``kind``: ``action_kind``. The validator's deadlock check
        and the simulator walk thousands of actions through this table, so it is built once per schedule
        (micro-batches sharing a route share the rule's answers, shifted by the micro-batch) and kept.
        """
        n_mb, rank_of = self.n_microbatches, self.stage_to_rank
        by_route: dict[tuple[int, ...], dict[tuple[int, str], tuple]] = {}
        answers = [by_route.setdefault(route, {}) for route in self.routes]

        def answer(mb: int, stage: int, kind: str) -> tuple[tuple[tuple[int, bool], ...], int | None]:
            # the rule for this stage and kind on mb's route, with keys for micro-batch 0 (add 2 * mb)
            prev_of, next_of = self.route_links
            rule = dependency_rule(kind, stage, prev_of[mb].get(stage), next_of[mb].get(stage))
            needs = tuple((2 * other * n_mb + (k == GRAD), rank_of[other] != rank_of[stage]) for other, k in rule)
            made = MAKES[kind]
            found = (needs, None if made is None else 2 * stage * n_mb + (made == GRAD))
            answers[mb][(stage, kind)] = found
            return found

        plan = []
        for acts in self.actions:
            row = []
            for action in acts:
                if type(action) is OverlappedAction:
                    f, b = action.forward, action.backward
                    fm, bm = f.microbatch, b.microbatch
                    f_needs, f_makes = answers[fm].get((f.stage, "F")) or answer(fm, f.stage, "F")
                    b_needs, b_makes = answers[bm].get((b.stage, b.kind)) or answer(bm, b.stage, b.kind)
                    row.append((_shifted(f_needs, 2 * fm) + _shifted(b_needs, 2 * bm),
                                (f_makes + 2 * fm, b_makes + 2 * bm), "F" + b.kind))
                else:
                    m, kind = action.microbatch, action.kind
                    needs, makes = answers[m].get((action.stage, kind)) or answer(m, action.stage, kind)
                    row.append((_shifted(needs, 2 * m), () if makes is None else (makes + 2 * m,), kind))
            plan.append(tuple(row))
        return tuple(plan)

    def rank_lines(self) -> list[str]:
        """One line per rank: ``rank r: 0F0 0F1 ...``."""
        width = len(str(max(self.n_ranks - 1, 0)))
        return [
            f"rank {r:>{width}}: " + " ".join(str(a) for a in acts) for r, acts in enumerate(self.actions)
        ]

    def __str__(self) -> str:
        head = (
            f"{self.name}: {_count(self.n_ranks, 'rank')}, "
            f"{_count(self.n_microbatches, 'micro-batch', 'micro-batches')}, {_count(self.n_stages, 'stage')}"
        )
        return "\n".join([head, *self.rank_lines()])


def _ints(value, name: str) -> tuple[int, ...]:
    """``value`` as a tuple of whole numbers (a list is fine: it becomes a tuple, so the schedule stays
    immutable and hashable)."""
    items = arg.sequence(value, name, where="Schedule", nonempty=False)
    if all(type(v) is int for v in items):
        return items
    return tuple(arg.whole(v, f"every entry of {name}", where="Schedule") for v in items)


def _check_fields(s: Schedule) -> None:
    """Types and sizes of a Schedule's fields (the validator checks how they fit together)."""
    where = "Schedule"
    arg.text(s.name, "name", where=where)
    arg.whole(s.n_ranks, "n_ranks", low=1, high=arg.MAX_RANKS, where=where,
              why="a pipeline needs at least one rank")
    arg.whole(s.n_microbatches, "n_microbatches", low=1, high=arg.MAX_MICROBATCHES, where=where,
              why="a training step needs at least one micro-batch")
    fixed = {"stage_to_rank": _ints(s.stage_to_rank, "stage_to_rank"),
             "stage_to_chunk": _ints(s.stage_to_chunk, "stage_to_chunk")}
    routes = arg.sequence(s.routes, "routes", where=where, nonempty=False)
    seen: dict[int, tuple[int, ...]] = {}  # generators share one route object between micro-batches
    fixed["routes"] = tuple(seen[id(r)] if id(r) in seen else seen.setdefault(id(r), _ints(r, "routes[m]"))
                            for r in routes)
    actions = arg.sequence(s.actions, "actions", where=where, nonempty=False)
    fixed["actions"] = tuple(row if type(row) is tuple else arg.sequence(row, "actions[r]", where=where,
                                                                        nonempty=False) for row in actions)
    for name, value in fixed.items():
        if value is not getattr(s, name):
            object.__setattr__(s, name, value)
