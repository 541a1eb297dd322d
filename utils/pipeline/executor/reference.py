"""The single-process reference a pipeline run must reproduce: same model, same micro-batches, one process.

Gradient accumulation over micro-batches is what every pipeline schedule computes (DeepSeek-V3 report,
Sec. 3.2.1; GPipe, Huang et al. 2019): the step's loss is the mean of the micro-batch losses, and each
parameter's gradient is the sum over micro-batches of the gradient of ``loss_m / M``. Here that is a plain
loop: forward the whole model on micro-batch m, backward ``loss_m / M``, next m.

    ref = reference_run(mlp_spec(), microbatches)
    gap = gradient_gap(result.grads, ref.grads)      # max abs / relative difference, bit-exact or not
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from utils import inputs as arg
from utils.pipeline.executor.models import ModelSpec


@dataclass
class ReferenceResult:
    """Loss (mean over micro-batches), per-micro-batch losses and every parameter's gradient, by name."""

    loss: float
    losses: tuple[float, ...]
    grads: dict[str, torch.Tensor]


def reference_run(model_spec: ModelSpec, microbatches: list[tuple[torch.Tensor, torch.Tensor]]) -> ReferenceResult:
    """Run ``model_spec``'s full model over ``microbatches`` in one process, accumulating gradients.

    Micro-batches are processed in order 0..M-1, so a pipeline that accumulates each parameter's gradient
    in that order (1F1B, GPipe, ZB1P) can match it bit for bit.
    """
    if not all(callable(getattr(model_spec, name, None)) for name in ("build", "loss")):
        arg.fail("model_spec", "a model spec with build() and loss(), such as mlp_spec()", model_spec,
                 where="reference_run", error=arg.InputTypeError)
    arg.sequence(microbatches, "microbatches", where="reference_run",
                 why="a step with no data has no gradient")
    for i, pair in enumerate(microbatches):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, torch.Tensor)
                                                                          for t in pair)):
            arg.fail(f"microbatches[{i}]", "an (input, target) pair of tensors", pair, where="reference_run",
                     error=arg.InputTypeError)
    model = model_spec.build()
    n = len(microbatches)
    losses = []
    # One intra-op thread, as on every rank: some CPU kernels split reductions by thread, and the last bits
    # of their sums depend on how.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for x, target in microbatches:
            loss = model_spec.loss(model(x), target)
            (loss / n).backward()
            losses.append(float(loss.detach()))
    finally:
        torch.set_num_threads(threads)
    grads = {name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
             for name, p in model.named_parameters()}
    return ReferenceResult(loss=sum(losses) / n, losses=tuple(losses), grads=grads)


def gradient_gap(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict:
    """How far ``grads`` are from ``reference``, parameter by parameter.

    Returns ``max_abs`` (largest absolute difference of any entry), ``max_rel`` (the largest, over
    parameters, of max |difference| / max |reference|), ``worst`` (the parameter with that max_rel) and
    ``bit_exact`` (every entry identical). ValueError if the two do not hold the same parameters.
    """
    for name, value in (("grads", grads), ("reference", reference)):
        if not isinstance(value, dict) or not all(isinstance(t, torch.Tensor) for t in value.values()):
            arg.fail(name, "a dict {parameter name: gradient tensor}", value, where="gradient_gap",
                     error=arg.InputTypeError)
    missing, extra = sorted(set(reference) - set(grads)), sorted(set(grads) - set(reference))
    if missing or extra:
        raise ValueError(f"the gradients do not cover the same parameters: missing {missing}, "
                         f"unexpected {extra}")
    max_abs, max_rel, worst, exact = 0.0, 0.0, None, True
    for name, ref in reference.items():
        got = grads[name]
        if got.shape != ref.shape:
            raise ValueError(f"gradient of {name} has shape {tuple(got.shape)}, the reference "
                             f"{tuple(ref.shape)}")
        diff = float((got - ref).abs().max()) if ref.numel() else 0.0
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        exact = exact and torch.equal(got, ref)
        max_abs = max(max_abs, diff)
        if worst is None or rel > max_rel:
            max_rel, worst = rel, name
    return {"max_abs": max_abs, "max_rel": max_rel, "worst": worst, "bit_exact": exact}
