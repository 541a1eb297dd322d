"""The time budget (issue #12, section 2): every rank's step is compute + exposed communication + idle, and
the three add up to the makespan, for every schedule in the registry (so schedules added later are covered),
several sizes and costs; the command line's JSON gives them per rank."""

import itertools
import json
import subprocess
import sys

import pytest

from utils.pipeline.costs import CostModel
from utils.pipeline.registry import SCHEDULE_NAMES, make_schedule
from utils.pipeline.schedule import OverlappedAction
from utils.pipeline.simulate import simulate
from utils.pipeline.timeline import Interval, Timeline

COSTS = {
    "plain": CostModel(F=1, B=2, W=1, FB=3),
    "compute overlap": CostModel(F=1, B=2, W=0.5, FB=2.5),
    "all-to-all": CostModel(F=1, B=2, W=1, FB=3, dispatch=0.5, combine=0.5),
    "slow all-to-all": CostModel(F=1, B=1.5, W=0.5, FB=2.5, dispatch=1.5, combine=1.0),
    "p2p": CostModel(F=1, B=2, W=1, FB=3, p2p=0.25),
    "everything": CostModel(F=1.5, B=2, W=0.75, FB=3, p2p=0.3, dispatch=0.4, combine=0.7),
}
SIZES = [(1, 1), (2, 3), (2, 4), (3, 7), (4, 8), (4, 9), (5, 12), (6, 13), (8, 16), (8, 17)]


def _compute_of(action, c: CostModel) -> float:
    """The cost model's compute time of one action (no communication): the reference for the budget."""
    if isinstance(action, OverlappedAction):  # on the SMs its hidden all-to-all leaves, if it hides one
        slow = 1 / (1 - c.comm_share) if c.dispatch + c.combine > 0 else 1.0
        return slow * (c.FB if action.backward.kind == "B" else max(c.F, c.I, c.FB - c.W))
    return c.duration(action.kind)


def _a2a_exposed_of(action, c: CostModel) -> float:
    """All-to-all a rank waits for inside ``action``: all of it alone, the excess over the partner in a pair."""
    a2a = c.dispatch + c.combine
    if isinstance(action, OverlappedAction):  # the partner computes on the SMs the all-to-all leaves
        slow = 1 / (1 - c.comm_share) if a2a > 0 else 1.0
        return max(0.0, a2a - slow * c.duration(action.backward.kind)) + max(0.0, a2a - slow * c.F)
    return 0.0 if action.kind == "W" else a2a


def _built(name):
    for pp, m in SIZES:
        try:
            yield make_schedule(name, pp, m)
        except ValueError:
            continue  # a size this schedule does not allow (odd ranks for DualPipe, ...)


@pytest.mark.parametrize("cost_name", list(COSTS))
@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_budget_adds_up_for_every_schedule(name, cost_name):
    costs = COSTS[cost_name]
    schedules = list(_built(name))
    assert len(schedules) >= 3, f"{name}: too few sizes to test"
    for schedule in schedules:
        tl = simulate(schedule, costs)
        for r in range(schedule.n_ranks):
            b = tl.budget(r)
            assert b.compute + b.comm_exposed + b.idle == pytest.approx(tl.makespan, abs=1e-9)
            assert min(b.compute, b.comm_exposed, b.idle) >= 0
            assert b.compute == pytest.approx(sum(_compute_of(a, costs) for a in schedule.actions[r]))
            a2a = sum(_a2a_exposed_of(a, costs) for a in schedule.actions[r])
            if costs.p2p == 0:
                assert b.comm_exposed == pytest.approx(a2a)
            else:  # plus the waits for messages in flight, at most one latency per action
                assert a2a - 1e-9 <= b.comm_exposed <= a2a + costs.p2p * len(schedule.actions[r]) + 1e-9
            assert (b.idle, b.comm_exposed, b.compute) == (tl.idle(r), tl.comm_exposed(r), tl.compute(r))
        shares = tl.budget_shares()
        assert sum(shares.values()) == pytest.approx(1.0)
        assert shares["idle"] == pytest.approx(tl.bubble_ratio)
        table = tl.budget_table()
        assert list(table.columns) == ["compute", "comm_exposed", "idle", "not_computing", "makespan"]
        assert (table["compute"] + table["not_computing"]).tolist() == pytest.approx([tl.makespan] * tl.n_ranks)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_without_communication_nothing_is_exposed(name):
    for schedule in _built(name):
        tl = simulate(schedule, COSTS["plain"])
        for r in range(schedule.n_ranks):
            assert tl.comm_exposed(r) == 0
            assert tl.idle(r) == pytest.approx(tl.makespan - tl.busy(r))


def test_p2p_wait_is_the_message_in_flight():
    """1F1B, 2 ranks, 1 micro-batch, p2p 0.5: rank 1 waits 0.5 for 0F0's activation, rank 0 waits 0.5 for
    the gradient; the rest of their waits is idle (the other rank computing)."""
    tl = simulate(make_schedule("1f1b", 2, 1), CostModel(F=1, B=2, W=1, p2p=0.5))
    assert tl.makespan == 1 + 0.5 + 1 + 2 + 0.5 + 2
    b0, b1 = tl.budget(0), tl.budget(1)
    assert (b0.compute, b0.comm_exposed, b0.idle) == (3, 0.5, 3.5)
    assert (b1.compute, b1.comm_exposed, b1.idle) == (3, 0.5, 3.5)


def test_capstone_example_1f1b_not_computing():
    """The issue's example: 1F1B, PP 16, 64 micro-batches, F=1, B=2, all-to-all 0.5 + 0.5 per chunk. The worst
    rank computes 64 x 3 = 192 of a 395 step: 203 not computing (75 idle + 128 exposed), not 75 + 158."""
    tl = simulate(make_schedule("1f1b", 16, 64), COSTS["all-to-all"])
    worst = tl.worst_budget()
    assert tl.makespan == 395
    assert (worst.compute, worst.idle, worst.comm_exposed, worst.not_computing) == (192, 75, 128, 203)


def test_budget_of_a_hand_made_measured_timeline():
    """A measured timeline carries its waits in the intervals; the budget reads them the same way."""
    s = make_schedule("1f1b", 1, 2)
    f0, b0, f1, b1 = s.actions[0]
    row = (Interval(0, f0, 0.0, 1.5, comm_wait=0.5), Interval(0, b0, 2.0, 4.5, comm_wait=0.5),
           Interval(0, f1, 4.5, 5.5), Interval(0, b1, 6.0, 8.0, p2p_wait=0.25))
    b = Timeline(s, (row,), source="measured", time_unit="ms").budget(0)
    assert (b.compute, b.comm_exposed, b.idle, b.makespan) == (6.0, 1.25, 0.75, 8.0)


@pytest.mark.parametrize("name,extra", list(itertools.product(["1f1b", "1f1b-overlap", "dualpipev"],
                                                               [[], ["--p2p", "0.2"]])))
def test_cli_json_gives_the_budget_per_rank(name, extra):
    out = subprocess.run([sys.executable, "-m", "utils.simulate", name, "--ranks", "3", "--microbatches", "7",
                          "--dispatch", "0.5", "--combine", "0.5", *extra, "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("schedule", "makespan", "worst_idle", "bubble_ratio", "ranks"):  # today's fields stay
        assert key in data
    for row in data["ranks"]:
        assert {"rank", "busy", "idle", "peak_activations", "param_copies", "compute", "comm_exposed"} <= set(row)
        assert row["compute"] + row["comm_exposed"] + row["idle"] == pytest.approx(data["makespan"])
    assert data["worst_idle"] == pytest.approx(max(row["idle"] for row in data["ranks"]))
