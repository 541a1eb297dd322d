"""GEMMs with FP8 inputs under each scaling scheme, against an FP32 reference (DeepSeek-V3 §3.3.1-3.3.2).

Convention (DeepGEMM's and nn.Linear's): `C = A @ B.T` with A (M, K) activations and B (N, K) weights, so
both operands are scaled along their reduction dimension K.

    scheme      A groups        B groups        on hardware
    "tensor"    tensor          tensor          torch._scaled_mm, scalar scales
    "row"       row             row             torch._scaled_mm, scale_a (M, 1), scale_b (1, N)
    "tile"      tile1x128       tile1x128       per-K-group partial products, scales applied
    "deepseek"  tile1x128       block128x128    the same, as DeepSeek-V3's forward GEMM
    "mx"        mx1x32 (pow2)   mx1x32 (pow2)   the same, as MX formats

Per-tensor and per-row scales factor out of the sum over K (one scale per output row and column), so
hardware applies them once to the FP32 result: that is what `torch._scaled_mm` does (it runs on CPU in torch
2.13, with no shape restrictions; CUDA needs K and N multiples of 16). Finer groups change scale *along K*,
so the sum is split into K-groups: each group's partial product of FP8 values is computed, multiplied by the
A-scale of its row and the B-scale of its column, and added in FP32. DeepGEMM does this on CUDA cores after
each 128-element chunk of tensor-core MMAs ("promotion", §3.3.2). Here every scheme runs through
`blockwise_gemm`, whose partial sums of E4M3 products are exact float64 sums (the same bits on every CPU,
unlike a float32 BLAS sum), so this module shows scaling error only: the accumulation error lives in
utils/fp8/accumulation.py. `scaled_mm` runs the per-tensor and per-row schemes through torch._scaled_mm, and
a test checks that it agrees.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from utils import inputs as arg
from utils.fp8.formats import QuantizedTensor, calc_diff, get_format, quantize

SCHEMES: dict[str, tuple[str, str]] = {
    "tensor": ("tensor", "tensor"),
    "row": ("row", "row"),
    "tile": ("tile1x128", "tile1x128"),
    "deepseek": ("tile1x128", "block128x128"),
    "mx": ("mx1x32", "mx1x32"),
}
_SCALED_MM_GRANULARITIES = {"tensor", "row"}


def _check_operands(a: torch.Tensor, b: torch.Tensor, where: str = "fp8 GEMM", finite: bool = True) -> None:
    arg.tensor(a, "A", where=where, finite=finite)  # FP8 data (finite=False) were checked when quantised
    arg.tensor(b, "B", where=where, finite=finite)
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"fp8 GEMM computes A @ B.T with A (M, K) and B (N, K): got A {tuple(a.shape)} and "
                         f"B {tuple(b.shape)}; both must be 2-D with the same K (the reduction dimension).")
    arg.product_limit((a.shape[0], b.shape[0], a.shape[1]), "M x N x K", arg.MAX_GEMM_MACS, where=where)


def _quantized(q, name: str, where: str) -> QuantizedTensor:
    return arg.instance(q, name, QuantizedTensor, "a QuantizedTensor (from quantize(...))", where=where)


def scaled_mm(qa: QuantizedTensor, qb: QuantizedTensor, use_fast_accum: bool = False) -> torch.Tensor:
    """A @ B.T through `torch._scaled_mm` for per-tensor or per-row scales; float32 (M, N)."""
    _quantized(qa, "qa", "scaled_mm")
    _quantized(qb, "qb", "scaled_mm")
    arg.flag(use_fast_accum, "use_fast_accum", where="scaled_mm")
    if {qa.granularity, qb.granularity} - _SCALED_MM_GRANULARITIES or qa.granularity != qb.granularity:
        raise ValueError(f"torch._scaled_mm takes tensorwise or rowwise scales (both operands alike), got "
                         f"{qa.granularity!r} and {qb.granularity!r}: finer groups change scale along K, "
                         f"use blockwise_gemm.")
    _check_operands(qa.data, qb.data, "scaled_mm", finite=False)
    # Row scales of B (N, 1) become column scales of the output: _scaled_mm wants them as (1, N).
    scale_b = qb.scale.reshape(()) if qb.granularity == "tensor" else qb.scale.reshape(1, -1)
    scale_a = qa.scale.reshape(()) if qa.granularity == "tensor" else qa.scale.reshape(-1, 1)
    return torch._scaled_mm(qa.data, qb.data.t(), scale_a=scale_a.float(), scale_b=scale_b.float(),
                            out_dtype=torch.float32, use_fast_accum=use_fast_accum)


def _scales_for_k_group(q: QuantizedTensor, k_start: int) -> torch.Tensor:
    """The column of `q`'s scales that covers reduction index `k_start`, spread over q's rows."""
    rows = q.data.shape[0]
    column = q.scale[:, k_start // q.group[1]]
    return column.repeat_interleave(q.group[0])[:rows]


def blockwise_gemm(qa: QuantizedTensor, qb: QuantizedTensor) -> torch.Tensor:
    """A @ B.T from FP8 operands with scales that change along K: per-K-group partial products, scaled, FP32.

    The K-group is the largest run of K over which both operands keep one scale (the gcd of their group
    widths: 128 for the DeepSeek scheme, 32 for MX). Works for every granularity pair.
    """
    _quantized(qa, "qa", "blockwise_gemm")
    _quantized(qb, "qb", "blockwise_gemm")
    _check_operands(qa.data, qb.data, "blockwise_gemm", finite=False)
    k = qa.data.shape[1]
    k_group = math.gcd(qa.group[1], qb.group[1])
    # Summed in float64 so the result is the same on every CPU: E4M3 payloads are multiples of 2^-9 below 2^9,
    # so every product is a multiple of 2^-18 below 2^18 and a sum of up to 2^16 of them fits float64's 53
    # bits exactly, in whatever order BLAS adds them (E5M2's wider range leaves a float64 rounding, ~1e-16).
    a_values, b_values = qa.data.double(), qb.data.double()
    out = torch.zeros(qa.data.shape[0], qb.data.shape[0], dtype=torch.float64)
    for k_start in range(0, k, k_group):
        chunk = slice(k_start, min(k_start + k_group, k))
        partial = a_values[:, chunk] @ b_values[:, chunk].T   # what the tensor cores compute
        # ...and what the CUDA cores do with it: scale by the row's A-scale and the column's B-scale, add.
        out += partial * _scales_for_k_group(qa, k_start).double()[:, None] \
            * _scales_for_k_group(qb, k_start).double()[None, :]
    return out.float()


def gemm_quantized(qa: QuantizedTensor, qb: QuantizedTensor) -> torch.Tensor:
    """A @ B.T of two quantised operands, the same bits on every CPU: `blockwise_gemm`'s exact per-group sums.

    When the scales factor out of K (per tensor, per row) this is the product `scaled_mm` computes with
    torch._scaled_mm (tested equal up to its float32 summation order, which moves with the CPU).
    """
    _quantized(qa, "qa", "gemm_quantized")
    _quantized(qb, "qb", "gemm_quantized")
    return blockwise_gemm(qa, qb)


def fp8_gemm(a: torch.Tensor, b: torch.Tensor, scheme: str = "deepseek", fmt: str = "e4m3",
             scale_rule: str | None = None, b_fmt: str | None = None) -> torch.Tensor:
    """Quantise A (M, K) and B (N, K) with `scheme`'s groups (SCHEMES) and return A @ B.T in float32.

    `b_fmt` (default `fmt`) lets the two operands use different formats, e.g. E5M2 gradients.
    `scale_rule` None uses each granularity's default (pow2 for MX, fp32 otherwise).
    """
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise arg.InputError(f"Unknown FP8 GEMM scheme {scheme!r}: use one of {list(SCHEMES)} (each pairs a "
                         f"scaling granularity for A with one for B).")
    _check_operands(a, b, "fp8_gemm")
    a_groups, b_groups = SCHEMES[scheme]
    qa = quantize(a, fmt, a_groups, scale_rule)
    qb = quantize(b, b_fmt or fmt, b_groups, scale_rule)
    return gemm_quantized(qa, qb)


def reference_gemm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A @ B.T of the unquantised inputs, computed in float64 and returned as float32: the yardstick."""
    _check_operands(a, b, "reference_gemm")
    return (a.double() @ b.double().T).float()


def gemm_error_table(a: torch.Tensor, b: torch.Tensor, schemes: tuple[str, ...] = tuple(SCHEMES),
                     fmt: str = "e4m3", scale_rule: str | None = None) -> pd.DataFrame:
    """One row per scheme: errors of the FP8 GEMM against the FP64 reference.

    rel_error and calc_diff are over the whole output, so the largest outputs dominate them; "median row
    rel_error" is the relative error of a typical output row (token), which outliers cannot hide.
    """
    get_format(fmt)
    for scheme in arg.sequence(schemes, "schemes", where="gemm_error_table"):
        if not isinstance(scheme, str) or scheme not in SCHEMES:
            raise arg.InputError(f"Unknown FP8 GEMM scheme {scheme!r}: use one of {list(SCHEMES)}.")
    reference = reference_gemm(a, b).double()
    rows = []
    for scheme in schemes:
        out = fp8_gemm(a, b, scheme, fmt, scale_rule).double()
        row_errors = (out - reference).norm(dim=1) / reference.norm(dim=1)
        rows.append({"scheme": scheme, "A groups": SCHEMES[scheme][0], "B groups": SCHEMES[scheme][1],
                     "rel_error": float((out - reference).norm() / reference.norm()),
                     "median row rel_error": float(row_errors.median()),
                     "calc_diff": calc_diff(out, reference),
                     "passes DeepGEMM test (<1e-3)": calc_diff(out, reference) < 1e-3})
    return pd.DataFrame(rows).set_index("scheme")
