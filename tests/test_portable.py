"""Numbers the course prints from random data are the same bits on every CPU (utils.portable).

torch's float32 normal sampler and float32 BLAS sums depend on the CPU's instruction set; the course draws
in float64 and sums FP8 products exactly. Checked here under torch's baseline kernels
(ATEN_CPU_CAPABILITY=default), which stand in for a CPU without AVX2/AVX-512.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

import pytest
import torch

from utils import portable
from utils.fp8.formats import quantize
from utils.fp8.gemm import blockwise_gemm

FINGERPRINT = """
import hashlib, torch
from utils import portable
from utils.fp8.gemm import gemm_error_table
g = torch.Generator().manual_seed(0)
a, w = portable.randn(64, 512, generator=g), portable.randn(48, 512, generator=g) / 32
a[:2] *= 1e4
print(hashlib.sha256(a.numpy().tobytes() + w.numpy().tobytes()).hexdigest())
print(gemm_error_table(a, w).to_json(double_precision=15))
"""


def test_random_data_and_fp8_gemm_errors_are_the_same_under_torchs_baseline_kernels():
    here = io.StringIO()
    with contextlib.redirect_stdout(here):
        exec(FINGERPRINT, {})
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "3"}
    baseline = subprocess.run([sys.executable, "-c", FINGERPRINT], capture_output=True, text=True, check=True,
                              env=env, timeout=300)
    assert here.getvalue().splitlines() == baseline.stdout.splitlines()


def test_randn_is_float32_normal_and_reproducible():
    x = portable.randn(4000, generator=torch.Generator().manual_seed(3))
    y = portable.randn(4000, generator=torch.Generator().manual_seed(3))
    assert x.dtype == torch.float32 and torch.equal(x, y)
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1


def test_randn_refuses_bad_input():
    with pytest.raises(TypeError, match="Generator"):
        portable.randn(3, generator=0)
    with pytest.raises(ValueError, match="size"):
        portable.randn(-1, generator=torch.Generator())


def test_blockwise_gemm_sums_fp8_products_exactly_in_any_order():
    """A permutation of K (within one scale group) changes BLAS's summation order, not the result's bits."""
    g = torch.Generator().manual_seed(1)
    a, b = portable.randn(64, 256, generator=g), portable.randn(32, 256, generator=g)
    order = torch.randperm(256, generator=g)
    for granularity in ("tensor", "row"):
        qa, qb = quantize(a, "e4m3", granularity), quantize(b, "e4m3", granularity)
        qa_perm, qb_perm = quantize(a[:, order], "e4m3", granularity), quantize(b[:, order], "e4m3", granularity)
        assert torch.equal(blockwise_gemm(qa, qb), blockwise_gemm(qa_perm, qb_perm))
