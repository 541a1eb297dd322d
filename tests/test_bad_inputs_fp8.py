"""Bad input to the FP8 library (formats and scaling, GEMMs, the FP8 linear layer, the accumulation model,
the explorer): a ValueError that states the rule, never a ZeroDivisionError, a dropped imaginary part or a
deep torch traceback."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from bad_inputs import BAD, BAD_TENSORS, assert_teaches, assert_view_error, call_with, expand
from patience import patient

from utils import inputs as arg
from utils.fp8 import explore as fx
from utils.fp8.accumulation import (
    accumulation_error,
    accumulation_error_vs_k,
    accumulation_sensitivity,
    limited_accumulation_gemm,
    max_relative_error,
    random_positive_operands,
    round_mantissa,
)
from utils.fp8.formats import (
    calc_diff,
    cast_to_fp8,
    error_metrics,
    get_format,
    group_shape,
    outlier_mask,
    quantize,
    quantize_dequantize,
    representable_values,
    round_to_fp8,
    scale_from_amax,
)
from utils.fp8.gemm import (
    blockwise_gemm,
    fp8_gemm,
    gemm_error_table,
    gemm_quantized,
    reference_gemm,
    scaled_mm,
)
from utils.fp8.linear import EmulatedLinear, convert_linears, convert_linears_to_fp8, precision_summary

X = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
A, B = torch.randn(8, 256), torch.randn(4, 256)
QA, QB = quantize(A, granularity="row"), quantize(B, granularity="row")
BAD_X = list(BAD_TENSORS.values()) + [torch.tensor(1.0)]
HISTORIES = {p: SimpleNamespace(loss=np.full(30, 2.0), eval_loss=1.0, eval_accuracy=0.5) for p in ("bf16", "fp8")}

TABLE = [
    (get_format, dict(fmt="e4m3"), {"fmt": ["e3m4", None, 3, ["e4m3"], torch.float16]}),
    (representable_values, dict(), {"fmt": ["fp8", None]}),
    (cast_to_fp8, dict(x=X), {"x": [None, X.numpy(), X.tolist(), X.to(torch.complex64),
                                    torch.full((2,), math.nan)], "fmt": ["e3m4", 3]}),
    (round_to_fp8, dict(x=X), {"x": [None, X.numpy()]}),
    (group_shape, dict(granularity="tile1x128", shape=(4, 8)),
     {"granularity": ["tile", None, 3], "shape": [None, (4,), (0, 8), (4, 2.5), "4x8"]}),
    (scale_from_amax, dict(amax=torch.ones(2)), {"amax": [None, [1.0], -torch.ones(2), torch.full((2,), math.nan)],
                                                 "scale_rule": ["exact", None, 3]}),
    (quantize, dict(x=X), {"x": BAD_X, "fmt": ["fp8", None], "granularity": ["tile", None, 3],
                           "scale_rule": ["exact", 3], "pad": ["yes", None]}),
    (quantize_dequantize, dict(x=X), {"x": BAD_X, "granularity": ["tile"]}),
    (outlier_mask, dict(x=X), {"x": BAD_X[:-1], "threshold": "positive"}),
    (calc_diff, dict(x=X, y=X), {"x": [None, X.numpy(), torch.ones(4, 0)], "y": [X[:2], None, X.to(torch.complex64)]}),
    (error_metrics, dict(x=X, x_hat=X), {"x_hat": [X[:2], None], "outliers": [X, torch.ones(2, dtype=torch.bool)]}),
    (scaled_mm, dict(qa=QA, qb=QB), {"qa": [A, None], "qb": [B], "use_fast_accum": ["no"]}),
    (blockwise_gemm, dict(qa=QA, qb=QB), {"qa": [A, None], "qb": [quantize(torch.randn(4, 128))]}),
    (gemm_quantized, dict(qa=QA, qb=QB), {"qa": [None], "qb": [B]}),
    (fp8_gemm, dict(a=A, b=B), {"a": [None, A.numpy(), A[:, :8], A.to(torch.complex64), A[:0]],
                                "b": [B.T, None], "scheme": ["fast", None, 3], "fmt": ["fp8"]}),
    (reference_gemm, dict(a=A, b=B), {"a": [None, A.tolist()], "b": [B.T]}),
    (gemm_error_table, dict(a=A, b=B, schemes=("row",)), {"schemes": [("fast",), None, "row"], "fmt": ["e3m4"]}),
    (EmulatedLinear, dict(in_features=8, out_features=4),
     {"in_features": BAD["count"] + [10**8], "out_features": "count", "bias": ["yes"], "precision": ["fp16", None],
      "fmt": ["e3m4"], "grad_fmt": ["e3m4"]}),
    (EmulatedLinear(8, 4), dict(x=torch.randn(2, 8)), {"x": [None, torch.randn(2, 7), np.ones((2, 8)),
                                                           torch.ones(2, 8, dtype=torch.long)]}),
    (EmulatedLinear.from_linear, dict(linear=torch.nn.Linear(8, 4)), {"linear": [None, torch.nn.Conv1d(1, 1, 1)],
                                                                      "precision": ["fp4"]}),
    (convert_linears, dict(model=torch.nn.Sequential(torch.nn.Linear(8, 8))),
     {"model": [None, "model"], "precision": ["int8"], "skip": [3, [3], None]}),
    (convert_linears_to_fp8, dict(model=torch.nn.Sequential(torch.nn.Linear(8, 8))), {"model": [None]}),
    (precision_summary, dict(model=torch.nn.Linear(2, 2)), {"model": [None, [1]]}),
    (round_mantissa, dict(x=torch.ones(2, dtype=torch.float64), mantissa_bits=10),
     {"x": [None, torch.ones(2)], "mantissa_bits": [-1, 53, 2.5, None, True], "rounding": ["up", None]}),
    (limited_accumulation_gemm, dict(a=torch.rand(4, 16), b=torch.rand(4, 16)),
     {"a": [None, torch.rand(4, 8), torch.full((4, 16), math.nan), torch.rand(4, 16).numpy()],
      "mantissa_bits": [-1, 60, 1.5], "promote_every": [0, 6, 2.5, "128"], "products_per_add": [0, 1.5, None],
      "rounding": ["up"]}),
    (random_positive_operands, dict(m=4, n=4, k=8), {"m": "count", "n": "count", "k": "count", "seed": BAD["index"],
                                                     "fmt_dtype": [torch.float16, "e4m3"]}),
    (max_relative_error, dict(c=X, reference=X), {"c": [X[:1], None], "reference": [torch.zeros(4, 8), None]}),
    (accumulation_error, dict(k=64, size=8), {"k": "count", "size": "count", "mantissa_bits": [-2, 99],
                                              "promote_every": [0, 3]}),
    (accumulation_error_vs_k, dict(ks=(64,), size=8), {"ks": [None, 64, [0]]}),
    (accumulation_sensitivity, dict(k=64, bits=(14,), per_adds=(4,), size=8), {"bits": [None, 14], "per_adds": [4]}),
    (fx.outlier_activations, dict(), {"rows": "count", "cols": "count", "outlier": [0.5, math.nan, math.inf, -2, 1j],
                                      "n_outlier_channels": [-1, 1.5, 10_000], "seed": BAD["index"],
                                      "spacing": [0, 1.5, None]}),
    (fx.quantization_table, dict(x=X), {"x": [None, X.numpy()], "granularities": [None, ("tile",), "row"]}),
    (fx.plot_number_line, dict(), {"formats": [None, ("fp8",), "e4m3"]}),
    (fx.column_error_profile, dict(x=X), {"x": [None, X[0], X.numpy()], "granularities": [None, ("tile",)]}),
    (fx.damaged_channels, dict(profile=fx.column_error_profile(X)), {"profile": [None, "profile"],
                                                                      "factor": [0.5, math.nan, None]}),
    (fx.damaged_channels_table, dict(layouts={"x": X}), {"layouts": [{}, None, X]}),
    (fx.plot_granularity_errors, dict(x=X), {"x": [None, X[0], {"a": None}], "granularities": [None]}),
    (fx.plot_accumulation_vs_k, dict(table=accumulation_error_vs_k((64,), size=8)),
     {"table": [None, [1, 2]], "mantissa_bits": [-1, 99, 2.5]}),
    (fx.linear_gemm_errors, dict(in_features=16, out_features=8, tokens=8),
     {"in_features": "count", "out_features": "count", "tokens": "count", "seed": BAD["index"]}),
    (fx.train_in_precisions, dict(steps=1, precisions=("fp32",)),
     {"steps": BAD["count"] + [arg.MAX_TRAIN_STEPS + 1], "precisions": [None, ("fp4",), "fp8"], "config": [3]}),
    (fx.loss_gap_table, dict(histories=HISTORIES), {"histories": [None, {}, {"bf16": 3}], "baseline": ["fp16", None],
                                                   "window": "count"}),
    (fx.plot_loss_curves, dict(histories=HISTORIES, window=5), {"histories": [None, [1]], "window": BAD["count"] + [99]}),
]


@pytest.mark.parametrize("fn, kwargs, parameter, value", expand(TABLE))
def test_bad_input_gets_a_teaching_error(fn, kwargs, parameter, value):
    assert_teaches(call_with(fn, kwargs, parameter, value))


@pytest.mark.parametrize("fn, kwargs", [(fn, kwargs) for fn, kwargs, _ in TABLE],
                         ids=[getattr(fn, "__qualname__", type(fn).__name__) for fn, _, _ in TABLE])
def test_the_valid_calls_of_the_table_run(fn, kwargs):
    fn(**kwargs)


VIEWS = [
    (fx.explore_fp8, dict(k=128, rows=8), {"fmt": ["fp8", None], "granularity": ["tile", None], "scale_rule": ["x"],
                                           "outlier": [0.5, math.nan, "10"], "k": "count", "accum_bits": [-1, 99, 2.5],
                                           "promote_every": [0, 2.5, "128"], "rows": "count", "seed": BAD["index"]}),
]


@pytest.mark.parametrize("fn, kwargs, parameter, value", expand(VIEWS))
def test_the_widget_function_shows_the_rule(fn, kwargs, parameter, value):
    assert_view_error(call_with(fn, kwargs, parameter, value)())


def test_the_examples_of_the_issue():
    assert_teaches(lambda: quantize(torch.ones(0)), "non-empty")              # was a ZeroDivisionError
    assert_teaches(lambda: quantize(torch.ones(4, 0)), "non-empty")
    assert_teaches(lambda: quantize(X.to(torch.complex64)), "complex")       # the imaginary part was dropped
    assert_teaches(lambda: quantize(X.numpy()), "torch tensor", "torch.as_tensor")
    assert_teaches(lambda: quantize([1.0, 2.0]), "torch tensor")
    assert_teaches(lambda: quantize(torch.tensor([1.0, math.nan])), "finite")


def test_inf_is_clamped_by_cast_but_nan_is_refused():
    # "clamp, then cast" is what the notebook shows with inf: it stays allowed; NaN has no value to clamp to
    assert float(cast_to_fp8(torch.tensor([math.inf]), "e4m3").float()) == 448.0
    assert_teaches(lambda: cast_to_fp8(torch.tensor([math.nan])), "NaN")


def test_sizes_beyond_the_limits_are_refused_at_once():
    start = time.perf_counter()
    big = torch.empty(1 << 12, 1 << 12)
    assert_teaches(lambda: quantize(torch.empty(arg.MAX_ELEMENTS + 1)), "MAX_ELEMENTS")
    assert_teaches(lambda: fp8_gemm(big, big), "MAX_GEMM_MACS")
    assert_teaches(lambda: limited_accumulation_gemm(torch.rand(512, 4096), torch.rand(512, 4096)),
                   "MAX_ACCUMULATOR_ADDS")
    assert_view_error(fx.explore_fp8(k=1 << 20), "MAX_ACCUMULATOR_ADDS")
    assert_teaches(lambda: fx.outlier_activations(1 << 14, 1 << 14), "MAX_ELEMENTS")
    assert_teaches(lambda: EmulatedLinear(1 << 13, 1 << 13), "MAX_PARAMETERS")
    assert time.perf_counter() - start < patient(5.0)
