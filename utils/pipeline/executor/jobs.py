"""What each rank runs to execute a pipeline schedule: its stages, its actions, its messages.

The driver (``utils.pipeline.executor.execute.execute``) sends every rank the same plan; each rank builds its own stages from
the model spec (same seed, same weights as the single-process reference), then executes its action list in
order (DeepSeek-V3 report, Sec. 3.2.1; "Zero Bubble Pipeline Parallelism", Qi et al., Sec. 2):

* ``F``  forward one micro-batch through one stage; send the output to the next stage's rank.
* ``B``  full backward: gradient w.r.t. the stage input (sent to the previous stage) and the weights.
* ``I``  backward for the input only; what ``W`` will need is kept (each layer's output gradient).
* ``W``  backward for the weights, from what ``I`` kept: dW of a layer needs only its input and the
  gradient at its output, so it can run later, in a bubble.
* ``(F;B)OVERLAP_F_B``  a forward chunk and a backward chunk run together through an overlap hook (like
  DualPipe's ``overlapped_forward_backward``); the default ``interleave`` alternates them at every point
  where one of them waits for communication (an expert all-to-all issued with ``async_op=True``) or, in a
  dense model, at every layer.

Messages: activations and gradients travel with non-blocking ``isend``/``irecv``, tagged by (kind,
destination stage, micro-batch) so messages never mix. Receives for the next few actions are posted before
a rank blocks on the current one, and a rank waits for its sends only at the end of the step. A rank
therefore blocks only on an input the schedule says it needs now; the validator guarantees that input is
eventually produced, so no schedule it accepts can deadlock.

Expert parallelism (``ep`` > 1): global rank ``pp_rank * ep + ep_rank``; the ``ep`` ranks of a pipeline
rank run the same action list on different sequences of each micro-batch, and every MoE layer sends tokens
to the rank holding their experts with ``all_to_all_single(async_op=True)``. All of them issue their
collectives in the same order because the overlap hook is deterministic (it never looks at the clock).

Gradients at the end of the step, as a training step needs them before its optimizer update: mirrored
stages (DualPipe's two copies of a chunk, on ranks r and PP-1-r) exchange and sum their gradients, and
parameters replicated over an expert-parallel group (attention, router, shared experts) are all-reduced.

The parts, one concept each, in ``utils.pipeline.executor``: ``stage`` (a stage's forward and its B, or I
then W), ``overlap`` (the F&B hooks), ``experts`` (expert parallelism inside a stage), ``messages`` (tags,
receives posted ahead, sends), ``rank`` (one rank's step), ``pacing`` (paced mode) and ``torch_side``
(torch.distributed.pipelining side by side). The jobs a rank runs live here.
"""

from __future__ import annotations

import time

import torch.distributed as dist

from utils.pipeline.executor.experts import expert_groups
from utils.pipeline.executor.models import ModelSpec
from utils.pipeline.executor.pacing import Pacing
from utils.pipeline.executor.rank import RankPipeline
from utils.pipeline.executor.torch_side import TorchPipeline
from utils.pipeline.schedule import Schedule

__all__ = ["pipeline_job", "torch_pipeline_job", "step_time_job"]


# --------------------------------------------------------------------------------------------- jobs

def pipeline_job(schedule: Schedule, model_spec: ModelSpec, microbatches, pacing: Pacing | None = None,
                 overlap="interleave", steps: int = 1) -> dict | None:
    """Job run by every rank: build this rank's stages, run the schedule ``steps`` times, return the last.

    Ranks beyond ``n_ranks * ep`` only join the start barrier and return None.
    """
    ep = getattr(model_spec, "ep", 1)
    expert_groups(schedule.n_ranks, ep)  # collective: every rank takes part
    if dist.get_rank() >= schedule.n_ranks * ep:
        for _ in range(steps):
            dist.barrier()
        return None
    pipeline = RankPipeline(schedule, model_spec, pacing=pacing, overlap=overlap)
    result = None
    for _ in range(steps):
        result = pipeline.step(microbatches)
    return result


def torch_pipeline_job(name: str, model_spec: ModelSpec, microbatches) -> dict:
    """Job: one step of torch.distributed.pipelining's ``name`` on every rank of the default group."""
    return TorchPipeline(name, model_spec, len(microbatches)).step(microbatches)


def _timed(fn) -> float:
    dist.barrier()
    start = time.perf_counter()
    fn()
    dist.barrier()
    return time.perf_counter() - start


def step_time_job(name: str, model_spec: ModelSpec, microbatches, steps: int = 5) -> dict:
    """Job: per-step wall time of our executor and of torch's schedule on the same model, micro-batches and
    process group, measured alternately in one run (after one warm-up step each). Seconds per step."""
    from utils.pipeline.registry import make_schedule

    world = dist.get_world_size()
    ours = RankPipeline(make_schedule(name, world, len(microbatches)), model_spec)
    theirs = TorchPipeline(name, model_spec, len(microbatches))
    ours.step(microbatches)
    theirs.step(microbatches)
    times: dict[str, list[float]] = {"ours": [], "torch": []}
    for _ in range(steps):
        times["ours"].append(_timed(lambda: ours.step(microbatches)))
        times["torch"].append(_timed(lambda: theirs.step(microbatches)))
    return times
