"""FP8 targets (issue 7): quantise 4096 x 4096 with 1 x 128 tiles in < 200 ms; the accumulator model on a
128 x 128 x 4096 GEMM in < 1 s. Each is compared with a reference measured in the same run: a plain
clamp-and-cast of the same tensor (what quantisation costs beyond the cast), and an FP32 matmul of the same
shape (what the model costs beyond the arithmetic it models).

    .venv/bin/python -m benchmarks.bench_fp8
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
import torch

from utils.fp8.accumulation import limited_accumulation_gemm, random_positive_operands
from utils.fp8.formats import quantize
from utils.fp8.linear import EmulatedLinear


def best_of(function: Callable[[], object], repeats: int = 5) -> float:
    """Fastest of `repeats` runs after one warm-up, in seconds (the machine is shared: the minimum is the
    least disturbed run)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def _row(task: str, seconds: float, target: float | None, reference: str, reference_s: float) -> dict:
    return {"task": task, "seconds": seconds, "target s": target,
            "within target": "-" if target is None else bool(seconds < target),
            "reference": reference, "reference s": reference_s, "x reference": seconds / reference_s}


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 4096, generator=generator)
    cast = best_of(lambda: x.clamp(-448, 448).to(torch.float8_e4m3fn))
    rows = [
        _row("quantise 4096x4096, 1x128 tiles (E4M3)", best_of(lambda: quantize(x, "e4m3", "tile1x128")), 0.2,
             "clamp + cast, same tensor", cast),
        _row("quantise 4096x4096, 128x128 blocks (E4M3)",
             best_of(lambda: quantize(x, "e4m3", "block128x128")), None, "clamp + cast, same tensor", cast),
    ]
    a, b = random_positive_operands(128, 128, 4096)
    a32, b32 = a.float(), b.float()
    matmul = best_of(lambda: a32 @ b32.T)
    rows += [
        _row("accumulator model 128x128x4096, no promotion",
             best_of(lambda: limited_accumulation_gemm(a, b, 14), repeats=3), 1.0, "FP32 matmul, same shape",
             matmul),
        _row("accumulator model 128x128x4096, promotion every 128",
             best_of(lambda: limited_accumulation_gemm(a, b, 14, promote_every=128), repeats=3), 1.0,
             "FP32 matmul, same shape", matmul),
    ]
    torch.manual_seed(0)
    reference_layer = torch.nn.Linear(1024, 1024)
    fp8_layer = EmulatedLinear.from_linear(reference_layer, "fp8")
    tokens = torch.randn(2048, 1024)

    def step(layer: torch.nn.Module) -> None:
        layer(tokens).sum().backward()

    rows.append(_row("FP8 linear fwd+bwd, 2048 tokens, 1024->1024 (emulated)",
                     best_of(lambda: step(fp8_layer)), None, "nn.Linear fwd+bwd (FP32)",
                     best_of(lambda: step(reference_layer))))
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
