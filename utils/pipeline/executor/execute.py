"""Run a pipeline schedule for real on a cluster of processes: ``execute(cluster, schedule, model)``.

The simulator predicts a ``Timeline`` from a cost model; the executor measures one (DeepSeek-V3 report,
Sec. 3.2.1, Table 2). Every rank of a ``SimulatedCluster`` (or of a torchrun job) builds its own stages of the
model, runs its action list in order, and sends activations forward and gradients backward with
torch.distributed point-to-point messages (see ``utils.pipeline.executor.jobs`` for what a rank does). The result
holds the loss, every parameter's gradient (by its name in the full model, mirrored copies summed) and the
measured timeline, the same type the simulator returns, so one plot draws both:

    from utils.cluster.cluster import SimulatedCluster
    from utils.pipeline.executor.execute import execute, Pacing
    from utils.pipeline.registry import make_schedule
    from utils.pipeline.executor.models import mlp_spec

    with SimulatedCluster(world_size=4) as cluster:
        result = execute(cluster, make_schedule("1f1b", 4, 8), mlp_spec())
        result.loss, result.grads["layers.0.linear.weight"], result.timeline.worst_idle
        compare_to_reference(result, mlp_spec())     # max abs / relative gradient difference, bit_exact
        execute(cluster, make_schedule("dualpipe", 2, 4), decoder_spec(ep=2))  # MoE, experts on 2 ranks/stage

Paced mode (``paced=costs``, a ``utils.pipeline.costs.CostModel`` or anything with F, B, W, FB): each action also
lasts at least its cost-model duration at ``unit_ms`` per time unit (sleep-based, so it leaves the CPU cores
to the other ranks), which makes the measured idle time comparable with the simulated one.

Command line (also under torchrun, where each process is one rank and the default group comes from env://):

    python -m utils.execute --schedule 1f1b --ranks 4 --microbatches 8            # starts its own ranks
    torchrun --nproc-per-node 4 -m utils.execute --schedule 1f1b --microbatches 8  # gloo, 4 processes
    torchrun --nproc-per-node 8 -m utils.execute --schedule dualpipe --microbatches 16 --backend nccl
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace

import torch

from utils import inputs as arg
from utils.pipeline.costs import CostModel
from utils.pipeline.executor.jobs import pipeline_job
from utils.pipeline.executor.models import ModelSpec, decoder_spec, mlp_spec
from utils.pipeline.executor.overlap import OVERLAP_HOOKS
from utils.pipeline.executor.pacing import Pacing
from utils.pipeline.registry import make_schedule
from utils.pipeline.schedule import Schedule
from utils.pipeline.timeline import CommInterval, Interval, Timeline
from utils.pipeline.validation import validate

__all__ = ["execute", "ExecutionResult", "Pacing", "pacing_from_costs", "compare_to_reference",
           "assemble_result", "main"]


@dataclass
class ExecutionResult:
    """What a real run of a schedule gives.

    ``loss``: mean of the micro-batch losses (``losses``); ``grads``: every parameter's gradient, by its name
    in the full model (DualPipe's mirrored copies already summed, expert-parallel replicas all-reduced);
    ``grads_by_chunk``: the same, grouped by model chunk; ``timeline``: measured start and end of every
    action on every pipeline rank (``source="measured"``, ``time_unit="ms"``; with expert parallelism, the
    first rank of each expert-parallel group); ``mirror_gap``: largest difference between the gradients
    held by two copies of a chunk after the sum (0.0: the copies agree); ``wall_s``: the job's wall time.
    """

    schedule: Schedule
    loss: float
    losses: tuple[float, ...]
    grads: dict[str, torch.Tensor]
    grads_by_chunk: tuple[dict[str, torch.Tensor], ...]
    timeline: Timeline
    mirror_gap: float
    wall_s: float


def pacing_from_costs(costs, unit_ms: float = 20.0) -> Pacing:
    """A ``Pacing`` from a cost model (a ``CostModel``, or anything with F, B, W and optionally FB and p2p
    in time units) and ms per unit. The cost model's rules and defaults apply (FB defaults to F + B)."""
    unit_ms = arg.real(unit_ms, "unit_ms", low=0, low_open=True, high=MAX_UNIT_MS, where="pacing_from_costs",
                       why="the wall-clock length of one time unit; paced actions sleep that long per unit")
    if isinstance(costs, Pacing):
        return costs
    if not isinstance(costs, CostModel):
        if not all(hasattr(costs, name) for name in ("F", "B", "W")):
            arg.fail("paced", "a cost model with F, B and W (and optionally FB) in time units, such as "
                     "utils.pipeline.costs.CostModel", costs, where="pacing_from_costs", error=arg.InputTypeError)
        costs = CostModel(F=costs.F, B=costs.B, W=costs.W, FB=getattr(costs, "FB", None),
                          p2p=getattr(costs, "p2p", None) or 0.0)
    return Pacing(F=costs.F, B=costs.B, W=costs.W, FB=costs.FB, unit_ms=unit_ms, p2p=costs.p2p,
                  dispatch=costs.dispatch, combine=costs.combine, comm_share=costs.comm_share,
                  chunk_scale=costs.chunk_scale)


#: Paced mode sleeps unit_ms per time unit of every action: beyond a second per unit a step takes minutes.
MAX_UNIT_MS = 1000.0
_SPEC_METHODS = ("build", "cut", "make_microbatches", "loss")


def _check(schedule: Schedule, model_spec: ModelSpec, microbatches, world_size: int) -> None:
    """Everything that can be refused before any rank does anything (and, on the command line, before any
    process starts): the schedule, the model spec, the micro-batches and the number of processes."""
    where = "execute"
    arg.instance(schedule, "schedule", Schedule, "a Schedule (e.g. make_schedule('1f1b', 4, 8))", where=where)
    if not all(callable(getattr(model_spec, name, None)) for name in _SPEC_METHODS):
        arg.fail("model_spec", "a model spec with build(), cut(), make_microbatches() and loss(), such as "
                 "mlp_spec() or decoder_spec()", model_spec, where=where, error=arg.InputTypeError)
    for i, pair in enumerate(arg.sequence(microbatches, "microbatches", where=where)):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, torch.Tensor)
                                                                          for t in pair)):
            arg.fail(f"microbatches[{i}]", "an (input, target) pair of tensors", pair, where=where,
                     error=arg.InputTypeError)
    validate(schedule)  # refuse a broken schedule before any rank does anything
    ep = getattr(model_spec, "ep", 1)
    needed = schedule.n_ranks * ep
    if world_size < needed:
        each = f" with {ep} expert-parallel ranks each" if ep > 1 else ""
        per = " per expert-parallel rank" if ep > 1 else ""
        raise ValueError(
            f"{schedule.name} on {schedule.n_ranks} ranks{each} needs {needed} processes, but the cluster "
            f"has {world_size}: every pipeline rank is one process{per}")
    if len(microbatches) != schedule.n_microbatches:
        raise ValueError(f"the schedule runs {schedule.n_microbatches} micro-batches but {len(microbatches)} "
                         "were given: each micro-batch must go through the pipeline exactly once")
    model_spec.cut(model_spec.build(), schedule.n_chunks)  # ValueError if the model has too few layers


def execute(cluster, schedule: Schedule, model_spec: ModelSpec, microbatches=None, *, paced=None, unit_ms: float = 20.0,
            overlap: str = "interleave", timeout: float | None = None) -> ExecutionResult:
    """Run ``schedule`` on ``cluster`` with ``model_spec`` cut into the schedule's chunks.

    ``microbatches``: list of (input, target) pairs, default ``model_spec.make_microbatches(M)``.
    ``paced``: a cost model (``utils.pipeline.costs.CostModel``) or a ``Pacing``: each action lasts at least its
    cost at ``unit_ms`` per unit. ``overlap``: how an overlapped F&B pair runs its two chunks, "interleave"
    (default: alternate at every communication or layer boundary) or "sequential", or an importable
    function ``hook(forward_steps, backward_steps)``. The schedule is validated first (ValueError before any
    message is sent); a stage that raises gives the cluster's ``RankError`` naming the rank and the action.
    """
    if not (callable(getattr(cluster, "run", None)) and isinstance(getattr(cluster, "world_size", None), int)):
        arg.fail("cluster", "a SimulatedCluster (utils.cluster.cluster), whose ranks run the schedule", cluster,
                 where="execute", error=arg.InputTypeError)
    arg.instance(schedule, "schedule", Schedule, "a Schedule (e.g. make_schedule('1f1b', 4, 8))",
                 where="execute")
    if microbatches is None and callable(getattr(model_spec, "make_microbatches", None)):
        microbatches = model_spec.make_microbatches(schedule.n_microbatches)
    _check(schedule, model_spec, microbatches, cluster.world_size)
    if not (isinstance(overlap, str) and overlap in OVERLAP_HOOKS) and not callable(overlap):
        raise arg.InputError(f"overlap={overlap!r}: choose one of {sorted(OVERLAP_HOOKS)} or pass an importable "
                             "function hook(forward_steps, backward_steps)")
    arg.real(unit_ms, "unit_ms", low=0, low_open=True, high=MAX_UNIT_MS, where="execute",
             why="the wall-clock length of one time unit in paced mode")
    if timeout is not None:
        timeout = arg.real(timeout, "timeout", low=0, low_open=True, where="execute",
                           why="seconds the ranks may take before they are reported stuck")
    pacing = None if paced is None else pacing_from_costs(paced, unit_ms)
    if pacing is not None and pacing.chunk_scale is not None:  # the schedule says which chunk a stage runs
        if len(pacing.chunk_scale) != schedule.n_chunks:
            raise arg.InputError(f"execute: paced costs have {len(pacing.chunk_scale)} chunk_scale factors, but "
                                 f"{schedule.name} cuts the model into {schedule.n_chunks} chunks: one per chunk.")
        pacing = replace(pacing, stage_to_chunk=schedule.stage_to_chunk)
    start = time.perf_counter()
    results = cluster.run(pipeline_job, schedule, model_spec, microbatches, pacing, overlap, timeout=timeout)
    return assemble_result(schedule, model_spec, results, time.perf_counter() - start)


def assemble_result(schedule: Schedule, model_spec: ModelSpec, results: list, wall_s: float = 0.0) -> ExecutionResult:
    """The ExecutionResult of the ranks' returns of ``pipeline_job`` (rank order, None for idle ranks)."""
    results = [r for r in results if r is not None]
    first_of_group = sorted((r for r in results if r["ep_rank"] == 0), key=lambda r: r["pp_rank"])
    # A measured interval's comm_wait is the time its all-to-alls kept the rank waiting (the time budget's
    # exposed communication); a wait for a pipeline message cannot be told from idle, so p2p_wait stays 0.
    intervals = tuple(tuple(Interval(r["pp_rank"], a, s, e, *wait) for a, s, e, *wait in r["intervals"])
                      for r in first_of_group)
    comms = tuple(CommInterval(r["pp_rank"], label, s, e, ov)
                  for r in first_of_group for label, s, e, ov, *_ in r["comms"])
    timeline = Timeline(schedule, intervals, comms, source="measured", time_unit="ms")
    # Losses: the last stage of each micro-batch's route reports it (summed over an expert-parallel group).
    losses = [0.0] * schedule.n_microbatches
    for r in results:
        for m, value in r["losses"].items():
            losses[m] += value
    # Gradients, by chunk: a chunk's copies hold the same summed gradient; experts come from their owner.
    by_chunk: list[dict[str, torch.Tensor]] = [{} for _ in range(schedule.n_chunks)]
    mirror_gap = 0.0
    for r in sorted(results, key=lambda r: r["rank"]):
        for stage, grads in r["grads"].items():
            chunk = by_chunk[schedule.stage_to_chunk[stage]]
            for name, g in grads.items():
                if name in chunk:
                    mirror_gap = max(mirror_gap, float((chunk[name] - g).abs().max()))
                else:
                    chunk[name] = g
    grads = {name: g for chunk in by_chunk for name, g in chunk.items()}
    m = schedule.n_microbatches
    return ExecutionResult(schedule=schedule, loss=sum(losses) / m, losses=tuple(losses), grads=grads,
                           grads_by_chunk=tuple(by_chunk), timeline=timeline, mirror_gap=mirror_gap,
                           wall_s=wall_s)


def compare_to_reference(result: ExecutionResult, model_spec: ModelSpec, microbatches=None) -> dict:
    """How far a run is from the single-process reference on the same micro-batches.

    Returns ``loss`` and ``reference_loss``, ``loss_diff``, and the gradient gap of
    ``utils.pipeline.executor.reference.gradient_gap`` (``max_abs``, ``max_rel``, ``worst``, ``bit_exact``).
    """
    from utils.pipeline.executor.reference import gradient_gap, reference_run

    if microbatches is None:
        microbatches = model_spec.make_microbatches(result.schedule.n_microbatches)
    ref = reference_run(model_spec, microbatches)
    return {"loss": result.loss, "reference_loss": ref.loss, "loss_diff": abs(result.loss - ref.loss),
            **gradient_gap(result.grads, ref.grads)}


# ------------------------------------------------------------------------------------------ command line

def _spec_from_args(args):
    if args.model == "mlp":
        if args.ep != 1:
            raise arg.InputError(f"--ep {args.ep}: expert parallelism needs experts, so --ep applies to "
                                 "--model decoder only (the mlp has none)")
        return mlp_spec()
    return decoder_spec(ep=args.ep)


def _torchrun_world() -> int | None:
    """The number of processes torchrun started (WORLD_SIZE), or None outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    value = os.environ["WORLD_SIZE"]
    return arg.whole(int(value) if value.isdigit() else value, "WORLD_SIZE", low=1, where="torchrun")


def main(argv: list[str] | None = None) -> int:
    """Run one schedule and print loss, gradient gap to the single-process reference and measured idle time.

    Under torchrun (RANK/WORLD_SIZE set) every process is one rank: pipeline ranks = WORLD_SIZE / ep.
    Otherwise it starts a SimulatedCluster of ``--ranks`` x ``--ep`` processes itself. Bad input gives exit
    status 2 and one line ``error: <the rule>``, checked before any process starts.
    """
    return arg.run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    from utils.cluster.inputs import check_backend, check_world_size

    parser = arg.ArgumentParser(prog="python -m utils.execute", description=main.__doc__)
    parser.add_argument("--schedule", default="1f1b")
    parser.add_argument("--microbatches", type=int, default=8)
    parser.add_argument("--ranks", type=int, default=4, help="pipeline ranks (ignored under torchrun)")
    parser.add_argument("--model", choices=("mlp", "decoder"), default="mlp")
    parser.add_argument("--ep", type=int, default=1, help="expert-parallel ranks per stage (decoder only)")
    parser.add_argument("--backend", choices=("gloo", "nccl"), default="gloo")
    args = parser.parse_args(argv)
    spec = _spec_from_args(args)
    # Everything is checked here, before any process starts or joins a group.
    world = _torchrun_world()
    if world is not None:
        if world % spec.ep:
            raise arg.InputError(f"torchrun started {world} processes, which do not split into groups of "
                                 f"--ep {spec.ep}: every pipeline rank has ep expert-parallel processes")
        ranks = world // spec.ep
    else:
        ranks = args.ranks
        check_backend(args.backend, check_world_size(arg.whole(ranks, "--ranks", low=1, where="execute")
                                                       * spec.ep))
    schedule = make_schedule(args.schedule, ranks, args.microbatches)
    microbatches = spec.make_microbatches(schedule.n_microbatches)
    _check(schedule, spec, microbatches, world if world is not None else ranks * spec.ep)

    if world is not None:
        import torch.distributed as dist

        if args.backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(args.backend, init_method="env://")
        start = time.perf_counter()
        mine = pipeline_job(schedule, spec, microbatches)
        gathered = [None] * world if dist.get_rank() == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        wall = time.perf_counter() - start
        is_root = dist.get_rank() == 0
        dist.destroy_process_group()
        if not is_root:
            return 0
        result = assemble_result(schedule, spec, gathered, wall)
    else:
        from utils.cluster.cluster import SimulatedCluster

        with SimulatedCluster(world_size=args.ranks * spec.ep, backend=args.backend) as cluster:
            result = execute(cluster, schedule, spec, microbatches)
    gap = compare_to_reference(result, spec, microbatches)
    print(f"{schedule.name}: {schedule.n_ranks} pipeline ranks x {spec.ep} expert-parallel, "
          f"{schedule.n_microbatches} micro-batches, model {spec.name}")
    print(f"loss {result.loss:.6f} (single process {gap['reference_loss']:.6f}); gradients: max abs diff "
          f"{gap['max_abs']:.3g}, max relative {gap['max_rel']:.3g}, bit-exact {gap['bit_exact']}")
    timeline = result.timeline
    print(f"measured step {timeline.makespan:.1f} ms, worst-rank idle {timeline.worst_idle:.1f} ms")
    ok = gap["max_rel"] <= 1e-5 and gap["loss_diff"] <= 1e-5 * max(1.0, abs(gap["reference_loss"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
