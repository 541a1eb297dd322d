"""Simulate a pipeline schedule under a cost model: ``simulate(schedule, costs) -> Timeline``.

Semantics (the rules a learner can replay with a pencil; DeepSeek-V3 report Sec. 3.2.1 and Table 2):

* Each rank executes its action list in order, one action at a time.
* An action starts when its rank is free and its inputs have arrived. An input arrives at its producer's end,
  plus the point-to-point latency ``p2p`` when the producer is on another rank.
* F of stage s for micro-batch m needs F of the stage before s on m's route (none for the first stage).
* B or I of stage s for m needs the B or I of the stage after s on the route (the last stage, which holds the
  loss, needs nothing from outside) and its own F of m.
* W of stage s for m needs its own I of m.
* Durations (``CostModel.duration``): F, B (full backward), W, I = B - W (``B_input``). An overlapped pair
  lasts ``FB`` (F&B) and both of its results are ready at its end (if its backward is an I, it lasts
  max(F, B - W, FB - W)). With ``chunk_scale`` each action's costs are its model chunk's.
* Optional expert-parallel all-to-all (``dispatch`` before a chunk's MLP, ``combine`` after it; a backward
  runs their gradients, which cost the same): for a plain F, B or I it blocks the rank (the action lasts its
  compute plus dispatch plus combine); inside an F&B pair each chunk's all-to-all runs while the partner
  chunk computes, so it is hidden up to the partner's compute time and only the excess is added. Hiding
  costs compute: the pair computes on the SMs the communication leaves (``comm_share``, 20 of 132 by
  default), so it lasts ``pair_slowdown`` times its F&B. W has no all-to-all. These communications appear
  as ``CommInterval`` rows so plots can draw what DualPipe hides. ``action_length`` is the whole rule.
* The time budget: each interval records the all-to-all its rank waited for inside it (``comm_wait``) and
  the time the rank waited before it for a message in flight (``p2p_wait``: the inputs were all produced,
  one had not arrived). ``Timeline.budget(rank)`` splits the step into compute + exposed communication +
  idle = makespan, exactly.

The simulator is event driven and linear in the number of actions: every action is placed once, when the
last of its inputs is known.

Command line::

    python -m utils.simulate dualpipe --ranks 8 --microbatches 16 --F 1 --B 2 --W 1 --FB 3 [--p2p 0] [--json]
    python -m utils.simulate 1f1b-overlap --ranks 4 --microbatches 8 --dispatch 0.5 --combine 0.5 --json
    python -m utils.simulate dualpipe --ranks 4 --microbatches 8 --dispatch 0.5 --combine 0.5 --comm-share 0
    python -m utils.simulate 1f1b --ranks 4 --microbatches 8 --chunk-scale 1.3,1,1,1.4

``--json`` prints the makespan, worst idle, bubble ratio, the budget's shares of all rank-time, and per rank:
busy, idle, peak_activations, param_copies, compute and comm_exposed (compute + comm_exposed + idle =
makespan).
"""

from __future__ import annotations

import json
import sys
from functools import partial
from operator import sub

from utils import inputs as arg
from utils.pipeline import runtime
from utils.pipeline.costs import COMM_SHARE, CostModel
from utils.pipeline.registry import SCHEDULE_NAMES, make_schedule
from utils.pipeline.schedule import ACT, ACTION_KINDS, ActionLike, Schedule, action_parts
from utils.pipeline.timeline import CommInterval, LazyComms, SimulatedRows, Timeline
from utils.pipeline.validation import check_structure, validate


def simulate(schedule: Schedule, costs: CostModel, check: bool = True) -> Timeline:
    """Run ``schedule`` under ``costs`` (rules in this module's docstring) and return its Timeline.

    With ``check`` (default) the schedule's structure is validated first, so a broken schedule raises
    ValueError naming the rank, the action and the rule (``utils.pipeline.validation.validate``). With or without it, a
    schedule that cannot finish raises ValueError with the validator's explanation of the deadlock.
    """
    arg.instance(schedule, "schedule", Schedule, "a Schedule (e.g. make_schedule('1f1b', 4, 8))", where="simulate")
    arg.instance(costs, "costs", CostModel, "a CostModel (e.g. CostModel(F=1, B=2, W=1))", where="simulate")
    check = arg.flag(check, "check", where="simulate")
    # no reference cycles are made: the cyclic collector would only rescan the heap (utils.pipeline.runtime)
    if costs.chunk_scale is not None and len(costs.chunk_scale) != schedule.n_chunks:
        raise arg.InputError(
            f"simulate: costs.chunk_scale has {len(costs.chunk_scale)} factors, but {schedule.name} cuts the "
            f"model into {schedule.n_chunks} chunks: give one factor per model chunk (Schedule.n_chunks).")
    with runtime.cyclic_gc_paused():
        if check:
            check_structure(schedule)  # the deadlock rule is checked by running it, below
        return _simulate(schedule, costs)


def _simulate(schedule: Schedule, costs: CostModel) -> Timeline:
    """The event-driven simulation of ``simulate`` (rules in this module's docstring)."""
    # the dependency rule for every action, as flat lists (Schedule.dependency_slots); kept on the
    # (immutable) schedule, so re-running it under other costs (a widget's slider) skips that pass
    slots = schedule.dependency_slots
    if slots is None:  # an action off its route, or a stage that does not exist: the validator says which
        validate(schedule)
        raise ValueError("The schedule names stages or micro-batches it does not have.")
    n_ranks, n_keys, offsets = schedule.n_ranks, slots.n_keys, slots.offsets
    need0, need1, need2 = slots.needs
    make0, make1 = slots.makes
    kind, p2p = slots.kind, costs.p2p
    length = _action_lengths(schedule, slots, costs)  # how long each action holds its rank

    # when each input is there, by slot (DependencySlots): its producer's end, plus p2p where the slot is
    # another rank's copy (-1: not yet made)
    arrival = [-1.0] * (2 * n_keys)
    arrival[slots.always:n_keys:2] = [0.0] * schedule.n_microbatches  # the inputs that are always there
    waiting: list[list[int] | None] = [None] * n_keys  # by result key: the ranks blocked on it
    free = [0.0] * n_ranks
    pos = offsets[:-1]  # per rank, its next action (actions are numbered rank by rank)
    starts = [0.0] * offsets[-1]
    ends = [0.0] * offsets[-1]

    # Each rank runs its list until an input is missing; the rank that makes it wakes it up. The loop is
    # spelled out (no inner loops, no tuples): it runs once per action.
    todo = list(range(n_ranks))
    while todo:
        rank = todo.pop()
        g, t_free, last = pos[rank], free[rank], offsets[rank + 1]
        while g < last:
            ready = t_free  # the latest of: the rank is free, each input has arrived (-1: not yet made)
            t = arrival[need0[g]]
            if t > ready:
                ready = t
            elif t < 0:
                missing = need0[g]
                break
            t = arrival[need1[g]]
            if t > ready:
                ready = t
            elif t < 0:
                missing = need1[g]
                break
            k = kind[g]
            if k > _PLAIN:  # an overlapped pair: its backward's second input, and its second result below
                t = arrival[need2[g]]
                if t > ready:
                    ready = t
                elif t < 0:
                    missing = need2[g]
                    break
            t_free = ready + length[g]
            starts[g] = ready
            ends[g] = t_free
            key = make0[g]
            arrival[key] = t_free
            arrival[key + n_keys] = t_free + p2p
            if waiting[key]:
                todo.extend(waiting[key])
                waiting[key] = None
            if k > _PLAIN:
                key = make1[g]
                arrival[key] = t_free
                arrival[key + n_keys] = t_free + p2p
                if waiting[key]:
                    todo.extend(waiting[key])
                    waiting[key] = None
            g += 1
        else:
            pos[rank], free[rank] = g, t_free
            continue
        key = missing if missing < n_keys else missing - n_keys  # wait until it is made (wherever it waits)
        if waiting[key] is None:
            waiting[key] = [rank]
        else:
            waiting[key].append(rank)
        pos[rank], free[rank] = g, t_free
    if any(pos[r] < offsets[r + 1] for r in range(n_ranks)):
        validate(schedule)  # explains the deadlock (which ranks wait for what) in the learner's words
        stuck = [f"rank {r} at {schedule.actions[r][pos[r] - offsets[r]]}" for r in range(n_ranks)
                 if pos[r] < offsets[r + 1]]
        raise ValueError(
            "The schedule cannot finish: every unfinished rank waits for an input; " + ", ".join(stuck)
        )
    comm_wait, p2p_wait = _budget_waits(schedule, slots, arrival, starts, ends, costs, length)
    intervals = SimulatedRows(schedule.actions, offsets, starts, ends, comm_wait, p2p_wait)  # Intervals on first read
    comms = (  # made on first use (LazyComms): only pictures read them
        LazyComms(partial(_comms, schedule, slots, costs, intervals, arrival))
        if p2p > 0 or costs.dispatch + costs.combine > 0 else ()
    )
    return Timeline(schedule, intervals, comms=comms, time_unit="time units")


_PLAIN = ACTION_KINDS.index("W")  # kinds above it are overlapped pairs (ACTION_KINDS)


def _budget_waits(schedule, slots, arrival, starts, ends, costs: CostModel, length) -> tuple[list[float] | None, ...]:
    """Every action's waits for the time budget (``utils.pipeline.timeline``): ``comm_wait``, the all-to-all
    it waits for inside it (the part of its length beyond ``costs.duration``), and ``p2p_wait``, the time
    before it when its inputs were all produced but one was still in flight (p2p latency).

    None for a column that is 0 throughout: without all-to-all, and without p2p latency (the common case
    costs nothing).
    """
    comm = None
    if costs.all_to_all > 0:
        comm = list(map(sub, length, _per_action(schedule, slots, costs, CostModel.duration)))
    if costs.p2p <= 0:
        return comm, None
    first = set(slots.offsets)
    in_flight = []
    for g, start in enumerate(starts):
        produced = 0.0 if g in first else ends[g - 1]  # when the rank was free, as in the simulation's loop
        for slot in (slots.needs[0][g], slots.needs[1][g], slots.needs[2][g]):
            made = arrival[slots.key(slot)]  # the producer's end (0 for an input that is always there)
            if made > produced:
                produced = made
        in_flight.append(start - produced)
    return comm, in_flight


def action_length(costs: CostModel, action: ActionLike | str, stage_to_chunk=None) -> float:
    """How long ``action`` holds its rank: ``CostModel.length`` (its compute plus the all-to-all it does not
    hide), the rule the simulator places every action by."""
    return costs.length(action, stage_to_chunk)


def _action_lengths(schedule: Schedule, slots, costs: CostModel) -> list[float]:
    """``action_length`` of every action, in the slots' rank-by-rank order."""
    return _per_action(schedule, slots, costs, action_length)


def _per_action(schedule: Schedule, slots, costs: CostModel, rule) -> list[float]:
    """``rule(costs, action, stage_to_chunk)`` of every action (``action_length`` or ``CostModel.duration``),
    in the slots' rank-by-rank order: asked once per kind for a uniform model (a kind has one price), action
    by action with ``chunk_scale``."""
    if costs.chunk_scale is None:
        by_kind = [rule(costs, k) for k in ACTION_KINDS]
        return [by_kind[k] for k in slots.kind]
    chunk_of = schedule.stage_to_chunk
    return [rule(costs, a, chunk_of) for row in schedule.actions for a in row]


def _comms(schedule: Schedule, slots, costs: CostModel, intervals, arrival) -> tuple[CommInterval, ...]:
    """The p2p transfers and all-to-alls to draw (timing is already decided; this is for the pictures)."""
    a2a = costs.all_to_all
    comms: list[CommInterval] = []
    for rank, row in enumerate(intervals):
        was_free = 0.0
        for g, iv in enumerate(row, slots.offsets[rank]):
            action, start, end = iv.action, iv.start, iv.end
            parts = action_parts(action)
            if costs.p2p > 0:
                for slot in (slots.needs[0][g], slots.needs[1][g], slots.needs[2][g]):
                    if slot < slots.n_keys:  # only the inputs that travel from another rank
                        continue
                    key = slots.key(slot)
                    other, kind, mb = schedule.result_of_key(key)
                    sent = arrival[key]
                    what = f"{other}F{mb}" if kind == ACT else f"gradient of {other}:{mb}"
                    arrive = sent + costs.p2p
                    comms.append(CommInterval(rank, f"p2p {what}", sent, arrive, arrive <= was_free))
            was_free = end
            if a2a <= 0 or (len(parts) == 1 and action.kind == "W"):
                continue
            if len(parts) == 1:
                half = (end - start - a2a) / 2  # attention, all-to-all, MLP, all-to-all
                if action.kind == "F":
                    first, second, c1 = "dispatch", "combine", costs.dispatch
                else:
                    first, second, c1 = "combine (grad)", "dispatch (grad)", costs.combine
                t = start + half
                comms.append(CommInterval(rank, f"{first} {action}", t, t + c1, False))
                comms.append(CommInterval(rank, f"{second} {action}", t + c1 + half, end, False))
                continue
            compute = costs.duration(action, schedule.stage_to_chunk)  # no excess beyond it (sums of floats)
            hidden = end - start <= compute + 1e-9 * max(1.0, compute)
            t = start
            for part in parts:
                comms.append(CommInterval(rank, f"all-to-all {part}", t, t + a2a, hidden))
                t += a2a
    return tuple(comms)


def main(argv: list[str] | None = None) -> int:
    """Command line: simulate a named schedule and print a table and an ASCII timeline (or JSON).

    Bad input gives exit status 2 and one line ``error: <the rule>`` on stderr."""
    return arg.run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = arg.ArgumentParser(prog="python -m utils.simulate", description=main.__doc__)
    parser.add_argument("name", help=", ".join(SCHEDULE_NAMES))
    parser.add_argument("--ranks", type=int, required=True)
    parser.add_argument("--microbatches", type=int, required=True)
    for flag, default in (
        ("F", 1.0),
        ("B", 2.0),
        ("W", 1.0),
        ("FB", None),
        ("p2p", 0.0),
        ("dispatch", 0.0),
        ("combine", 0.0),
    ):
        parser.add_argument(f"--{flag}", type=float, default=default)
    add_overlap_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON (makespan and per-rank numbers)")
    args = parser.parse_args(argv)
    costs = CostModel(args.F, args.B, args.W, args.FB, args.p2p, args.dispatch, args.combine,
                      comm_share=args.comm_share, chunk_scale=chunk_factors(args.chunk_scale))
    timeline = simulate(make_schedule(args.name, args.ranks, args.microbatches), costs)
    rows = timeline.summary()
    if args.json:
        print(
            json.dumps(
                {
                    "schedule": args.name,
                    "makespan": timeline.makespan,
                    "worst_idle": timeline.worst_idle,
                    "bubble_ratio": timeline.bubble_ratio,
                    "budget_shares": timeline.budget_shares(),
                    "comm_share": costs.comm_share,
                    "chunk_scale": list(costs.chunk_scale) if costs.chunk_scale is not None else None,
                    "ranks": rows,
                },
                indent=1,
            )
        )
        return 0
    shares = timeline.budget_shares()
    print(
        f"{args.name}: makespan {timeline.makespan:g}, worst idle {timeline.worst_idle:g}, "
        f"bubble ratio {timeline.bubble_ratio:.3f}; rank-time: compute {shares['compute']:.1%}, exposed "
        f"communication {shares['comm_exposed']:.1%}, idle {shares['idle']:.1%}"
    )
    print(f"{'rank':>4} {'compute':>8} {'comm exp':>8} {'idle':>8} {'busy':>8} {'peak act':>8} {'params':>6}")
    for row in rows:
        print(
            f"{row['rank']:>4} {row['compute']:>8g} {row['comm_exposed']:>8g} {row['idle']:>8g} "
            f"{row['busy']:>8g} {row['peak_activations']:>8} {row['param_copies']:>6}"
        )
    print(ascii_timeline(timeline))
    return 0


def add_overlap_arguments(parser) -> None:
    """``--comm-share`` and ``--chunk-scale``, shared by the command lines that take a cost model."""
    parser.add_argument("--comm-share", type=float, default=COMM_SHARE,
                        help="share of compute a pair gives up while it hides communication (default 20/132, "
                             "DeepSeek-V3's SMs for the all-to-all; 0: overlap is free); plain actions unaffected")
    parser.add_argument("--chunk-scale", default=None, metavar="S0,S1,...",
                        help="one factor per model chunk multiplying its F, B and W (default: all 1)")


def chunk_factors(text: str | None) -> tuple[float, ...] | None:
    """``--chunk-scale``'s value: comma-separated numbers (their range is CostModel's to check)."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise arg.InputError(f"--chunk-scale takes comma-separated numbers, one per model chunk (e.g. "
                             f"1.3,1,1,1.4); got {text!r}.") from None


def ascii_timeline(timeline: Timeline, width: int = 100) -> str:
    """One text row per rank: each column a slice of time, the letter of the action kind running then
    (F, B, I, W; X for an overlapped pair), '.' when idle."""
    arg.instance(timeline, "timeline", Timeline, "a Timeline (from simulate or execute)", where="ascii_timeline")
    width = arg.whole(width, "width", low=1, high=1000, where="ascii_timeline",
                      why="the number of text columns of the chart")
    span = timeline.makespan
    if span <= 0:
        return ""
    scale = width / span
    lines = []
    for r, row in enumerate(timeline.intervals):
        cells = ["."] * width
        for iv in row:
            a, b = (
                int(round((iv.start - timeline.start) * scale)),
                int(round((iv.end - timeline.start) * scale)),
            )
            mark = "X" if iv.kind == "FB" else iv.kind
            for c in range(a, max(b, a + 1)):
                if c < width:
                    cells[c] = mark
        lines.append(f"rank {r:>2} |" + "".join(cells) + "|")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
