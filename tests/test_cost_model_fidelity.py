"""The cost model's two fidelity knobs and the report's definitions of Table 2.

* ``comm_share``: hiding communication is not free. A pair that hides an all-to-all computes on the SMs the
  communication leaves (DeepSeek-V3: 112 of 132), 132/112 times as long; plain actions keep the whole GPU.
* ``chunk_scale``: model chunks of unequal cost (an embedding in the first, the output head in the last).
* Table 2 with the report's own F, B, W and F&B, execution times with communication included, equals the
  simulator, with or without the all-to-all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from utils.pipeline import table2
from utils.pipeline.costs import COMM_SHARE, CostModel
from utils.pipeline.registry import SCHEDULE_NAMES, make_schedule
from utils.pipeline.schedule import OverlappedAction
from utils.pipeline.simulate import action_length, simulate

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"dualpipe": (4, 8), "dualpipev": (2, 8), "chimera": (4, 8)}


def _spans(timeline):
    return [[(iv.start, iv.end) for iv in row] for row in timeline.intervals]


# ------------------------------------------------------------------------------------------- comm_share
def test_the_default_share_is_the_reports_20_of_132_sms():
    assert COMM_SHARE == 20 / 132 and CostModel(F=1, B=2, W=1).comm_share == COMM_SHARE
    costs = CostModel(F=1, B=2, W=1, dispatch=0.5, combine=0.5)
    assert costs.pair_slowdown == pytest.approx(132 / 112)
    assert costs.duration("FB") == pytest.approx(3 * 132 / 112)
    assert costs.duration("F") == 1 and costs.duration("B") == 2  # a plain chunk computes on every SM
    assert action_length(costs, "F") == 2 and action_length(costs, "W") == 1
    assert CostModel(F=1, B=2, W=1).pair_slowdown == 1  # nothing to hide, no SM given up


@pytest.mark.parametrize("share", [0.0, 0.1, COMM_SHARE, 0.5])
def test_only_pairs_pay_and_they_pay_the_share(share):
    costs = CostModel(F=1, B=2, W=1, dispatch=0.25, combine=0.25, comm_share=share)
    for name in ("1f1b-overlap", "dualpipe", "dualpipev", "1f1b", "zb1p"):
        ranks, m = SIZES.get(name, (4, 8))
        tl = simulate(make_schedule(name, ranks, m), costs)
        for row in tl.intervals:
            for iv in row:
                if isinstance(iv.action, OverlappedAction):  # a = 0.5 hides behind the slowed partner
                    compute = costs.FB if iv.action.backward.kind == "B" else costs.FI
                    assert iv.duration == pytest.approx(compute / (1 - share))
                else:
                    a2a = 0.0 if iv.kind == "W" else 0.5
                    assert iv.duration == pytest.approx(costs.duration(iv.kind) + a2a)


def test_share_zero_is_free_overlap_and_a_larger_share_never_helps():
    base = CostModel(F=1, B=2, W=1, dispatch=0.5, combine=0.5, comm_share=0)
    for name in ("1f1b-overlap", "dualpipe", "dualpipev"):
        ranks, m = SIZES.get(name, (4, 8))
        s = make_schedule(name, ranks, m)
        spans = [simulate(s, replace(base, comm_share=v)).makespan for v in (0, 0.05, COMM_SHARE, 0.4)]
        assert spans == sorted(spans) and spans[0] < spans[-1]
    plain = make_schedule("1f1b", 4, 8)  # no pairs: the share changes nothing
    assert _spans(simulate(plain, base)) == _spans(simulate(plain, replace(base, comm_share=0.4)))


def test_command_line_comm_share():
    def run(*extra):
        out = subprocess.run([sys.executable, "-m", "utils.simulate", "1f1b-overlap", "--ranks", "4", "--microbatches",
                              "8", "--dispatch", "0.5", "--combine", "0.5", "--json", *extra],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)
    assert run("--comm-share", "0")["makespan"] == 41  # the free-overlap numbers of earlier courses
    default = run()
    assert default["makespan"] == pytest.approx(41 + 7 * 3 * 20 / 112) and default["comm_share"] == COMM_SHARE
    bad = subprocess.run([sys.executable, "-m", "utils.simulate", "1f1b", "--ranks", "4", "--microbatches", "8",
                          "--comm-share", "-0.1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1


@pytest.mark.parametrize("share", [-0.1, 1.0, 1.5, float("nan")])
def test_a_share_outside_zero_to_one_is_refused(share):
    with pytest.raises(ValueError, match="comm_share"):
        CostModel(F=1, B=2, W=1, comm_share=share)


# ------------------------------------------------------------------------------------------- chunk_scale
def test_uneven_chunks_by_hand():
    """1F1B on 2 ranks, 2 micro-batches, F=1, B=2, chunk 0 twice as costly: rank 0 runs F0 [0,2], F1 [2,4];
    rank 1 F0 [2,3], B0 [3,5], F1 [5,6], B1 [6,8]; rank 0 then B0 [5,9], B1 [9,13]."""
    tl = simulate(make_schedule("1f1b", 2, 2), CostModel(F=1, B=2, W=1, chunk_scale=(2, 1)))
    assert _spans(tl) == [[(0, 2), (2, 4), (5, 9), (9, 13)], [(2, 3), (3, 5), (5, 6), (6, 8)]]
    assert tl.makespan == 13 and [tl.compute(r) for r in range(2)] == [12, 6]
    assert [tl.idle(r) for r in range(2)] == [1, 7]


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_all_ones_is_the_uniform_model_bit_for_bit(name):
    ranks, m = SIZES.get(name, (4, 8))
    s = make_schedule(name, ranks, m)
    for costs in (CostModel(F=1, B=2, W=1), CostModel(F=1.3, B=2.1, W=0.7, FB=3.0, dispatch=0.3, combine=0.4)):
        ones = replace(costs, chunk_scale=(1.0,) * s.n_chunks)
        assert _spans(simulate(s, ones)) == _spans(simulate(s, costs))
        double = replace(costs, chunk_scale=(2.0,) * s.n_chunks, dispatch=2 * costs.dispatch,
                         combine=2 * costs.combine)
        assert simulate(s, double).makespan == pytest.approx(
            2 * simulate(s, replace(costs, comm_share=costs.comm_share)).makespan)


def test_dualpipes_mirrored_stages_share_their_chunks_factor():
    s = make_schedule("dualpipe", 4, 8)
    costs = CostModel(F=1, B=2, W=1, chunk_scale=(1.5, 1, 1, 1))
    tl = simulate(s, costs)
    for row in tl.intervals:
        for iv in row:
            if isinstance(iv.action, OverlappedAction):
                continue
            chunk = s.stage_to_chunk[iv.action.stage]
            assert iv.duration == pytest.approx((1.5 if chunk == 0 else 1) * costs.duration(iv.kind))
    assert tl.makespan > simulate(s, CostModel(F=1, B=2, W=1)).makespan


def test_a_heavier_chunk_only_slows_the_step():
    for name in ("1f1b", "zb1p", "dualpipe", "dualpipev", "interleaved1f1b", "zbv"):
        ranks, m = SIZES.get(name, (4, 8))
        s = make_schedule(name, ranks, m)
        uniform = simulate(s, CostModel(F=1, B=2, W=1)).makespan
        for chunk in range(s.n_chunks):
            scale = tuple(1.4 if c == chunk else 1.0 for c in range(s.n_chunks))
            assert simulate(s, CostModel(F=1, B=2, W=1, chunk_scale=scale)).makespan >= uniform


def test_one_factor_per_chunk():
    with pytest.raises(ValueError, match="one factor per model chunk"):
        simulate(make_schedule("dualpipev", 2, 4), CostModel(F=1, B=2, W=1, chunk_scale=(1, 1)))  # 4 chunks
    with pytest.raises(ValueError, match="chunk_scale"):
        CostModel(F=1, B=2, W=1, chunk_scale=(1, 0))
    with pytest.raises(ValueError, match="chunk_scale"):
        CostModel(F=1, B=2, W=1, chunk_scale=(1, float("inf")))


def test_command_line_chunk_scale():
    out = subprocess.run([sys.executable, "-m", "utils.simulate", "1f1b", "--ranks", "2", "--microbatches", "2",
                          "--chunk-scale", "2,1", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["makespan"] == 13 and data["chunk_scale"] == [2, 1]
    for bad in ("2,1,1", "2,x", "2,-1"):
        res = subprocess.run([sys.executable, "-m", "utils.simulate", "1f1b", "--ranks", "2", "--microbatches", "2",
                              "--chunk-scale", bad], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, bad


def test_closed_forms_say_they_need_uniform_costs():
    uneven = CostModel(F=1, B=2, W=1, chunk_scale=(1.3, 1, 1, 1))
    assert not table2.assumptions_hold("1f1b", uneven, 4, 8)[0]
    assert not table2.overlap_assumptions_hold(uneven)[0]


# ------------------------------------------------------------------------------- Table 2, report's terms
@pytest.mark.parametrize("share", [0.0, COMM_SHARE])
@pytest.mark.parametrize("a2a", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("pp", [4, 8, 16])
def test_table2_with_execution_times_is_the_simulator(pp, a2a, share):
    """With the report's definitions (F = 2, B = 3, W = 1, F&B = 3 at a = 1 when overlap is free) every row of
    Table 2 gives the simulator's worst-rank idle, communication included."""
    costs = CostModel(F=1, B=2, W=1, dispatch=a2a / 2, combine=a2a / 2, comm_share=share)
    x = table2.execution_times(costs)
    assert (x["F"], x["B"], x["W"]) == (1 + a2a, 2 + a2a, 1)
    if a2a == 1 and share == 0:
        assert x["FB"] == 3
    for method in table2.METHODS:
        ranks = pp // 2 if method == "dualpipev" else pp
        tl = simulate(make_schedule(method, ranks, 2 * pp), costs)
        ok, why = table2.assumptions_hold(method, costs, pp, 2 * pp)
        assert ok, why
        assert tl.worst_idle == pytest.approx(table2.bubble(method, pp, costs), abs=1e-9), method
