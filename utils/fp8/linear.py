"""An FP8 linear layer: its three GEMMs take emulated FP8 inputs with DeepSeek-V3's scaling (§3.3, Figure 6).

A linear layer y = x W^T runs three GEMMs per training step; DeepSeek-V3 feeds all three FP8 inputs (E4M3
on all tensors, made possible by fine-grained scaling, §3.3.2) and accumulates in FP32:

    Fprop   y  = x  @ W^T     x: 1x128 tiles along K         W: 128x128 blocks
    Dgrad   dx = dy @ W       dy: 1x128 tiles along N        W: the same blocks, transposed
    Wgrad   dW = dy^T @ x     dy, x: 128x1 tiles along the token dimension (the reduction of this GEMM)

Everything else stays in higher precision, as in the report (§3.3.1): the master weights, their gradients and
the optimizer state (FP32 here), and the components DeepSeek-V3 keeps in their original precision (BF16/FP32):
the embedding module, the output head, the MoE gating modules (router), the normalisation operators and the
attention operators (the whole attention computation, not only its softmax). `convert_linears_to_fp8`
therefore swaps only the nn.Linear modules that are not the router or the head.

Emulation: each operand is quantised and dequantised ("fake quantisation") and the GEMM runs in FP32. That
equals the scaled per-group GEMM of utils.fp8.gemm.blockwise_gemm up to FP32 summation order (tested), and is
one matmul instead of one per 128-group, which keeps training on a CPU fast. The FP8 activations cached for
the backward pass are dequantised here (so no memory is saved); the 1x128 -> 128x1 re-tiling still quantises
twice, as DeepSeek-V3's does.

The same machinery emulates a BF16 linear (inputs rounded to bfloat16, FP32 accumulation), the baseline the
FP8 run is compared with, and an FP32 one (no rounding: identical to nn.Linear).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable

import torch
from torch import nn

from utils import inputs as arg
from utils.fp8.formats import get_format, quantize_dequantize

PRECISIONS = ("fp8", "bf16", "fp32")
# Attribute names kept in high precision: the MoE router ("gating") and the output head (DeepSeek-V3 §3.3).
DEFAULT_SKIP = ("router", "head", "lm_head")


def _rounders(precision: str, fmt: str, grad_fmt: str) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """How each GEMM operand is rounded: keys x_fwd, w, dy_dgrad, dy_wgrad, x_wgrad (2-D tensors)."""
    if not isinstance(precision, str):
        raise arg.InputTypeError(f"Unknown precision {precision!r}: use one of {PRECISIONS}.")
    if precision == "fp8":
        fmt, grad_fmt = get_format(fmt).name, get_format(grad_fmt).name   # fail at conversion, not mid-step

        def along_rows(t: torch.Tensor, f: str) -> torch.Tensor:      # 1x128 tiles along the last dim
            return quantize_dequantize(t, f, "tile1x128")

        def along_cols(t: torch.Tensor, f: str) -> torch.Tensor:      # 128x1 tiles: transpose, tile, back
            return quantize_dequantize(t.t(), f, "tile1x128").t()

        return {"x_fwd": lambda t: along_rows(t, fmt),
                "w": lambda t: quantize_dequantize(t, fmt, "block128x128"),
                "dy_dgrad": lambda t: along_rows(t, grad_fmt),
                "dy_wgrad": lambda t: along_cols(t, grad_fmt),
                "x_wgrad": lambda t: along_cols(t, fmt)}
    if precision == "bf16":
        to_bf16 = lambda t: t.to(torch.bfloat16).to(t.dtype)
        return dict.fromkeys(("x_fwd", "w", "dy_dgrad", "dy_wgrad", "x_wgrad"), to_bf16)
    if precision == "fp32":
        return dict.fromkeys(("x_fwd", "w", "dy_dgrad", "dy_wgrad", "x_wgrad"), lambda t: t)
    raise arg.InputError(f"Unknown precision {precision!r}: use one of {PRECISIONS}.")


def _rounded(rounders, operand: str, t: torch.Tensor) -> torch.Tensor:
    """`t` rounded as GEMM operand `operand`, in t's dtype. No rows, nothing to round: an expert that no token
    chose in this step still runs its (empty) GEMMs, and its weight gradient is zero."""
    return rounders[operand](t).to(t.dtype) if t.numel() else t


class _EmulatedLinearFunction(torch.autograd.Function):
    """y = x W^T + b with every GEMM input rounded by `rounders` (see the module docstring's table)."""

    @staticmethod
    def forward(ctx, x, weight, bias, rounders):
        # FP32 arithmetic, or float64 when the layer or its input is float64 (for measurements that must be
        # the same on every CPU: a float32 BLAS sum's last bits depend on the CPU, see utils.portable).
        dtype = torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32
        x2d = x.reshape(-1, x.shape[-1]).to(dtype)
        x_q = _rounded(rounders, "x_fwd", x2d)
        w_q = _rounded(rounders, "w", weight.to(dtype))
        ctx.save_for_backward(x_q, w_q)                  # DeepSeek-V3 caches the FP8 activation, not x
        ctx.rounders, ctx.has_bias, ctx.x_shape = rounders, bias is not None, x.shape
        y = x_q @ w_q.T
        if bias is not None:
            y = y + bias
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_y):
        x_q, w_q = ctx.saved_tensors
        rounders = ctx.rounders
        dy = grad_y.reshape(-1, grad_y.shape[-1]).to(x_q.dtype)
        grad_x = (_rounded(rounders, "dy_dgrad", dy) @ w_q).reshape(ctx.x_shape)                      # Dgrad
        grad_w = _rounded(rounders, "dy_wgrad", dy).T @ _rounded(rounders, "x_wgrad", x_q)  # Wgrad, FP32 result
        grad_b = dy.sum(0) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None


class EmulatedLinear(nn.Linear):
    """nn.Linear whose three GEMMs see inputs rounded to `precision` ("fp8", "bf16", "fp32").

    For "fp8": E4M3 by default (`fmt`) for activations and weights, `grad_fmt` (default E4M3, as DeepSeek-V3)
    for output gradients; activations in 1x128 tiles, weights in 128x128 blocks. Parameters stay FP32.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, precision: str = "fp8",
                 fmt: str = "e4m3", grad_fmt: str = "e4m3"):
        in_features = arg.whole(in_features, "in_features", low=1, where="EmulatedLinear")
        out_features = arg.whole(out_features, "out_features", low=1, where="EmulatedLinear")
        arg.product_limit((in_features + 1, out_features), "(in_features + 1) x out_features (the parameters)",
                          arg.MAX_PARAMETERS, where="EmulatedLinear")
        super().__init__(in_features, out_features, bias=arg.flag(bias, "bias", where="EmulatedLinear"))
        self.rounders = _rounders(precision, fmt, grad_fmt)      # validates the names now, not mid-training
        self.precision, self.fmt, self.grad_fmt = precision, fmt, grad_fmt

    @classmethod
    def from_linear(cls, linear: nn.Linear, precision: str = "fp8", fmt: str = "e4m3",
                    grad_fmt: str = "e4m3") -> EmulatedLinear:
        """An EmulatedLinear sharing `linear`'s Parameter objects (so an existing optimizer still works)."""
        arg.instance(linear, "linear", nn.Linear, "an nn.Linear", where="EmulatedLinear.from_linear")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight = linear.weight
        new.register_parameter("bias", linear.bias)
        new.rounders = _rounders(precision, fmt, grad_fmt)
        new.precision, new.fmt, new.grad_fmt = precision, fmt, grad_fmt
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arg.tensor(x, "x", where="EmulatedLinear", min_dims=1, floating=True, finite=False, nonempty=False)
        if x.shape[-1] != self.in_features:
            arg.fail("x", f"a tensor whose last dimension is in_features = {self.in_features}", x,
                     where="EmulatedLinear")
        return _EmulatedLinearFunction.apply(x, self.weight, self.bias, self.rounders)

    def extra_repr(self) -> str:
        fmts = f", fmt={self.fmt}, grad_fmt={self.grad_fmt}" if self.precision == "fp8" else ""
        return f"{super().extra_repr()}, precision={self.precision}{fmts}"


def _skipped(qualified_name: str, skip: Iterable[str]) -> bool:
    """True if any component of the dotted name (or the whole name) matches a skip pattern (fnmatch)."""
    parts = qualified_name.split(".")
    return any(fnmatch.fnmatchcase(part, pattern) for pattern in skip for part in [*parts, qualified_name])


def convert_linears(model: nn.Module, precision: str = "fp8", skip: Iterable[str] = DEFAULT_SKIP,
                    fmt: str = "e4m3", grad_fmt: str = "e4m3") -> list[str]:
    """Swap every nn.Linear of `model` (in place) for an EmulatedLinear of `precision`; return swapped names.

    A linear is kept as it is when a component of its dotted name matches a `skip` pattern (fnmatch), e.g.
    "router" keeps `blocks.0.moe.router` and anything inside a module called router. Embeddings and norms are
    not nn.Linear, so they always stay in FP32.
    """
    arg.instance(model, "model", nn.Module, "a torch model (nn.Module)", where="convert_linears")
    if isinstance(skip, str):  # one pattern, not its letters
        skip = (skip,)
    elif isinstance(skip, (set, frozenset)):
        skip = tuple(skip)
    skip = arg.sequence(skip, "skip", where="convert_linears", nonempty=False, why="name patterns to keep")
    for pattern in skip:
        arg.text(pattern, "every skip pattern", where="convert_linears")
    _rounders(precision, fmt, grad_fmt)
    targets = [(name, module) for name, module in model.named_modules()
               if type(module) is nn.Linear and not _skipped(name, skip)]
    for name, linear in targets:
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attribute, EmulatedLinear.from_linear(linear, precision, fmt, grad_fmt))
    return [name for name, _ in targets]


def convert_linears_to_fp8(model: nn.Module, skip: Iterable[str] = DEFAULT_SKIP, fmt: str = "e4m3",
                           grad_fmt: str = "e4m3") -> list[str]:
    """DeepSeek-V3's recipe: FP8 (E4M3, 1x128 / 128x128 scaling) for every linear but the router and head."""
    return convert_linears(model, "fp8", skip, fmt, grad_fmt)


def precision_summary(model: nn.Module) -> dict[str, int]:
    """How many parameters sit in modules of each compute precision ("fp8", "bf16", "fp32")."""
    arg.instance(model, "model", nn.Module, "a torch model (nn.Module)", where="precision_summary")
    counts = dict.fromkeys(PRECISIONS, 0)
    for module in model.modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        counts[getattr(module, "precision", "fp32")] += own
    return counts
