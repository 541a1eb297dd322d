"""torch.distributed.pipelining side by side with our executor, on the same model and micro-batches.

Torch's own ``PipelineStage`` around our chunks and torch's schedule class, so tests can compare losses and
gradients, and the benchmark step times (``utils.pipeline.executor.jobs.torch_pipeline_job``, ``step_time_job``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from utils.cluster.jobs import rank_device
from utils.pipeline.executor.models import ModelSpec
from utils.pipeline.executor.rank import warm_up

#: Our schedule name -> torch.distributed.pipelining's class for it (torch 2.13).
TORCH_SCHEDULES = {"gpipe": "ScheduleGPipe", "1f1b": "Schedule1F1B", "dualpipev": "ScheduleDualPipeV",
                   "interleaved1f1b": "ScheduleInterleaved1F1B", "zbv": "ScheduleZBVZeroBubble"}
#: Schedules whose ranks hold two stages, and the stage ids rank r holds out of 2 PP: torch's "v"
#: placement (r, 2PP-1-r) or its "loop" placement (r, r+PP).
_TWO_STAGES = {"dualpipev": lambda r, n: [r, 2 * n - 1 - r], "zbv": lambda r, n: [r, 2 * n - 1 - r],
               "interleaved1f1b": lambda r, n: [r, r + n]}


class TorchPipeline:
    """The same model and micro-batches run by torch.distributed.pipelining on this rank (every rank of the
    default group is one pipeline rank): ``PipelineStage`` objects around our chunks and torch's schedule.

    Its loss is the mean over micro-batches, like ours: torch computes ``loss_fn`` per micro-batch and, with
    ``scale_grads=True``, divides the gradients by the number of micro-batches.
    """

    def __init__(self, name: str, model_spec: ModelSpec, n_microbatches: int):
        from torch.distributed import pipelining

        if name not in TORCH_SCHEDULES:
            raise ValueError(f"torch.distributed.pipelining runs {sorted(TORCH_SCHEDULES)} here; "
                             f"got {name!r}")
        if getattr(model_spec, "ep", 1) != 1:
            raise ValueError("the torch side-by-side runs without expert parallelism (ep=1)")
        warm_up()
        self.spec, self.M = model_spec, n_microbatches
        rank, world = dist.get_rank(), dist.get_world_size()
        n_stages = 2 * world if name in _TWO_STAGES else world
        self.stage_ids = _TWO_STAGES[name](rank, world) if name in _TWO_STAGES else [rank]
        chunks = model_spec.cut(model_spec.build(), n_stages)
        self.chunks = {s: chunks[s] for s in self.stage_ids}
        device = rank_device()
        stages = [pipelining.PipelineStage(self.chunks[s].to(device), s, n_stages, device)
                  for s in self.stage_ids]
        cls = getattr(pipelining, TORCH_SCHEDULES[name])
        loss_fn = _TorchLoss(model_spec)
        self.schedule = cls(stages if name in _TWO_STAGES else stages[0], n_microbatches=n_microbatches,
                            loss_fn=loss_fn, scale_grads=True)
        self.first, self.last = 0 in self.stage_ids, n_stages - 1 in self.stage_ids

    def step(self, microbatches) -> dict:
        """One training step; returns the losses this rank saw and its gradients by full-model name."""
        for chunk in self.chunks.values():
            for p in chunk.parameters():
                p.grad = None
        device = rank_device()
        x = torch.cat([mb[0] for mb in microbatches]).to(device)
        y = torch.cat([mb[1] for mb in microbatches]).to(device)
        losses: list = []
        args = (x,) if self.first else ()
        kwargs = {"target": y, "losses": losses} if self.last else {}
        self.schedule.step(*args, **kwargs)
        grads = {s: {n: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu().clone()
                     for n, p in self.chunks[s].named_full_parameters()} for s in self.stage_ids}
        return {"rank": dist.get_rank(), "losses": [float(v.detach()) for v in losses], "grads": grads}


class _TorchLoss:
    """loss_fn for torch's schedules: the model spec's loss of one micro-batch.

    Before its first step, torch's schedule infers the shapes of the gradients by running the last stage once
    on inputs it allocates without values (``PipelineStage._backward_metadata_inference``): the loss then sees
    whatever those bytes held, NaN or infinity now and then, and the kit's loss refuses non-finite logits. Only
    the shapes of that pass are used, so non-finite values are zeroed there; a real micro-batch's output is
    finite (and if it were not, the gradients compared with one process would say so)."""

    def __init__(self, model_spec: ModelSpec):
        self.spec = model_spec

    def __call__(self, output, target):
        if isinstance(output, torch.Tensor) and output.is_floating_point() and not torch.isfinite(output).all():
            output = torch.nan_to_num(output, nan=0.0, posinf=0.0, neginf=0.0)
        return self.spec.loss(output, target)
