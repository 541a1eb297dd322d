"""Run a course job on real GPUs (or CPU processes) under torchrun, the way production jobs start.

The notebooks run jobs on `utils.cluster.cluster.SimulatedCluster`. The same job functions run unchanged under
torchrun, which starts one process per GPU and hands each its rank through environment variables
(env:// rendezvous):

    torchrun --nproc-per-node 4 -m utils.launch utils.cluster.jobs:ring_demo        # 4 CPU processes
    torchrun --nproc-per-node 8 -m utils.launch utils.cluster.jobs:all_to_all_demo --backend nccl  # 8 GPUs
    torchrun --nproc-per-node 2 -m utils.launch utils.cluster.jobs:all_reduce_demo --args '[[1.5, 2.5]]'

Each rank runs the job with its prints captured; rank 0 then prints every rank's output and result as
`[rank r] ...`, rank by rank, just as `SimulatedCluster.run` does in a notebook. With `--backend nccl` each
process uses the GPU given by LOCAL_RANK.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import traceback
from datetime import timedelta

from utils import inputs as arg
from utils.cluster.inputs import BACKENDS, resolve_job

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring); JSON arguments are checked here."""
    parser = arg.ArgumentParser(prog="torchrun --nproc-per-node N -m utils.launch",
                                     description="Run a course job on every rank under torchrun.")
    parser.add_argument("job", help="the job to run, as module:function (e.g. utils.cluster.jobs:ring_demo)")
    parser.add_argument("--backend", choices=BACKENDS, default="gloo",
                        help="gloo (CPU processes) or nccl (one CUDA GPU per process); default gloo")
    parser.add_argument("--args", default="[]", help="positional arguments of the job, as a JSON list")
    parser.add_argument("--kwargs", default="{}", help="keyword arguments of the job, as a JSON object")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a collective may wait before failing; default 300")
    args = parser.parse_args(argv)
    try:
        args.args = json.loads(args.args)
        args.kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        parser.error(f"--args and --kwargs must be JSON (a list and an object): {exc}")
    if not isinstance(args.args, list) or not isinstance(args.kwargs, dict):
        parser.error("--args must be a JSON list and --kwargs a JSON object")
    if not (args.timeout > 0 and args.timeout < float("inf")):
        parser.error(f"--timeout must be a finite number of seconds greater than 0; got {args.timeout}")
    return args


def _call_captured(fn, args: list, kwargs: dict) -> tuple[bool, object, str, str]:
    """(ok, result or traceback text, stdout, stderr) of one call with its prints captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return True, fn(*args, **kwargs), out.getvalue(), err.getvalue()
        except Exception:  # noqa: BLE001 - reported by rank 0 with the others
            return False, traceback.format_exc(), out.getvalue(), err.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Join the default process group from torchrun's environment, run the job, print results on rank 0.

    Bad input (or no torchrun) gives exit status 2 and one line ``error: <the rule>``, before any group forms."""
    return arg.run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    fn = resolve_job(args.job)  # a job that cannot be found is refused before anything starts
    missing = [name for name in _TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise arg.InputError(f"utils.launch must be started by torchrun, which sets {', '.join(missing)}; for "
                             f"example: torchrun --nproc-per-node 4 -m utils.launch {args.job}")

    import torch
    import torch.distributed as dist

    if args.backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(args.backend, init_method="env://", timeout=timedelta(seconds=args.timeout))
    rank = dist.get_rank()
    ok, value, out, err = _call_captured(fn, args.args, args.kwargs)
    if not ok:
        # The other ranks may be waiting for this one in a collective: report now and exit, and torchrun
        # stops them (gathering reports first could pair with the collective they are stuck in).
        _print_report(rank, out, err)
        print(f"[rank {rank}] raised:\n{value}", file=sys.stderr, flush=True)
        return 1
    # Gather every rank's report to rank 0 so the output comes out in rank order, whatever the timing.
    reports = [None] * dist.get_world_size()
    dist.all_gather_object(reports, (repr(value), out, err))
    if rank == 0:
        for source, (text, source_out, source_err) in enumerate(reports):
            _print_report(source, source_out, source_err)
            print(f"[rank {source}] result: {text}")
        sys.stdout.flush()
    dist.destroy_process_group()
    return 0


def _print_report(rank: int, out: str, err: str) -> None:
    for line in out.splitlines():
        print(f"[rank {rank}] {line}")
    for line in err.splitlines():
        print(f"[rank {rank}] {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
