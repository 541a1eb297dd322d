"""FP8 formats and fine-grained scaling: quantise, dequantise, and measure the error (DeepSeek-V3 §3.3).

Two 8-bit formats (Micikevicius et al. 2022, "FP8 Formats for Deep Learning", Table 1):

    E4M3  1 sign, 4 exponent, 3 mantissa bits, bias 7:  max 448,   no infinities  (torch.float8_e4m3fn)
    E5M2  1 sign, 5 exponent, 2 mantissa bits, bias 15: max 57344, has infinities (torch.float8_e5m2)

A value `x` is stored as an FP8 number `q` and a higher-precision scale `s` with `x ~ q * s`. One scale is
shared by a group of values; the groups are the *granularity*:

    "tensor"        one scale for the whole tensor
    "row"           one scale per row (the last dimension is the row)
    "tile1x128"     one per 1 x 128 tile of a row: DeepSeek-V3's activations (§3.3.2)
    "block128x128"  one per 128 x 128 block: DeepSeek-V3's weights (§3.3.2)
    "mx1x32"        one per 1 x 32 block with a power-of-two (E8M0) scale: OCP Microscaling (MX) formats

Scales are computed online from the group's max-abs value (`scale = amax / format max`), not from a history
of past maxima ("delayed scaling"): that is what DeepSeek-V3 does, and it needs no bookkeeping.

Decisions on awkward input (documented once here, tested in tests/test_fp8.py):
- *Clamp, then cast.* What a cast does with a value beyond the format's range depends on the format and the
  implementation: on this CPU build E4M3 saturates to 448 (even inf does), E5M2 overflows to inf, and NVIDIA's
  conversion intrinsics offer a saturating and a non-saturating (NaN) mode. Every cast here clamps first.
- *Shapes a tile does not divide* are padded with zeros (what DeepGEMM-style kernels effectively do: the last
  tile is partial). Zeros do not change a tile's max-abs, so the scale of a partial tile comes from its real
  values only. `pad=False` raises a ValueError instead.
- *NaN or inf input* raises a ValueError: one of them makes its group's max-abs scale NaN or inf, which would
  silently turn every value of the group into NaN or zero. Training code must catch it before quantising.
- *All-zero groups* get scale 1 (never 0/0): their values quantise to exact zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from utils import inputs as arg

DATA_DIR = Path(__file__).resolve().parents[2] / "data"


@dataclass(frozen=True)
class FP8Format:
    """The constants of one 8-bit floating-point format (Micikevicius et al. 2022, Table 1)."""

    name: str
    dtype: torch.dtype
    exponent_bits: int
    mantissa_bits: int
    bias: int
    max: float                # largest finite value
    smallest_normal: float    # 2 ** (1 - bias)
    smallest_subnormal: float  # 2 ** (1 - bias - mantissa_bits)
    has_inf: bool

    @property
    def max_subnormal(self) -> float:
        """Largest subnormal value: (1 - 2**-m) * smallest normal."""
        return (1 - 2.0 ** -self.mantissa_bits) * self.smallest_normal

    @property
    def dynamic_range(self) -> float:
        """max / smallest subnormal: how many times bigger the largest value is than the smallest."""
        return self.max / self.smallest_subnormal


FORMATS: dict[str, FP8Format] = {
    # E4M3 gives up infinities and all but one NaN pattern to reach 448 instead of 240 (Table 1 note).
    "e4m3": FP8Format("e4m3", torch.float8_e4m3fn, 4, 3, 7, 448.0, 2.0**-6, 2.0**-9, has_inf=False),
    "e5m2": FP8Format("e5m2", torch.float8_e5m2, 5, 2, 15, 57344.0, 2.0**-14, 2.0**-16, has_inf=True),
}

# granularity -> (rows, columns) of one scaling group; None means "the whole dimension".
GRANULARITIES: dict[str, tuple[int | None, int | None]] = {
    "tensor": (None, None),
    "row": (1, None),
    "tile1x128": (1, 128),
    "block128x128": (128, 128),
    "mx1x32": (1, 32),
}

# What each granularity pairs with on the weight side of a GEMM: DeepSeek-V3 tiles activations 1x128 and
# blocks weights 128x128 (report Sec. 3.3.2); the other schemes use the same groups on both sides.
WEIGHT_GRANULARITY = {"tile1x128": "block128x128"}
# The granularities an activation is scaled with (128x128 blocks are DeepSeek-V3's weight side only).
ACTIVATION_GRANULARITIES = tuple(g for g in GRANULARITIES if g not in WEIGHT_GRANULARITY.values())

SCALE_RULES = ("fp32", "pow2")
# MX formats store their shared scale as E8M0: a bare power of two. Everything else uses an FP32 scale.
DEFAULT_SCALE_RULE = {"mx1x32": "pow2"}


def granularity_label(granularity: str) -> str:
    """How figures name a granularity, read off its group shape: "per tensor", "per row", "1 x 128 tiles",
    "128 x 128 blocks", "MX 1 x 32" (MX groups share a power-of-two scale)."""
    rows, cols = GRANULARITIES[granularity]
    if rows is None:
        return "per tensor"
    if cols is None:
        return "per row"
    if DEFAULT_SCALE_RULE.get(granularity) == "pow2":
        return f"MX {rows} x {cols}"
    return f"{rows} x {cols} {'tiles' if rows == 1 else 'blocks'}"


GRANULARITY_LABELS = {g: granularity_label(g) for g in GRANULARITIES}
E8M0_EXPONENT_RANGE = (-127, 127)
_LARGE = 1 << 16   # elements above which max-abs avoids copying |x|


def get_format(fmt: str | torch.dtype | FP8Format) -> FP8Format:
    """The FP8Format named `fmt` ("e4m3", "E4M3", "e5m2", or the torch dtype); ValueError otherwise."""
    if isinstance(fmt, FP8Format):
        return fmt
    if isinstance(fmt, str) and fmt in FORMATS:    # the common case, first: this runs on every quantise
        return FORMATS[fmt]
    for candidate in FORMATS.values():
        if (isinstance(fmt, torch.dtype) and fmt == candidate.dtype) or \
                (isinstance(fmt, str) and fmt.lower() == candidate.name):
            return candidate
    raise arg.InputError(f"Unsupported FP8 format {fmt!r}: use one of {sorted(FORMATS)} (E4M3 for precision, "
                     f"E5M2 for range); they are the two formats hardware implements.")


def format_table() -> pd.DataFrame:
    """One row per format with its constants, as the kit's code uses them."""
    rows = [{"format": f.name.upper(), "exponent_bits": f.exponent_bits, "mantissa_bits": f.mantissa_bits,
             "exponent_bias": f.bias, "max_normal": f.max, "min_normal": f.smallest_normal,
             "max_subnormal": f.max_subnormal, "min_subnormal": f.smallest_subnormal,
             "has_infinities": f.has_inf} for f in FORMATS.values()]
    return pd.DataFrame(rows).set_index("format")


def published_format_table() -> pd.DataFrame:
    """Table 1 of Micikevicius et al. 2022 as stored in data/fp8_formats.csv (with its source line)."""
    return pd.read_csv(DATA_DIR / "fp8_formats.csv", comment="#", keep_default_na=False).set_index("format")


def representable_values(fmt: str | FP8Format = "e4m3") -> torch.Tensor:
    """Every finite non-negative value of the format, sorted: all 256 bit patterns decoded."""
    f = get_format(fmt)
    values = torch.arange(256, dtype=torch.int16).to(torch.uint8).view(f.dtype).float()
    values = values[torch.isfinite(values) & (values >= 0)]
    return torch.unique(values)


def cast_to_fp8(x: torch.Tensor, fmt: str | FP8Format = "e4m3") -> torch.Tensor:
    """Clamp `x` to the format's range, then cast (round to nearest even). Never cast unclamped values.

    +-inf clamp to +-max like any value out of range; NaN has no place on the number line: ValueError."""
    f = get_format(fmt)
    arg.tensor(x, "x", where="cast_to_fp8", finite=False)
    if x.is_floating_point() and bool(torch.isnan(x).any()):
        arg.fail("x", "free of NaN", x, where="cast_to_fp8", why="clamping gives every number, even inf, a "
                 "value in the format's range, but NaN has none")
    return x.float().clamp(-f.max, f.max).to(f.dtype)


def round_to_fp8(x: torch.Tensor, fmt: str | FP8Format = "e4m3") -> torch.Tensor:
    """The float32 value `x` becomes after clamp-and-cast to FP8 (no scaling)."""
    return cast_to_fp8(x, fmt).float()


_DECODE: dict[torch.dtype, torch.Tensor] = {}


def _to_float32(q: torch.Tensor) -> torch.Tensor:
    """`q.float()` for an FP8 tensor, as a lookup in the 256 values its bytes can hold: the same bits (the
    table is made by that very conversion), about 2.5x faster on CPU, where the FP8 emulation spends its time."""
    if q.device.type != "cpu" or q.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2):
        return q.float()  # a GPU converts fast, and other dtypes are not bytes
    table = _DECODE.get(q.dtype)
    if table is None:
        table = _DECODE[q.dtype] = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(q.dtype).float()
    return torch.take(table, q.view(torch.uint8).long())


def _check_granularity(granularity: str) -> None:
    if not isinstance(granularity, str) or granularity not in GRANULARITIES:
        raise ValueError(f"Unknown granularity {granularity!r}: use one of {list(GRANULARITIES)} "
                         f"(each names the group of values that shares one scale).")


def group_shape(granularity: str, shape: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of one scaling group of `granularity` for a 2-D `shape`; ValueError for unknown names."""
    _check_granularity(granularity)
    shape = arg.sequence(shape, "shape", where="group_shape", why="(rows, cols) of a 2-D tensor")
    if len(shape) != 2:
        arg.fail("shape", "(rows, cols)", shape, where="group_shape")
    shape = tuple(arg.whole(n, "every entry of shape", low=1, where="group_shape") for n in shape)
    rows, cols = GRANULARITIES[granularity]
    return (rows or shape[0], cols or shape[1])


def scale_from_amax(amax: torch.Tensor, fmt: str | FP8Format = "e4m3",
                    scale_rule: str = "fp32") -> torch.Tensor:
    """Scale that maps a group's max-abs `amax` onto the format's max (§3.3.2 "Online Quantization").

    "fp32": scale = amax / max, the largest value lands exactly on the format's max.
    "pow2": the next power of two at or above amax / max (an E8M0 scale, as MX and DeepGEMM's UE8M0 scales);
    rounding *up* means no value ever exceeds the format's max, at the cost of up to one bit of range.
    (The OCP MX spec rounds down and saturates the few values that overflow; we prefer never clipping.)
    All-zero groups get scale 1, so no scale is ever 0, inf or NaN.
    """
    arg.tensor(amax, "amax", where="scale_from_amax", finite=False, nonempty=False)
    if amax.is_complex() or bool((amax < 0).any()) or bool(torch.isnan(amax).any()):
        arg.fail("amax", "non-negative max-abs values (no NaN)", amax, where="scale_from_amax")
    _check_scale_rule(scale_rule)
    return _scale(amax, get_format(fmt), scale_rule)


def _check_scale_rule(scale_rule: str) -> None:
    if not isinstance(scale_rule, str) or scale_rule not in SCALE_RULES:
        raise arg.InputError(f"Unknown scale rule {scale_rule!r}: use 'fp32' (exact max-abs scale) or 'pow2' "
                         f"(power-of-two E8M0 scale, so applying it is an exponent shift).")


def _scale(amax: torch.Tensor, f: FP8Format, scale_rule: str) -> torch.Tensor:
    """`scale_from_amax` for an `amax` quantise itself computed (non-negative, finite) and checked arguments."""
    ratio = amax / f.max
    if scale_rule == "pow2":
        mantissa, exponent = torch.frexp(ratio)   # ratio = mantissa * 2**exponent, mantissa in [0.5, 1)
        exponent = torch.where(mantissa == 0.5, exponent - 1, exponent)  # exact powers of two stay put
        exponent = exponent.clamp(*E8M0_EXPONENT_RANGE)
        ratio = torch.ldexp(torch.ones_like(ratio), exponent)
    # A zero group (or one so tiny the division underflows) would give scale 0 and then 0/0: use 1.
    return torch.where(ratio > 0, ratio, 1.0)


@dataclass
class QuantizedTensor:
    """FP8 values (`data`, the original shape) and one scale per group (`scale`, held as float32), x ~ data * scale.

    `scale` has shape (ceil(rows / group rows), ceil(cols / group cols)) of the 2-D view (rows, last dim).
    `scale_bytes` is what one scale takes in memory: 4 for an FP32 scale, 1 for a power of two (E8M0, as MX
    formats store it).
    """

    data: torch.Tensor
    scale: torch.Tensor
    group: tuple[int, int]
    fmt: str
    granularity: str
    scale_bytes: int = 4

    def dequantize(self) -> torch.Tensor:
        """Float32 tensor data * scale, each scale spread over its group."""
        data2d = _to_float32(self.data.reshape(-1, self.data.shape[-1]))
        rows, cols = data2d.shape
        (group_rows, group_cols), (grid_rows, grid_cols) = self.group, self.scale.shape
        padded = F.pad(data2d, (0, grid_cols * group_cols - cols, 0, grid_rows * group_rows - rows))
        grid = padded.view(grid_rows, group_rows, grid_cols, group_cols) * self.scale[:, None, :, None]
        return grid.reshape(grid_rows * group_rows, -1)[:rows, :cols].reshape(self.data.shape)

    def t(self) -> QuantizedTensor:
        """The transpose of a 2-D quantised tensor: same groups, transposed (a 128x128 block stays one)."""
        if self.data.dim() != 2:
            raise ValueError("QuantizedTensor.t() needs a 2-D tensor, as a matrix transpose does.")
        return QuantizedTensor(self.data.t(), self.scale.t(), self.group[::-1], self.fmt, self.granularity,
                               self.scale_bytes)

    @property
    def nbytes(self) -> int:
        """Bytes of the FP8 values plus the scales (4 bytes each for FP32, 1 for E8M0 powers of two)."""
        return self.data.numel() + self.scale_bytes * self.scale.numel()


def _quantize_grid(x: torch.Tensor, f: FP8Format, granularity: str, scale_rule: str | None, pad: bool):
    """Shared core of quantize and quantize_dequantize: (fp8 grid, scales, group, (rows, cols)).

    The grid has shape (groups down, group rows, groups across, group cols) of the zero-padded 2-D view.
    """
    scale_rule = scale_rule or DEFAULT_SCALE_RULE.get(granularity, "fp32")
    arg.tensor(x, "x", where="quantize", finite=False, nonempty=False)
    arg.flag(pad, "pad", where="quantize")
    if x.dim() == 0:
        raise arg.InputError("quantize() needs at least one dimension: scales are shared along rows and columns.")
    if x.numel() == 0:
        arg.fail("x", "a non-empty tensor", x, where="quantize",
                 why="a group's scale comes from its max-abs value, and an empty tensor has none")
    if granularity == "block128x128" and x.dim() != 2:
        raise ValueError(f"Granularity 'block128x128' needs a 2-D weight matrix, got shape {tuple(x.shape)}: "
                         f"a block spans rows and columns of one matrix.")
    x2d = x.detach().reshape(-1, x.shape[-1])
    if x2d.dtype != torch.float32:
        x2d = x2d.float()
    rows, cols = x2d.shape
    _check_granularity(granularity)
    group = GRANULARITIES[granularity]
    group = (group[0] or rows, group[1] or cols)
    # A group never extends past the tensor: on a 64-wide row a 1x128 tile is the row (same scale as padding).
    group = (min(group[0], rows), min(group[1], cols))
    padded_rows, padded_cols = -(-rows // group[0]) * group[0], -(-cols // group[1]) * group[1]
    if (padded_rows, padded_cols) != (rows, cols):
        if not pad:
            raise ValueError(f"Shape {(rows, cols)} is not a multiple of the {group[0]}x{group[1]} groups of "
                             f"{granularity!r}; pass pad=True to zero-pad the last partial group (zeros do "
                             f"not change its max-abs scale).")
        x2d = F.pad(x2d, (0, padded_cols - cols, 0, padded_rows - rows))
    grid = x2d.view(padded_rows // group[0], group[0], padded_cols // group[1], group[1])
    if grid.numel() > _LARGE:
        # max |x| as max(max x, -min x): two read-only passes, no |x| copy of a large tensor.
        amax = torch.maximum(grid.amax(dim=(1, 3)), grid.amin(dim=(1, 3)).neg())
    else:                                      # small tensors: fewer operations matter more than the copy
        amax = grid.abs().amax(dim=(1, 3))
    if not math.isfinite(float(amax.max())):   # NaN and inf propagate into amax, then into its max
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"quantize() needs finite input: found {bad} NaN/inf value(s). One of them makes "
                         f"its group's max-abs scale NaN or inf, which would silently turn the whole group "
                         f"into NaN or zero; find where the non-finite value comes from before quantising.")
    _check_scale_rule(scale_rule)  # after the input's checks, where scale_from_amax checked it before
    scale = _scale(amax, f, scale_rule)
    spread = scale[:, None, :, None]
    q = (grid / spread).clamp_(-f.max, f.max).to(f.dtype)
    return q, scale, spread, group, (rows, cols)


def quantize(x: torch.Tensor, fmt: str | FP8Format = "e4m3", granularity: str = "tile1x128",
             scale_rule: str | None = None, pad: bool = True) -> QuantizedTensor:
    """Quantise `x` to FP8 with one max-abs scale per group of `granularity` (DeepSeek-V3 §3.3.2).

    Tensors of any rank are viewed as 2-D (rows, last dim); "block128x128" needs a 2-D tensor. `scale_rule`
    defaults to "pow2" for "mx1x32" and "fp32" otherwise. Shapes a group does not divide are zero-padded
    (`pad=False`: ValueError); a group never extends past the tensor (`QuantizedTensor.group` is the group
    actually used). NaN/inf raise ValueError; all-zero groups get scale 1 (module docstring).
    """
    f = get_format(fmt)
    q, scale, _, group, (rows, cols) = _quantize_grid(x, f, granularity, scale_rule, pad)
    data = q.view(q.shape[0] * group[0], -1)[:rows, :cols].reshape(x.shape)
    pow2 = (scale_rule or DEFAULT_SCALE_RULE.get(granularity, "fp32")) == "pow2"
    return QuantizedTensor(data, scale, group, f.name, granularity, scale_bytes=1 if pow2 else 4)


def quantize_dequantize(x: torch.Tensor, fmt: str | FP8Format = "e4m3", granularity: str = "tile1x128",
                        scale_rule: str | None = None) -> torch.Tensor:
    """`x` after a round trip through FP8 with the given scaling ("fake quantisation"), float32.

    Same result as `quantize(...).dequantize()`, in one pass (the FP8 training emulation calls it a lot).
    """
    q, _, spread, group, (rows, cols) = _quantize_grid(x, get_format(fmt), granularity, scale_rule, pad=True)
    out = _to_float32(q).mul_(spread)
    if out.shape[0] * out.shape[1] == rows and out.shape[2] * out.shape[3] == cols:   # no padding
        return out.view(x.shape)
    return out.view(out.shape[0] * group[0], -1)[:rows, :cols].reshape(x.shape)


def outlier_mask(x: torch.Tensor, threshold: float = 10.0) -> torch.Tensor:
    """True where |x| exceeds `threshold` times the median |x| (robust: outliers do not move the median)."""
    arg.tensor(x, "x", where="outlier_mask")
    arg.real(threshold, "threshold", low=0, low_open=True, where="outlier_mask",
             why="how many times the median magnitude makes a value an outlier")
    magnitude = x.detach().abs().float()
    return magnitude > threshold * magnitude.flatten().median()


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """DeepGEMM's similarity test: 1 - 2 sum(xy) / sum(x^2 + y^2), 0 when identical (tests require < 1e-3).

    Computed in float64. Two all-zero tensors are identical: 0.0 rather than 0/0.
    """
    _same_shape(x, y, "calc_diff")
    x, y = x.detach().double(), y.detach().double()
    denominator = (x * x + y * y).sum()
    if denominator == 0:
        return 0.0
    return float(1 - 2 * (x * y).sum() / denominator)


def error_metrics(x: torch.Tensor, x_hat: torch.Tensor,
                  outliers: torch.Tensor | None = None) -> dict[str, float]:
    """Error of an approximation `x_hat` of `x`, with metrics that outliers cannot hide.

    rel_error             ||x_hat - x|| / ||x||: dominated by the largest values, so it flatters per-tensor
                          scaling, which keeps outliers exact and crushes everything else;
    mean_rel_error        mean of |x_hat - x| / |x| over non-zero x: every value counts the same;
    nonoutlier_rel_error  ||x_hat - x|| / ||x|| over values that are not outliers (`outliers` mask, default
                          `outlier_mask(x)`);
    flushed_to_zero       fraction of non-zero values that became exactly zero;
    calc_diff             DeepGEMM's 1 - cosine-like similarity (see calc_diff).
    """
    _same_shape(x, x_hat, "error_metrics", "x_hat")
    if outliers is not None:
        arg.tensor(outliers, "outliers", where="error_metrics", finite=False)
        if outliers.dtype != torch.bool or outliers.shape != x.shape:
            arg.fail("outliers", f"a bool mask of x's shape {tuple(x.shape)}", outliers, where="error_metrics")
    x, x_hat = x.detach().double(), x_hat.detach().double()
    if outliers is None:
        outliers = outlier_mask(x)
    error = x_hat - x
    nonzero = x != 0
    keep = ~outliers

    def ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> float:
        return float(numerator / denominator) if denominator > 0 else 0.0

    return {
        "rel_error": ratio(error.norm(), x.norm()),
        "mean_rel_error": float((error[nonzero].abs() / x[nonzero].abs()).mean()) if nonzero.any() else 0.0,
        "nonoutlier_rel_error": ratio(error[keep].norm(), x[keep].norm()),
        "flushed_to_zero": float((nonzero & (x_hat == 0)).sum() / nonzero.sum()) if nonzero.any() else 0.0,
        "calc_diff": calc_diff(x, x_hat),
    }


def _same_shape(x, y, where: str, y_name: str = "y") -> None:
    """Two real, finite, non-empty tensors of one shape (what every error metric compares)."""
    arg.tensor(x, "x", where=where)
    arg.tensor(y, y_name, where=where)
    if x.shape != y.shape:
        arg.fail(y_name, f"a tensor of x's shape {tuple(x.shape)}", y, where=where,
                 why="the two are compared value by value")
