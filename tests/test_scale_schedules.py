"""Full-scale costs in the course's simulator: sized chunks, weighted activation peaks, the report's setting."""

import pytest
from test_scale_params import TINY
from test_scale_timing import TOY, TOY_GPU

from utils.pipeline.costs import CostModel
from utils.pipeline.registry import make_schedule
from utils.pipeline.simulate import simulate
from utils.scale.config import load_model
from utils.scale.hardware import load_hardware
from utils.scale.report import evaluate
from utils.scale.schedules import (
    SCHEDULES,
    activation_peaks,
    chunk_scale,
    overlaps_communication,
    run_schedule,
    size_pipeline,
    uneven_stages,
)
from utils.scale.setting import Layout, report_setting
from utils.scale.timing import chunk_times


@pytest.mark.parametrize("name", SCHEDULES)
def test_equal_chunks_give_table_2_activation_counts(name):
    timeline = simulate(make_schedule(name, 4, 8), CostModel(F=1, B=2, W=1, FB=3))
    peaks = activation_peaks(timeline, [1.0] * timeline.schedule.n_chunks)
    assert peaks == [timeline.peak_activations(r) for r in range(4)]


def test_weighted_peak_by_hand():
    # 1F1B on 2 ranks, 2 micro-batches: rank 0 runs F0 F1 B0 B1 (both of stage 0's activations held at once),
    # rank 1 runs F0 B0 F1 B1 (one at a time). Stage 0 caches 10 bytes per micro-batch, stage 1 caches 1.
    timeline = simulate(make_schedule("1f1b", 2, 2), CostModel(F=1, B=2, W=1))
    assert activation_peaks(timeline, [10.0, 1.0]) == [20.0, 1.0]


def test_sized_pipeline_feeds_the_simulator_the_mean_chunk():
    layout = Layout.of(TINY, TOY_GPU, TOY)  # PP = 2, 2 micro-batches
    sized = size_pipeline(TINY, TOY_GPU, TOY, layout, "1f1b")
    assert not sized.overlap and len(sized.chunks) == 2
    times = [chunk_times(TINY, TOY_GPU, TOY, layout, c, overlap=False) for c in sized.chunks]
    assert sized.costs.F == pytest.approx(sum(t.F for t in times) / 2)
    assert sized.costs.dispatch == pytest.approx(sum(t.dispatch for t in times) / 2)
    assert sized.costs.FB == pytest.approx(sized.costs.F + sized.costs.B)  # pairs hide communication only
    assert sized.imbalance >= 1.0


def test_overlapped_schedules_are_detected_from_their_actions():
    assert overlaps_communication(make_schedule("dualpipe", 4, 8))
    assert overlaps_communication(make_schedule("dualpipev", 4, 8))
    assert overlaps_communication(make_schedule("1f1b-overlap", 4, 8))
    assert not overlaps_communication(make_schedule("1f1b", 4, 8))
    assert not overlaps_communication(make_schedule("zb1p", 4, 8))


@pytest.fixture(scope="module")
def report():
    return evaluate("DeepSeek-V3", "H800", report_setting())


def test_the_reports_setting_fits_in_80_gb(report):
    assert report.setting.schedule == "dualpipe" and report.layout.gpus == 2048
    assert report.layout.microbatches == 15360 // 128
    assert report.fits
    memory = report.chosen.memory.gb()
    assert memory["total"] <= 80
    assert memory["total"] == pytest.approx(sum(v for k, v in memory.items() if k != "total"))
    # every rank fits, not only the worst one reported
    assert all(m.total <= 80e9 for m in report.chosen.memory_by_rank)


def test_overlap_needs_pairs_and_fits_with_pp_plus_one_or_the_v(report):
    s = report.schedules
    added = {name: r.a2a_added_ms for name, r in s.items()}
    # F&B pairs hide the all-to-all; the V placement alone (ZB-V) does not. Hiding is not free: a pair computes
    # on 112 of 132 SMs, and that slower compute is most of what the all-to-all still adds to DualPipe's step
    assert added["1f1b-overlap"] < 0.4 * added["1f1b"] and added["dualpipe"] < 0.4 * added["1f1b"]
    assert added["zbv"] > 0.9 * added["1f1b"]
    slower = s["dualpipe"].pipeline.costs.pair_slowdown - 1  # 20/112
    pairs = sum(1 for iv in s["dualpipe"].timeline.intervals[0] if iv.kind == "FB")
    assert slower == pytest.approx(20 / 112)
    assert added["dualpipe"] > 0.5 * pairs * slower * s["dualpipe"].pipeline.costs.FB
    # 1F1B with overlapped pairs holds 2 PP chunk-activations and does not fit; DualPipe's PP + 1 does
    assert s["1f1b-overlap"].peak_activations == 2 * 16
    assert s["1f1b-overlap"].memory.total > 80e9 >= s["dualpipe"].memory.total
    # DualPipeV hides it too, within 80 GB, with one copy of the parameters
    assert added["dualpipev"] < 0.4 * added["1f1b"] and s["dualpipev"].memory.total <= 80e9


def test_dualpipe_hides_the_all_to_all_and_pays_in_parameters(report):
    one, dual = report.schedules["1f1b"], report.schedules["dualpipe"]
    assert dual.a2a_added_ms < 0.4 * one.a2a_added_ms  # hidden, but its pairs compute on 112 of 132 SMs
    budget = dual.timeline.worst_budget()
    assert dual.compute_ms + dual.comm_waited_ms + dual.idle_ms == pytest.approx(dual.step_ms)
    assert (dual.compute_ms, dual.idle_ms) == (budget.compute, budget.idle)
    assert dual.budget_rank == budget.rank
    assert dual.step_ms < one.step_ms
    assert (dual.param_copies, one.param_copies) == (2, 1)
    assert (dual.peak_activations, one.peak_activations) == (17, 16)  # Table 2: PP+1 and PP
    # two chunks of parameters on every DualPipe rank: more model states than 1F1B's rank with the same chunk
    rank = dual.worst_rank
    assert dual.memory_by_rank[rank].weights > one.memory_by_rank[rank].weights


def test_json_fields(report):
    data = report.as_json()
    assert data["params_total"] == pytest.approx(671e9, rel=0.01)
    assert abs(data["params_activated"] - 37e9) <= 0.5e9
    chunk = data["chunk_ms"]
    assert data["comm_to_compute"] == pytest.approx((chunk["dispatch"] + chunk["combine"]) / chunk["F"])
    layer = data["layer_ms"]
    assert data["moe_layer_comm_to_compute"] == pytest.approx((layer["dispatch"] + layer["combine"]) / layer["F"])
    # the mean chunk also holds the dense layers and the output heads (compute without all-to-all)
    assert data["comm_to_compute"] < data["moe_layer_comm_to_compute"]
    assert set(data["schedules"]) | set(data["schedules_unavailable"]) == set(SCHEDULES)
    assert {"1f1b", "1f1b-overlap", "zb1p", "dualpipe", "dualpipev"} <= set(data["schedules"])
    steps = 14.8e12 / data["tokens_per_step"]
    assert data["gpu_hours_14.8T_tokens"] == pytest.approx(steps * data["step_ms"] / 1e3 * 2048 / 3600)


def _ratio(**changes):
    setting = report_setting().with_changes(**changes.pop("setting", {}))
    hardware = load_hardware().with_changes(**changes)
    return evaluate(load_model(), hardware, setting, schedules=()).comm_to_compute


def test_what_the_learner_can_change_moves_the_ratio_as_the_formulas_say(report):
    base = report.comm_to_compute
    # InfiniBand is the bottleneck hop, so halving it doubles the all-to-all
    assert _ratio(ib_gbps=25) == pytest.approx(2 * base)
    # lifting the node cap: a token's 8 experts spread over 5.29 of 8 nodes instead of 4
    lifted = _ratio(setting={"max_nodes": 8})
    assert lifted == pytest.approx(base * 5.29 / 4, rel=0.01)
    # BF16 dispatch: 2 bytes per value instead of 1 + 4/128 for the dispatch half
    layer = report.layer_ms
    grows = (layer["dispatch"] * 2 / (1 + 4 / 128) + layer["combine"]) / (layer["dispatch"] + layer["combine"])
    assert _ratio(setting={"dispatch_dtype": "bf16"}) == pytest.approx(base * grows)
    # a faster network link inside the node does not help: NVLink is not the bottleneck
    assert _ratio(nvlink_gbps=320) == pytest.approx(base)


def test_run_schedule_matches_a_direct_simulation():
    model, hardware = load_model(), load_hardware()
    setting = report_setting().with_changes(pp=4, microbatches=8)
    layout = Layout.of(model, hardware, setting)
    result = run_schedule(model, hardware, setting, layout, "zb1p")
    timeline = simulate(make_schedule("zb1p", 4, 8), result.pipeline.costs)
    assert result.step_ms == pytest.approx(timeline.makespan)
    assert result.worst_idle_ms == pytest.approx(timeline.worst_idle)


def test_equal_layer_cut_puts_the_embedding_first_and_the_tail_last():
    from utils.scale.stages import equal_layer_cut
    chunks = equal_layer_cut(load_model(), 16)
    assert [c.n_layers for c in chunks] == [4] * 13 + [3] * 3
    assert chunks[0].embedding and chunks[0].n_dense == 3 and chunks[-1].tail and chunks[-1].first_layer == 58
    with pytest.raises(ValueError, match="at most 61"):
        equal_layer_cut(load_model(), 62)


def test_uneven_stages_by_hand_on_a_small_pipeline():
    model, hardware = load_model(), load_hardware()
    setting = report_setting().with_changes(pp=4, microbatches=8)
    layout = Layout.of(model, hardware, setting)
    rows = {(r["schedule"], r["cut"]): r for r in uneven_stages(model, hardware, setting, layout, ("1f1b",), 3)}
    sized = size_pipeline(model, hardware, setting, layout, "1f1b")
    # uniform: what run_schedule simulates
    assert rows["1f1b", "uniform"]["step_ms"] == pytest.approx(run_schedule(model, hardware, setting, layout,
                                                                           "1f1b").step_ms)
    # the balanced cut's costliest chunk is SizedPipeline.imbalance; the factors average 1
    scale = chunk_scale(sized.chunk_times)
    assert sum(scale) / len(scale) == pytest.approx(1.0)
    assert rows["1f1b", "balanced"]["costliest_chunk"] == pytest.approx(sized.imbalance)
    # rank 3 holds the last chunk (tail): its load is that chunk's factor, its compute is M x (F + B) x factor
    costs = sized.costs
    assert rows["1f1b", "balanced"]["rank_load"] == pytest.approx(scale[-1])
    assert rows["1f1b", "balanced"]["rank_compute_ms"] == pytest.approx(8 * (costs.F + costs.B) * scale[-1])
    # the same compute in every cut, so any longer step is the imbalance's cost; the slowest chunk paces it
    for cut in ("equal layers", "balanced"):
        row = rows["1f1b", cut]
        assert row["step_ms"] >= 8 * (costs.F + costs.B) * row["costliest_chunk"]
        assert row["over_uniform"] == pytest.approx(row["step_ms"] / rows["1f1b", "uniform"]["step_ms"])
    assert rows["1f1b", "equal layers"]["step_ms"] > rows["1f1b", "balanced"]["step_ms"] > rows["1f1b",
                                                                                                "uniform"]["step_ms"]
