"""A *model* of limited-precision accumulation in FP8 tensor cores, with and without promotion (§3.3.2).

The report: on H800 the FP8 GEMM accumulator retains "around 14 bits", which for K = 4096 gives a maximum
relative error of nearly 2%; DeepSeek-V3 therefore copies the partial sum to FP32 registers on CUDA cores
every N_C = 128 elements of K ("promotion") and accumulates there in full precision. Why 128: it is 4 WGMMA
instructions, which the report's experiments found the smallest accumulation interval that improves precision
significantly without substantial overhead (one warpgroup promotes while another runs its MMA).

This module is a model, not a measurement: it reproduces that order of magnitude under stated assumptions.

    1. Products are exact: FP8 x FP8 has at most 8 significant bits.
    2. `products_per_add` products are summed exactly, then added to the accumulator (a tensor core adds a
       small dot product per step; 4 is what Fasi et al. 2021 found for earlier NVIDIA tensor cores).
    3. After every add the accumulator keeps `mantissa_bits` bits after the leading one and drops the rest:
       rounding toward zero ("truncate"), as measured tensor-core accumulators do; "nearest" is the kinder
       alternative. Its exponent range is unlimited.
    4. With promotion, every `promote_every` elements of K the accumulator is added to an FP32 sum and reset.
    5. The report's "maximum relative error" is read as max over outputs of |C - C_ref| / |C_ref| for random
       matrices with *positive* entries (uniform in [0, 1), cast to E4M3): no cancellation, so the sum and its
       dropped bits grow with every step, which is the worst case and keeps |C_ref| away from zero.

Under these defaults (14 bits, 4 products per add, truncation, 128 x 128 outputs) the worst-case error at
K = 4096 is about 1.1% without promotion, growing linearly with K (truncation errors all have the same sign),
and about 0.02% with promotion every 128, flat in K. With 13 bits it doubles (2.2%); with one product per add
it triples (3.3%); with round-to-nearest it falls about eight-fold (0.13%). The report gives one number; the
model shows which assumptions produce it. Real-hardware figures need a GPU (issue 7's device measurement).
"""

from __future__ import annotations

import pandas as pd
import torch

from utils import inputs as arg

ROUNDINGS = ("truncate", "nearest")
_FLOAT64_MANTISSA_BITS = 52
_STEPS_PER_BLOCK = 64        # accumulator steps whose partial sums are computed in one batched matmul


def round_mantissa(x: torch.Tensor, mantissa_bits: int, rounding: str = "truncate") -> torch.Tensor:
    """Float64 `x` with only `mantissa_bits` bits kept after the leading one (0..52).

    Works on the IEEE bit pattern: float64 is sign-magnitude, so clearing the low bits of the integer view
    truncates the magnitude toward zero; adding half a unit first rounds to nearest (ties away from zero).
    A carry into the exponent is exactly the right result (e.g. 1.111b rounds up to 10.00b).
    """
    arg.tensor(x, "x", where="round_mantissa", finite=False, nonempty=False)
    if isinstance(mantissa_bits, bool) or not isinstance(mantissa_bits, int) or \
            not 0 <= mantissa_bits <= _FLOAT64_MANTISSA_BITS:
        raise ValueError(f"mantissa_bits must be in 0..{_FLOAT64_MANTISSA_BITS} (the model holds the "
                         f"accumulator in float64), got {mantissa_bits}.")
    if not isinstance(rounding, str) or rounding not in ROUNDINGS:
        raise ValueError(f"Unknown rounding {rounding!r}: use 'truncate' (toward zero, as tensor cores "
                         f"are measured to do) or 'nearest'.")
    if x.dtype != torch.float64:
        raise ValueError(f"round_mantissa works on float64 bit patterns, got {x.dtype}.")
    dropped = _FLOAT64_MANTISSA_BITS - mantissa_bits
    if dropped == 0:
        return x
    bits = x.view(torch.int64)
    if rounding == "nearest":
        bits = bits + (1 << (dropped - 1))
    return (bits & ~((1 << dropped) - 1)).view(torch.float64)


def limited_accumulation_gemm(a: torch.Tensor, b: torch.Tensor, mantissa_bits: int = 14,
                              promote_every: int | None = None, products_per_add: int = 4,
                              rounding: str = "truncate") -> torch.Tensor:
    """Model of A @ B.T (A (M, K), B (N, K)) on a tensor core with a `mantissa_bits` accumulator (a model).

    Without promotion (`promote_every=None`) the whole sum over K stays in the limited accumulator. With
    promotion, every `promote_every` elements the accumulator is added to an FP32 sum and reset to zero
    (§3.3.2, N_C = 128). Returns float64 (M, N). Assumptions: module docstring.
    """
    where = "limited_accumulation_gemm"
    arg.tensor(a, "A", where=where)
    arg.tensor(b, "B", where=where)
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise arg.InputError(f"A @ B.T needs A (M, K) and B (N, K) with the same K, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}.")
    products_per_add = arg.whole(products_per_add, "products_per_add", where=where,
                                 why="products summed per accumulator step")
    if promote_every is not None:
        promote_every = arg.whole(promote_every, "promote_every", where=where, why="elements of K between "
                                  "promotions to FP32, or None for never")
    if products_per_add < 1:
        raise ValueError(f"products_per_add must be >= 1 (products summed per accumulator step), got "
                         f"{products_per_add}.")
    if promote_every is not None and (promote_every < 1 or promote_every % products_per_add):
        raise ValueError(f"promote_every ({promote_every}) must be a positive multiple of products_per_add "
                         f"({products_per_add}): promotion happens between accumulator steps.")
    round_mantissa(torch.zeros(1, dtype=torch.float64), mantissa_bits, rounding)   # validates both
    a, b = a.double(), b.double()
    m, n, k = a.shape[0], b.shape[0], a.shape[1]
    arg.product_limit((m, n, -(-k // products_per_add)), "M x N x K / products_per_add (accumulator adds)",
                      arg.MAX_ACCUMULATOR_ADDS, where=where)
    steps = -(-k // products_per_add)
    if steps * products_per_add != k:        # zero products change nothing: pad K to whole steps
        a = torch.nn.functional.pad(a, (0, steps * products_per_add - k))
        b = torch.nn.functional.pad(b, (0, steps * products_per_add - k))
    a_steps, b_steps = a.view(m, steps, products_per_add), b.view(n, steps, products_per_add)
    dropped = _FLOAT64_MANTISSA_BITS - mantissa_bits
    keep_mask, half_unit = ~((1 << dropped) - 1), (1 << (dropped - 1)) if dropped else 0
    accumulator = torch.zeros(m, n, dtype=torch.float64)
    bits = accumulator.view(torch.int64)             # the same memory, seen as IEEE bit patterns
    promoted = torch.zeros(m, n, dtype=torch.float32)
    for block_start in range(0, steps, _STEPS_PER_BLOCK):
        # Each step's exact partial sum, a block of steps at a time (one batched matmul, not one per step).
        block = slice(block_start, min(block_start + _STEPS_PER_BLOCK, steps))
        partials = torch.einsum("msp,nsp->smn", a_steps[:, block], b_steps[:, block])
        for offset, partial in enumerate(partials):
            accumulator.add_(partial)
            if rounding == "nearest" and dropped:
                bits.add_(half_unit)
            bits.bitwise_and_(keep_mask)             # round_mantissa, in place
            done = (block_start + offset + 1) * products_per_add
            if promote_every is not None and done % promote_every == 0:
                promoted += accumulator.float()      # the CUDA-core FP32 add
                accumulator.zero_()
    if promote_every is None:
        return accumulator
    return (promoted + accumulator.float()).double()


def random_positive_operands(m: int, n: int, k: int, seed: int = 0,
                             fmt_dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, ...]:
    """A (m, k) and B (n, k) uniform in [0, 1), rounded to FP8 (assumption 5 of the module docstring)."""
    where = "random_positive_operands"
    m, n, k = (arg.whole(v, name, low=1, where=where) for v, name in ((m, "m"), (n, "n"), (k, "k")))
    arg.whole(seed, "seed", low=0, where=where, why="seeds are whole numbers >= 0")
    arg.product_limit((max(m, n), k), "max(m, n) x k (one operand)", arg.MAX_ELEMENTS, where=where)
    arg.choice(fmt_dtype, "fmt_dtype", (torch.float8_e4m3fn, torch.float8_e5m2), where=where,
               why="the two FP8 formats")
    generator = torch.Generator().manual_seed(seed)
    a = torch.rand(m, k, generator=generator).to(fmt_dtype).double()
    b = torch.rand(n, k, generator=generator).to(fmt_dtype).double()
    return a, b


def max_relative_error(c: torch.Tensor, reference: torch.Tensor) -> float:
    """max |c - reference| / |reference| over the elements (reference non-zero), in float64."""
    arg.tensor(c, "c", where="max_relative_error")
    arg.tensor(reference, "reference", where="max_relative_error")
    if c.shape != reference.shape:
        arg.fail("c", f"a tensor of reference's shape {tuple(reference.shape)}", c, where="max_relative_error")
    c, reference = c.double(), reference.double()
    nonzero = reference != 0
    if not bool(nonzero.any()):
        arg.fail("reference", "a tensor with a non-zero value", reference, where="max_relative_error",
                 why="a relative error divides by the reference")
    return float(((c - reference).abs()[nonzero] / reference.abs()[nonzero]).max())


def accumulation_error(k: int, mantissa_bits: int = 14, promote_every: int | None = None, size: int = 128,
                       products_per_add: int = 4, rounding: str = "truncate", seed: int = 0) -> float:
    """Worst-case relative error of the model for a size x size x K GEMM of random positive FP8 matrices."""
    k = arg.whole(k, "k", low=1, where="accumulation_error", why="the reduction length K")
    size = arg.whole(size, "size", low=1, where="accumulation_error", why="rows and columns of the output")
    a, b = random_positive_operands(size, size, k, seed)
    reference = a @ b.T                                    # float64: exact for these K
    c = limited_accumulation_gemm(a, b, mantissa_bits, promote_every, products_per_add, rounding)
    return max_relative_error(c, reference)


def accumulation_error_vs_k(ks: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192), mantissa_bits: int = 14,
                            promote_every: int = 128, size: int = 64, products_per_add: int = 4,
                            rounding: str = "truncate", seed: int = 0) -> pd.DataFrame:
    """Worst-case relative error (model) for each K, without and with promotion every `promote_every`."""
    arg.sequence(ks, "ks", where="accumulation_error_vs_k", why="the values of K to try")
    rows = []
    for k in ks:
        for label, every in (("limited accumulator only", None), (f"promoted to FP32 every {promote_every}",
                                                                  promote_every)):
            rows.append({"K": k, "accumulation": label,
                         "max_rel_error": accumulation_error(k, mantissa_bits, every, size, products_per_add,
                                                             rounding, seed)})
    return pd.DataFrame(rows)


def accumulation_sensitivity(k: int = 4096, bits: tuple[int, ...] = (13, 14),
                             per_adds: tuple[int, ...] = (1, 4, 32), size: int = 64,
                             seed: int = 0) -> pd.DataFrame:
    """Worst-case error at K (no promotion) as each assumption of the model changes: mantissa bits, products
    summed per add, rounding. Shows which assumptions give the report's "nearly 2%"."""
    for name, values in (("bits", bits), ("per_adds", per_adds)):
        arg.sequence(values, name, where="accumulation_sensitivity")
    rows = []
    for mantissa_bits in bits:
        for per_add in per_adds:
            for rounding in ROUNDINGS:
                error = accumulation_error(k, mantissa_bits, None, size, per_add, rounding, seed)
                rows.append({"mantissa bits": mantissa_bits, "products per add": per_add,
                             "rounding": rounding, "max_rel_error": error})
    return pd.DataFrame(rows)
