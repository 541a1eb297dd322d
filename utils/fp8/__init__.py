"""FP8 mixed precision as in DeepSeek-V3 (report Sec. 3.3): formats, fine-grained scaling, GEMMs, accumulation.

    formats       E4M3 / E5M2 constants, casting, the scaling granularities (1x128 tiles, 128x128 blocks, ...)
    gemm          FP8 matrix products: ``torch._scaled_mm`` and block-scaled emulation
    accumulation  the limited-precision tensor-core accumulator, and promotion to FP32 every N_C elements
    linear        an FP8 linear layer and model conversion (what stays in higher precision)
    explore       the pure functions behind the FP8 widget

May import: torch, numpy, pandas, matplotlib, ``utils.figures``, ``utils.moe`` (explore's training run only).
Knows nothing of pipelines or clusters. ``from utils.fp8 import quantize`` works as it always did.
"""

from utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    name: "formats" for name in (
        "DATA_DIR", "FP8Format", "FORMATS", "GRANULARITIES", "SCALE_RULES", "DEFAULT_SCALE_RULE",
        "E8M0_EXPONENT_RANGE", "get_format", "format_table", "published_format_table", "representable_values",
        "cast_to_fp8", "round_to_fp8", "group_shape", "scale_from_amax", "QuantizedTensor", "quantize",
        "quantize_dequantize", "outlier_mask", "calc_diff", "error_metrics",
    )
})
