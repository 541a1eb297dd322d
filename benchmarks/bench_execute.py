"""Executor benchmarks: our runs against torch.distributed.pipelining, a persistent cluster against fresh
processes per run, and paced-mode idle time against the simulator.

1. Per-step time of our 1F1B and DualPipeV against torch's ``Schedule1F1B`` and ``ScheduleDualPipeV``: same
   model, same micro-batches, same process group, measured alternately in one job (median of steps; each
   step from a barrier to a barrier). Target: ratio <= 1.0.
2. Five schedules on one persistent SimulatedCluster (start-up included) against five separate torchrun
   runs of the same schedules, each starting its own processes. Target: under a third of the time.
3. Paced mode (50 ms per F): measured worst-rank idle time against the simulator's, 1F1B, ZB1P and DualPipe
   at 4 ranks. Target: within 5%.

Run: ``.venv/bin/python -m benchmarks.bench_execute`` (or ``make bench``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from utils.cluster.cluster import SimulatedCluster
from utils.pipeline.costs import CostModel
from utils.pipeline.executor.execute import execute
from utils.pipeline.executor.jobs import step_time_job
from utils.pipeline.executor.models import decoder_spec, mlp_spec
from utils.pipeline.registry import make_schedule
from utils.pipeline.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
RANKS, MICROBATCHES = 4, 8
FIVE = ("naive", "gpipe", "1f1b", "zb1p", "dualpipe")
UNIT_MS = 50.0  # one time unit (one F) lasts 50 ms: overheads of ~0.1 ms per action stay small
COSTS = CostModel(F=1, B=2, W=1, FB=2.5)


def step_times(cluster) -> list[dict]:
    rows = []
    for name, spec in (("1f1b", mlp_spec()), ("dualpipev", mlp_spec()), ("1f1b", decoder_spec(n_blocks=4)),
                       ("dualpipev", decoder_spec(n_blocks=8))):
        times = cluster.run(step_time_job, name, spec, spec.make_microbatches(MICROBATCHES), 7)
        per_step = {who: statistics.median(max(t[who][k] for t in times) for k in range(7)) * 1e3
                    for who in ("ours", "torch")}
        torch_name = {"1f1b": "Schedule1F1B", "dualpipev": "ScheduleDualPipeV"}[name]
        ours, theirs = per_step["ours"], per_step["torch"]
        rows.append({"measure": f"step time, {name} vs {torch_name} ({spec.name})", "ours": ours,
                     "reference": theirs, "unit": "ms", "ratio": ours / theirs, "target": "<= 1.0"})
    return rows


def persistent_vs_fresh() -> dict:
    spec = mlp_spec()
    start = time.perf_counter()
    with SimulatedCluster(world_size=RANKS) as cluster:
        for name in FIVE:
            execute(cluster, make_schedule(name, RANKS, MICROBATCHES), spec)
    persistent = time.perf_counter() - start
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    for name in FIVE:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                   str(RANKS), "-m", "utils.execute", "--schedule", name, "--microbatches", str(MICROBATCHES)]
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=600)
    fresh = time.perf_counter() - start
    return {"measure": f"five schedules: one persistent cluster vs five torchrun runs ({RANKS} ranks)",
            "ours": persistent, "reference": fresh, "unit": "s", "ratio": persistent / fresh,
            "target": "< 0.333"}


def paced_idle(cluster, repeats: int = 5) -> list[dict]:
    rows = []
    for name in ("1f1b", "zb1p", "dualpipe"):
        schedule = make_schedule(name, RANKS, MICROBATCHES)
        simulated = simulate(schedule, COSTS).worst_idle * UNIT_MS
        measured = statistics.median(
            execute(cluster, schedule, mlp_spec(), paced=COSTS, unit_ms=UNIT_MS).timeline.worst_idle
            for _ in range(repeats))
        rows.append({"measure": f"paced worst-rank idle, {name} ({UNIT_MS:g} ms per F, median of {repeats})",
                     "ours": measured,
                     "reference": simulated, "unit": "ms", "ratio": measured / simulated,
                     "target": "0.95 .. 1.05"})
    return rows


def main() -> None:
    rows = []
    with SimulatedCluster(world_size=RANKS) as cluster:
        rows += step_times(cluster)
        rows += paced_idle(cluster)
    rows.append(persistent_vs_fresh())
    table = pd.DataFrame(rows, columns=["measure", "ours", "reference", "unit", "ratio", "target"])
    print(f"costs for paced mode: {COSTS}; model: mlp_spec() unless noted; {MICROBATCHES} micro-batches")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
