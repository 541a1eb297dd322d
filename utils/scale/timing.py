"""Milliseconds of one micro-batch through one pipeline chunk: F, B, W and the expert all-to-all.

Compute (Ultra-Scale Playbook's FLOP accounting, ``utils.scale.params``): each pass's FLOPs divided by the
FLOP/s the GPU achieves, ``Hardware.throughput``: linear layers at the GEMM precision (FP8 in DeepSeek-V3,
Sec. 3.3.1), the attention core, router and output head at BF16, both x efficiency x compute SMs / SMs.

All-to-all (report Sec. 3.2.2), per MoE layer and micro-batch of T tokens on each GPU:

* A token's top-K experts sit on n nodes, n = min(M, the expected number of distinct nodes K uniformly
  placed experts fall on) with M the node cap. The source node is one of the EP group's N nodes, so on
  average n (N-1)/N of them are remote. Two-hop dispatch crosses InfiniBand once per remote node (to the GPU
  with the same local index), then fans out over NVLink to the expert GPUs.
* IB time = T x n (N-1)/N x bytes per token / IB bandwidth; NVLink time = T x K (g-1)/g x bytes per token /
  NVLink bandwidth (g GPUs of the EP group per node). The kernel pipelines both hops (warp-specialised
  sending, forwarding and receiving), so a phase lasts the slower of the two.
* Bytes per token: hidden x 1 byte + a 4-byte scale per 128 values in FP8 (1x128 tiles), hidden x 2 in BF16.
  Forward: dispatch in ``dispatch_dtype`` (FP8), combine in ``combine_dtype`` (BF16). Backward: the gradient
  of the combine travels like a dispatch (FP8 in the report) and the gradient of the dispatch like a
  combine (BF16), so a backward chunk moves the same bytes as a forward one.

Pipeline point-to-point: T x hidden x 2 bytes (BF16 activations) between neighbouring stages, over IB when
a stage fills whole nodes. Latencies are left out (4K-token micro-batches are far past the latency regime).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

from utils.scale.config import ModelConfig
from utils.scale.hardware import Hardware
from utils.scale.params import Flops, head_flops, layer_flops, mtp_flops
from utils.scale.setting import Layout, TrainingSetting
from utils.scale.stages import Chunk

FP8_SCALE_GROUP = 128  # one FP32 scale per 1x128 tile of activations (report Sec. 3.3.2)


def bytes_per_value(dtype: str) -> float:
    """Bytes one activation value occupies on the wire: BF16 2; FP8 1 plus its share of a 1x128 FP32 scale."""
    return 1.0 + 4.0 / FP8_SCALE_GROUP if dtype == "fp8" else 2.0


def unit_flops(model: ModelConfig, kind: str, setting: TrainingSetting) -> Flops:
    """FLOPs per token of one unit of the pipeline: a 'dense' or 'moe' layer, or the 'tail' (head + MTP)."""
    if kind == "tail":
        return head_flops(model) + mtp_flops(model, setting.seq_len, setting.recompute) * model.n_mtp
    return layer_flops(model, kind == "moe", setting.seq_len, setting.recompute)


def moe_units(model: ModelConfig, chunk: Chunk) -> int:
    """MoE layers of a chunk, the MTP modules' MoE layers included: each does one dispatch and one combine."""
    return chunk.n_moe + (model.n_mtp if chunk.tail else 0)


@dataclass(frozen=True)
class PassTimes:
    """Milliseconds of the three compute passes of some work for one micro-batch."""

    F: float
    I: float  # noqa: E741 - the report's name for the input part of the backward
    W: float

    @property
    def B(self) -> float:
        """The full backward: input part plus weight part."""
        return self.I + self.W


def compute_ms(flops: Flops, tokens: int, hardware: Hardware, setting: TrainingSetting, overlap: bool) -> PassTimes:
    """Milliseconds of `flops` (per token) for `tokens` tokens: GEMM part at the GEMM precision, rest BF16.

    `overlap`: the all-to-all runs alongside (DualPipe's F&B pairs), so ``comm_sms`` SMs are not computing.
    """
    gemm = hardware.throughput(setting.gemm_dtype, setting.efficiency, overlap)
    bf16 = hardware.throughput("bf16", setting.efficiency, overlap)

    def ms(gemm_flops: float, bf16_flops: float) -> float:
        return 1e3 * tokens * (gemm_flops / gemm + bf16_flops / bf16)

    return PassTimes(
        F=ms(flops.forward_gemm, flops.forward_bf16),
        I=ms(flops.input_gemm, flops.input_bf16),
        W=ms(flops.weight_gemm, flops.weight_bf16),
    )


def expected_nodes(n_experts: int, n_nodes: int, top_k: int) -> float:
    """Expected number of distinct nodes `top_k` experts fall on when picked uniformly without replacement
    from `n_experts` spread evenly over `n_nodes`: N (1 - C(E - E/N, K) / C(E, K))."""
    per_node = n_experts // n_nodes
    missed = comb(n_experts - per_node, top_k) / comb(n_experts, top_k)
    return n_nodes * (1.0 - missed)


def nodes_per_token(model: ModelConfig, setting: TrainingSetting, layout: Layout) -> float:
    """Nodes a token's experts span under node-limited routing: min(cap M, the uniform-routing expectation).

    With balanced routing (the auxiliary-loss-free rule keeps experts evenly loaded, Sec. 2.1.2) the router
    fills its M allowed nodes; uncapped, K uniform picks over N nodes span fewer than K nodes.
    """
    uniform = expected_nodes(model.n_routed_experts, layout.ep_nodes, model.top_k)
    return min(float(setting.max_nodes), uniform)


@dataclass(frozen=True)
class AllToAll:
    """Milliseconds of one MoE layer's dispatch and combine for one micro-batch, with the two hops apart."""

    dispatch_ib: float
    dispatch_nvlink: float
    combine_ib: float
    combine_nvlink: float

    @property
    def dispatch(self) -> float:
        """The phase lasts its slower hop (the kernel pipelines IB and NVLink)."""
        return max(self.dispatch_ib, self.dispatch_nvlink)

    @property
    def combine(self) -> float:
        return max(self.combine_ib, self.combine_nvlink)

    @property
    def total(self) -> float:
        return self.dispatch + self.combine


def all_to_all_ms(model: ModelConfig, hardware: Hardware, setting: TrainingSetting, layout: Layout) -> AllToAll:
    """Dispatch and combine of one MoE layer, one micro-batch (formulas in the module docstring)."""
    if model.n_moe_layers + model.n_mtp == 0:
        return AllToAll(0.0, 0.0, 0.0, 0.0)  # a dense model has no expert all-to-all
    tokens, n, g = setting.tokens_per_microbatch, layout.ep_nodes, layout.gpus_per_ep_node
    remote_nodes = nodes_per_token(model, setting, layout) * (n - 1) / n
    nvlink_copies = model.top_k * (g - 1) / g

    def ms(copies: float, dtype: str, gbps: float) -> float:
        return 1e3 * tokens * copies * model.hidden * bytes_per_value(dtype) / (gbps * 1e9)

    return AllToAll(
        dispatch_ib=ms(remote_nodes, setting.dispatch_dtype, hardware.ib_gbps),
        dispatch_nvlink=ms(nvlink_copies, setting.dispatch_dtype, hardware.nvlink_gbps),
        combine_ib=ms(remote_nodes, setting.combine_dtype, hardware.ib_gbps),
        combine_nvlink=ms(nvlink_copies, setting.combine_dtype, hardware.nvlink_gbps),
    )


def p2p_ms(model: ModelConfig, hardware: Hardware, setting: TrainingSetting) -> float:
    """Sending one micro-batch's BF16 activations to the next stage: over IB if a stage fills whole nodes."""
    gbps = hardware.ib_gbps if setting.dp >= hardware.gpus_per_node else hardware.nvlink_gbps
    return 1e3 * setting.tokens_per_microbatch * model.hidden * 2.0 / (gbps * 1e9)


@dataclass(frozen=True)
class ChunkTimes:
    """One micro-batch through one chunk, in milliseconds: compute passes and the all-to-all it waits on."""

    F: float
    B: float
    W: float
    dispatch: float
    combine: float
    p2p: float

    @property
    def I(self) -> float:  # noqa: E743 - the report's name for the input part of the backward
        return self.B - self.W

    @property
    def comm_to_compute(self) -> float:
        """All-to-all time over forward compute time of the chunk (the report's 1:1, Sec. 3.2.1)."""
        return (self.dispatch + self.combine) / self.F


def chunk_times(
    model: ModelConfig, hardware: Hardware, setting: TrainingSetting, layout: Layout, chunk: Chunk, overlap: bool
) -> ChunkTimes:
    """F, B, W, dispatch, combine and p2p of `chunk` for one micro-batch (milliseconds)."""
    flops = Flops()
    for kind, count in chunk.units().items():
        if count:
            flops = flops + unit_flops(model, kind, setting) * count
    passes = compute_ms(flops, setting.tokens_per_microbatch, hardware, setting, overlap)
    a2a = all_to_all_ms(model, hardware, setting, layout)
    layers = moe_units(model, chunk)
    return ChunkTimes(
        F=passes.F,
        B=passes.B,
        W=passes.W,
        dispatch=layers * a2a.dispatch,
        combine=layers * a2a.combine,
        p2p=p2p_ms(model, hardware, setting),
    )
