"""The one dependency rule (Schedule.inputs_of / dependency_plan) and the one duration rule (CostModel.duration)."""

import pytest

from utils.pipeline.costs import CostModel
from utils.pipeline.registry import SCHEDULE_NAMES, make_schedule
from utils.pipeline.schedule import (
    ACT,
    GRAD,
    MAKES,
    Action,
    Dependency,
    OverlappedAction,
    Schedule,
    action_kind,
    action_parts,
    dependency_rule,
)
from utils.pipeline.simulate import simulate


def test_rule_by_hand_on_4_rank_1f1b():
    s = make_schedule("1f1b", 4, 8)
    assert s.inputs_of(Action(0, "F", 3)) == ()  # the first stage reads the micro-batch itself
    assert s.inputs_of(Action(1, "F", 3)) == (Dependency(0, ACT, 3, True),)
    # the last stage holds the loss: its backward needs only its own forward
    assert s.inputs_of(Action(3, "B", 3)) == (Dependency(3, ACT, 3, False),)
    assert s.inputs_of(Action(1, "B", 3)) == (Dependency(1, ACT, 3, False), Dependency(2, GRAD, 3, True))


def test_rule_by_hand_on_a_v_placement():
    """DualPipeV: rank 0 holds stages 0 and 3, rank 1 stages 1 and 2; the turn 1 -> 2 stays on rank 1."""
    s = make_schedule("dualpipev", 2, 4)
    assert s.stage_to_rank == (0, 1, 1, 0)
    assert s.inputs_of(Action(2, "F", 0)) == (Dependency(1, ACT, 0, False),)
    assert s.inputs_of(Action(3, "F", 0)) == (Dependency(2, ACT, 0, True),)
    assert s.inputs_of(Action(1, "I", 0)) == (Dependency(1, ACT, 0, False), Dependency(2, GRAD, 0, False))
    assert s.inputs_of(Action(1, "W", 0)) == (Dependency(1, GRAD, 0, False),)


def test_rule_follows_any_route_and_placement():
    # a made-up route that skips around: stages 2 -> 0 -> 1 on ranks 1, 0, 1
    assert dependency_rule("F", 0, 2, 1) == ((2, ACT),)
    assert dependency_rule("I", 0, 2, 1) == ((0, ACT), (1, GRAD))
    assert dependency_rule("B", 1, 0, None) == ((1, ACT),)
    assert dependency_rule("W", 2, None, 0) == ((2, GRAD),)
    f = [Action(st, "F", 0) for st in (2, 0, 1)]
    b = [Action(st, "B", 0) for st in (1, 0, 2)]
    s = Schedule("custom", 2, 1, (0, 1, 1), (0, 1, 2), ((2, 0, 1),),
                 ((f[1], b[1]), (f[0], f[2], b[0], b[2])))
    assert s.inputs_of(Action(0, "F", 0)) == (Dependency(2, ACT, 0, True),)
    assert s.inputs_of(Action(2, "B", 0)) == (Dependency(2, ACT, 0, False), Dependency(0, GRAD, 0, True))
    assert simulate(s, CostModel(F=1, B=2, W=0)).makespan == 3 * 1 + 3 * 2


def _plan_from_inputs_of(s: Schedule):
    rows = []
    for acts in s.actions:
        row = []
        for action in acts:
            parts = action_parts(action)
            needs = tuple((s.result_key(d.stage, d.kind, d.microbatch), d.remote)
                          for p in parts for d in s.inputs_of(p))
            makes = tuple(s.result_key(p.stage, MAKES[p.kind], p.microbatch) for p in parts if MAKES[p.kind])
            row.append((needs, makes, action_kind(action)))
        rows.append(tuple(row))
    return tuple(rows)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("ranks,microbatches", [(2, 4), (4, 8), (4, 12)])
def test_fast_plan_is_the_readable_rule(name, ranks, microbatches):
    try:
        s = make_schedule(name, ranks, microbatches)
    except ValueError:
        pytest.skip(f"{name} does not run on {ranks} ranks x {microbatches} micro-batches")
    assert s.dependency_plan == _plan_from_inputs_of(s)
    for key, _ in (n for row in s.dependency_plan for needs, _, _ in row for n in needs):
        assert s.result_key(*s.result_of_key(key)) == key


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_simulated_actions_start_after_their_inputs_arrive(name):
    s = make_schedule(name, 4, 8)
    costs = CostModel(F=1, B=2, W=0.5, FB=2.5, p2p=0.25)
    timeline = simulate(s, costs)
    end = {}
    for row in timeline.intervals:
        for iv in row:
            for p in action_parts(iv.action):
                if MAKES[p.kind]:
                    end[(p.stage, MAKES[p.kind], p.microbatch)] = iv.end
    for row in timeline.intervals:
        for iv in row:
            for p in action_parts(iv.action):
                for d in s.inputs_of(p):
                    arrives = end[(d.stage, d.kind, d.microbatch)] + (costs.p2p if d.remote else 0.0)
                    assert iv.start >= arrives - 1e-12, (iv.action, d)


def test_duration_rule_plain_and_overlapped():
    c = CostModel(F=1.0, B=2.0, W=0.75, FB=2.5)
    assert [c.duration(Action(0, k, 0)) for k in "FBIW"] == [1.0, 2.0, 1.25, 0.75]
    assert c.duration(OverlappedAction(Action(0, "F", 1), Action(1, "B", 0))) == 2.5
    # F with an I: the pair saves W on F&B but lasts at least its longer chunk: max(F, B - W, FB - W)
    assert c.duration(OverlappedAction(Action(0, "F", 1), Action(1, "I", 0))) == 1.75 == c.FI
    assert CostModel(F=3.0, B=2.0, W=1.0, FB=3.5).FI == 3.0
    assert [c.duration(k) for k in ("FB", "FI")] == [2.5, 1.75]
    with pytest.raises(ValueError, match="prices the kinds"):
        c.duration("X")


def test_simulator_and_pacing_share_the_duration_rule():
    from utils.pipeline.executor.execute import pacing_from_costs

    c = CostModel(F=1.0, B=2.0, W=0.75, FB=2.5)
    pacing = pacing_from_costs(c, unit_ms=10)
    s = make_schedule("dualpipe", 4, 8)
    for row in simulate(s, c).intervals:
        for iv in row:
            assert iv.end - iv.start == pytest.approx(c.duration(iv.action))
            assert pacing.duration_ms(iv.action) == pytest.approx(10 * c.duration(iv.action))


def test_pacing_takes_the_cost_models_rules():
    from utils.pipeline.executor.execute import pacing_from_costs

    class Plain:
        F, B, W = 1.0, 2.0, 3.0  # W > B: not a cost model

    with pytest.raises(ValueError, match="W <= B"):
        pacing_from_costs(Plain())


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_dependency_slots_are_the_rule_in_flat_lists(name):
    """The simulator's flat layout (Schedule.dependency_slots), read back with inputs_of's own words: per
    action, every input (here, or another rank's copy), what it makes, its kind; the rest is the stage
    outside the pipeline (an input always there, a result nobody reads)."""
    from utils.pipeline.schedule import ACTION_KINDS

    s = make_schedule(name, 4, 8)
    slots = s.dependency_slots
    outside = s.result_key(s.n_stages, ACT, 0)
    assert (slots.always, slots.nothing) == (outside, outside + 1)
    for rank, acts in enumerate(s.actions):
        for g, action in enumerate(acts, slots.offsets[rank]):
            parts = action_parts(action)
            inputs = [(slots.key(k), k >= slots.n_keys) for k in (slots.needs[0][g], slots.needs[1][g],
                                                                   slots.needs[2][g])]
            assert [x for x in inputs if x[0] < outside] == [
                (s.result_key(d.stage, d.kind, d.microbatch), d.remote) for p in parts for d in s.inputs_of(p)]
            assert all(s.result_of_key(k)[:2] == (s.n_stages, ACT) for k, _ in inputs if k >= outside)
            assert [k for k in (slots.makes[0][g], slots.makes[1][g]) if k < outside] == [
                s.result_key(p.stage, MAKES[p.kind], p.microbatch) for p in parts if MAKES[p.kind]]
            assert ACTION_KINDS[slots.kind[g]] == action_kind(action)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_dependency_slots_are_the_same_with_and_without_numpy(name, monkeypatch):
    """dependency_slots shifts the rule's answers with numpy where the process has it, part by part
    otherwise (utils.pipeline.runtime.loaded_numpy): the same lists either way."""
    from dataclasses import replace

    from utils.pipeline import runtime

    s = make_schedule(name, 4, 8)
    with_numpy = s.dependency_slots
    monkeypatch.setattr(runtime, "loaded_numpy", lambda: None)
    assert replace(s).dependency_slots == with_numpy
