"""Parameter counts and FLOPs per token of a DeepSeek-style MoE, from its configuration alone.

Counts (DeepSeek-V3 report Sec. 2.1; matrix shapes as in the released model code):

* MLA attention: W_DQ (hidden x q_lora) + its RMSNorm + W_UQ/W_QR (q_lora x heads*(nope+rope)); W_DKV/W_KR
  (hidden x (kv_lora+rope)) + its RMSNorm + W_UK/W_UV (kv_lora x heads*(nope+v)); W_O (heads*v x hidden).
* SwiGLU FFN of width f: 3 x hidden x f (gate, up, down); an expert is one such FFN.
* MoE layer: shared + routed experts, the router's centroids (experts x hidden) and its balancing bias
  (one per expert, Sec. 2.1.2: updated by the balancing rule, not by gradients, but stored with the weights).
* Two RMSNorms per layer, a final RMSNorm, an untied embedding and output head (vocab x hidden each).
* An MTP module (Sec. 2.2): two RMSNorms, a projection (2 hidden x hidden), one MoE layer, a final RMSNorm;
  it shares the embedding and output head with the main model, so they are not counted again.

"Activated" counts what one token's computation multiplies: every layer's attention and norms, the router,
the shared and top-K routed experts (or the dense FFN), and the output head. The input embedding is a table
look-up (one row per token, no FLOPs), so it is reported separately (`activated_with_embedding`).

FLOPs follow the Ultra-Scale Playbook's accounting: a matrix multiply costs 2 FLOPs per multiply-add, so a
token's forward through a weight matrix of N parameters costs 2N; the backward costs 2N for the input
gradient and 2N for the weight gradient (6N per token in all). Attention's score and value products add
2 x heads x (qk_dim + v_dim) x context per token, with context (seq_len + 1) / 2 for causal attention over
fully packed sequences (report Sec. 4.1: no cross-document masking); their backward (input side only) costs
twice the forward. Recomputed work (Sec. 3.2.3: the MLA up-projections) is added to the input backward.
Element-wise work (norms, SwiGLU, softmax) is left out: it is bandwidth-bound and small in FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from utils.scale.config import ModelConfig, check_count, check_model


def attention_linear_params(cfg: ModelConfig) -> int:
    """Weights of MLA's projection matrices in one layer (no norms): see this module's docstring."""
    q = (
        cfg.hidden * cfg.q_lora_rank + cfg.q_lora_rank * cfg.n_heads * cfg.qk_head_dim
        if cfg.q_lora_rank
        else cfg.hidden * cfg.n_heads * cfg.qk_head_dim
    )
    kv = cfg.hidden * (cfg.kv_lora_rank + cfg.qk_rope_dim) + cfg.kv_lora_rank * cfg.n_heads * (
        cfg.qk_nope_dim + cfg.v_head_dim
    )
    return q + kv + cfg.n_heads * cfg.v_head_dim * cfg.hidden


def up_projection_params(cfg: ModelConfig) -> int:
    """Weights of MLA's up-projections (W_UQ/W_QR and W_UK/W_UV), which DeepSeek-V3 recomputes (Sec. 3.2.3)."""
    q_up = cfg.q_lora_rank * cfg.n_heads * cfg.qk_head_dim if cfg.q_lora_rank else 0
    return q_up + cfg.kv_lora_rank * cfg.n_heads * (cfg.qk_nope_dim + cfg.v_head_dim)


def attention_params(cfg: ModelConfig) -> int:
    """MLA in one layer: the projections plus the RMSNorms of the query and key-value latents."""
    return attention_linear_params(cfg) + cfg.q_lora_rank + cfg.kv_lora_rank


def ffn_params(cfg: ModelConfig, width: int) -> int:
    """A SwiGLU FFN of intermediate `width`: gate, up and down projections, 3 x hidden x width."""
    return 3 * cfg.hidden * width


def router_params(cfg: ModelConfig) -> int:
    """The router of one MoE layer: a centroid per routed expert plus its balancing bias (Sec. 2.1.2)."""
    return cfg.n_routed_experts * cfg.hidden + cfg.n_routed_experts


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model, by component and in total (see the module docstring for what is counted).

    Per-layer fields count one layer; `moe_layer` counts all of its experts, `moe_layer_activated` those one
    token uses. `total`, `activated` and `activated_with_embedding` are the main model's; `mtp` and
    `mtp_activated` the MTP modules' own parameters (embedding and head are shared, so not repeated).
    """

    embedding: int
    head: int
    final_norm: int
    attention: int
    layer_norms: int
    expert: int
    router: int
    dense_layer: int
    moe_layer: int
    moe_layer_activated: int
    mtp: int
    mtp_activated: int
    total: int
    activated: int
    activated_with_embedding: int

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def param_counts(cfg: ModelConfig) -> ParamCounts:
    """Count `cfg`'s parameters by component; DeepSeek-V3 gives 671.0B total and 36.6B activated per token.

    The report (Sec. 4.2) quotes 671B and 37B; 37B is a whole-billion figure, and counting the input
    embedding as activated (37.55B) would round to 38B, so the report's count leaves the look-up table out.
    """
    cfg = check_model(cfg, "param_counts")
    h = cfg.hidden
    attention, norms = attention_params(cfg), 2 * h
    expert, router = ffn_params(cfg, cfg.expert_ffn), router_params(cfg)
    dense_layer = attention + norms + ffn_params(cfg, cfg.dense_ffn)
    moe_common = attention + norms + router + cfg.n_shared_experts * expert
    moe_layer = moe_common + cfg.n_routed_experts * expert
    moe_layer_activated = moe_common + cfg.top_k * expert
    mtp_extra = 2 * h + 2 * h * h + h  # enorm, hnorm, the projection of [h; emb] to h, its final norm
    embedding = head = cfg.vocab * h
    layers = cfg.n_dense_layers * dense_layer + cfg.n_moe_layers * moe_layer
    layers_activated = cfg.n_dense_layers * dense_layer + cfg.n_moe_layers * moe_layer_activated
    activated = layers_activated + h + head
    return ParamCounts(
        embedding=embedding,
        head=head,
        final_norm=h,
        attention=attention,
        layer_norms=norms,
        expert=expert,
        router=router,
        dense_layer=dense_layer,
        moe_layer=moe_layer,
        moe_layer_activated=moe_layer_activated,
        mtp=cfg.n_mtp * (mtp_extra + moe_layer),
        mtp_activated=cfg.n_mtp * (mtp_extra + moe_layer_activated),
        total=embedding + layers + h + head,
        activated=activated,
        activated_with_embedding=activated + embedding,
    )


@dataclass(frozen=True)
class Flops:
    """FLOPs per token of one piece of the model, by precision group and pass.

    ``gemm``: linear layers (FP8 in DeepSeek-V3, Sec. 3.3.1); ``bf16``: work the report keeps in BF16 (the
    attention core, the router, the output head). Passes: ``forward``, ``backward_input`` (the gradient the
    previous stage waits for, recomputation included) and ``backward_weight`` (the W pass).
    """

    forward_gemm: float = 0.0
    forward_bf16: float = 0.0
    input_gemm: float = 0.0
    input_bf16: float = 0.0
    weight_gemm: float = 0.0
    weight_bf16: float = 0.0

    def __add__(self, other: Flops) -> Flops:
        return Flops(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __mul__(self, k: float) -> Flops:
        return Flops(*(getattr(self, f.name) * k for f in fields(self)))

    __rmul__ = __mul__

    @property
    def forward(self) -> float:
        return self.forward_gemm + self.forward_bf16

    @property
    def backward_input(self) -> float:
        return self.input_gemm + self.input_bf16

    @property
    def backward_weight(self) -> float:
        return self.weight_gemm + self.weight_bf16

    @property
    def total(self) -> float:
        return self.forward + self.backward_input + self.backward_weight


def _linear(n_params: float, bf16: bool = False) -> Flops:
    """A weight matrix of `n_params` used by one token: 2N forward, 2N input gradient, 2N weight gradient."""
    f = 2.0 * n_params
    return Flops(forward_bf16=f, input_bf16=f, weight_bf16=f) if bf16 else Flops(f, 0.0, f, 0.0, f, 0.0)


def attention_core_flops(cfg: ModelConfig, seq_len: int) -> Flops:
    """Scores (Q.K) and weighted values (P.V) of causal attention, per token, averaged over positions.

    A token at position i attends to i keys, so on average (seq_len + 1) / 2; each key costs
    2 x heads x (qk_dim + v_dim) FLOPs. The backward (dQ, dK, dV) costs twice the forward; no weights.
    """
    seq_len = check_count("seq_len", seq_len, 1, "the sequence length in tokens")
    forward = 2.0 * cfg.n_heads * (cfg.qk_head_dim + cfg.v_head_dim) * (seq_len + 1) / 2
    return Flops(forward_bf16=forward, input_bf16=2 * forward)


def layer_flops(cfg: ModelConfig, moe: bool, seq_len: int, recompute: bool = True) -> Flops:
    """FLOPs per token of one transformer layer (dense FFN or MoE), forward and both backward passes.

    Linear layers: attention projections and the experts a token uses (or the dense FFN) as FP8 GEMMs; the
    router and the attention core in BF16. With `recompute` (report Sec. 3.2.3) the backward also reruns the
    forward of the MLA up-projections.
    """
    cfg = check_model(cfg, "layer_flops")
    ffn = (cfg.n_shared_experts + cfg.top_k) * ffn_params(cfg, cfg.expert_ffn) if moe else ffn_params(
        cfg, cfg.dense_ffn
    )
    flops = _linear(attention_linear_params(cfg) + ffn) + attention_core_flops(cfg, seq_len)
    if moe:
        flops = flops + _linear(cfg.n_routed_experts * cfg.hidden, bf16=True)
    if recompute:
        flops = flops + Flops(input_gemm=2.0 * up_projection_params(cfg))
    return flops


def head_flops(cfg: ModelConfig) -> Flops:
    """The output head (hidden x vocab) per token, kept in BF16 (Sec. 3.3.1)."""
    return _linear(cfg.vocab * cfg.hidden, bf16=True)


def mtp_flops(cfg: ModelConfig, seq_len: int, recompute: bool = True) -> Flops:
    """One MTP module per token (Sec. 2.2): its projection, one MoE layer and a second pass of the shared head."""
    projection = _linear(2 * cfg.hidden * cfg.hidden)
    return projection + layer_flops(cfg, True, seq_len, recompute) + head_flops(cfg)


def model_flops(cfg: ModelConfig, seq_len: int, recompute: bool = True) -> Flops:
    """FLOPs per training token of the whole model: every layer, the output head and the MTP modules."""
    cfg = check_model(cfg, "model_flops")
    dense = layer_flops(cfg, False, seq_len, recompute) * cfg.n_dense_layers
    moe = layer_flops(cfg, True, seq_len, recompute) * cfg.n_moe_layers
    return dense + moe + head_flops(cfg) + mtp_flops(cfg, seq_len, recompute) * cfg.n_mtp
