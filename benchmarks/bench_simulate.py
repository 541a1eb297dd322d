"""Simulator speed as a notebook sees it: targets for DualPipe, and torch's own schedule simulator as a
reference in the same run.

Targets (issue 4): DualPipe with 16 ranks x 64 micro-batches in < 20 ms, 64 ranks x 1024 micro-batches in
< 1 s (``simulate`` with its default structural check; building the schedule not included). The reference
is ``torch.distributed.pipelining.schedules._simulate_comms_compute``, which replays a schedule (with its
send/recv actions added) step by step without durations; it cannot run overlapped pairs, so both run GPipe.

As in a notebook (issue 15): torch, pandas, matplotlib, ipywidgets and the kit's notebook modules are
imported first, so Python's cyclic garbage collector tracks the quarter million objects a kernel holds and
every collection the simulation triggers scans them. ``simulate`` pauses that collector while it runs (it
makes no reference cycles; see ``utils.pipeline.simulate._cyclic_gc_paused``); the column "GC running"
times the same call with the pause turned off, so the table shows what the pause saves. Nothing is frozen
(``gc.freeze``): the benchmark measures the kernel a learner has.

Run: ``.venv/bin/python -m benchmarks simulate`` (or ``make bench``).
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import replace

import matplotlib.pyplot  # noqa: F401 - a notebook's imports: the heap the garbage collector scans
import pandas as pd
import torch  # noqa: F401

import utils.fp8.explore  # noqa: F401
import utils.moe.explore  # noqa: F401
import utils.widgets.pipeline  # noqa: F401
from utils.pipeline import simulate as simulate_module
from utils.pipeline.costs import CostModel
from utils.pipeline.registry import make_schedule
from utils.pipeline.simulate import simulate

TRACKED_AFTER_IMPORTS = len(gc.get_objects())
COSTS = CostModel(F=1, B=2, W=1, FB=2.5)
TARGETS = [("dualpipe", 16, 64, 20.0), ("dualpipe", 64, 1024, 1000.0), ("dualpipev", 32, 1024, 1000.0)]
REFERENCE_CASES = [("gpipe", 8, 32), ("gpipe", 16, 64), ("gpipe", 32, 128)]


def best_ms(fn, repeats: int, setup=lambda: None) -> float:
    """Fastest of ``repeats`` runs of ``fn(setup())``, in milliseconds of this process's CPU time (on a
    shared machine wall-clock time mostly measures the other processes); ``setup`` is not timed."""
    best = float("inf")
    for _ in range(repeats):
        arg = setup()
        start = time.process_time()
        fn(arg)
        best = min(best, time.process_time() - start)
    return best * 1e3


@contextlib.contextmanager
def gc_running():
    """Turn the simulator's garbage-collector pause off (what a simulation costs without it)."""
    paused = getattr(simulate_module, "_cyclic_gc_paused", None)
    if paused is None:  # a simulator without the pause
        yield
        return
    simulate_module._cyclic_gc_paused = contextlib.nullcontext
    try:
        yield
    finally:
        simulate_module._cyclic_gc_paused = paused


def ours_ms(schedule, repeats: int) -> tuple[float, float, float]:
    """simulate() on a fresh copy of the schedule (first run: builds its dependency plan), the same with the
    garbage collector running, and again on the same object (the plan is kept on the schedule, as when a
    widget re-simulates under other costs)."""
    fresh = lambda: replace(schedule)  # noqa: E731
    first = best_ms(lambda s: simulate(s, COSTS), repeats, setup=fresh)
    with gc_running():
        unpaused = best_ms(lambda s: simulate(s, COSTS), repeats, setup=fresh)
    simulate(schedule, COSTS)
    again = best_ms(lambda s: simulate(s, COSTS), repeats, setup=lambda: schedule)
    return first, unpaused, again


def torch_reference(schedule):
    """A zero-argument callable running torch's simulator on ``schedule`` (single-stage-per-rank layouts)."""
    from torch.distributed.pipelining.schedules import (
        _Action,
        _add_send_recv,
        _ComputationType,
        _simulate_comms_compute,
    )

    compute = {
        r: [_Action(a.stage, _ComputationType(a.kind), a.microbatch) for a in acts]
        for r, acts in enumerate(schedule.actions)
    }
    stage_to_rank = schedule.stage_to_rank.__getitem__
    with_comms = _add_send_recv(compute, stage_to_rank, schedule.n_stages)
    return lambda: _simulate_comms_compute(with_comms, stage_to_rank, schedule.n_stages)


def _row(name, ranks, mbs, schedule, repeats, target=None, theirs=None) -> dict:
    ours, unpaused, again = ours_ms(schedule, repeats)
    return {
        "schedule": name,
        "ranks": ranks,
        "micro-batches": mbs,
        "actions": sum(len(a) for a in schedule.actions),
        "ours (ms)": round(ours, 2),
        "GC running (ms)": round(unpaused, 2),
        "GC / ours": round(unpaused / ours, 2),
        "ours again (ms)": round(again, 2),
        "target (ms)": target,
        "meets target": None if target is None else ours < target,
        "torch (ms)": None if theirs is None else round(theirs, 2),
        "torch / ours": None if theirs is None else round(theirs / ours, 1),
    }


def main() -> None:
    rows = []
    for name, ranks, mbs, target in TARGETS:
        schedule = make_schedule(name, ranks, mbs)
        rows.append(_row(name, ranks, mbs, schedule, 5 if target < 100 else 3, target=target))
    for name, ranks, mbs in REFERENCE_CASES:
        schedule = make_schedule(name, ranks, mbs)
        reference = torch_reference(schedule)
        theirs = best_ms(lambda _, run=reference: run(), repeats=3)
        rows.append(_row(name, ranks, mbs, schedule, 5, theirs=theirs))
    table = pd.DataFrame(rows)
    print("simulate(schedule, costs) vs torch.distributed.pipelining.schedules._simulate_comms_compute")
    print(f"As in a notebook: torch, pandas, matplotlib and the kit imported ({TRACKED_AFTER_IMPORTS:,} objects "
          "tracked by the garbage collector). CPU time, best of runs. ours: first run on a new schedule object; "
          "GC running: the same without the simulator's garbage-collector pause; again: same object (plan kept)")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
