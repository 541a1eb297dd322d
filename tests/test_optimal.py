"""The schedule search (utils.pipeline.optimal) against what we know: 1F1B's closed form is the optimum of its
rules, ZB1P and DualPipe are never better than the optimum of theirs, every registered schedule is at least
the optimum of its own rules, and the answer is a kit Schedule the validator, the simulator and the executor
take as it is. Small grids only (each search proves its optimum in well under a second)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from utils.pipeline.costs import CostModel
from utils.pipeline.optimal import precomputed
from utils.pipeline.optimal.cli import main
from utils.pipeline.optimal.problem import action_lengths, min_activations, own_rules, placement
from utils.pipeline.optimal.solve import optimal_for, optimal_schedule
from utils.pipeline.registry import SCHEDULE_NAMES, make_schedule
from utils.pipeline.schedule import parse_action
from utils.pipeline.simulate import simulate
from utils.pipeline.validation import validate

ROOT = Path(__file__).resolve().parents[1]
PLAIN = CostModel(F=1, B=2, W=1)
A2A = CostModel(F=1, B=2, W=1, dispatch=0.5, combine=0.5)   # F, I, W last 2, 2, 1: ZB1P's balance broken
LATENCY = CostModel(F=1, B=2, W=1, p2p=1)
GRID = [(pp, m) for pp in (2, 3, 4) for m in (2, 4, 6)]


def peak(timeline) -> int:
    return max(timeline.peak_activations(r) for r in range(timeline.n_ranks))


def test_the_optimum_of_1f1b_rules_is_its_closed_form():
    """Full backward, no pairs, no latency, no cap, one stage per rank: (M + PP - 1)(F + B), 1F1B's step."""
    for pp, m in GRID:
        found = optimal_schedule(pp, m, PLAIN)
        assert found.proven_optimal and found.lower_bound == found.makespan
        assert found.makespan == (m + pp - 1) * (PLAIN.F + PLAIN.B) == simulate(make_schedule("1f1b", pp, m),
                                                                              PLAIN).makespan


@pytest.mark.parametrize("costs", [PLAIN, A2A], ids=["plain", "all-to-all"])
def test_splitting_the_backward_is_never_worse_than_zb1p(costs):
    for pp, m in GRID:
        found = optimal_schedule(pp, m, costs, split_backward=True)
        assert found.proven_optimal
        assert found.makespan <= simulate(make_schedule("zb1p", pp, m), costs).makespan
    # and strictly better where ZB1P's assumption F = I = W breaks (the puzzle of notebook 05b)
    assert optimal_schedule(2, 4, A2A, split_backward=True).makespan == 22 < \
        simulate(make_schedule("zb1p", 2, 4), A2A).makespan == 23


@pytest.mark.parametrize("pp, m, costs", [(2, 4, A2A), (2, 6, A2A), (4, 8, PLAIN)])
def test_pairs_on_dualpipes_placement_are_never_worse_than_dualpipe(pp, m, costs):
    found = optimal_schedule(pp, m, costs, "bidirectional", split_backward=True, pairs=True)
    assert found.proven_optimal
    assert found.makespan <= simulate(make_schedule("dualpipe", pp, m), costs).makespan


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_every_registered_schedule_is_at_least_the_optimum_of_its_own_rules(name):
    schedule = make_schedule(name, 2, 4)
    for costs, same_memory in ((LATENCY, False), (PLAIN, True), (A2A, False)):
        step = simulate(schedule, costs).makespan
        # room to prove with both cores busy (a proof takes seconds here; the pair's 28ths widen the ranges)
        found = optimal_for(schedule, costs, same_memory=same_memory, time_limit=60)
        assert found.proven_optimal and found.makespan <= step
        assert (found.schedule.stage_to_rank, found.schedule.routes) == (schedule.stage_to_rank, schedule.routes)
        if same_memory:
            assert peak(found.timeline) <= peak(simulate(schedule, costs))


def test_the_answer_is_a_kit_schedule_that_the_simulator_reproduces_exactly():
    """p2p latency, an all-to-all, pairs, I and W and a cap at once: the solver's makespan (checked inside
    against CP-SAT's objective) is the simulator's, to the bit; the schedule reads back from its strings."""
    costs = CostModel(F=1, B=2, W=1, p2p=1, dispatch=0.5, combine=0.5)
    found = optimal_schedule(2, 2, costs, "v", split_backward=True, pairs=True, max_activations=3)
    validate(found.schedule)
    timeline = simulate(found.schedule, costs)
    assert found.proven_optimal and timeline.makespan == found.makespan == found.lower_bound
    assert peak(timeline) <= 3
    assert [[parse_action(str(a)) for a in row] for row in found.schedule.actions] == \
        [list(row) for row in found.schedule.actions]
    assert found.as_dict()["ranks"] == timeline.summary()


def test_a_cap_binds_and_one_below_any_schedule_is_refused():
    assert optimal_schedule(3, 4, PLAIN).makespan == 18
    capped = optimal_schedule(3, 4, PLAIN, max_activations=2)
    assert capped.makespan == 21 and peak(capped.timeline) <= 2
    assert min_activations(placement("v", 2, 4)) == 2  # rank 0 holds stages 0 and 3 of one micro-batch
    with pytest.raises(ValueError, match="max_activations"):
        optimal_schedule(2, 4, PLAIN, "v", max_activations=1)


def test_a_time_limit_answers_with_the_best_found_and_a_bound():
    found = optimal_schedule(4, 8, A2A, "bidirectional", split_backward=True, pairs=True, max_activations=5,
                             time_limit=0.01)
    validate(found.schedule)
    assert not found.proven_optimal and found.status == "FEASIBLE"
    assert found.lower_bound <= found.makespan <= simulate(make_schedule("dualpipe", 4, 8), A2A).makespan


def test_the_same_search_gives_the_same_schedule_in_another_process():
    """One worker, a fixed seed and a model built in the same order whatever Python's hash seed: the same
    schedule from the library here and from the command line in a process with another hash seed."""
    here = optimal_schedule(2, 3, A2A, "v", split_backward=True, pairs=True)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run([sys.executable, "-m", "utils.optimal", "--ranks", "2", "--microbatches", "3",
                            "--placement", "v", "--split-backward", "--pairs", "--dispatch", "0.5", "--combine",
                            "0.5", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert there.returncode == 0, there.stderr
    answer = json.loads(there.stdout)
    assert answer["schedule"] == [[str(a) for a in row] for row in here.schedule.actions]
    # a pair computes on 112 of 132 SMs (comm_share 20/132): 3 x 132/112 = 99/28 units, counted in 28ths
    assert answer["makespan"] == here.makespan == pytest.approx(804 / 28, abs=1e-12) and answer["proven_optimal"]


def test_lengths_are_the_simulators_durations():
    assert action_lengths(PLAIN) == {k: PLAIN.duration(k) for k in ("F", "B", "I", "W", "FB", "FI")}
    with_a2a = action_lengths(A2A)
    assert with_a2a["F"] == A2A.F + 1 and with_a2a["W"] == A2A.W  # an F waits for its all-to-all; W has none
    # inside a pair each chunk's all-to-all hides behind the other, which computes on the SMs it leaves
    assert with_a2a["FB"] == A2A.FB * 132 / 112 == A2A.FB * A2A.pair_slowdown
    assert action_lengths(replace(A2A, comm_share=0))["FB"] == A2A.FB  # free overlap: the pair's compute alone


def test_lengths_that_are_not_whole_units_are_counted_in_ticks():
    """Half units are counted in halves (28ths for a pair on 112 of 132 SMs: the cross-process test above)."""
    half = optimal_schedule(2, 4, CostModel(F=1.5, B=3, W=1.5))  # 1F1B's (M + PP - 1)(F + B), in half units
    assert half.makespan == 5 * 4.5 and half.proven_optimal and half.timeline.makespan == half.makespan


def test_placements_are_the_generators():
    for name, schedule in (("linear", "1f1b"), ("v", "zbv"), ("bidirectional", "dualpipe")):
        kit, layout = make_schedule(schedule, 4, 8), placement(name, 4, 8)
        assert (layout.stage_to_rank, layout.stage_to_chunk, layout.routes) == \
            (kit.stage_to_rank, kit.stage_to_chunk, kit.routes)
    assert own_rules(make_schedule("dualpipe", 2, 4))["pairs"] and own_rules(make_schedule("zb1p", 2, 4))[
        "split_backward"] and not own_rules(make_schedule("1f1b", 2, 4))["split_backward"]


def test_the_command_line_prints_the_schedule_and_the_simulators_budget(capsys):
    assert main(["--ranks", "2", "--microbatches", "4", "--dispatch", "0.5", "--combine", "0.5",
                 "--split-backward", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["makespan"] == 22 and out["proven_optimal"] and out["lower_bound"] == 22
    assert len(out["schedule"]) == 2 and all(isinstance(a, str) for a in out["schedule"][0])
    assert set(out["ranks"][0]) == {"rank", "busy", "idle", "peak_activations", "param_copies", "compute",
                                    "comm_exposed"}
    assert main(["--ranks", "2", "--microbatches", "2"]) == 0
    assert "proven optimal" in capsys.readouterr().out


def test_the_stored_searches_load_and_one_matches_a_fresh_solve():
    stored = precomputed.load_precomputed()  # every schedule validated and simulated to its stored step
    assert set(stored) == {case.key for case in precomputed.cases()}
    for s in stored.values():
        assert s.lower_bound <= s.makespan <= s.start_makespan
        if s.kit_makespan is not None:
            assert s.makespan <= s.kit_makespan
    kept = stored["compare/zb1p/a2a/free"]
    fresh = kept.case.run(time_limit=30)
    assert (fresh.makespan, fresh.proven_optimal, fresh.lower_bound) == \
        (kept.makespan, kept.proven_optimal, kept.lower_bound) == (92, True, 92)
    assert fresh.settings == kept.settings | {"time_limit": 30}


def test_the_executor_runs_the_optimum_with_the_gradients_of_one_process():
    """The solver's schedule (the V, pairs of F and I, deferred W) runs for real on 2 processes."""
    from utils.cluster.cluster import SimulatedCluster
    from utils.pipeline.executor.execute import execute
    from utils.pipeline.executor.models import mlp_spec
    from utils.pipeline.executor.reference import gradient_gap, reference_run

    found = optimal_schedule(2, 4, A2A, "v", split_backward=True, pairs=True)
    assert any(type(a).__name__ == "OverlappedAction" for row in found.schedule.actions for a in row)
    spec = mlp_spec(n_layers=8)
    microbatches = spec.make_microbatches(4)
    with SimulatedCluster(world_size=2, timeout=120) as cluster:
        result = execute(cluster, found.schedule, spec, microbatches)
    reference = reference_run(spec, microbatches)
    assert result.loss == pytest.approx(reference.loss, rel=1e-6, abs=0)
    assert gradient_gap(result.grads, reference.grads)["max_rel"] <= 1e-6
    assert [row for row in (tuple(iv.action for iv in r) for r in result.timeline.intervals)] == \
        list(found.schedule.actions)


def test_the_match_the_solver_hints_lead_to_an_accepted_answer():
    """Hint 3 of notebook 05b's puzzle (three warm-up forwards on rank 0, rank 1's W passes last) passes; hint 2
    names what differs from notebook 04 (W), not I."""
    from utils.pipeline.puzzles.optimal import match_the_solver_puzzle

    p = match_the_solver_puzzle()
    assert "I still equals F" in p.hints[1] and "lasts 2, an I 2 and a W 1" in p.statement
    answer = ["0F0 0F1 0F2 0I0 0W0 0F3 0I1 0W1 0I2 0W2 0I3 0W3".split(),
              "1F0 1I0 1F1 1I1 1W0 1F2 1I2 1F3 1I3 1W1 1W2 1W3".split()]
    assert p.grade(answer).passed


def test_the_optimum_of_zb1ps_rules_at_one_activation_is_one_round_trip_per_microbatch():
    """Notebook 05b's Exercise 2: with one activation per rank, micro-batch k+1 starts on rank 0 after k's W
    there, so the optimum is M (PP F + PP I + W); the check asks the solver on the same small cases."""
    share = CostModel(F=2, B=4, W=2)
    for pp, m in ((2, 3), (3, 5), (5, 2), (3, 2)):
        found = optimal_schedule(pp, m, share, split_backward=True, max_activations=1)
        assert found.proven_optimal and found.makespan == m * (pp * (share.F + share.I) + share.W)
