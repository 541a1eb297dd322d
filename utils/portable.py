"""Numbers that are the same bits on every CPU: the random data the course prints results of.

torch draws float32 normal samples with vectorised code whose bits depend on the CPU's instruction set
(AVX-512, AVX2 or none, as ATEN_CPU_CAPABILITY selects), so `torch.randn(..., generator=g)` gives another
tensor on another laptop even with the same seed. Its float64 sampler takes one code path everywhere: drawing
in float64 and rounding to float32 gives the same float32 tensor on every CPU (tests/test_portable.py runs it
under torch's baseline kernels too). Uniform samples (`torch.rand`) are already the same everywhere.

A result computed from such data is exact when the arithmetic is order-free (element-wise operations, or a
float64 sum of numbers with few significant bits such as products of FP8 values); a BLAS sum in float32 is
not, and its last bits move with the CPU, the thread count and memory alignment (see README, "Exact and
learned outputs").
"""

from __future__ import annotations

import torch

from utils import inputs as arg


def randn(*shape: int, generator: torch.Generator) -> torch.Tensor:
    """Standard normal samples of `shape`, float32, the same bits on every CPU for the same generator state.

    Drawn in float64 (one code path on every instruction set) and rounded to float32. The generator advances
    as a float64 draw of the same shape would.
    """
    arg.instance(generator, "generator", torch.Generator, "a torch.Generator (torch.Generator().manual_seed(s))",
                 where="randn")
    for size in shape:
        arg.whole(size, "every size", low=0, where="randn", why="sizes of a tensor")
    arg.product_limit(shape, "the number of samples", arg.MAX_ELEMENTS, where="randn")
    return torch.randn(*shape, generator=generator, dtype=torch.float64).float()
