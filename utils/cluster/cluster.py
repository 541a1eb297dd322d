"""A simulated GPU cluster: `world_size` real OS processes in one real torch.distributed process group.

In this course a "GPU" is a rank: a Python process that has joined a `gloo` process group on this machine.
Expert parallelism (DeepSeek-V3 report, section 3.2) and pipeline parallelism (section 3.2.1) are about what
ranks send each other, and that part is real here: the same `all_to_all`, `isend`/`irecv` and `all_reduce`
calls a multi-GPU job makes, between real processes.

    from utils.cluster.cluster import SimulatedCluster, RankError
    from utils.cluster.jobs import ring_demo

    with SimulatedCluster(world_size=4) as cluster:   # starts 4 rank processes once (a few seconds)
        received = cluster.run(ring_demo)            # runs on every rank; results in rank order

Design, and why:
- Ranks start once and are reused, and they start cheaply: importing torch costs a second or more of CPU per
  process, so one helper process (the rank factory) imports it once and forks the ranks, which then already
  have it. Restarting after a fault is a fork, not an import. A job is named by `module:qualname` and
  imported by each rank, which is why job functions live in `utils/` and never in a notebook cell.
- Rendezvous is a TCPStore that this process hosts on 127.0.0.1 on a port the OS picks, and gloo is bound to
  the loopback interface, so two clusters (two notebooks, two students on one server) never collide and
  nothing listens on the network.
- What a rank prints during a job is captured and echoed as `[rank r] ...` in rank order after the job, so
  notebook output does not depend on process scheduling.
- Faults surface fast: a rank that raises gives `RankError` with its traceback about a second later (the
  other ranks, usually stuck in a collective waiting for it, are not waited for); a rank that dies is noticed
  when its pipe closes; a job that runs past its timeout gives `RankTimeoutError`. After any fault every rank
  process is stopped (SIGTERM, then SIGKILL) and the next `run` starts fresh ones.
- No orphans: the factory kills its ranks and exits when this process dies (its control socket closes),
  each rank exits when the factory dies (a watchdog thread), and everything is stopped at `close()`, on
  garbage collection and at interpreter exit.

The same job functions run on real GPUs under torchrun: see `utils/cluster/launch.py`.
POSIX only (Linux, macOS): ranks are forked, and talk to this process over socket pairs.

The parts: `utils.cluster.inputs` (jobs by name, argument checks), `utils.cluster.processes` (this
process's side: the rank factory and the group of rank processes) and `utils.cluster.rank` (what runs
inside the factory and inside each rank).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing import connection as mp_connection
from pathlib import Path

from utils.cluster.inputs import (
    BACKENDS,
    MAX_WORLD_SIZE,
    check_backend,
    check_job,
    check_timeout,
    check_world_size,
    resolve_job,
)
from utils.cluster.processes import _describe_exit, _RankFactory, _RankGroup, _ranks_text

__all__ = ["SimulatedCluster", "RankError", "RankTimeoutError", "check_job", "resolve_job", "MAX_WORLD_SIZE",
           "BACKENDS"]

#: After the first rank reports a fault, wait this long for the others to report theirs (a bug that raises
#: on every rank should name every rank), then stop the cluster rather than wait for collective timeouts.
_FAULT_GRACE_S = 1.0


class RankError(RuntimeError):
    """One or more ranks failed a job: raised, died, or (subclass `RankTimeoutError`) did not finish.

    Attributes: `ranks` (the failed ranks, sorted), `tracebacks` (rank -> remote traceback text, or what is
    known of its death), `job` (`module:qualname`).
    """

    def __init__(self, message: str, ranks: tuple[int, ...] = (), tracebacks: dict[int, str] | None = None,
                 job: str = ""):
        super().__init__(message)
        self.ranks = tuple(ranks)
        self.tracebacks = dict(tracebacks or {})
        self.job = job


class RankTimeoutError(RankError, TimeoutError):
    """Some ranks did not finish a job within its timeout (a hang, a deadlock, a collective nobody joined)."""


_LIVE_CLUSTERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_all_clusters() -> None:
    for cluster in list(_LIVE_CLUSTERS):
        with contextlib.suppress(Exception):
            cluster._shutdown(graceful=False)


# ------------------------------------------------------------------------------------------------ cluster

class SimulatedCluster:
    """`world_size` simulated GPUs: real processes in one torch.distributed process group on this machine.

    `backend`: "gloo" (CPU, the default) or "nccl" (one CUDA GPU per rank). `timeout`: seconds a job may run
    before the ranks that have not finished are reported (also gloo's timeout for one collective).
    `start_timeout`: seconds the ranks may take to start and join the group.

    The ranks start now and stay up until `close()` (or the end of a `with` block); after a fault they are
    stopped and the next `run` starts them again.
    """

    def __init__(self, world_size: int, backend: str = "gloo", timeout: float = 60.0,
                 start_timeout: float = 120.0):
        self._world_size = check_world_size(world_size)
        self._backend = check_backend(backend, self._world_size)
        self._timeout = check_timeout(timeout, "timeout")
        self._start_timeout = check_timeout(start_timeout, "start_timeout")
        if os.name != "posix":
            raise RuntimeError("SimulatedCluster needs a POSIX system (Linux or macOS); on Windows use WSL.")
        self._lock = threading.Lock()
        self._logdir = Path(tempfile.mkdtemp(prefix="simulated-cluster-"))
        self._factory: _RankFactory | None = None
        self._group: _RankGroup | None = None
        self._closed = False
        _LIVE_CLUSTERS.add(self)
        try:
            self._start()
        except BaseException:
            self._shutdown(graceful=False)
            raise

    # -- properties
    @property
    def world_size(self) -> int:
        """Number of ranks."""
        return self._world_size

    @property
    def backend(self) -> str:
        """torch.distributed backend the ranks use."""
        return self._backend

    @property
    def timeout(self) -> float:
        """Default seconds a job may run."""
        return self._timeout

    @property
    def running(self) -> bool:
        """True while every rank process is up (False after close(), after a fault until the next run, and
        as soon as the cluster learns that a rank or its factory died between jobs)."""
        return self._group is not None and not self._group.stopped and not self._group.dead()

    @property
    def pids(self) -> list[int]:
        """Process ids of the ranks, in rank order (empty when not running)."""
        return list(self._group.pids) if self.running else []

    # -- life cycle
    def _start(self) -> None:
        if self._factory is None or not self._factory.alive:
            if self._factory is not None:
                self._factory.close()
            self._factory = _RankFactory(self._logdir, self._start_timeout)
        self._group = _RankGroup(self._factory, self._world_size, self._backend, self._timeout,
                                 self._start_timeout, self._logdir)

    def _shutdown(self, graceful: bool) -> None:
        """Stop the ranks and the factory, and remove the logs."""
        group, self._group = self._group, None
        factory, self._factory = self._factory, None
        if group is not None:
            group.stop(graceful)
        if factory is not None:
            factory.close()
        shutil.rmtree(self._logdir, ignore_errors=True)
        _LIVE_CLUSTERS.discard(self)

    def restart(self) -> None:
        """Stop the rank processes and start fresh ones (`run` does this by itself after a fault)."""
        with self._lock:
            self._check_open()
            if self._group is not None:
                self._group.stop(graceful=True)
            self._start()

    def close(self) -> None:
        """Stop every rank process. Safe to call twice; the cluster cannot run jobs afterwards."""
        self._closed = True
        self._shutdown(graceful=True)

    def __enter__(self) -> SimulatedCluster:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_logdir", None) is not None:
            with contextlib.suppress(Exception):
                self._shutdown(graceful=False)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self.running else "stopped")
        return f"SimulatedCluster(world_size={self._world_size}, backend={self._backend!r}, {state})"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this SimulatedCluster is closed; create a new one to run more jobs")

    # -- jobs
    def run(self, fn: Callable, *args, timeout: float | None = None, **kwargs) -> list:
        """Run `fn(*args, **kwargs)` on every rank and return the per-rank results in rank order.

        `fn` must be importable by name from a module (see `check_job`); arguments and results are pickled.
        What each rank prints is echoed afterwards as `[rank r] ...`, rank by rank. `timeout` (seconds,
        default the cluster's) bounds the whole job. Raises `RankError` if a rank raises or dies and
        `RankTimeoutError` if some rank does not finish; the ranks are then stopped and the next call starts
        them again. (`timeout` belongs to `run`: a job cannot receive a keyword argument of that name.)
        """
        spec = check_job(fn)
        timeout = self._timeout if timeout is None else check_timeout(timeout, "timeout")
        try:
            payload = pickle.dumps((args, kwargs))
        except Exception as exc:
            raise ValueError(f"the arguments of {spec} must be picklable to reach the ranks (tensors, "
                             "numbers, lists, dicts, importable functions): "
                             f"{type(exc).__name__}: {exc}") from None
        with self._lock:
            self._check_open()
            if self._group is None or self._group.stopped:  # stopped after a fault (or never started)
                self._start()
            group = self._group
            try:
                return self._run_job(group, spec, payload, timeout)
            except BaseException:
                # A fault, or the learner pressed stop (KeyboardInterrupt): ranks may be mid-collective, so
                # none of them can be trusted with the next job.
                group.stop(graceful=False)
                raise

    def _run_job(self, group: _RankGroup, spec: str, payload: bytes, timeout: float) -> list:
        n = self._world_size
        # rank -> ("ok", result bytes, out, err) or ("error", summary, traceback, out, err)
        done: dict[int, tuple] = {}
        died: dict[int, int | None] = {}
        gone = group.dead()
        if gone:  # a rank (or the factory) died since the last job: say so rather than send it work
            raise _fault(group, spec, timeout, [], gone, set(), done, before_start=True)
        first_fault: float | None = None
        pending = set(range(n))
        for rank, conn in enumerate(group.conns):
            try:
                conn.send(("job", spec, payload))
            except OSError:  # its end of the pipe is closed: the rank is dead
                died[rank] = group.exit_code(rank)
                pending = set(range(rank))  # the ranks after it never got the job: nothing to wait for
                first_fault = time.monotonic()
                break
        deadline = time.monotonic() + timeout
        while pending:
            now = time.monotonic()
            stop_at = deadline if first_fault is None else min(deadline, first_fault + _FAULT_GRACE_S)
            if now >= stop_at:
                break
            # Wake up for a result, a closed pipe (a dead rank), or the factory reporting a death. (A dead
            # factory's socket reads as always ready; its ranks follow it within a watchdog period.)
            factory = [] if group.factory.dead else [group.factory.ctrl]
            ready = mp_connection.wait([group.conns[r] for r in sorted(pending)] + factory,
                                       timeout=min(stop_at - now, 0.25))
            for conn in ready:
                if conn is group.factory.ctrl:
                    continue
                rank = group.conns.index(conn)
                try:
                    done[rank] = conn.recv()
                except (EOFError, OSError):
                    died[rank] = group.exit_code(rank)
                pending.discard(rank)
            for rank in group.ended() & pending:
                died[rank] = group.exit_code(rank)
                pending.discard(rank)
            if first_fault is None and (died or any(m[0] != "ok" for m in done.values())):
                first_fault = time.monotonic()
        _echo(done)
        raised = sorted(r for r, m in done.items() if m[0] != "ok")
        if died or raised or pending:
            raise _fault(group, spec, timeout, raised, died, pending, done)
        return [pickle.loads(done[r][1]) for r in range(n)]


def _echo(done: dict[int, tuple]) -> None:
    """Print what each rank printed during the job, rank by rank, so the output is deterministic."""
    for rank in sorted(done):
        out, err = done[rank][-2], done[rank][-1]
        for line in out.splitlines():
            print(f"[rank {rank}] {line}")
        for line in err.splitlines():
            print(f"[rank {rank}] {line}", file=sys.stderr)
    sys.stdout.flush()


def _fault(group: _RankGroup, spec: str, timeout: float, raised: list[int], died: dict[int, int | None],
           pending: set[int], done: dict[int, tuple], before_start: bool = False) -> RankError:
    """Build the error for a failed job. Its first line names the failed ranks and how they failed; then
    come the ranks that did not finish with the last progress they noted, and what dead ranks printed."""
    tracebacks = {rank: done[rank][2] for rank in raised}
    by_summary: dict[str, list[int]] = {}  # ranks that raised, grouped by what they raised
    for rank in raised:
        by_summary.setdefault(done[rank][1], []).append(rank)
    factory_gone = bool(died) and not group.factory.alive
    when = " between jobs, before this one started" if before_start else ""
    if factory_gone:
        how = _describe_exit(group.factory.proc.poll())
        causes = [f"{_ranks_text(died)} died{when}: the rank factory process (the helper that starts "
                  f"the ranks) {how}, and its ranks end with it"]
    else:
        causes = [f"rank {rank} {_describe_exit(died[rank])}{when}" for rank in sorted(died)]
    if died and raised:
        # Errors on the survivors are echoes of the death (a collective lost a member): name them, but keep
        # their tracebacks in `.tracebacks` rather than burying the cause under them.
        causes.append(f"{_ranks_text(raised)} then raised errors, probably because of it (see .tracebacks)")
    else:
        causes += [f"{_ranks_text(ranks)} raised {summary}" for summary, ranks in by_summary.items()]
    if causes:
        error_type, failed = RankError, tuple(sorted(set(died) | set(raised)))
        text = f"{spec} failed: " + "; ".join(causes)
        if pending:
            text += f"\n{_ranks_text(pending)} had not finished and were stopped"
    else:
        error_type, failed = RankTimeoutError, tuple(sorted(pending))
        finished = f"{_ranks_text(done)} finished" if done else "no rank finished"
        text = f"{spec}: {_ranks_text(pending)} did not finish within {timeout:g} s ({finished})"
    unfinished = sorted(set(pending) | set(died))
    notes = {rank: note for rank in unfinished if (note := group.progress(rank))}
    located = group.where(sorted(pending)) if pending and group.factory.alive else {}
    doing = {rank: "; ".join(part for part in (notes.get(rank) and f"last noted {notes[rank]}",
                                               located.get(rank) and f"now {located[rank]}") if part)
             for rank in unfinished}
    if factory_gone and not before_start:
        text += "\nThe rank factory process had died, and its ranks with it."
    text += "\nAll rank processes were stopped; the next run() starts fresh ones."
    if any(doing.values()):
        text += "\nWhat each unfinished rank was doing:" + "".join(
            f"\n  rank {rank}: {what}" for rank, what in doing.items() if what)
    for rank in sorted(set(pending) | set(died)):
        printed = group.output(rank)
        state = f"rank {rank} {_describe_exit(died[rank])}" if rank in died else f"rank {rank} did not finish"
        tracebacks[rank] = state + (f"; {doing[rank]}" if doing[rank] else "")
        if printed:
            part = f"\n--- what rank {rank} printed during the job ---\n{printed}"
            tracebacks[rank] += part
            if rank in died:
                text += part
        if rank in died and not factory_gone:
            tail = group.log_tail(rank)
            tracebacks[rank] += tail
            text += tail
    if not died:
        for ranks in by_summary.values():
            same = f" (the same error as {_ranks_text(ranks[1:])})" if len(ranks) > 1 else ""
            text += f"\n\n--- traceback from rank {ranks[0]}{same} ---\n{tracebacks[ranks[0]].rstrip()}"
    return error_type(text, ranks=failed, tracebacks=tracebacks, job=spec)
