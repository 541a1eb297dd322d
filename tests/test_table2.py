"""DeepSeek-V3 Table 2 reproduced by the simulator, and the cases where the closed forms stop being exact.

The bubble of a method is the worst rank's idle time in one step. PP is the number of pipeline stages of the
model (model chunks): ranks for 1F1B, ZB1P and DualPipe, twice the ranks for DualPipeV.
"""

import pytest

from utils.pipeline import table2
from utils.pipeline.costs import CostModel
from utils.pipeline.registry import make_schedule
from utils.pipeline.simulate import simulate

# costs meeting every method's assumptions: F = B - W, W <= F, max(F, B) <= FB <= F + B
GOOD_COSTS = [
    CostModel(F=1, B=2, W=1, FB=3),
    CostModel(F=1, B=2, W=1, FB=2),
    CostModel(F=1, B=2, W=1, FB=2.5),
    CostModel(F=1.5, B=2.5, W=1, FB=3.5),
    CostModel(F=2, B=3, W=1, FB=4.2),
    CostModel(F=1, B=1.5, W=0.5, FB=2),
    CostModel(F=1, B=1, W=0, FB=1.7),
]
PPS = [2, 4, 8, 16]


def worst_idle(name, ranks, mbs, costs):
    return simulate(make_schedule(name, ranks, mbs), costs).worst_idle


@pytest.mark.parametrize("costs", GOOD_COSTS)
@pytest.mark.parametrize("pp", PPS)
def test_bubbles_match_table2(pp, costs):
    for m in (2 * pp, 3 * pp, 4 * pp + 2):
        assert worst_idle("1f1b", pp, m, costs) == pytest.approx(
            table2.bubble_1f1b(pp, costs.F, costs.B), abs=1e-9
        )
        assert worst_idle("zb1p", pp, m, costs) == pytest.approx(
            table2.bubble_zb1p(pp, costs.F, costs.B, costs.W), abs=1e-9
        )
        dual = table2.bubble_dualpipe(pp, costs.FB, costs.B, costs.W)
        assert worst_idle("dualpipe", pp, m, costs) == pytest.approx(dual, abs=1e-9)
        assert worst_idle("dualpipev", pp // 2, m, costs) == pytest.approx(dual, abs=1e-9)


@pytest.mark.parametrize("pp", PPS)
def test_activations_and_parameters_match_table2(pp):
    for m in (2 * pp, 3 * pp + 2):
        for name in table2.METHODS:
            ranks = pp // 2 if name == "dualpipev" else pp
            tl = simulate(make_schedule(name, ranks, m), GOOD_COSTS[0])
            assert max(tl.peak_activations(r) for r in range(ranks)) == table2.peak_activations(name, pp)
            assert max(tl.param_copies(r) for r in range(ranks)) == table2.param_copies(name)
    assert [table2.param_copies(n) for n in ("1f1b", "zb1p", "dualpipe")] == [1, 1, 2]
    assert [table2.peak_activations(n, pp) for n in ("1f1b", "zb1p", "dualpipe")] == [pp, pp, pp + 1]


def test_simulated_table2_rows():
    rows = table2.simulated_table2(8, 32, GOOD_COSTS[2])
    assert [r["method"] for r in rows] == list(table2.METHODS)
    for r in rows:
        assert r["simulated_bubble"] == pytest.approx(r["formula_bubble"], abs=1e-9)
        assert r["simulated_activations"] == r["formula_activations"]
        assert r["simulated_params"] == r["formula_params"]
        assert r["assumptions"] == "hold"


def test_1f1b_holds_even_with_few_microbatches():
    """1F1B's (PP-1)(F+B) needs no assumption on M: rank 0 always waits for the first backward's round
    trip."""
    for m in (1, 2, 3):
        assert worst_idle("1f1b", 4, m, GOOD_COSTS[0]) == table2.bubble_1f1b(4, 1, 2)


def test_zb1p_differs_with_fewer_microbatches_than_stages():
    """With M < PP, rank r has fewer than r W passes to postpone, so some cool-down waits stay empty:
    the simulated bubble is larger than (PP-1)(F+B-2W)."""
    c = GOOD_COSTS[0]
    sims = [worst_idle("zb1p", 4, m, c) for m in (1, 2, 3, 4)]
    assert sims == [6, 5, 4, 3] and table2.bubble_zb1p(4, c.F, c.B, c.W) == 3
    assert not table2.assumptions_hold("zb1p", c, 4, 3)[0]


def test_zb1p_differs_when_w_is_longer_than_f():
    """W > F: a postponed W no longer fits in the gap before the next forward, so the last rank idles more
    than the formula says (formula 1.5, simulated 3)."""
    c = CostModel(F=0.5, B=2, W=1, FB=2.5)
    assert table2.bubble_zb1p(4, c.F, c.B, c.W) == 1.5
    assert worst_idle("zb1p", 4, 8, c) == 3
    assert table2.assumptions_hold("zb1p", c, 4, 8) == (
        False,
        "ZB1P needs W <= F and W <= B - W (execution times) so a postponed W fits in a wait",
    )


def test_zb1p_differs_when_w_is_longer_than_the_input_backward():
    """W > B - W: the cool-down gaps are B - W long, a W does not fit, so the formula (0 here) is too low."""
    c = CostModel(F=1, B=3, W=2, FB=3.5)
    assert table2.bubble_zb1p(4, c.F, c.B, c.W) == 0
    assert worst_idle("zb1p", 4, 8, c) == 3


def test_dualpipe_differs_when_f_is_longer_than_the_input_backward():
    """F > B - W breaks DualPipe's balance: forwards arrive slower than input-backwards drain, the simulated
    bubble (3) is larger than the formula (2)."""
    c = CostModel(F=2, B=2, W=1, FB=3)
    assert table2.bubble_dualpipe(4, c.FB, c.B, c.W) == 2
    assert worst_idle("dualpipe", 4, 8, c) == worst_idle("dualpipev", 2, 8, c) == 3
    assert not table2.assumptions_hold("dualpipe", c, 4, 8)[0]


def test_dualpipe_differs_when_f_is_shorter_than_the_input_backward():
    """F < B - W: the formula is pessimistic here (simulated 1.5 < formula 2): the -3W credit assumes W
    passes fill gaps of length F, and shorter forwards leave shorter gaps."""
    c = CostModel(F=1, B=3, W=1.5, FB=3.5)
    assert worst_idle("dualpipe", 4, 8, c) == 1.5 < table2.bubble_dualpipe(4, c.FB, c.B, c.W) == 2


def test_dualpipe_differs_when_w_is_longer_than_f():
    """F = B - W but W > F: the postponed W passes overflow the gaps (simulated 1.5, formula 0.5)."""
    c = CostModel(F=1, B=3, W=2, FB=3.5)
    assert worst_idle("dualpipe", 4, 8, c) == 1.5
    assert table2.bubble_dualpipe(4, c.FB, c.B, c.W) == 0.5


def test_p2p_latency_is_not_in_table2():
    """Table 2 counts compute only: with a point-to-point latency every method idles longer than its
    formula."""
    c = CostModel(F=1, B=2, W=1, FB=3, p2p=0.5)
    for name, ranks in (("1f1b", 4), ("zb1p", 4), ("dualpipe", 4), ("dualpipev", 2)):
        assert worst_idle(name, ranks, 8, c) > table2.bubble(name, 4, c)
        assert not table2.assumptions_hold(name, c, 4, 8)[0]


@pytest.mark.parametrize("method", ["gpipe", "naive", "zb2p", ""])
def test_unknown_method(method):
    with pytest.raises(ValueError, match="Table 2 covers"):
        table2.peak_activations(method, 4)


@pytest.mark.parametrize("n_ranks", [1, 2, 4, 8])
def test_dualpipev_holds_from_its_smallest_microbatch_count(n_ranks):
    """DualPipeV needs only M >= PP = 2N micro-batches, odd counts included."""
    pp, c = 2 * n_ranks, GOOD_COSTS[2]
    for m in (pp, pp + 1):
        tl = simulate(make_schedule("dualpipev", n_ranks, m), c)
        assert tl.worst_idle == pytest.approx(table2.bubble("dualpipev", pp, c), abs=1e-9)
        assert max(tl.peak_activations(r) for r in range(n_ranks)) == pp + 1
