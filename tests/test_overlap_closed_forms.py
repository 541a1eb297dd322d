"""1f1b-overlap's closed forms (utils.pipeline.table2, beside Table 2) against the simulator: step time, bubble,
exposed communication and the whole time budget per rank, over PP 2..8, odd and even micro-batch counts and
costs with and without an all-to-all (issue #12, section 1)."""

import itertools

import pytest

from utils.pipeline import table2
from utils.pipeline.costs import CostModel
from utils.pipeline.registry import TABLE2_SCHEDULES, make_schedule
from utils.pipeline.simulate import simulate

# Costs under which the closed forms hold: F&B = F + B (the default) with any all-to-all, or compute overlap
# small enough that a pair still outlasts a lone chunk with its all-to-all.
HOLDING = [
    CostModel(F=1, B=2, W=1),
    CostModel(F=1, B=2, W=1, dispatch=0.5, combine=0.5),
    CostModel(F=1, B=2, W=0.5, dispatch=1.0, combine=1.5),      # a > B: pairs expose some all-to-all
    CostModel(F=2, B=1, W=0.5, dispatch=0.25, combine=0.25),
    CostModel(F=1.5, B=1.5, W=0, dispatch=3, combine=3),        # a far above compute
    CostModel(F=1, B=2, W=1, FB=2.5, dispatch=0.25, combine=0.25),
    CostModel(F=1, B=1, W=0.5, FB=1.5, dispatch=0.0, combine=0.0),
]
PPS = range(2, 9)


def microbatch_counts(pp):
    return sorted({1, 2, 3, 5, 8, 2 * pp - 1, 2 * pp, 2 * pp + 1, 17, 33})


@pytest.mark.parametrize("costs", HOLDING, ids=lambda c: f"F{c.F}B{c.B}FB{c.FB}a{c.dispatch + c.combine}")
@pytest.mark.parametrize("pp", PPS)
def test_closed_forms_match_the_simulator(pp, costs):
    assert table2.overlap_assumptions_hold(costs) == (True, "the formulas are exact")
    a = costs.dispatch + costs.combine
    for m in microbatch_counts(pp):
        tl = simulate(make_schedule("1f1b-overlap", pp, m), costs)
        assert tl.makespan == pytest.approx(table2.overlap_step_time(pp, m, costs), abs=1e-9), m
        assert tl.worst_idle == pytest.approx(table2.bubble_1f1b_overlap(pp, costs.F, costs.B, a), abs=1e-9)
        assert tl.comm_exposed(pp - 1) == pytest.approx(table2.overlap_comm_exposed(pp, m, costs), abs=1e-9)
        for r in range(pp):
            b, closed = tl.budget(r), table2.overlap_rank_budget(pp, m, r, costs)
            assert (b.compute, b.comm_exposed, b.idle) == pytest.approx(
                (closed["compute"], closed["comm_exposed"], closed["idle"]), abs=1e-9)
        assert max(tl.peak_activations(r) for r in range(pp)) == table2.overlap_peak_activations(pp, m)
        plain = simulate(make_schedule("1f1b", pp, m), costs)
        assert plain.makespan == pytest.approx(table2.one_f_one_b_step_time(pp, m, costs), abs=1e-9)


def test_with_no_all_to_all_it_is_table2s_1f1b_bubble():
    for pp, (F, B) in itertools.product(PPS, [(1, 2), (2, 1), (1.5, 1.5)]):
        assert table2.bubble_1f1b_overlap(pp, F, B) == table2.bubble_1f1b(pp, F, B)


def test_the_saving_over_1f1b_is_the_hidden_all_to_all():
    """With F&B = F + B and a <= min(F, B) each of the M - 1 pairs hides both of its chunks' all-to-alls, and
    pays for it in compute: the pair runs on the SMs the communication leaves (k = 132/112 by default)."""
    for share in (0, 20 / 132, 0.3):
        costs = CostModel(F=1, B=2, W=1, dispatch=0.5, combine=0.5, comm_share=share)
        k = 1 / (1 - share)
        for pp, m in [(4, 8), (8, 33), (16, 64)]:
            saving = table2.one_f_one_b_step_time(pp, m, costs) - table2.overlap_step_time(pp, m, costs)
            assert saving == pytest.approx((m - 1) * (2 * (costs.dispatch + costs.combine) - (k - 1) * costs.FB))


@pytest.mark.parametrize("costs,why", [
    (CostModel(F=1, B=3, W=1, FB=3, dispatch=0.5, combine=0.5), "shorter than a lone chunk"),
    (CostModel(F=2, B=2, W=1, FB=2, dispatch=0.5, combine=0.5), "shorter than a lone chunk"),
    (CostModel(F=1, B=2, W=1, p2p=0.25, dispatch=0.5, combine=0.5), "p2p"),
])
def test_outside_the_assumptions_the_step_is_longer(costs, why):
    ok, reason = table2.overlap_assumptions_hold(costs)
    assert not ok and why in reason
    longer = 0
    for pp, m in [(2, 8), (4, 9), (5, 16)]:
        simulated = simulate(make_schedule("1f1b-overlap", pp, m), costs).makespan
        assert simulated >= table2.overlap_step_time(pp, m, costs) - 1e-9
        longer += simulated > table2.overlap_step_time(pp, m, costs) + 1e-9
    assert longer > 0


def test_a_pair_slower_than_its_lone_chunks_breaks_the_closed_forms():
    """Half the SMs to communication and a small all-to-all: a pair (k F&B = 6) lasts longer than its two chunks
    alone with their all-to-all (F + B + 2a = 4), so rank 0 (fewest pairs) idles most, not the last rank."""
    costs = CostModel(F=1, B=2, W=1, dispatch=0.25, combine=0.25, comm_share=0.5)
    ok, reason = table2.overlap_assumptions_hold(costs)
    assert not ok and "lone chunks are then faster than a pair" in reason
    tl = simulate(make_schedule("1f1b-overlap", 4, 8), costs)
    idles = [tl.budget(r).idle for r in range(4)]
    assert tl.worst_idle == idles[0] == pytest.approx(24)
    assert table2.bubble_1f1b_overlap(4, costs.F, costs.B, costs.dispatch + costs.combine) == pytest.approx(12)


def test_not_a_table2_row():
    assert table2.OVERLAP_METHOD not in TABLE2_SCHEDULES and table2.OVERLAP_METHOD not in table2.METHODS
    with pytest.raises(ValueError, match="Table 2 covers"):
        table2.bubble("1f1b-overlap", 4, CostModel(F=1, B=2, W=1))
