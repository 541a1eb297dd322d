"""The pipeline cut, the bytes each GPU holds (ZeRO sharding, EP sharding) and the cached activations."""

import pytest
from test_scale_params import TINY
from test_scale_timing import TOY, TOY_GPU

from utils.scale.memory import (
    ChunkParams,
    activation_items,
    chunk_activation_bytes,
    chunk_params,
    model_state_bytes,
    rank_memory,
)
from utils.scale.setting import Layout
from utils.scale.stages import Chunk, balanced_cut, model_units, plan_chunks


def test_balanced_cut_minimises_the_largest_part():
    assert balanced_cut([1, 1, 1, 1], 2) == [2, 2]
    assert balanced_cut([3, 1, 1, 1], 2) == [1, 3]
    # [1, 2, 3 | 4 | 5]: largest part 6, the only cut that good
    assert balanced_cut([1, 2, 3, 4, 5], 3) == [3, 1, 1]
    assert balanced_cut([5, 1, 1], 3) == [1, 1, 1]
    assert balanced_cut([2, 2, 2], 1) == [3]
    with pytest.raises(ValueError, match="non-empty"):
        balanced_cut([1, 1], 3)


def test_plan_chunks_keeps_order_and_puts_the_tail_last():
    assert model_units(TINY) == ["dense", "moe", "moe", "tail"]
    chunks = plan_chunks(TINY, 2, {"dense": 1.0, "moe": 1.0, "tail": 1.5}.get)
    assert [(c.n_dense, c.n_moe, c.embedding, c.tail) for c in chunks] == [(1, 1, True, False), (0, 1, False, True)]
    assert chunks[1].first_layer == 2
    with pytest.raises(ValueError, match="lower PP"):
        plan_chunks(TINY, 5, lambda kind: 1.0)


# Bytes per token of one tiny MoE layer with FP8 caching and recomputation (hidden 8, 2 heads, v 2):
#   attention input 2 x 8 = 16; latents 2 x (4 + 2 + 1) = 14; attention output E5M6 1.5 x 2 x 2 = 6;
#   log-sum-exp 4 x 2 = 8; FFN input 16; expert inputs (2 routed + 1 shared copy) x 8 x 1.03125 = 24.75;
#   router affinities 4 x 4 = 16; SwiGLU inputs 2 x (3 experts x 6) x 1.03125 = 37.125.
TINY_MOE_BYTES = 16 + 14 + 6 + 8 + 16 + 24.75 + 16 + 37.125


def test_activation_items_by_hand():
    assert sum(activation_items(TINY, TOY, "moe").values()) == pytest.approx(TINY_MOE_BYTES)
    # dense: one FP8 input copy (8.25) and SwiGLU inputs 2 x 12 x 1.03125 = 24.75, no router
    assert sum(activation_items(TINY, TOY, "dense").values()) == pytest.approx(16 + 14 + 6 + 8 + 16 + 8.25 + 24.75)
    # without FP8 caching the three FP8 items and the E5M6 output take 2 bytes per value
    bf16 = sum(activation_items(TINY, TOY.with_changes(fp8_cache=False), "moe").values())
    assert bf16 == pytest.approx(16 + 14 + 8 + 8 + 16 + 48 + 16 + 72)
    # without recomputation the norms' outputs (2 x (16 + 4 + 2)) and q, k, v (2 x 2 x (4 + 4 + 2)) stay too
    kept = sum(activation_items(TINY, TOY.with_changes(recompute=False), "moe").values())
    assert kept == pytest.approx(TINY_MOE_BYTES + 44 + 40)
    # tail: 2 heads' inputs 2 x 8 x 2, logits 2 x 10 x 2, MTP inputs 2 x 16, one more MoE layer
    assert sum(activation_items(TINY, TOY, "tail").values()) == pytest.approx(32 + 40 + 32 + TINY_MOE_BYTES)
    with pytest.raises(ValueError, match="'dense', 'moe' or 'tail'"):
        activation_items(TINY, TOY, "attention")


def test_chunk_activation_bytes_scale_with_tokens():
    chunk = Chunk(index=0, first_layer=1, n_dense=0, n_moe=2, embedding=False, tail=False)
    assert chunk_activation_bytes(TINY, TOY, chunk) == pytest.approx(3 * 2 * TINY_MOE_BYTES)


def test_chunk_params_shard_routed_experts_over_ep():
    layout = Layout.of(TINY, TOY_GPU, TOY)  # EP = 4: one routed expert per GPU per MoE layer
    first = Chunk(index=0, first_layer=0, n_dense=1, n_moe=1, embedding=True, tail=False)
    p = chunk_params(TINY, layout, first)
    # embedding 80 + dense layer 450 + attention 146 + norms 16 + router 36 + shared expert 144
    assert p.replicated == 80 + 450 + 146 + 16 + 36 + 144
    assert p.routed == 1 * 144
    last = Chunk(index=1, first_layer=2, n_dense=0, n_moe=1, embedding=False, tail=True)
    q = chunk_params(TINY, layout, last)
    # layer (342) + final norm 8 + head 80 + MTP: its own 152 + its MoE layer's 342 replicated part
    assert q.replicated == 342 + 8 + 80 + 152 + 342
    assert q.routed == 2 * 144  # one routed expert in the layer, one in the MTP module


def test_zero_stages_shard_what_they_promise():
    layout = Layout.of(TINY, TOY_GPU, TOY)  # DP = 4, EP = 4: each routed expert lives on 1 GPU per stage
    params = ChunkParams(replicated=1000, routed=400)
    zero1 = model_state_bytes(params, TOY, layout)
    assert zero1.weights == 2 * 1400 and zero1.gradients == 4 * 1400
    shard = 1000 / 4 + 400 / 1
    assert zero1.master_weights == 4 * shard and zero1.optimizer_moments == 2 * 2 * shard
    playbook = model_state_bytes(params, TOY.with_changes(moment_dtype="fp32"), layout)
    assert playbook.optimizer_moments == 2 * 4 * shard  # Adam's two FP32 moments: 8 bytes
    zero0 = model_state_bytes(params, TOY.with_changes(zero_stage=0), layout)
    assert zero0.master_weights == 4 * 1400
    zero3 = model_state_bytes(params, TOY.with_changes(zero_stage=3), layout)
    assert zero3.weights == 2 * shard and zero3.gradients == 4 * shard


def test_rank_memory_adds_chunks_and_activations():
    layout = Layout.of(TINY, TOY_GPU, TOY)
    a = Chunk(index=0, first_layer=0, n_dense=1, n_moe=1, embedding=True, tail=False)
    b = Chunk(index=1, first_layer=2, n_dense=0, n_moe=1, embedding=False, tail=True)
    one = rank_memory(TINY, TOY, layout, [a], 100.0)
    two = rank_memory(TINY, TOY, layout, [a, b], 100.0)
    pa, pb = chunk_params(TINY, layout, a), chunk_params(TINY, layout, b)
    assert one.weights == 2 * pa.total and two.weights == 2 * (pa.total + pb.total)
    assert two.activations == 100.0
    gb = two.gb()
    assert gb["total"] == pytest.approx(sum(v for k, v in gb.items() if k != "total"))
    assert gb["total"] == pytest.approx(two.total / 1e9)
