"""Parameter counts and FLOPs of the full-scale model, pinned by hand-computed tiny cases and published counts."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.scale.config import ModelConfig, load_model, published_counts
from utils.scale.params import (
    Flops,
    attention_core_flops,
    attention_params,
    head_flops,
    layer_flops,
    model_flops,
    mtp_flops,
    param_counts,
)

# A model small enough to count by hand. Shapes (rows x columns of each weight):
#   W_DQ 8x4 = 32, W_UQ+W_QR 4 x (2 heads x (3+1)) = 32, W_DKV+W_KR 8 x (2+1) = 24, W_UK+W_UV 2 x 2 x (3+2) = 20,
#   W_O (2 x 2) x 8 = 32  -> 140 linear + latent norms 4 + 2 = 146 attention; two layer norms 2 x 8 = 16;
#   expert 3 x 8 x 6 = 144; dense FFN 3 x 8 x 12 = 288; router 4 x 8 centroids + 4 biases = 36.
TINY = ModelConfig(
    name="tiny",
    n_layers=3,
    n_dense_layers=1,
    hidden=8,
    dense_ffn=12,
    vocab=10,
    n_heads=2,
    q_lora_rank=4,
    kv_lora_rank=2,
    qk_nope_dim=3,
    qk_rope_dim=1,
    v_head_dim=2,
    n_routed_experts=4,
    n_shared_experts=1,
    top_k=2,
    expert_ffn=6,
    n_mtp=1,
)


def test_tiny_counts_by_hand():
    p = param_counts(TINY)
    assert attention_params(TINY) == 146
    assert p.expert == 144 and p.router == 36
    assert p.dense_layer == 146 + 16 + 288 == 450
    assert p.moe_layer == 146 + 16 + 36 + 144 + 4 * 144 == 918  # shared + 4 routed
    assert p.moe_layer_activated == 146 + 16 + 36 + 144 + 2 * 144 == 630  # shared + top-2
    assert p.embedding == p.head == 10 * 8
    # embedding 80 + dense 450 + 2 MoE layers 1836 + final norm 8 + head 80
    assert p.total == 2454
    # the same without 2 x 2 unused routed experts and without the embedding table
    assert p.activated == 450 + 2 * 630 + 8 + 80 == 1798
    assert p.activated_with_embedding == 1798 + 80
    # MTP: enorm 8 + hnorm 8 + projection 16 x 8 = 128 + final norm 8 = 152, plus one MoE layer
    assert p.mtp == 152 + 918 and p.mtp_activated == 152 + 630


def test_without_query_compression_queries_project_directly():
    cfg = ModelConfig(**{**TINY.__dict__, "q_lora_rank": 0})
    # W_Q 8 x (2 x 4) = 64 replaces 32 + 32, and there is no query latent norm
    assert attention_params(cfg) == 64 + 24 + 20 + 32 + 2


def test_tiny_flops_by_hand():
    # MoE layer, seq_len 3 (context (3+1)/2 = 2): linear params used by a token 140 + 3 experts x 144 = 572
    f = layer_flops(TINY, moe=True, seq_len=3, recompute=False)
    assert f.forward_gemm == 2 * 572
    core = 2 * 2 * (4 + 2) * 2  # 2 x heads x (qk + v) x context = 48
    router = 2 * 4 * 8  # 64
    assert f.forward_bf16 == core + router
    assert f.input_gemm == 2 * 572 and f.input_bf16 == 2 * core + router
    assert f.weight_gemm == 2 * 572 and f.weight_bf16 == router
    assert f.total == 3 * 2 * 572 + 3 * core + 3 * router  # 6N for the weights
    # recomputing the up-projections (32 + 20 weights) adds their forward to the input backward
    again = layer_flops(TINY, moe=True, seq_len=3, recompute=True)
    assert again.input_gemm - f.input_gemm == 2 * (32 + 20)
    dense = layer_flops(TINY, moe=False, seq_len=3, recompute=False)
    assert dense.forward_gemm == 2 * (140 + 288) and dense.forward_bf16 == core
    assert head_flops(TINY).forward_bf16 == 2 * 80
    assert mtp_flops(TINY, 3, False).forward_gemm == 2 * 128 + 2 * 572
    whole = model_flops(TINY, 3, recompute=False)
    assert whole.forward == pytest.approx(dense.forward + 2 * f.forward + 160 + mtp_flops(TINY, 3, False).forward)


def test_causal_context_is_the_mean_position():
    # seq_len 1: one key; seq_len 5: 1..5 keys, mean 3
    assert attention_core_flops(TINY, 1).forward == 2 * 2 * 6 * 1
    assert attention_core_flops(TINY, 5).forward == 2 * 2 * 6 * 3
    with pytest.raises(ValueError, match="sequence length"):
        attention_core_flops(TINY, 0)


def test_deepseek_v3_matches_the_report():
    p = param_counts(load_model("DeepSeek-V3"))
    published = published_counts("DeepSeek-V3")
    assert p.total == pytest.approx(published["params_total"][0], rel=0.01)
    assert p.total == 671_026_419_200
    # the report quotes whole billions: 37B means 36.5B-37.5B; README_WEIGHTS.md gives 36.7B
    assert abs(p.activated - 37e9) <= 0.5e9
    assert p.activated == pytest.approx(published["params_activated_readme"][0], rel=0.01)
    # counting the input embedding as activated would give 37.55B, which the report would have called 38B
    assert round(p.activated_with_embedding / 1e9) == 38
    # the MTP module: README_WEIGHTS.md's 11.5B unique parameters
    assert p.mtp == pytest.approx(published["params_mtp"][0], rel=0.01)


def test_deepseek_v2_matches_its_paper_with_the_same_formulas():
    p = param_counts(load_model("DeepSeek-V2"))
    assert p.total == pytest.approx(236e9, rel=0.01)
    assert p.activated == pytest.approx(21e9, rel=0.01)
    assert p.mtp == 0


def test_deepseek_v3_flops_follow_6n_plus_attention():
    cfg = load_model("DeepSeek-V3")
    f = model_flops(cfg, 4096, recompute=False)
    p = param_counts(cfg)
    n = p.activated + p.mtp_activated  # the MTP module's head is the shared one, run a second time
    matmul = 6 * (n + p.head) - 6 * cfg.hidden * (1 + cfg.n_mtp)  # norms are parameters without FLOPs
    norms_etc = 6 * (cfg.n_layers + cfg.n_mtp) * (2 * cfg.hidden + cfg.q_lora_rank + cfg.kv_lora_rank)
    norms_etc += 6 * cfg.n_mtp * 2 * cfg.hidden  # each MTP module's two input norms
    bias = 6 * (cfg.n_moe_layers + cfg.n_mtp) * cfg.n_routed_experts  # balancing bias: no FLOPs
    core = 3 * (cfg.n_layers + cfg.n_mtp) * attention_core_flops(cfg, 4096).forward
    assert f.total == pytest.approx(matmul - norms_etc - bias + core, rel=1e-12)


small = st.integers(1, 6)


@st.composite
def configs(draw):
    n_layers = draw(small)
    routed = draw(st.integers(1, 8))
    return ModelConfig(
        name="random",
        n_layers=n_layers,
        n_dense_layers=draw(st.integers(0, n_layers)),
        hidden=draw(small),
        dense_ffn=draw(small),
        vocab=draw(small),
        n_heads=draw(small),
        q_lora_rank=draw(st.integers(0, 4)),
        kv_lora_rank=draw(small),
        qk_nope_dim=draw(small),
        qk_rope_dim=draw(st.integers(0, 3)),
        v_head_dim=draw(small),
        n_routed_experts=routed,
        n_shared_experts=draw(st.integers(0, 2)),
        top_k=draw(st.integers(1, routed)),
        expert_ffn=draw(small),
        n_mtp=draw(st.integers(0, 2)),
    )


@settings(max_examples=60, deadline=None)
@given(configs(), st.integers(1, 64))
def test_identities_on_random_configs(cfg, seq_len):
    p = param_counts(cfg)
    # what a token does not use: the unchosen routed experts of every MoE layer, and the embedding table
    unused = cfg.n_moe_layers * (cfg.n_routed_experts - cfg.top_k) * p.expert
    assert p.total - p.activated == unused + p.embedding
    assert 0 < p.activated <= p.total
    f = layer_flops(cfg, moe=True, seq_len=seq_len, recompute=False)
    assert f.weight_gemm == f.forward_gemm == f.input_gemm
    assert f.backward_input + f.backward_weight == pytest.approx(2 * f.forward)
    assert isinstance(f + f, Flops) and (f * 2).total == pytest.approx(2 * f.total)


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"n_layers": 0}, "transformer layers"),
        ({"hidden": -1}, "hidden size"),
        ({"n_dense_layers": 4}, "cannot exceed n_layers"),
        ({"top_k": 5}, "top_k <= n_routed_experts"),
        ({"top_k": 0}, "top_k <= n_routed_experts"),
        ({"vocab": "many"}, "vocabulary size, a whole number"),
        ({"n_heads": 2.5}, "whole number"),
    ],
)
def test_bad_configs_name_the_rule(change, rule):
    with pytest.raises(ValueError, match=rule):
        ModelConfig(**{**TINY.__dict__, **change})


def test_unknown_model():
    with pytest.raises(ValueError, match="Unknown model"):
        load_model("GPT-5")
