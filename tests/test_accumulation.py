"""The accumulator model: mantissa rounding against a reference, exactness with full bits, error growing
with K without promotion and flat with it, and the report's order of magnitude at K = 4096."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.fp8.accumulation import (
    accumulation_error,
    accumulation_error_vs_k,
    accumulation_sensitivity,
    limited_accumulation_gemm,
    random_positive_operands,
    round_mantissa,
)


def _reference_round(value: float, bits: int, rounding: str) -> float:
    """Round with math.frexp: keep `bits` bits after the leading one."""
    if value == 0:
        return 0.0
    mantissa, exponent = math.frexp(abs(value))   # value = mantissa * 2**exponent, mantissa in [0.5, 1)
    scaled = mantissa * 2 ** (bits + 1)
    kept = math.floor(scaled) if rounding == "truncate" else math.floor(scaled + 0.5)
    return math.copysign(kept * 2.0 ** (exponent - bits - 1), value)


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e30, 1e30, allow_nan=False, allow_subnormal=False), st.integers(1, 30),
       st.sampled_from(["truncate", "nearest"]))
def test_round_mantissa_matches_a_frexp_reference(value, bits, rounding):
    got = round_mantissa(torch.tensor([value], dtype=torch.float64), bits, rounding).item()
    assert got == _reference_round(value, bits, rounding)


def test_round_mantissa_known_cases():
    x = torch.tensor([1 + 2**-20, -(1 + 2**-20), 2 - 2**-20, 1 + 2**-15 + 2**-30], dtype=torch.float64)
    assert round_mantissa(x, 14, "truncate").tolist() == [1.0, -1.0, 2 - 2**-14, 1.0]
    assert round_mantissa(x, 14, "nearest").tolist() == [1.0, -1.0, 2.0, 1 + 2**-14]
    assert torch.equal(round_mantissa(x, 52), x)


def test_round_mantissa_refuses_bad_arguments():
    with pytest.raises(ValueError, match="0..52"):
        round_mantissa(torch.zeros(1, dtype=torch.float64), 60)
    with pytest.raises(ValueError, match="Unknown rounding"):
        round_mantissa(torch.zeros(1, dtype=torch.float64), 10, "stochastic")
    with pytest.raises(ValueError, match="float64"):
        round_mantissa(torch.zeros(1), 10)


def test_full_precision_accumulator_is_exact():
    a, b = random_positive_operands(16, 16, 1024)
    exact = a @ b.T
    assert torch.allclose(limited_accumulation_gemm(a, b, mantissa_bits=52), exact, rtol=1e-14)
    # FP32 promotion adds at most FP32 rounding.
    assert torch.allclose(limited_accumulation_gemm(a, b, 52, promote_every=128), exact, rtol=1e-6)


def test_promotion_every_k_or_more_is_no_promotion():
    a, b = random_positive_operands(8, 8, 512)
    without = limited_accumulation_gemm(a, b, 14)
    assert torch.allclose(limited_accumulation_gemm(a, b, 14, promote_every=512), without, rtol=1e-7)


def test_error_grows_with_k_without_promotion_and_stays_flat_with_it():
    small = {every: accumulation_error(512, 14, every, size=32) for every in (None, 128)}
    large = {every: accumulation_error(4096, 14, every, size=32) for every in (None, 128)}
    assert large[None] > 4 * small[None]                 # ~linear growth: 8x the K, ~8x the error
    assert large[128] < 1.5 * small[128]                  # flat
    assert large[128] < large[None] / 20


def test_reports_order_of_magnitude_at_k_4096():
    """DeepSeek-V3 §3.3.2: ~14 retained bits, K = 4096 -> maximum relative error of nearly 2%."""
    without = accumulation_error(4096, 14, None, size=128)
    assert 0.005 < without < 0.03
    assert accumulation_error(4096, 14, 128, size=128) < 0.001


def test_more_bits_or_round_to_nearest_mean_less_error():
    base = accumulation_error(2048, 14, None, size=32)
    assert accumulation_error(2048, 13, None, size=32) > 1.5 * base
    assert accumulation_error(2048, 16, None, size=32) < base / 3
    assert accumulation_error(2048, 14, None, size=32, rounding="nearest") < base / 3


def test_bad_arguments_are_refused():
    a, b = random_positive_operands(4, 4, 64)
    with pytest.raises(ValueError, match="same K"):
        limited_accumulation_gemm(a, b[:, :32])
    with pytest.raises(ValueError, match="multiple of products_per_add"):
        limited_accumulation_gemm(a, b, promote_every=30)
    with pytest.raises(ValueError, match="products_per_add must be >= 1"):
        limited_accumulation_gemm(a, b, products_per_add=0)


def test_error_vs_k_table():
    table = accumulation_error_vs_k(ks=(256, 512), size=16)
    assert list(table.columns) == ["K", "accumulation", "max_rel_error"]
    assert len(table) == 4 and (table["max_rel_error"] > 0).all()


def test_sensitivity_table_varies_one_assumption_at_a_time():
    table = accumulation_sensitivity(k=512, bits=(13, 14), per_adds=(4, 32), size=8)
    assert len(table) == 2 * 2 * 2
    errors = table.set_index(["mantissa bits", "products per add", "rounding"])["max_rel_error"]
    assert errors[(13, 4, "truncate")] > errors[(14, 4, "truncate")] > errors[(14, 32, "truncate")]
    assert errors[(14, 4, "nearest")] < errors[(14, 4, "truncate")]
