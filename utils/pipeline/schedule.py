"""Pipeline schedules as data: what each rank will compute, in which order.

A schedule is the plan of a pipeline-parallel training step (DeepSeek-V3 report, Sec. 3.2.1; "Zero Bubble
Pipeline Parallelism", Qi et al., Sec. 2): for every rank, the ordered list of compute actions it runs
(``utils.pipeline.actions``: F, B, I, W and the overlapped pair, their string forms and the one dependency
rule; this module re-exports them, so a schedule and the words it is written in come from one place).

This module holds the ``Schedule`` type and the dependency rule asked for its actions
(``Schedule.inputs_of`` and ``Schedule.dependency_plan``, or ``Schedule.dependency_slots``, the same plan as
flat lists for the simulator's loop) that the validator, the simulator and the executor all follow.
The generators live in ``utils.pipeline.generators``, the checks in ``utils.pipeline.validation``, the names
and the command line in ``utils.pipeline.registry``.
Ground layer: imports only ``utils.pipeline.actions`` and ``utils.pipeline.runtime`` (whether numpy is loaded).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate, chain, compress, repeat
from operator import is_not
from typing import NamedTuple

from utils import inputs as arg
from utils.pipeline import runtime
from utils.pipeline.actions import (
    ACT,
    ACTION_KINDS,
    GRAD,
    KIND_NAMES,
    KINDS,
    MAKES,
    Action,
    ActionLike,
    Dependency,
    OverlappedAction,
    action_kind,
    action_parts,
    dependency_rule,
    parse_action,
)

__all__ = ["ACT", "ACTION_KINDS", "GRAD", "KIND_NAMES", "KINDS", "MAKES", "Action", "ActionLike", "Dependency",
           "DependencySlots", "OverlappedAction", "Schedule", "ScheduleColumns", "action_kind", "action_parts",
           "dependency_rule", "parse_action"]


class ScheduleColumns(NamedTuple):
    """Every action's parts in flat lists (``Schedule.columns``), for checks and plans done in bulk. Actions
    are numbered rank by rank: rank r's list is actions ``offsets[r]`` to ``offsets[r + 1] - 1``. The part
    lists hold first the one part of every action (an overlapped pair's forward), then the backward part of
    each pair; ``action`` is each part's action, ``kind`` its index in KINDS."""

    offsets: list[int]
    stage: list[int]
    kind: list[int]
    microbatch: list[int]
    action: list[int]
    arrays: tuple | None  # (stage, kind, microbatch, action) as numpy arrays where numpy is loaded


class DependencySlots(NamedTuple):
    """``Schedule.dependency_plan`` as flat lists, one entry per action in rank order (``offsets`` as in
    ``ScheduleColumns``): plain lists of ints are what a Python loop reads fastest, and they cost no tuple
    per action to build.

    Keys are ``result_key``s, with one stage more, ``n_stages``, outside the pipeline: its ACT key of a
    micro-batch is an input that is always there (``always`` for micro-batch 0), its GRAD key a result
    nobody reads (``nothing``: what a W makes). So every action has three inputs and makes two results,
    and a micro-batch's keys are micro-batch 0's plus ``2 * microbatch``. An input is a *slot*: a key
    below ``n_keys``, the result where it was made; ``n_keys + key``, the same result once it reached
    another rank (the simulator adds the p2p latency there). ``kind`` indexes ACTION_KINDS.
    """

    n_keys: int
    offsets: list[int]
    needs: tuple[list[int], list[int], list[int]]
    makes: tuple[list[int], list[int]]
    kind: list[int]
    always: int
    nothing: int

    def key(self, slot: int) -> int:
        """The result a slot is (wherever it waits)."""
        return slot if slot < self.n_keys else slot - self.n_keys


_KIND_INDEX = {kind: i for i, kind in enumerate(KINDS)}


@functools.cache
def _kind_codes(np):
    """Each ASCII letter's index in KINDS as a numpy array (len(KINDS) for a letter that is not a kind)."""
    codes = np.full(128, len(KINDS), dtype=np.int64)
    codes[[ord(k) for k in KINDS]] = range(len(KINDS))
    return codes


def _largest_and_kinds(cols: ScheduleColumns) -> tuple[int, int, list[int]]:
    """The largest stage and micro-batch the parts name (-1 when there are none) and the kinds they use
    (indices in KINDS), read from the arrays where numpy made them."""
    if not cols.stage:
        return -1, -1, []
    if cols.arrays is None:
        return max(cols.stage), max(cols.microbatch), sorted(set(cols.kind))
    stage, kind, mb, _ = cols.arrays
    np = runtime.loaded_numpy()
    return int(stage.max()), int(mb.max()), np.flatnonzero(np.bincount(kind)).tolist()


def _slot_lists(table: list, route_of: list[int], cols: ScheduleColumns, n_st: int, always: int, nothing: int):
    """``DependencySlots``' six lists (three inputs, two results, the kind), from the rule's answers
    ``table`` (input 0, input 1, made: for micro-batch 0, by route, stage and kind): each part's answers
    shifted to its micro-batch; an overlapped pair takes its forward's input and result, then its
    backward's. None if a part's stage is not on its micro-batch's route.

    The same arithmetic twice: on numpy arrays where the process has numpy (``runtime.loaded_numpy``),
    part by part otherwise; tests hold the two to the same lists.
    """
    n, pairs = cols.offsets[-1], cols.action[cols.offsets[-1]:]
    fb, fi = ACTION_KINDS.index("FB"), ACTION_KINDS.index("FI")
    np = runtime.loaded_numpy()
    if np is None or cols.arrays is None:
        answers = [table[(route_of[m] * n_st + st) * len(KINDS) + k]
                   for st, k, m in zip(cols.stage, cols.kind, cols.microbatch, strict=True)]
        if None in answers:
            return None
        need0, need1, made = ([a[j] + m + m for a, m in zip(answers, cols.microbatch, strict=True)] for j in range(3))
        lists = [need0[:n], need1[:n], [always] * n, made[:n], [nothing] * n, cols.kind[:n]]
        for j, g in enumerate(pairs, n):  # a pair: its forward has one input, its backward's two follow
            lists[1][g], lists[2][g], lists[4][g] = need0[j], need1[j], made[j]
            lists[5][g] = fi if cols.kind[j] == KINDS.index("I") else fb
        return lists
    stage, kind, mb, action = cols.arrays
    pairs = action[n:]
    answers = np.array(list(chain.from_iterable((-1, -1, -1) if a is None else a for a in table)), dtype=np.int64)
    answers = answers.reshape(-1, 3)[(np.array(route_of, dtype=np.int64)[mb] * n_st + stage) * len(KINDS) + kind]
    if (answers < 0).any():
        return None
    answers += 2 * mb[:, None]
    lists = [answers[:n, 0], answers[:n, 1].copy(), np.full(n, always), answers[:n, 2], np.full(n, nothing),
             kind[:n].copy()]
    lists[1][pairs], lists[2][pairs], lists[4][pairs] = answers[n:, 0], answers[n:, 1], answers[n:, 2]
    lists[5][pairs] = np.where(kind[n:] == KINDS.index("I"), fi, fb)
    return [a.tolist() for a in lists]


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


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
        st, mb, rank_of = part.stage, part.microbatch, self.stage_to_rank
        rule = dependency_rule(part.kind, st, *self._neighbours.get((st, mb), (None, None)))
        return tuple(Dependency(other, kind, mb, rank_of[other] != rank_of[st]) for other, kind in rule)

    def result_key(self, stage: int, kind: str, microbatch: int) -> int:
        """The integer name of a result in ``dependency_plan``: ``2 * (stage * M + microbatch)``, +1 for GRAD."""
        return 2 * (stage * self.n_microbatches + microbatch) + (kind == GRAD)

    def result_of_key(self, key: int) -> tuple[int, str, int]:
        """Inverse of ``result_key``: (stage, ACT or GRAD, microbatch)."""
        stage, mb = divmod(key // 2, self.n_microbatches)
        return stage, (GRAD if key % 2 else ACT), mb

    @cached_property
    def route_numbers(self) -> tuple[tuple[tuple[int, ...], ...], list[int]]:
        """(the distinct routes, in order of first use; each micro-batch's route as its number among them):
        the bulk checks and plans work per route, and schedules have one or two, shared by every micro-batch."""
        distinct: dict[tuple[int, ...], int] = {}
        numbers = [distinct.setdefault(route, len(distinct)) for route in self.routes]
        return tuple(distinct), numbers

    @cached_property
    def columns(self) -> ScheduleColumns | None:
        """Every action's parts in flat lists (``ScheduleColumns``), read once for ``dependency_slots`` and
        the validator's bulk check. None when an entry of a list is not an Action or an OverlappedAction
        (the validator names it)."""
        flat = list(chain.from_iterable(self.actions))
        types = list(map(type, flat))
        pairs = [] if types.count(Action) == len(flat) else \
            list(compress(range(len(flat)), map(is_not, types, repeat(Action))))  # in C: thousands of actions
        if types.count(OverlappedAction) != len(pairs):
            return None
        backward = [flat[g].backward for g in pairs]
        for g in pairs:
            flat[g] = flat[g].forward
        parts = flat + backward
        # comprehensions: the fastest way to read one attribute of thousands of objects
        stage, mb, kinds = [p.stage for p in parts], [p.microbatch for p in parts], [p.kind for p in parts]
        np, arrays = runtime.loaded_numpy(), None
        try:
            if np is None:
                kind = [_KIND_INDEX[k] for k in kinds]
            else:  # the kinds' letters, read in one go; a letter that is not a kind reads as len(KINDS)
                arrays = (np.array(stage, dtype=np.int64),
                          _kind_codes(np)[np.frombuffer("".join(kinds).encode("ascii"), dtype=np.uint8)],
                          np.array(mb, dtype=np.int64),
                          np.concatenate([np.arange(len(flat)), np.array(pairs, dtype=np.int64)]))
                kind = arrays[1].tolist()
                if len(kind) != len(parts) or len(KINDS) in kind:
                    return None
        except (KeyError, TypeError, OverflowError, UnicodeError, IndexError):
            return None  # not a kind, or a number too large for an array: the validator names it
        offsets = [0, *accumulate(map(len, self.actions))]
        return ScheduleColumns(offsets, stage, kind, mb, [*range(len(flat)), *pairs], arrays)

    @cached_property
    def dependency_slots(self) -> DependencySlots | None:
        """``dependency_plan`` as flat lists of ints (``DependencySlots``): what the simulator's and the
        deadlock check's loops read. None for a schedule whose parts name stages or micro-batches it does
        not have, or stages off their micro-batch's route (the validator says which).

        The rule is asked once per distinct route, stage and kind (``dependency_rule``); micro-batches
        sharing a route share its answers, shifted by ``2 * microbatch`` (``result_key``).
        """
        cols = self.columns
        n_mb, n_st, rank_of = self.n_microbatches, self.n_stages, self.stage_to_rank
        if cols is None:
            return None
        top_stage, top_mb, used = _largest_and_kinds(cols)
        if top_stage >= n_st or top_mb >= n_mb:
            return None  # a stage or micro-batch that does not exist
        n_keys = self.result_key(n_st + 1, ACT, 0)
        always, nothing = self.result_key(n_st, ACT, 0), self.result_key(n_st, GRAD, 0)
        # per distinct route, stage on it and kind: (slot of input 0, slot of input 1, key made), for
        # micro-batch 0; a stage off the route has None
        distinct, route_of = self.route_numbers
        key = {result: [self.result_key(stage, result, 0) for stage in range(n_st)] for result in (ACT, GRAD)}
        made = [key[MAKES[kind]] if MAKES[kind] else [nothing] * n_st for kind in KINDS]
        table: list[tuple[int, int, int] | None] = [None] * (len(distinct) * n_st * len(KINDS))
        kinds = [(k, KINDS[k]) for k in used]  # the kinds the schedule uses
        for r, route in enumerate(distinct):
            for i, stage in enumerate(route):
                prev, nxt = route[i - 1] if i else None, route[i + 1] if i + 1 < len(route) else None
                for k, kind in kinds:
                    slots = [key[result][other] + (n_keys if rank_of[other] != rank_of[stage] else 0)
                             for other, result in dependency_rule(kind, stage, prev, nxt)]
                    slots += [always] * (2 - len(slots))
                    table[(r * n_st + stage) * len(KINDS) + k] = (slots[0], slots[1], made[k][stage])
        lists = _slot_lists(table, route_of, cols, n_st, always, nothing)
        if lists is None:  # a part off its micro-batch's route
            return None
        return DependencySlots(n_keys, cols.offsets, lists[:3], lists[3:5], lists[5], always, nothing)

    @cached_property
    def dependency_plan(self) -> tuple[tuple[tuple[tuple[tuple[int, bool], ...], tuple[int, ...], str], ...], ...]:
        """Per rank, per action of its list: ``(needs, makes, kind)``, the rule of ``inputs_of`` for all actions.

        ``needs``: the results the action waits for, as (``result_key``, from another rank?); ``makes``: the
        keys of the results it produces (``MAKES``); ``kind``: ``action_kind``. The readable form of
        ``dependency_slots``, from which it is read.
        """
        slots = self.dependency_slots
        if slots is None:
            raise arg.InputError("dependency_plan: an action names a stage or micro-batch its route does not "
                                 "have; validate(schedule) names it.")
        offsets, real = slots.offsets, slots.always  # keys from ``always`` up are outside the pipeline
        (n0, n1, n2), (m0, m1) = slots.needs, slots.makes
        return tuple(
            tuple((tuple((slots.key(s), s >= slots.n_keys) for s in (n0[g], n1[g], n2[g]) if slots.key(s) < real),
                   tuple(k for k in (m0[g], m1[g]) if k < real), ACTION_KINDS[slots.kind[g]])
                  for g in range(offsets[r], offsets[r + 1]))
            for r in range(self.n_ranks))

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
