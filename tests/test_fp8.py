"""FP8 formats and quantisation: constants against the published table, clamp-then-cast, every granularity,
padding, NaN/inf, zeros, and the error metrics."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.fp8 import formats as fp8
from utils.fp8.formats import (
    FORMATS,
    GRANULARITIES,
    calc_diff,
    error_metrics,
    get_format,
    published_format_table,
    quantize,
    quantize_dequantize,
    representable_values,
    round_to_fp8,
    scale_from_amax,
)

PUBLISHED = published_format_table()


# -- formats -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["e4m3", "e5m2"])
def test_constants_match_micikevicius_table_1(name):
    f, row = FORMATS[name], PUBLISHED.loc[name.upper()]
    assert (f.exponent_bits, f.mantissa_bits) == (row.exponent_bits, row.mantissa_bits)
    assert f.bias == row.exponent_bias
    assert f.max == row.max_normal
    assert f.smallest_normal == row.min_normal
    assert f.max_subnormal == row.max_subnormal
    assert f.smallest_subnormal == row.min_subnormal
    assert f.has_inf == (row.infinities != "N/A")


def test_published_table_cites_its_source():
    text = (fp8.DATA_DIR / "fp8_formats.csv").read_text()
    assert "Micikevicius" in text and "2209.05433" in text and "Table 1" in text


@pytest.mark.parametrize("name", ["e4m3", "e5m2"])
def test_constants_match_torch_finfo_and_the_bit_patterns(name):
    f = FORMATS[name]
    info = torch.finfo(f.dtype)
    assert info.bits == 8
    assert info.max == f.max and info.smallest_normal == f.smallest_normal
    assert info.eps == 2.0 ** -f.mantissa_bits
    # The same constants from the format's definition: bias 2^(e-1) - 1, subnormal step 2^(1 - bias - m).
    assert f.bias == 2 ** (f.exponent_bits - 1) - 1
    assert f.smallest_normal == 2.0 ** (1 - f.bias)
    assert f.smallest_subnormal == 2.0 ** (1 - f.bias - f.mantissa_bits)
    values = representable_values(name)
    assert values[0] == 0 and values[1] == f.smallest_subnormal and values[-1] == f.max


def test_representable_value_counts():
    # E4M3: 256 patterns - 2 NaN = 254 finite, +-0 share one value: 127 non-negative. E5M2: - 6 NaN - 2 inf.
    assert len(representable_values("e4m3")) == 127
    assert len(representable_values("e5m2")) == 124


@pytest.mark.parametrize("alias", ["e4m3", "E4M3", torch.float8_e4m3fn])
def test_get_format_accepts_names_and_dtypes(alias):
    assert get_format(alias) is FORMATS["e4m3"]


@pytest.mark.parametrize("bad", ["e3m4", "fp8", torch.bfloat16, "int8"])
def test_unsupported_format_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="Unsupported FP8 format.*e4m3.*e5m2"):
        get_format(bad)


# -- clamp, then cast ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["e4m3", "e5m2"])
def test_cast_clamps_out_of_range_values_to_the_format_max(name):
    f = FORMATS[name]
    x = torch.tensor([1e6, -1e6, f.max * 1.2, -f.max * 1.01, 3e38])
    assert round_to_fp8(x, name).tolist() == [f.max, -f.max, f.max, -f.max, f.max]


def test_why_we_clamp_an_unclamped_cast_is_not_reliable():
    # On this CPU build E5M2 overflows to inf (the IEEE way); E4M3 has no inf. GPUs give NaN for E4M3.
    assert torch.tensor([1e6]).to(torch.float8_e5m2).float().isinf().all()
    assert round_to_fp8(torch.tensor([1e6]), "e5m2").item() == 57344.0


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["e4m3", "e5m2"]), st.integers(0, 255))
def test_representable_values_survive_the_round_trip(name, index):
    values = representable_values(name)
    value = values[index % len(values)]
    assert round_to_fp8(value.reshape(1), name).item() == value.item()
    assert round_to_fp8(-value.reshape(1), name).item() == -value.item()


def test_cast_rounds_to_nearest_even():
    # Between 1 and 1.125 (E4M3's step at 1): 1.0625 is a tie and goes to the even mantissa, 1.0.
    assert round_to_fp8(torch.tensor([1.0625, 1.07, 1.1875]), "e4m3").tolist() == [1.0, 1.125, 1.25]


# -- quantisation --------------------------------------------------------------------------------------------

def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("granularity,scale_shape", [("tensor", (1, 1)), ("row", (256, 1)),
                                                     ("tile1x128", (256, 4)), ("block128x128", (2, 4)),
                                                     ("mx1x32", (256, 16))])
def test_scale_shapes(granularity, scale_shape):
    q = quantize(_randn(256, 512), "e4m3", granularity)
    assert tuple(q.scale.shape) == scale_shape
    assert q.data.dtype == torch.float8_e4m3fn and q.data.shape == (256, 512)


@pytest.mark.parametrize("name", ["e4m3", "e5m2"])
@pytest.mark.parametrize("granularity", list(GRANULARITIES))
def test_values_in_the_normal_range_keep_half_an_ulp(name, granularity):
    """Every value whose scaled magnitude is a normal FP8 number is within 2^-(m+1) relative error."""
    f = FORMATS[name]
    x = _randn(130, 300, seed=1)
    q = quantize(x, name, granularity)
    scaled = (q.data.float() != 0) & (q.data.float().abs() >= f.smallest_normal)
    relative = ((q.dequantize() - x).abs() / x.abs())[scaled]
    assert relative.max() <= 2.0 ** -(f.mantissa_bits + 1) * (1 + 1e-5)


def test_fp32_rule_puts_each_groups_max_on_the_format_max():
    x = _randn(4, 256)
    q = quantize(x, "e4m3", "tile1x128")
    groups = q.data.float().view(4, 2, 128).abs().amax(-1)
    assert torch.equal(groups, torch.full((4, 2), 448.0))
    assert torch.allclose(q.scale, x.view(4, 2, 128).abs().amax(-1) / 448, rtol=0)


@pytest.mark.parametrize("name", ["e4m3", "e5m2"])
def test_pow2_rule_gives_powers_of_two_that_never_overflow(name):
    f = FORMATS[name]
    amax = torch.tensor([1e-30, 0.3, 1.0, 448.0, 500.0, 57344.0, 1e30])
    scale = scale_from_amax(amax, name, "pow2")
    mantissa, _ = torch.frexp(scale)
    assert (mantissa == 0.5).all()
    ratio = amax / scale
    assert (ratio <= f.max).all() and (ratio > f.max / 2).all()


def test_mx_defaults_to_power_of_two_scales():
    q = quantize(_randn(8, 64), "e4m3", "mx1x32")
    assert (torch.frexp(q.scale).mantissa == 0.5).all()
    assert not (torch.frexp(quantize(_randn(8, 64), "e4m3", "tile1x128").scale).mantissa == 0.5).all()


def test_unknown_granularity_and_scale_rule_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown granularity"):
        quantize(_randn(4, 4), "e4m3", "tile1x64")
    with pytest.raises(ValueError, match="Unknown scale rule"):
        quantize(_randn(4, 4), "e4m3", "row", scale_rule="fp16")


@pytest.mark.parametrize("granularity", ["tile1x128", "block128x128", "mx1x32"])
def test_shapes_a_tile_does_not_divide_are_zero_padded(granularity):
    """Decision: pad with zeros. The result equals quantising the zero-padded tensor, then cropping."""
    x = _randn(130, 200, seed=2)
    padded = torch.nn.functional.pad(x, (0, 56, 0, 126))          # to 256 x 256
    q, q_padded = quantize(x, "e4m3", granularity), quantize(padded, "e4m3", granularity)
    rows, cols = q.scale.shape                                     # the padded rows add groups of zeros
    assert torch.equal(q.scale, q_padded.scale[:rows, :cols])
    assert torch.equal(q.dequantize(), q_padded.dequantize()[:130, :200])
    assert torch.equal(quantize_dequantize(x, "e4m3", granularity), q.dequantize())


def test_pad_false_raises_instead():
    with pytest.raises(ValueError, match="not a multiple of the 1x128 groups"):
        quantize(_randn(4, 200), "e4m3", "tile1x128", pad=False)
    quantize(_randn(4, 256), "e4m3", "tile1x128", pad=False)      # divides: fine


def test_a_group_never_extends_past_the_tensor():
    x = _randn(16, 64)
    q = quantize(x, "e4m3", "tile1x128")
    assert q.group == (1, 64)
    assert torch.equal(q.dequantize(), quantize_dequantize(x, "e4m3", "row"))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("granularity", list(GRANULARITIES))
def test_nan_and_inf_raise_a_clear_error(bad, granularity):
    x = _randn(4, 256)
    x[2, 7] = bad
    with pytest.raises(ValueError, match="needs finite input: found 1 NaN/inf"):
        quantize(x, "e4m3", granularity)


@pytest.mark.parametrize("granularity", list(GRANULARITIES))
def test_zero_tensors_and_zero_tiles_have_finite_scales(granularity):
    zeros = torch.zeros(128, 256)
    q = quantize(zeros, "e4m3", granularity)
    assert torch.isfinite(q.scale).all() and (q.scale == 1).all()
    assert torch.equal(q.dequantize(), zeros)
    x = _randn(128, 256)
    x[:, :128] = 0                                                   # an all-zero tile among non-zero ones
    assert torch.isfinite(quantize_dequantize(x, "e4m3", granularity)).all()


def test_tiny_values_do_not_underflow_the_scale_to_zero():
    x = torch.full((2, 32), 1e-44)                                 # float32 subnormal: amax / 448 underflows
    assert torch.isfinite(quantize_dequantize(x, "e4m3", "row")).all()


def test_any_rank_for_row_groups_two_dimensions_for_blocks():
    x = _randn(2, 3, 256)
    q = quantize(x, "e4m3", "tile1x128")
    assert q.data.shape == (2, 3, 256) and tuple(q.scale.shape) == (6, 2)
    assert q.dequantize().shape == x.shape
    with pytest.raises(ValueError, match="needs a 2-D weight matrix"):
        quantize(x, "e4m3", "block128x128")
    with pytest.raises(ValueError, match="at least one dimension"):
        quantize(torch.tensor(3.0), "e4m3", "tensor")


def test_transposed_blocks_equal_blocks_of_the_transpose():
    w = _randn(256, 384, seed=3)
    qt = quantize(w, "e4m3", "block128x128").t()
    direct = quantize(w.t(), "e4m3", "block128x128")
    assert torch.equal(qt.scale, direct.scale)
    assert torch.equal(qt.dequantize(), direct.dequantize())


def test_nbytes_counts_values_and_scales():
    assert quantize(_randn(128, 256), "e4m3", "tile1x128").nbytes == 128 * 256 + 4 * 128 * 2
    # MX stores each power-of-two scale as one E8M0 byte: 8 groups of 32 per row
    assert quantize(_randn(128, 256), "e4m3", "mx1x32").nbytes == 128 * 256 + 1 * 128 * 8
    assert quantize(_randn(128, 256), "e4m3", "tile1x128", "pow2").nbytes == 128 * 256 + 1 * 128 * 2


# -- metrics -------------------------------------------------------------------------------------------------

def test_calc_diff_follows_deepgemm():
    x, y = _randn(64, 64), _randn(64, 64, seed=1)
    expected = 1 - 2 * (x.double() * y.double()).sum() / (x.double() ** 2 + y.double() ** 2).sum()
    assert calc_diff(x, y) == pytest.approx(float(expected))
    assert calc_diff(x, x) == 0.0
    assert calc_diff(x, -x) == pytest.approx(2.0)
    assert calc_diff(torch.zeros(3), torch.zeros(3)) == 0.0
    assert calc_diff(3 * x, 3 * y) == pytest.approx(calc_diff(x, y))


def test_error_metrics_on_a_known_case():
    x = torch.tensor([1.0, 2.0, 1000.0, 4.0])
    x_hat = torch.tensor([1.0, 0.0, 1000.0, 5.0])
    m = error_metrics(x, x_hat, outliers=torch.tensor([False, False, True, False]))
    assert m["flushed_to_zero"] == 0.25
    assert m["mean_rel_error"] == pytest.approx((0 + 1 + 0 + 0.25) / 4)
    assert m["nonoutlier_rel_error"] == pytest.approx(math.sqrt(4 + 1) / math.sqrt(1 + 4 + 16))
    assert m["rel_error"] == pytest.approx(math.sqrt(5) / math.sqrt(1 + 4 + 1e6 + 16))


def test_default_outlier_mask_uses_the_median():
    x = torch.ones(100)
    x[3] = 50.0
    assert fp8.outlier_mask(x).nonzero().flatten().tolist() == [3]


def test_outliers_hurt_per_tensor_scaling_and_tiles_confine_them():
    """The teaching claim: a 10^4 outlier channel flushes small values under per-tensor scaling; 1x128
    tiles confine the damage to the outlier's tile."""
    x = _randn(64, 512)
    x[:, 5] *= 1e4
    outliers = torch.zeros_like(x, dtype=torch.bool)
    outliers[:, 5] = True
    per_tensor = error_metrics(x, quantize_dequantize(x, "e4m3", "tensor"), outliers)
    tiles = error_metrics(x, quantize_dequantize(x, "e4m3", "tile1x128"), outliers)
    assert per_tensor["flushed_to_zero"] > 10 * tiles["flushed_to_zero"]
    assert per_tensor["mean_rel_error"] > 2 * tiles["mean_rel_error"]
    # ...which the norm error hides: it is no worse than quantising a tensor with no outliers at all.
    clean = error_metrics(_randn(64, 512), quantize_dequantize(_randn(64, 512), "e4m3", "tensor"))
    assert per_tensor["rel_error"] <= clean["rel_error"]


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_the_decode_table_gives_the_bits_of_torchs_own_conversion(dtype):
    """quantize_dequantize decodes FP8 by table lookup (faster on CPU): every one of the 256 bytes, NaN, inf
    and -0 included, must become exactly the float32 that `.float()` makes of it."""
    from utils.fp8.formats import _to_float32

    every = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).reshape(16, 16)
    assert torch.equal(_to_float32(every).view(torch.int32), every.float().view(torch.int32))
    assert _to_float32(every.t()).shape == (16, 16)  # a strided view decodes as its values, not its storage
    assert torch.equal(_to_float32(every.t()).view(torch.int32), every.t().float().view(torch.int32))
    # Not FP8 (a QuantizedTensor built by hand with other data): converted as before, not looked up.
    assert torch.equal(_to_float32(torch.tensor([1.5, -2.0], dtype=torch.bfloat16)), torch.tensor([1.5, -2.0]))
