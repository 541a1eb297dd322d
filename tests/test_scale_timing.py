"""Hardware, the parallel layout and the per-chunk times: each formula against a hand-computed tiny case."""

import math

import pytest
from test_scale_params import TINY

from utils.scale.config import ModelConfig, load_model
from utils.scale.hardware import Hardware, load_hardware
from utils.scale.params import layer_flops
from utils.scale.setting import Layout, report_setting
from utils.scale.stages import Chunk
from utils.scale.timing import (
    all_to_all_ms,
    bytes_per_value,
    chunk_times,
    compute_ms,
    expected_nodes,
    nodes_per_token,
    p2p_ms,
)

# Round numbers: 1 TFLOPS BF16, 2 TFLOPS FP8, 10 SMs of which 2 communicate, IB 1 GB/s, NVLink 4 GB/s.
TOY_GPU = Hardware(
    name="toy",
    peak_bf16_tflops=1.0,
    peak_fp8_tflops=2.0,
    n_sms=10,
    comm_sms=2,
    memory_gb=1.0,
    nvlink_gbps=4.0,
    ib_gbps=1.0,
    gpus_per_node=2,
)
# 4 experts over EP = 4 GPUs on 2 nodes of 2; 3-token sequences, one per micro-batch; efficiency 0.5
TOY = report_setting().with_changes(
    pp=2, dp=4, ep=4, max_nodes=2, seq_len=3, tokens_per_microbatch=3, global_batch=8, efficiency=0.5
)


def test_throughput_is_peak_times_efficiency_times_compute_sms():
    assert TOY_GPU.throughput("fp8", 0.5, overlap=False) == 1e12
    assert TOY_GPU.throughput("bf16", 0.5, overlap=True) == pytest.approx(0.5e12 * 8 / 10)
    with pytest.raises(ValueError, match="fp8, bf16"):
        TOY_GPU.peak_tflops("fp4")


def test_h800_is_read_from_data():
    h800 = load_hardware("H800")
    assert (h800.peak_bf16_tflops, h800.peak_fp8_tflops) == (989.4, 1978.9)
    assert (h800.n_sms, h800.comm_sms, h800.gpus_per_node) == (132, 20, 8)
    assert (h800.nvlink_gbps, h800.ib_gbps, h800.memory_gb) == (160, 50, 80)
    assert h800.with_changes(ib_gbps=25).ib_gbps == 25


def test_compute_ms_by_hand():
    f = layer_flops(TINY, moe=True, seq_len=3, recompute=False)  # forward: 1144 FP8 GEMM, 112 BF16
    passes = compute_ms(f, 3, TOY_GPU, TOY, overlap=False)
    # 3 tokens x (1144 / 1e12 + 112 / 0.5e12) seconds, in ms
    assert passes.F == pytest.approx(1e3 * 3 * (1144 / 1e12 + 112 / 0.5e12))
    assert passes.W == pytest.approx(1e3 * 3 * (1144 / 1e12 + 64 / 0.5e12))
    assert passes.B == pytest.approx(passes.I + passes.W)
    # 8 of 10 SMs compute while the all-to-all runs
    assert compute_ms(f, 3, TOY_GPU, TOY, overlap=True).F == pytest.approx(passes.F * 10 / 8)
    # BF16 GEMMs take twice as long as FP8 ones on this GPU
    bf16 = compute_ms(f, 3, TOY_GPU, TOY.with_changes(gemm_dtype="bf16"), overlap=False)
    assert bf16.F == pytest.approx(1e3 * 3 * (1144 + 112) / 0.5e12)


def test_expected_nodes_by_hand():
    # 2 of 4 experts on 2 nodes of 2: both on one node with probability C(2,2)/C(4,2) = 1/6
    assert expected_nodes(4, 2, 2) == pytest.approx(2 * (1 - 1 / 6))
    assert expected_nodes(8, 8, 1) == pytest.approx(1.0)
    # DeepSeek-V3 uncapped: 8 of 256 experts over 8 nodes span about 5.3 nodes (the capstone measures 5.3)
    assert expected_nodes(256, 8, 8) == pytest.approx(5.29, abs=0.01)


def test_all_to_all_by_hand():
    layout = Layout.of(TINY, TOY_GPU, TOY)
    assert (layout.ep_nodes, layout.gpus_per_ep_node, layout.experts_per_gpu) == (2, 2, 1)
    # cap 2 > 5/3 expected nodes: a token spans 5/3 nodes, 1/2 of them remote; NVLink forwards 2 x 1/2 copies
    assert nodes_per_token(TINY, TOY, layout) == pytest.approx(5 / 3)
    a2a = all_to_all_ms(TINY, TOY_GPU, TOY, layout)
    fp8_token = 8 * (1 + 4 / 128)  # hidden 8 in FP8 with one FP32 scale per 128 values
    assert a2a.dispatch_ib == pytest.approx(1e3 * 3 * (5 / 6) * fp8_token / 1e9)
    assert a2a.dispatch_nvlink == pytest.approx(1e3 * 3 * 1 * fp8_token / 4e9)
    assert a2a.combine_ib == pytest.approx(1e3 * 3 * (5 / 6) * 16 / 1e9)
    assert a2a.dispatch == a2a.dispatch_ib and a2a.total == a2a.dispatch + a2a.combine
    # cap M = 1: every token on one node, remote with probability 1/2
    capped = all_to_all_ms(TINY, TOY_GPU, TOY.with_changes(max_nodes=1), layout)
    assert capped.dispatch_ib == pytest.approx(1e3 * 3 * 0.5 * fp8_token / 1e9)
    # BF16 dispatch moves 2 bytes per value instead of 1 + 4/128
    bf16 = all_to_all_ms(TINY, TOY_GPU, TOY.with_changes(dispatch_dtype="bf16"), layout)
    assert bf16.dispatch_ib / a2a.dispatch_ib == pytest.approx(2 / bytes_per_value("fp8"))


def test_ep_within_a_node_uses_no_infiniband():
    setting = TOY.with_changes(ep=2, max_nodes=1)
    layout = Layout.of(TINY, TOY_GPU, setting)
    a2a = all_to_all_ms(TINY, TOY_GPU, setting, layout)
    assert a2a.dispatch_ib == 0 and a2a.dispatch_nvlink > 0


def test_chunk_times_add_up_their_layers():
    layout = Layout.of(TINY, TOY_GPU, TOY)
    chunk = Chunk(index=0, first_layer=0, n_dense=1, n_moe=2, embedding=True, tail=False)
    t = chunk_times(TINY, TOY_GPU, TOY, layout, chunk, overlap=False)
    moe = compute_ms(layer_flops(TINY, True, 3, TOY.recompute), 3, TOY_GPU, TOY, False)
    dense = compute_ms(layer_flops(TINY, False, 3, TOY.recompute), 3, TOY_GPU, TOY, False)
    assert t.F == pytest.approx(2 * moe.F + dense.F)
    assert t.W == pytest.approx(2 * moe.W + dense.W)
    a2a = all_to_all_ms(TINY, TOY_GPU, TOY, layout)
    assert t.dispatch == pytest.approx(2 * a2a.dispatch)  # the dense layer has no all-to-all
    assert t.comm_to_compute == pytest.approx((t.dispatch + t.combine) / t.F)
    assert t.p2p == pytest.approx(p2p_ms(TINY, TOY_GPU, TOY)) == pytest.approx(1e3 * 3 * 8 * 2 / 1e9)
    tail = Chunk(index=1, first_layer=3, n_dense=0, n_moe=0, embedding=False, tail=True)
    assert chunk_times(TINY, TOY_GPU, TOY, layout, tail, overlap=False).dispatch == pytest.approx(a2a.dispatch)


def test_deepseek_v3_all_to_all_matches_the_reports_one_to_one():
    model, h800, setting = load_model(), load_hardware(), report_setting()
    layout = Layout.of(model, h800, setting)
    a2a = all_to_all_ms(model, h800, setting, layout)
    # 4096 tokens x 3.5 remote nodes x 7392 bytes at 50 GB/s
    assert a2a.dispatch == pytest.approx(1e3 * 4096 * 3.5 * 7168 * (1 + 4 / 128) / 50e9)
    assert a2a.dispatch_nvlink < a2a.dispatch_ib  # IB is the bottleneck (Sec. 3.2.2)
    f = compute_ms(layer_flops(model, True, 4096), 4096, h800, setting, overlap=True).F
    # at the assumed 60% efficiency the all-to-all is about as long as the compute (Sec. 3.2.1: 1:1)
    assert 0.8 < a2a.total / f < 1.25


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"ep": 48}, "split evenly over EP"),
        ({"ep": 64, "dp": 96}, "must divide DP"),
        ({"max_nodes": 9}, "exceeds the 8 node"),
        ({"global_batch": 1000}, "does not split into whole micro-batches"),
        ({"tokens_per_microbatch": 3000}, "does not split into whole micro-batches"),
        ({"gpus_per_node": 6}, "whole nodes"),
        ({"gpus_per_node": 6, "ep": 4}, "tile it"),
    ],
)
def test_inconsistent_layouts_name_the_rule(change, rule):
    hardware = load_hardware().with_changes(**{k: v for k, v in change.items() if k == "gpus_per_node"})
    setting = report_setting().with_changes(**{k: v for k, v in change.items() if k != "gpus_per_node"})
    with pytest.raises(ValueError, match=rule):
        Layout.of(load_model(), hardware, setting)


def test_node_cap_too_small_for_top_k():
    # 4 experts on 2 nodes of 2: one node cannot hold a token's top-3
    model = ModelConfig(**{**TINY.__dict__, "top_k": 3})
    with pytest.raises(ValueError, match="fewer than its top_k"):
        Layout.of(model, TOY_GPU, TOY.with_changes(max_nodes=1))


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"pp": 0}, "pipeline stages"),
        ({"efficiency": 0}, "must be > 0"),
        ({"efficiency": 1.5}, "must be <= 1"),
        ({"efficiency": math.nan}, "finite"),
        ({"efficiency": "high"}, "a number"),
        ({"dispatch_dtype": "fp16"}, "fp8, bf16"),
        ({"moment_dtype": "fp8"}, "bf16, fp32"),
        ({"zero_stage": 4}, "0, 1, 2 or 3"),
        ({"recompute": "yes"}, "yes/no"),
    ],
)
def test_bad_settings_name_the_rule(change, rule):
    with pytest.raises(ValueError, match=rule):
        report_setting().with_changes(**change)


@pytest.mark.parametrize(
    ("change", "rule"),
    [({"ib_gbps": 0}, "InfiniBand"), ({"nvlink_gbps": -1}, "NVLink"), ({"comm_sms": 132}, "no SM")],
)
def test_bad_hardware_names_the_rule(change, rule):
    with pytest.raises(ValueError, match=rule):
        load_hardware().with_changes(**change)
