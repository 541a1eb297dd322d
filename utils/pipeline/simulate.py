"""Simulate a pipeline schedule under a cost model: ``simulate(schedule, costs) -> Timeline``.

Semantics (the rules a learner can replay with a pencil; DeepSeek-V3 report Sec. 3.2.1 and Table 2):

* Each rank executes its action list in order, one action at a time.
* An action starts when its rank is free and its inputs have arrived. An input arrives at its producer's end,
  plus the point-to-point latency ``p2p`` when the producer is on another rank.
* F of stage s for micro-batch m needs F of the stage before s on m's route (none for the first stage).
* B or I of stage s for m needs the B or I of the stage after s on the route (the last stage, which holds the
  loss, needs nothing from outside) and its own F of m.
* W of stage s for m needs its own I of m.
* Durations: F, B (full backward), W, I = B - W (``B_input``). An overlapped pair lasts ``FB`` (F&B) and both
  of its results are ready at its end (if its backward is an I, it lasts max(F, B - W, FB - W)).
* Optional expert-parallel all-to-all (``dispatch`` before a chunk's MLP, ``combine`` after it; a backward
  runs their gradients, which cost the same): for a plain F, B or I it blocks the rank (the action lasts its
  compute plus dispatch plus combine); inside an F&B pair each chunk's all-to-all runs while the partner
  chunk computes, so it is hidden up to the partner's compute time and only the excess is added. W has no
  all-to-all. These communications appear as ``CommInterval`` rows so plots can draw what DualPipe hides.
* The time budget: each interval records the all-to-all its rank waited for inside it (``comm_wait``) and
  the time the rank waited before it for a message in flight (``p2p_wait``: the inputs were all produced,
  one had not arrived). ``Timeline.budget(rank)`` splits the step into compute + exposed communication +
  idle = makespan, exactly.

The simulator is event driven and linear in the number of actions: every action is placed once, when the
last of its inputs is known.

Command line::

    python -m utils.simulate dualpipe --ranks 8 --microbatches 16 --F 1 --B 2 --W 1 --FB 3 [--p2p 0] [--json]
    python -m utils.simulate 1f1b-overlap --ranks 4 --microbatches 8 --dispatch 0.5 --combine 0.5 --json

``--json`` prints the makespan, worst idle, bubble ratio, the budget's shares of all rank-time, and per rank:
busy, idle, peak_activations, param_copies, compute and comm_exposed (compute + comm_exposed + idle =
makespan).
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys

from utils import inputs as arg
from utils.pipeline.costs import CostModel
from utils.pipeline.registry import SCHEDULE_NAMES, make_schedule
from utils.pipeline.schedule import ACT, Schedule, action_parts
from utils.pipeline.timeline import CommInterval, Interval, Timeline
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
    with _cyclic_gc_paused():
        if check:
            check_structure(schedule)  # the deadlock rule is checked by running it, below
        return _simulate(schedule, costs)


@contextlib.contextmanager
def _cyclic_gc_paused():
    """Pause Python's cyclic garbage collector (if it runs) for the duration of the block.

    The simulation allocates a few hundred thousand small tuples and floats and makes no reference cycles,
    so the collector finds nothing to free; yet every collection it triggers scans the growing plan and, in
    a notebook, the kernel's whole heap (torch, pandas and matplotlib hold about 250,000 tracked objects):
    up to about 1.5x the simulation's own time on a large schedule (``python -m benchmarks simulate``). Pausing it
    here, rather than ``gc.freeze()`` at import, leaves the learner's kernel exactly as it was: memory is
    still freed by reference counting, and the collector resumes when the simulation returns or raises.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _simulate(schedule: Schedule, costs: CostModel) -> Timeline:
    """The event-driven simulation of ``simulate`` (rules in this module's docstring)."""
    n_ranks = schedule.n_ranks
    # the dependency rule, for every action (utils.pipeline.schedule.Schedule.dependency_plan); kept on the
    # (immutable) schedule, so re-running it under other costs (a widget's slider) skips that pass
    plans = schedule.dependency_plan
    length = _lengths(costs)
    p2p = costs.p2p

    # results by integer key (Schedule.result_key); the value is the producer's end time (-1: not yet)
    done_at = [-1.0] * (2 * schedule.n_stages * schedule.n_microbatches)
    waiting: dict[int, list[int]] = {}
    free = [0.0] * n_ranks
    pos = [0] * n_ranks
    starts: list[list[float]] = [[] for _ in range(n_ranks)]
    ends: list[list[float]] = [[] for _ in range(n_ranks)]

    todo = list(range(n_ranks))
    while todo:
        rank = todo.pop()
        plan, i, t_free = plans[rank], pos[rank], free[rank]
        rank_starts, rank_ends = starts[rank], ends[rank]
        n_plan = len(plan)
        while i < n_plan:
            needs, makes, code = plan[i]
            ready = t_free
            for key, remote in needs:  # the latest arrival among the inputs, unless one is missing
                t = done_at[key]
                if t < 0:
                    waiting.setdefault(key, []).append(rank)
                    break
                if remote:
                    t += p2p
                if t > ready:
                    ready = t
            else:
                t_free = ready + length[code]
                rank_starts.append(ready)
                rank_ends.append(t_free)
                i += 1
                for key in makes:
                    done_at[key] = t_free
                    woken = waiting.pop(key, None)
                    if woken:
                        todo.extend(woken)
                continue
            break
        pos[rank], free[rank] = i, t_free
    if any(pos[r] < len(plans[r]) for r in range(n_ranks)):
        validate(schedule)  # explains the deadlock (which ranks wait for what) in the learner's words
        stuck = [
            f"rank {r} at {schedule.actions[r][pos[r]]}" for r in range(n_ranks) if pos[r] < len(plans[r])
        ]
        raise ValueError(
            "The schedule cannot finish: every unfinished rank waits for an input; " + ", ".join(stuck)
        )
    intervals = tuple(
        tuple(map(Interval, [r] * len(acts), acts, starts[r], ends[r],
                  *_budget_waits(plans[r], starts[r], ends[r], done_at, costs, length)))
        for r, acts in enumerate(schedule.actions)
    )
    comms = (
        _comms(schedule, costs, intervals, done_at) if p2p > 0 or costs.dispatch + costs.combine > 0 else ()
    )
    return Timeline(schedule, intervals, comms=comms, time_unit="time units")


def _budget_waits(plan, starts, ends, done_at, costs: CostModel, length) -> tuple[list[float], ...]:
    """One rank's waits for the time budget (``utils.pipeline.timeline``), per action: ``comm_wait``, the
    all-to-all it waits for inside it (the part of its length beyond ``costs.duration``), and ``p2p_wait``,
    the time before it when its inputs were all produced but one was still in flight (p2p latency).

    Both are 0 without all-to-all and p2p latency; then nothing is returned and the Intervals keep their
    defaults (the common case costs nothing).
    """
    comm = [length[code] - costs.duration(code) for _, _, code in plan] \
        if costs.dispatch + costs.combine > 0 else [0.0] * len(plan)
    if costs.p2p <= 0:
        return (comm,) if costs.dispatch + costs.combine > 0 else ()
    in_flight = []
    for i, (needs, _, _) in enumerate(plan):
        produced = ends[i - 1] if i else 0.0  # when the rank was free, as in the simulation's loop
        for key, _remote in needs:
            if done_at[key] > produced:
                produced = done_at[key]
        in_flight.append(starts[i] - produced)
    return comm, in_flight


def _lengths(costs: CostModel) -> dict[str, float]:
    """How long an action of each kind (``action_kind``) occupies a rank: ``costs.duration`` plus the
    all-to-all it cannot hide."""
    a2a = costs.dispatch + costs.combine
    length = {k: costs.duration(k) + (a2a if k != "W" else 0.0) for k in "FBIW"}
    for b_kind in "BI":
        # each chunk's all-to-all hides behind the partner chunk's compute; only the excess shows
        exposed = max(0.0, a2a - costs.duration(b_kind)) + max(0.0, a2a - costs.F)
        length["F" + b_kind] = costs.duration("F" + b_kind) + exposed
    return length


def _comms(schedule: Schedule, costs: CostModel, intervals, done_at) -> tuple[CommInterval, ...]:
    """The p2p transfers and all-to-alls to draw (timing is already decided; this is for the pictures)."""
    a2a = costs.dispatch + costs.combine
    comms: list[CommInterval] = []
    for rank, row in enumerate(intervals):
        was_free = 0.0
        for iv, (needs, _, _) in zip(row, schedule.dependency_plan[rank], strict=True):
            action, start, end = iv.action, iv.start, iv.end
            parts = action_parts(action)
            if costs.p2p > 0:
                for key, remote in needs:  # the inputs that travel from another rank (the dependency rule)
                    if not remote:
                        continue
                    other, kind, mb = schedule.result_of_key(key)
                    sent = done_at[key]
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
            hidden = end - start <= costs.duration(action)
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
    parser.add_argument("--json", action="store_true", help="print JSON (makespan and per-rank numbers)")
    args = parser.parse_args(argv)
    costs = CostModel(args.F, args.B, args.W, args.FB, args.p2p, args.dispatch, args.combine)
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
