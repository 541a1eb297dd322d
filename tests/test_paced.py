"""Paced mode: every action lasts its cost-model duration, so the measured idle time tracks the simulator.

The benchmark (benchmarks/bench_execute.py) holds the 5% target at 4 ranks; these tests use loose bounds
that hold on two busy cores.

Why the worst-idle bound allows for late starts: a paced action ends at its scheduled time, but it can only
start when its rank gets the CPU back (after a sleep, a received message, the executor's own Python work).
Each late start shortens that action's measured interval and shows up as extra idle time on its rank. On a
quiet machine late starts are hundredths of a millisecond; on two cores shared with other work a rank now
and then waits milliseconds for the CPU, which alone broke the fixed 5 ms bound on the worst idle (this made
test_measured_idle_tracks_simulated[dualpipe] flaky). So the test measures the late starts of the run
(``late_starts``: how much shorter each measured interval is than its paced duration) and allows the worst
rank's own late starts on top of the original bound. Two conditions keep it meaningful: the late starts of
every rank stay below a tenth of the step (the executor's overhead is small), and the step time matches the
simulator to 10% (the critical path is right), so idle time the schedule does not explain still fails.

A run disturbed by other work (`make test` runs the unit tests on two processes, and the machine may be
shared) can break the bounds however correct the executor is: a message handed over late delays the step
without counting as a late start. So each check makes up to ``TRIES`` paced runs and stops at the first that
meets every bound; when none does, the least disturbed one is reported. An executor that paces wrongly
fails every run.
"""

from __future__ import annotations

import pytest

from utils.cluster.cluster import SimulatedCluster
from utils.pipeline.costs import CostModel
from utils.pipeline.executor.execute import execute, pacing_from_costs
from utils.pipeline.executor.models import mlp_spec
from utils.pipeline.executor.pacing import Pacing
from utils.pipeline.registry import make_schedule
from utils.pipeline.schedule import Action, OverlappedAction
from utils.pipeline.simulate import simulate

UNIT_MS = 10.0


def test_pacing_durations_follow_the_cost_model():
    pacing = pacing_from_costs(CostModel(F=1, B=2, W=0.5, FB=2.5, p2p=0.25), unit_ms=10)
    assert pacing == Pacing(F=1, B=2, W=0.5, FB=2.5, unit_ms=10, p2p=0.25)
    assert [pacing.duration_ms(Action(0, k, 0)) for k in "FBIW"] == [10, 20, 15, 5]
    pair = OverlappedAction(Action(0, "F", 1), Action(1, "B", 0))
    assert pacing.duration_ms(pair) == 25
    assert pacing_from_costs(CostModel(F=1, B=2, W=1)).FB == 3  # FB defaults to F + B: no overlap gain
    with pytest.raises(ValueError, match="unit_ms"):
        pacing_from_costs(CostModel(F=1, B=2, W=1), unit_ms=0)


@pytest.fixture(scope="module")
def cluster4():
    with SimulatedCluster(world_size=4, timeout=120) as cluster:
        yield cluster


#: Paced runs (a few tenths of a second each) a check may make before it reports the least disturbed one.
TRIES = 5


def late_starts(measured, costs) -> list[float]:
    """Per rank, the total of how much shorter each measured interval is than its paced duration."""
    pacing = pacing_from_costs(costs, UNIT_MS)
    return [sum(max(0.0, pacing.duration_ms(iv.action) - iv.duration) for iv in row)
            for row in measured.intervals]


def paced_run(cluster, schedule, costs, problems, tries: int = TRIES):
    """The first of up to ``tries`` paced runs for which ``problems(measured, late)`` finds none, else the
    least disturbed run (smallest total of late starts); returned with its late starts and its problems."""
    best = None
    for _ in range(tries):
        measured = execute(cluster, schedule, mlp_spec(), paced=costs, unit_ms=UNIT_MS).timeline
        late = late_starts(measured, costs)
        found = problems(measured, late)
        if not found:
            return measured, late, []
        if best is None or sum(late) < sum(best[1]):
            best = (measured, late, found)
    return best


def idle_problems(simulated):
    """The bounds of test_measured_idle_tracks_simulated, as a list of what a measured run breaks."""
    sim_idle, sim_span = simulated.worst_idle * UNIT_MS, simulated.makespan * UNIT_MS

    def problems(measured, late) -> list[str]:
        worst = max(range(4), key=measured.idle)
        found = []
        if not max(late) < 0.1 * sim_span:  # the executor's own overhead stays small
            found.append(f"late starts {max(late):.1f} ms on a rank, over a tenth of the {sim_span:.0f} ms step")
        if measured.makespan != pytest.approx(sim_span, rel=0.1):
            found.append(f"step {measured.makespan:.1f} ms, not within 10% of {sim_span:.1f} ms")
        if not abs(measured.worst_idle - sim_idle) <= max(0.3 * sim_idle, 5.0) + late[worst]:
            found.append(f"worst idle {measured.worst_idle:.1f} ms (rank {worst}, late starts "
                         f"{late[worst]:.1f} ms) against {sim_idle:.1f} ms simulated")
        # Every rank is busy for about the cost model's total (actions never end before their duration).
        found += [f"rank {r} busy {measured.busy(r):.1f} ms, not within 10% of {simulated.busy(r) * UNIT_MS:.1f}"
                  for r in range(4) if measured.busy(r) != pytest.approx(simulated.busy(r) * UNIT_MS, rel=0.1)]
        return found

    return problems


@pytest.mark.parametrize("name", ["1f1b", "zb1p", "dualpipe"])
def test_measured_idle_tracks_simulated(cluster4, name):
    costs = CostModel(F=1, B=2, W=1, FB=2.5)
    schedule = make_schedule(name, 4, 8)
    simulated = simulate(schedule, costs)
    measured, late, problems = paced_run(cluster4, schedule, costs, idle_problems(simulated))
    worst = max(range(4), key=measured.idle)
    print(f"{name}: worst idle {measured.worst_idle:.1f} ms measured (rank {worst}, late starts "
          f"{late[worst]:.1f} ms), {simulated.worst_idle * UNIT_MS:.1f} ms simulated; step "
          f"{measured.makespan:.1f} ms vs {simulated.makespan * UNIT_MS:.1f} ms")
    assert not problems, f"in each of {TRIES} paced runs; the least disturbed: " + "; ".join(problems)


def test_paced_latency_delays_the_receiver(cluster4):
    costs = CostModel(F=1, B=2, W=1, p2p=0.5)
    schedule = make_schedule("1f1b", 4, 4)
    span = simulate(schedule, costs).makespan * UNIT_MS

    def problems(measured, late) -> list[str]:
        ok = measured.makespan == pytest.approx(span, rel=0.1)
        return [] if ok else [f"step {measured.makespan:.1f} ms, not within 10% of {span:.1f} ms"]

    _, _, found = paced_run(cluster4, schedule, costs, problems)
    assert not found, f"in each of {TRIES} paced runs; the least disturbed: " + "; ".join(found)
