"""FP8 GEMMs: torch._scaled_mm (tensorwise, rowwise) against the blockwise emulation and the dequantised
matmul; every scheme passes DeepGEMM's calc_diff test against the FP32 reference; bad input is refused."""

import pytest
import torch

from utils.fp8.formats import calc_diff, quantize
from utils.fp8.gemm import (
    SCHEMES,
    blockwise_gemm,
    fp8_gemm,
    gemm_error_table,
    gemm_quantized,
    reference_gemm,
    scaled_mm,
)


def _operands(m=96, k=384, n=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)


@pytest.mark.parametrize("granularity", ["tensor", "row"])
def test_scaled_mm_runs_on_cpu_and_matches_the_emulation(granularity):
    a, b = _operands()
    qa, qb = quantize(a, "e4m3", granularity), quantize(b, "e4m3", granularity)
    out = scaled_mm(qa, qb)
    assert out.dtype == torch.float32 and out.shape == (96, 80)
    assert torch.allclose(out, blockwise_gemm(qa, qb), rtol=1e-5, atol=1e-4)
    assert torch.allclose(out, qa.dequantize() @ qb.dequantize().T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("shape", [(96, 384, 80), (70, 300, 50)])   # the second: K not a multiple of 128
def test_every_scheme_equals_the_dequantised_matmul(scheme, shape):
    """Per-group partial products with scales applied = dequantise, then multiply (up to FP32 order)."""
    a, b = _operands(*shape)
    a_groups, b_groups = SCHEMES[scheme]
    qa, qb = quantize(a, "e4m3", a_groups), quantize(b, "e4m3", b_groups)
    expected = qa.dequantize().double() @ qb.dequantize().double().T
    assert torch.allclose(gemm_quantized(qa, qb).double(), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_every_scheme_passes_deepgemms_test_on_gaussian_inputs(scheme):
    a, b = _operands(128, 512, 128, seed=1)
    assert calc_diff(fp8_gemm(a, b, scheme), reference_gemm(a, b)) < 1e-3


def test_block_partial_products_use_the_right_scales():
    """A K-group whose scales differ wildly from its neighbour's must still come out right."""
    a, b = _operands(128, 256, 128, seed=2)
    a[:, 128:] *= 1000.0                       # second K-group of A: 1000x larger, its own tile scales
    b[:64, :128] *= 0.001                      # one 128x128 block of B: 1000x smaller
    out = fp8_gemm(a, b, "deepseek")
    assert calc_diff(out, reference_gemm(a, b)) < 1e-3


def test_e5m2_operand_for_gradients():
    a, b = _operands()
    out = fp8_gemm(a, b, "deepseek", fmt="e4m3", b_fmt="e5m2")
    assert calc_diff(out, reference_gemm(a, b)) < 2e-3


def test_error_table_has_a_row_per_scheme():
    a, b = _operands(64, 256, 64)
    table = gemm_error_table(a, b)
    assert list(table.index) == list(SCHEMES)
    assert table["passes DeepGEMM test (<1e-3)"].all()
    assert (table["rel_error"] > 0).all() and (table["rel_error"] < 0.06).all()


def test_median_row_error_shows_what_whole_output_metrics_hide():
    """Two massive-activation tokens: every scheme passes the whole-output test, but per-tensor scaling
    gives the typical token a larger error than per-row scaling does."""
    a, b = _operands(128, 512, 64, seed=3)
    a[:2] *= 1e4
    table = gemm_error_table(a, b, schemes=("tensor", "row"))
    assert table["passes DeepGEMM test (<1e-3)"].all()
    assert table.loc["tensor", "median row rel_error"] > 1.3 * table.loc["row", "median row rel_error"]


def test_bad_input_is_refused():
    a, b = _operands()
    with pytest.raises(ValueError, match="Unknown FP8 GEMM scheme"):
        fp8_gemm(a, b, "per-column")
    with pytest.raises(ValueError, match="same K"):
        fp8_gemm(a, b[:, :100])
    with pytest.raises(ValueError, match="tensorwise or rowwise"):
        scaled_mm(quantize(a, "e4m3", "tile1x128"), quantize(b, "e4m3", "tile1x128"))
    with pytest.raises(ValueError, match="Unsupported FP8 format"):
        fp8_gemm(a, b, "tensor", fmt="e2m5")
