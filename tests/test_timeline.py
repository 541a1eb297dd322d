"""Timeline: makespan, idle, activations and the Chrome trace, on hand-built timelines."""

import json

import pytest

from utils.pipeline.schedule import Action, OverlappedAction, Schedule
from utils.pipeline.timeline import CommInterval, Interval, Timeline


def two_rank_timeline() -> Timeline:
    """Two stages on two ranks, one micro-batch: rank 0 F [0,1], rank 1 F [1,2] B [2,4], rank 0 B [4,6]."""
    f0, f1, b1, b0 = Action(0, "F", 0), Action(1, "F", 0), Action(1, "B", 0), Action(0, "B", 0)
    schedule = Schedule("naive", 2, 1, (0, 1), (0, 1), ((0, 1),), ((f0, b0), (f1, b1)))
    intervals = (
        (Interval(0, f0, 0, 1), Interval(0, b0, 4, 6)),
        (Interval(1, f1, 1, 2), Interval(1, b1, 2, 4)),
    )
    return Timeline(schedule, intervals, comms=(CommInterval(0, "p2p", 1, 1.5, False),))


def test_makespan_busy_idle():
    tl = two_rank_timeline()
    assert tl.makespan == 6
    assert [tl.busy(r) for r in range(2)] == [3, 3]
    assert [tl.idle(r) for r in range(2)] == [3, 3]
    assert tl.worst_idle == 3
    assert tl.bubble_ratio == pytest.approx(0.5)


def test_peak_activations_release_before_acquire():
    """F at [0,1] then B at [1,2] then F at [2,3] of another mb: the W/B release at t=2 comes first."""
    a = [Action(0, "F", 0), Action(0, "B", 0), Action(0, "F", 1), Action(0, "I", 1), Action(0, "W", 1)]
    schedule = Schedule("naive", 1, 2, (0,), (0,), ((0,), (0,)), (tuple(a),))
    times = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    tl = Timeline(schedule, (tuple(Interval(0, x, s, e) for x, (s, e) in zip(a, times, strict=True)),))
    assert tl.peak_activations(0) == 1
    assert tl.param_copies(0) == 1


def test_peak_activations_overlapped_pair():
    """A pair starts a forward (acquire at its start) and ends a backward (release at its end)."""
    f0, f1 = Action(0, "F", 0), Action(0, "F", 1)
    pair = OverlappedAction(f1, Action(0, "B", 0))
    b1 = Action(0, "B", 1)
    schedule = Schedule("naive", 1, 2, (0,), (0,), ((0,), (0,)), ((f0, pair, b1),))
    tl = Timeline(schedule, ((Interval(0, f0, 0, 1), Interval(0, pair, 1, 3), Interval(0, b1, 3, 4)),))
    assert tl.peak_activations(0) == 2
    assert [iv.kind for iv in tl.intervals[0]] == ["F", "FB", "B"]


def test_summary_rows():
    rows = two_rank_timeline().summary()
    assert rows == [
        {"rank": 0, "busy": 3, "idle": 3, "peak_activations": 1, "param_copies": 1, "compute": 3,
         "comm_exposed": 0},
        {"rank": 1, "busy": 3, "idle": 3, "peak_activations": 1, "param_copies": 1, "compute": 3,
         "comm_exposed": 0},
    ]


def test_chrome_trace_round_trips_through_json():
    tl = two_rank_timeline()
    trace = tl.to_chrome_trace()
    assert json.loads(json.dumps(trace)) == trace
    compute = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] == 0]
    assert len(compute) == 4
    assert {(e["name"], e["tid"], e["ts"], e["dur"]) for e in compute} == {
        ("0F0", 0, 0, 1),
        ("0B0", 0, 4, 2),
        ("1F0", 1, 1, 1),
        ("1B0", 1, 2, 2),
    }
    comm = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] == 1]
    assert comm[0]["name"] == "p2p" and comm[0]["args"]["overlapped"] is False


def test_span_follows_replaced_intervals():
    tl = two_rank_timeline()
    assert tl.makespan == 6
    tl.intervals = (tl.intervals[0][:1], tl.intervals[1])  # drop rank 0's backward
    assert tl.makespan == 4 and tl.start == 0 and tl.end == 4


def test_empty_timeline():
    schedule = Schedule("naive", 1, 1, (0,), (0,), ((0,),), ((),))
    tl = Timeline(schedule, ((),))
    assert tl.makespan == 0 and tl.bubble_ratio == 0 and tl.worst_idle == 0


def test_simulated_communication_is_built_on_first_use_and_reads_like_a_tuple():
    import copy
    import pickle

    from utils.pipeline.costs import CostModel
    from utils.pipeline.registry import make_schedule
    from utils.pipeline.simulate import simulate
    from utils.pipeline.timeline import LazyComms

    made = []
    lazy = LazyComms(lambda: made.append(1) or [1, 2, 3])
    assert not made  # nothing built yet
    assert len(lazy) == 3 and list(lazy) == [1, 2, 3] and lazy[1] == 2 and lazy == (1, 2, 3) and made == [1]
    assert bool(LazyComms(list)) is False
    tl = simulate(make_schedule("dualpipe", 4, 8), CostModel(F=1, B=2, W=1, dispatch=0.5, combine=0.5, p2p=0.1))
    assert isinstance(tl.comms, LazyComms) and len(tl.comms) > 0
    assert type(pickle.loads(pickle.dumps(tl)).comms) is tuple and copy.deepcopy(tl).comms == tl.comms


@pytest.mark.parametrize("name, costs", [
    ("1f1b", dict(F=1, B=2, W=1)),
    ("dualpipe", dict(F=1.1, B=2.3, W=0.7, dispatch=0.3, combine=0.2, p2p=0.1)),
    ("zbv", dict(F=1, B=2, W=1, p2p=0.05, chunk_scale=tuple(1 + 0.1 * c for c in range(8)))),
])
def test_simulated_rows_read_like_the_intervals_and_give_the_same_bits(name, costs):
    """A simulated timeline keeps its rows as columns (SimulatedRows) until they are read: each reads as the
    tuple of Intervals it stands for, and every number read from the columns (span, busy, budgets) is the
    same float as the one read from the Intervals themselves."""
    import copy
    import pickle

    from utils.pipeline.costs import CostModel
    from utils.pipeline.registry import make_schedule
    from utils.pipeline.simulate import simulate
    from utils.pipeline.timeline import SimulatedRows

    tl = simulate(make_schedule(name, 4, 8), CostModel(**costs))
    rows = tl.intervals
    assert type(rows) is SimulatedRows and rows._rows == [None] * 4  # nothing made by simulating
    assert tl.budgets and rows._rows == [None] * 4  # nor by reading its numbers
    eager = tuple(tuple(Interval(*iv) for iv in row) for row in rows)
    plain = Timeline(tl.schedule, eager, comms=tuple(tl.comms))
    assert rows == eager and eager == rows and rows[-1] == eager[-1] and rows[1:3] == eager[1:3]
    assert all(iv.rank == r and len(row) == len(tl.schedule.actions[r]) for r, row in enumerate(rows) for iv in row)
    assert tl.span == plain.span and tl.budgets == plain.budgets
    assert [tl.busy(r) for r in range(4)] == [plain.busy(r) for r in range(4)]
    if "p2p" in costs:  # the waits' columns are read, not only the durations
        assert any(b.comm_exposed > 0 for b in tl.budgets)
    assert type(pickle.loads(pickle.dumps(tl)).intervals) is tuple and copy.deepcopy(tl).intervals == eager
    with pytest.raises(IndexError):
        rows[4]
