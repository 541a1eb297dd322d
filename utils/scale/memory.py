"""Gigabytes per GPU: weights, gradients, master weights, optimizer moments and cached activations.

Model states (Ultra-Scale Playbook, "memory usage in mixed-precision training" and ZeRO): per parameter a
GPU holds BF16 weights (2 B), FP32 gradients (4 B; DeepSeek-V3 accumulates gradients in FP32, Sec. 3.3.1),
FP32 master weights (4 B) and Adam's two moments (2 x 4 B in the Playbook, 2 x 2 B in DeepSeek-V3 which
keeps them in BF16, Sec. 3.3.3). ZeRO-1 shards the master weights and moments over the replicas of a
parameter: DP ways for attention, norms, router, shared experts, embedding and head; DP/EP ways for a routed
expert (each lives on DP/EP GPUs of a stage). ZeRO-2 shards gradients too, ZeRO-3 weights too.

Parameters on a GPU: the chunks its schedule puts there (DualPipe: two, so 2x parameters, Table 2), each
with the attention, norms, router and shared experts of its layers, n_routed/EP routed experts per MoE
layer, the embedding on the first chunk and the head and MTP modules on the last. We assume each copy's
optimizer states are sharded over its own DP group (conservative: the two copies could share one shard).

Activations: what the backward needs, per token per layer, listed by `activation_items` with their
precisions (report Sec. 3.2.3 and 3.3.3). GB are 10^9 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from utils.scale.config import ModelConfig
from utils.scale.params import param_counts
from utils.scale.setting import Layout, TrainingSetting
from utils.scale.stages import Chunk
from utils.scale.timing import bytes_per_value

E5M6_BYTES = 1.5  # report Sec. 3.3.3: 12-bit E5M6 for the input of the linear layer after attention


def _layer_items(model: ModelConfig, setting: TrainingSetting, moe: bool) -> dict[str, float]:
    h, heads = model.hidden, model.n_heads
    fp8 = bytes_per_value("fp8") if setting.fp8_cache else 2.0
    attn_out = E5M6_BYTES if setting.fp8_cache else 2.0
    latents = model.q_lora_rank + model.kv_lora_rank + model.qk_rope_dim
    items = {"attention input (BF16 residual; RMSNorm recomputed from it)": 2.0 * h}
    items["query and key-value latents (BF16, inputs of the up-projections)"] = 2.0 * latents
    if not setting.recompute:  # kept instead of recomputed: the norms' outputs and the up-projections' q, k, v
        items["RMSNorm outputs (BF16, not recomputed)"] = 2.0 * (2 * h + model.q_lora_rank + model.kv_lora_rank)
        items["queries, keys, values (BF16, not recomputed)"] = 2.0 * heads * (
            2 * model.qk_head_dim + model.v_head_dim
        )
    items["attention output (E5M6 when FP8 caching, input of the output projection)"] = (
        attn_out * heads * model.v_head_dim
    )
    items["softmax log-sum-exp (FP32, per head)"] = 4.0 * heads
    items["FFN input (BF16 residual)"] = 2.0 * h
    if moe:
        copies = model.top_k + (1 if model.n_shared_experts else 0)
        widths = (model.top_k + model.n_shared_experts) * model.expert_ffn
        items["expert inputs (FP8 with 1x128 scales: one copy per routed expert, one for the shared)"] = (
            fp8 * copies * h
        )
        items["router affinities (FP32, per routed expert)"] = 4.0 * model.n_routed_experts
    else:
        widths = model.dense_ffn
        items["dense FFN input (FP8 with 1x128 scales)"] = fp8 * h
    items["SwiGLU inputs (FP8; the output is recomputed)"] = fp8 * 2 * widths
    return items


def activation_items(model: ModelConfig, setting: TrainingSetting, kind: str) -> dict[str, float]:
    """Bytes per token that one unit ('dense' or 'moe' layer, or 'tail') keeps for its backward, by item.

    The expert gate's gradient <dy, y_i> equals <W_down^T dy, SwiGLU output>, both available in the backward,
    so expert outputs need not be kept. The tail keeps the head's input and BF16 logits for the
    cross-entropy (main head and each MTP head), each MTP module's two inputs and its MoE layer's items.
    """
    if kind in ("dense", "moe"):
        return _layer_items(model, setting, kind == "moe")
    if kind != "tail":
        raise ValueError(f"a pipeline unit is 'dense', 'moe' or 'tail'; got {kind!r}.")
    heads = 1 + model.n_mtp
    items = {
        "output head inputs (BF16)": 2.0 * model.hidden * heads,
        "logits for the cross-entropy backward (BF16)": 2.0 * model.vocab * heads,
    }
    if model.n_mtp:
        items["MTP projection inputs (BF16)"] = 2.0 * 2 * model.hidden * model.n_mtp
        for name, value in _layer_items(model, setting, True).items():
            items[f"MTP layer: {name}"] = value * model.n_mtp
    return items


def chunk_activation_bytes(model: ModelConfig, setting: TrainingSetting, chunk: Chunk) -> float:
    """Bytes one micro-batch leaves cached in `chunk` between its forward and its backward."""
    per_token = sum(
        count * sum(activation_items(model, setting, kind).values()) for kind, count in chunk.units().items()
    )
    return per_token * setting.tokens_per_microbatch


@dataclass(frozen=True)
class ChunkParams:
    """Parameters of one chunk as stored on one GPU: replicated DP ways, or routed experts DP/EP ways."""

    replicated: int
    routed: int

    @property
    def total(self) -> int:
        return self.replicated + self.routed


def chunk_params(model: ModelConfig, layout: Layout, chunk: Chunk) -> ChunkParams:
    """Parameters of `chunk` on one of its GPUs (routed experts sharded over EP)."""
    p = param_counts(model)
    moe_common = p.attention + p.layer_norms + p.router + model.n_shared_experts * p.expert
    replicated = chunk.n_dense * p.dense_layer + chunk.n_moe * moe_common
    moe_layers = chunk.n_moe
    if chunk.embedding:
        replicated += p.embedding
    if chunk.tail:
        mtp_extra = p.mtp // model.n_mtp - p.moe_layer if model.n_mtp else 0
        replicated += p.final_norm + p.head + model.n_mtp * (mtp_extra + moe_common)
        moe_layers += model.n_mtp
    return ChunkParams(replicated=replicated, routed=moe_layers * layout.experts_per_gpu * p.expert)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes on one GPU by kind; `total` is their sum. `gb()` gives the same in GB (10^9 bytes)."""

    weights: float
    gradients: float
    master_weights: float
    optimizer_moments: float
    activations: float

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    def gb(self) -> dict[str, float]:
        """The parts and the total in GB, as a dict (the parts sum to ``total``)."""
        parts = {f.name: getattr(self, f.name) / 1e9 for f in fields(self)}
        return {**parts, "total": sum(parts.values())}


def model_state_bytes(params: ChunkParams, setting: TrainingSetting, layout: Layout) -> MemoryBreakdown:
    """Weights, gradients, master weights and moments of `params` on one GPU under ZeRO-``zero_stage``.

    A part sharded by ZeRO is divided by the replicas of each parameter: DP for replicated parameters,
    DP/EP for routed experts.
    """
    dp, expert_dp = setting.dp, layout.expert_replicas

    def held(bytes_per_param: float, sharded: bool) -> float:
        if not sharded:
            return bytes_per_param * params.total
        return bytes_per_param * (params.replicated / dp + params.routed / expert_dp)

    stage = setting.zero_stage
    return MemoryBreakdown(
        weights=held(setting.weight_bytes, stage >= 3),
        gradients=held(setting.grad_bytes, stage >= 2),
        master_weights=held(setting.master_bytes, stage >= 1),
        optimizer_moments=held(2 * setting.moment_bytes, stage >= 1),
        activations=0.0,
    )


def rank_memory(
    model: ModelConfig,
    setting: TrainingSetting,
    layout: Layout,
    chunks: list[Chunk],
    activation_bytes: float,
) -> MemoryBreakdown:
    """Memory of a GPU holding `chunks` (a chunk held twice counts twice) at an activation peak of
    `activation_bytes` (the schedule decides it: PP chunk-activations for 1F1B, PP+1 for DualPipe...)."""
    replicated = routed = 0
    for chunk in chunks:
        p = chunk_params(model, layout, chunk)
        replicated, routed = replicated + p.replicated, routed + p.routed
    states = model_state_bytes(ChunkParams(replicated, routed), setting, layout)
    return MemoryBreakdown(
        weights=states.weights,
        gradients=states.gradients,
        master_weights=states.master_weights,
        optimizer_moments=states.optimizer_moments,
        activations=float(activation_bytes),
    )
