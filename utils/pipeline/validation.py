"""Check that a pipeline schedule can run, and say in plain words why not.

``validate(schedule)`` (also reachable as ``utils.schedules.validate``) raises ``ValueError`` on the first
broken rule, naming the rank, the action and the rule. The rules, in the order they are checked:

1. shape: one action list per rank; stages placed on existing ranks; one route per micro-batch;
2. placement: every action names a stage of its micro-batch's route, on the rank that holds that stage;
3. counts: each micro-batch runs every stage of its route's F exactly once, and exactly one backward: a full
   B, or an I (backward for input) followed later by its W (backward for weights); never both B and I;
4. order on a rank: F before its B/I, I before its W, and the stages a rank holds in route order (forward
   down the route, backward up it);
5. no deadlock: when every rank runs its list in order, each action waiting until the action before it on
   the route has produced its input, every rank reaches the end of its list.

Where numpy is loaded, rules 2-4 are first checked for all actions at once (``Schedule.columns``); a
schedule that fails there, or any schedule without numpy, is walked action by action, which finds the
first broken rule and names it. Ground layer: imports only ``utils.pipeline.schedule`` (and ``runtime``).
"""

from __future__ import annotations

import functools
import weakref

from utils import inputs as arg
from utils.pipeline import runtime
from utils.pipeline.schedule import ACT, KIND_NAMES, Action, OverlappedAction, Schedule


def _fail(rank: int | None, action, rule: str, why: str) -> None:
    where = f"rank {rank}" if rank is not None else "schedule"
    what = f", action {action}" if action is not None else ""
    raise ValueError(f"{where}{what}: rule '{rule}' broken: {why}")


def _describe(stage: int, kind: str, mb: int) -> str:
    return f"{stage}{kind}{mb} ({KIND_NAMES[kind]} of stage {stage} for micro-batch {mb})"


def validate(schedule: Schedule) -> None:
    """Raise ValueError naming the rank, action and broken rule if ``schedule`` cannot run as written."""
    check_structure(schedule)
    _check_deadlock(schedule)


def check_structure(schedule: Schedule) -> None:
    """Rules 1-4 (everything but the deadlock check), in time linear in the number of actions.

    A schedule is immutable, so one that passed stays passed: the same object is checked once (a widget
    re-simulating it under other costs skips the check), a new or changed one (``dataclasses.replace``)
    again.
    """
    if not isinstance(schedule, Schedule):
        raise arg.InputTypeError(f"validate expects a Schedule (e.g. make_schedule('1f1b', 4, 8)); got "
                                 f"{arg.describe(schedule)}.")
    _check_structure_once(_ThisObject(schedule))


class _ThisObject:
    """A key for ``functools.lru_cache`` that means this very object (not an equal one): it hashes and
    compares by identity through a weak reference, so the cache never keeps a schedule alive, and a new
    schedule that happens to reuse a dead one's id is not taken for it."""

    __slots__ = ("ref", "id")

    def __init__(self, obj):
        self.ref, self.id = weakref.ref(obj), id(obj)

    def __hash__(self) -> int:
        return self.id

    def __eq__(self, other) -> bool:
        return isinstance(other, _ThisObject) and self.ref() is not None and self.ref() is other.ref()


@functools.lru_cache(maxsize=32)
def _check_structure_once(key: _ThisObject) -> None:
    schedule = key.ref()
    _check_shape(schedule)
    if not _rules_hold(schedule):
        check_structure_by_action(schedule)  # some rule is broken: find the first one and name it


def check_structure_by_action(schedule: Schedule) -> None:
    """Rules 1-4 walked action by action in pure Python, raising at the first broken rule with its message.

    ``check_structure`` first checks rules 2-4 for all actions at once (where numpy is loaded) and walks
    only a schedule that fails there, to say what is wrong. Public so tests can hold the two to the same
    verdict (and the simulator's benchmark can time the walk: the whole check before the bulk pass).
    """
    _check_shape(schedule)
    where = _check_placement(schedule)
    _check_counts(schedule, where)
    _check_order(schedule, where)


def _rules_hold(s: Schedule) -> bool:
    """Rules 2-4 for all parts at once (numpy, on ``Schedule.columns``): True when every one holds.

    False only says that one may be broken, or that numpy is not loaded (``runtime.loaded_numpy``: a
    command line walks the lists rather than import it); ``check_structure_by_action`` then decides and
    names the rule. Each test here is one of the walk's, stated for every (stage, micro-batch) at once, so
    a schedule passes here exactly when it passes there (``tests/test_validate.py`` holds them to it).
    """
    np = runtime.loaded_numpy()
    if np is None or s.dependency_slots is None or s.columns.arrays is None:
        return False  # (dependency_slots is None: a stage or micro-batch that does not exist, or off its route)
    cols, n_mb, n_st = s.columns, s.n_microbatches, s.n_stages
    stage, kind, mb, action = cols.arrays
    # placement: every part on the rank that holds its stage, at most once
    rank = np.repeat(np.arange(s.n_ranks), np.diff(cols.offsets))[action]
    if not (np.asarray(s.stage_to_rank)[stage] == rank).all():
        return False
    where = np.full((len(KIND_NAMES), n_st, n_mb), -1)  # each part's action, by kind, stage and micro-batch
    where[kind, stage, mb] = action
    if np.count_nonzero(where >= 0) != len(stage):
        return False
    # counts and order, on every stage of every micro-batch's route: an F, then a B or an I and a later W
    f, b, i, w = where
    back = np.maximum(b, i)
    ok = (f >= 0) & ((b >= 0) != (i >= 0)) & ((i >= 0) == (w >= 0)) & (f < back) & ((i < 0) | (w > back))
    distinct, route_of = s.route_numbers
    on_route = np.zeros((len(distinct), n_st), dtype=bool)  # the stages of each distinct route
    for r, route in enumerate(distinct):
        on_route[r, list(route)] = True
    if not ok[on_route[route_of].T].all():
        return False
    return _stage_order_holds(s, f, back)


def _stage_order_holds(s: Schedule, f, back) -> bool:
    """The last rule of ``_check_order`` for all micro-batches at once: where a rank holds stages a, then b,
    of a route, a's F comes no later than b's and b's backward no later than a's."""
    np = runtime.loaded_numpy()
    distinct, route_of = s.route_numbers
    for number, route in enumerate(distinct):
        mbs = np.flatnonzero(np.array(route_of) == number) if len(distinct) > 1 else slice(None)
        last: dict[int, int] = {}  # rank -> the previous stage of this route it holds
        before, after = [], []
        for stage in route:
            rank = s.stage_to_rank[stage]
            if rank in last:
                before.append(last[rank])
                after.append(stage)
            last[rank] = stage
        a, b = f[before][:, mbs], f[after][:, mbs]
        if (a > b).any() or (back[after][:, mbs] > back[before][:, mbs]).any():
            return False
    return True


def _check_shape(s: Schedule) -> None:
    if len(s.actions) != s.n_ranks:
        _fail(
            None,
            None,
            "one action list per rank",
            f"n_ranks is {s.n_ranks} but there are {len(s.actions)} action lists.",
        )
    if len(s.stage_to_chunk) != len(s.stage_to_rank):
        _fail(
            None,
            None,
            "every stage has a rank and a chunk",
            f"stage_to_rank has {len(s.stage_to_rank)} entries but stage_to_chunk has "
            f"{len(s.stage_to_chunk)}.",
        )
    for stage, rank in enumerate(s.stage_to_rank):
        if not 0 <= rank < s.n_ranks:
            _fail(
                None,
                None,
                "stages live on existing ranks",
                f"stage {stage} is placed on rank {rank}, but ranks are 0..{s.n_ranks - 1}.",
            )
    if len(s.routes) != s.n_microbatches:
        _fail(
            None,
            None,
            "one route per micro-batch",
            f"{s.n_microbatches} micro-batches but {len(s.routes)} routes.",
        )
    n_stages, checked = s.n_stages, set()
    for mb, route in enumerate(s.routes):
        if route in checked:  # micro-batches share a few routes: check each once
            continue
        checked.add(route)
        if not route or len(set(route)) != len(route) or not all(0 <= st < n_stages for st in route):
            _fail(
                None,
                None,
                "a route is a list of distinct existing stages",
                f"micro-batch {mb} has route {route}; stages are 0..{s.n_stages - 1}.",
            )


def _check_placement(s: Schedule) -> dict[str, list[int]]:
    """Every part on the right rank and route, at most once.

    Returns, per kind, a list indexed by ``stage * n_microbatches + mb`` of the part's position in its rank's
    list (-1 when absent). A pair's two parts share a position.
    """
    n_mb, n_stages, stage_rank = s.n_microbatches, s.n_stages, s.stage_to_rank
    where = {k: [-1] * (n_stages * n_mb) for k in "FBIW"}
    route_sets: dict[tuple[int, ...], frozenset[int]] = {}
    on_route = [route_sets.setdefault(r, frozenset(r)) for r in s.routes]
    for rank, acts in enumerate(s.actions):
        for i, action in enumerate(acts):
            if type(action) is Action:
                parts = (action,)
            elif type(action) is OverlappedAction:
                parts = action.parts
            else:
                _fail(
                    rank,
                    action,
                    "actions are Action or OverlappedAction",
                    f"position {i} holds a {type(action).__name__}.",
                )
            for part in parts:
                st, kind, mb = part.stage, part.kind, part.microbatch
                if mb >= n_mb:
                    _fail(
                        rank,
                        action,
                        "micro-batches exist",
                        f"micro-batch {mb} does not exist: there are {n_mb} (0..{n_mb - 1}).",
                    )
                if st >= n_stages:
                    _fail(rank, action, "stages exist", f"stage {st} does not exist: there are {n_stages}.")
                if stage_rank[st] != rank:
                    _fail(
                        rank,
                        action,
                        "an action runs on the rank that holds its stage",
                        f"stage {st} lives on rank {stage_rank[st]}, which holds its parameters; rank {rank} "
                        f"cannot run it.",
                    )
                if st not in on_route[mb]:
                    _fail(
                        rank,
                        action,
                        "a micro-batch only visits the stages of its route",
                        f"micro-batch {mb} goes through stages {list(s.route_of(mb))}, not stage {st}.",
                    )
                column = where[kind]
                idx = st * n_mb + mb
                if column[idx] >= 0:
                    _fail(
                        rank,
                        action,
                        f"each {KIND_NAMES[kind]} runs exactly once per stage and micro-batch",
                        f"{_describe(st, kind, mb)} appears twice (positions {column[idx]} and {i} of rank "
                        f"{rank}'s list).",
                    )
                column[idx] = i
    return where


def _check_counts(s: Schedule, where) -> None:
    n_mb = s.n_microbatches
    f_at, b_at, i_at, w_at = where["F"], where["B"], where["I"], where["W"]
    for mb, route in enumerate(s.routes):
        for st in route:
            idx = st * n_mb + mb
            if (
                f_at[idx] >= 0
                and (b_at[idx] >= 0) != (i_at[idx] >= 0)
                and (i_at[idx] >= 0) == (w_at[idx] >= 0)
            ):
                continue  # the common case: F, then exactly one of B or I+W
            rank = s.stage_to_rank[st]
            if f_at[idx] < 0:
                _fail(
                    rank,
                    None,
                    "each micro-batch runs every stage of its route's F exactly once",
                    f"{_describe(st, 'F', mb)} is missing from rank {rank}'s list.",
                )
            if b_at[idx] >= 0 and i_at[idx] >= 0:
                _fail(
                    rank,
                    f"{st}I{mb}",
                    "a stage runs either a full B or an I+W pair, not both",
                    f"{st}B{mb} already computes every gradient of stage {st} for micro-batch {mb}; "
                    f"{st}I{mb} would compute the input gradient twice.",
                )
            if b_at[idx] < 0 and i_at[idx] < 0:
                _fail(
                    rank,
                    None,
                    "every forward has a backward",
                    f"micro-batch {mb} runs F on stage {st} but neither {st}B{mb} (full backward) nor "
                    f"{st}I{mb} "
                    f"(backward for input): its gradient would never reach the earlier stages.",
                )
            if i_at[idx] >= 0:
                _fail(
                    rank,
                    f"{st}I{mb}",
                    "every I has a W",
                    f"{st}I{mb} computes only the input gradient; without {st}W{mb} the weight gradient of "
                    f"stage "
                    f"{st} for micro-batch {mb} is never computed.",
                )
            _fail(
                rank,
                f"{st}W{mb}",
                "a W follows an I, not a full B",
                f"{st}B{mb} already computed the weight gradient, so {st}W{mb} has nothing left to do.",
            )


def _check_order(s: Schedule, where) -> None:
    n_mb = s.n_microbatches
    f_at, b_at, i_at, w_at = where["F"], where["B"], where["I"], where["W"]
    for mb, route in enumerate(s.routes):
        for st in route:
            idx = st * n_mb + mb
            rank = s.stage_to_rank[st]
            back = b_at[idx] if b_at[idx] >= 0 else i_at[idx]
            kind = "B" if b_at[idx] >= 0 else "I"
            if f_at[idx] == back:
                _fail(
                    rank,
                    s.actions[rank][back],
                    "F before its B/I",
                    "a pair cannot run the forward and backward of the same stage and micro-batch together: "
                    "the "
                    "backward needs the forward's activations.",
                )
            if f_at[idx] > back:
                _fail(
                    rank,
                    s.actions[rank][back],
                    "F before its B/I",
                    f"the backward of stage {st} for micro-batch {mb} needs the activations its forward "
                    f"saves, "
                    f"but {st}F{mb} comes later in rank {rank}'s list (position {f_at[idx]}, after {back}).",
                )
            if kind == "I" and w_at[idx] <= back:
                _fail(
                    rank,
                    s.actions[rank][w_at[idx]],
                    "I before its W",
                    f"the weight gradient needs the output gradient that {st}I{mb} receives, but {st}I{mb} "
                    f"comes "
                    f"later in rank {rank}'s list (position {back}, after {w_at[idx]}).",
                )
        # the stages a rank holds, in route order: forwards down the route, backwards up it
        last: dict[int, int] = {}  # rank -> the previous stage of this route it holds
        for b in route:
            rank = s.stage_to_rank[b]
            a = last.get(rank)
            last[rank] = b
            if a is None:
                continue
            ia, ib = a * n_mb + mb, b * n_mb + mb
            if f_at[ia] > f_at[ib]:
                _fail(
                    rank,
                    f"{b}F{mb}",
                    "stages in pipeline order along the route",
                    f"stage {b} comes after stage {a} on micro-batch {mb}'s route, so its forward needs "
                    f"{a}F{mb} to have run, yet rank {rank} runs {b}F{mb} first.",
                )
            back_a = b_at[ia] if b_at[ia] >= 0 else i_at[ia]
            back_b = b_at[ib] if b_at[ib] >= 0 else i_at[ib]
            if back_b > back_a:
                _fail(
                    rank,
                    f"{a}{'B' if b_at[ia] >= 0 else 'I'}{mb}",
                    "stages in pipeline order along the route",
                    f"the backward goes up the route, so stage {a} needs the gradient that stage {b} "
                    f"computes "
                    f"for micro-batch {mb}, yet rank {rank} runs stage {a}'s backward first.",
                )


def _check_deadlock(s: Schedule) -> None:
    """Run every rank's list in order with dependency resolution only (no times); explain any stall.

    An action is ready when the results it needs exist (``Schedule.dependency_slots``: the one dependency
    rule, ``utils.pipeline.actions.dependency_rule``, for every action).
    """
    slots = s.dependency_slots
    offsets, makes = slots.offsets, slots.makes
    done = bytearray(slots.n_keys)
    done[slots.always::2] = b"\1" * s.n_microbatches  # the inputs that are always there
    waiting: dict[int, list[int]] = {}
    pos = offsets[:-1]  # per rank, the index of its next action (actions are numbered rank by rank)
    blocked_on: dict[int, int] = {}

    todo = list(range(s.n_ranks))
    while todo:
        rank = todo.pop()
        end = offsets[rank + 1]
        while pos[rank] < end:
            g = pos[rank]
            missing = -1
            for slot in (slots.needs[0][g], slots.needs[1][g], slots.needs[2][g]):
                key = slots.key(slot)  # here or once it reached another rank: made either way
                if not done[key]:
                    missing = key
                    break
            if missing >= 0:
                blocked_on[rank] = missing
                waiting.setdefault(missing, []).append(rank)
                break
            pos[rank] += 1
            for key in (makes[0][g], makes[1][g]):
                done[key] = 1
                woken = waiting.pop(key, None)
                if woken:
                    todo.extend(woken)
    pos = [p - offsets[r] for r, p in enumerate(pos)]  # positions in each rank's list, for the message
    stuck = [r for r in range(s.n_ranks) if pos[r] < len(s.actions[r])]
    if not stuck:
        return

    def producer(key: int) -> int:
        return s.stage_to_rank[s.result_of_key(key)[0]]

    def waits_for(rank: int) -> str:
        st, kind, mb = s.result_of_key(blocked_on[rank])
        name = f"{st}F{mb}'s output" if kind == ACT else f"the input gradient from {st}B{mb} or {st}I{mb}"
        return f"rank {rank} waits at {s.actions[rank][pos[rank]]} for {name} (rank {producer(blocked_on[rank])})"

    # follow who-waits-for-whom from the first stuck rank until a rank repeats: that is the cycle
    chain, rank = [], stuck[0]
    while rank not in chain:
        chain.append(rank)
        rank = producer(blocked_on[rank])
    cycle = chain[chain.index(rank) :]
    _fail(
        cycle[0],
        s.actions[cycle[0]][pos[cycle[0]]],
        "no deadlock when ranks run their lists in order",
        f"ranks {', '.join(map(str, cycle))} wait for each other forever: "
        + "; ".join(waits_for(r) for r in cycle)
        + ". Stuck ranks and their next actions: "
        + ", ".join(f"rank {r}: {s.actions[r][pos[r]]}" for r in stuck)
        + ".",
    )
