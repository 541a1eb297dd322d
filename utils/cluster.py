"""A simulated GPU cluster: `world_size` real OS processes in one real torch.distributed process group.

In this course a "GPU" is a rank: a Python process that has joined a `gloo` process group on this machine.
Expert parallelism (DeepSeek-V3 report, section 3.2) and pipeline parallelism (section 3.2.1) are about what
ranks send each other, and that part is real here: the same `all_to_all`, `isend`/`irecv` and `all_reduce`
calls a multi-GPU job makes, between real processes.

    from utils.cluster import SimulatedCluster, RankError
    from utils.cluster_jobs import ring_demo

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

The same job functions run on real GPUs under torchrun: see `utils/launch.py`.
POSIX only (Linux, macOS): ranks are forked, and talk to this process over socket pairs.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import io
import json
import math
import numbers
import os
import pickle
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from datetime import timedelta
from multiprocessing import connection as mp_connection
from pathlib import Path
from typing import Any

__all__ = ["SimulatedCluster", "RankError", "RankTimeoutError", "check_job", "resolve_job", "MAX_WORLD_SIZE",
           "BACKENDS"]

#: Each rank is a process with its own copy of torch (a few hundred MB of memory and about a second of
#: start-up), so a laptop runs out long before a real cluster would.
MAX_WORLD_SIZE = 32
#: gloo runs on CPUs (every machine); nccl needs one CUDA GPU per rank.
BACKENDS = ("gloo", "nccl")
#: After the first rank reports a fault, wait this long for the others to report theirs (a bug that raises
#: on every rank should name every rank), then stop the cluster rather than wait for collective timeouts.
_FAULT_GRACE_S = 1.0
#: How long `close()` lets ranks leave the process group politely before SIGTERM, and SIGTERM before SIGKILL.
_STOP_GRACE_S = 3.0
_KILL_GRACE_S = 2.0
#: How often the factory and the ranks check that the process that started them is still alive.
_WATCHDOG_PERIOD_S = 0.5


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


# --------------------------------------------------------------------------------------------- jobs by name

def resolve_job(spec: str) -> Callable:
    """Import and return the function named by `module:qualname` (what each rank does with a job)."""
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError("a job is named 'module:function' (e.g. 'utils.cluster_jobs:ring_demo'); "
                         f"got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def check_job(fn: Callable) -> str:
    """Return `fn`'s `module:qualname` if rank processes can import it; else raise ValueError saying why."""
    if not callable(fn):
        raise ValueError(f"cluster.run needs a function to run on every rank, got {type(fn).__name__} {fn!r}")
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if module is None or qualname is None:
        raise ValueError(
            f"cluster.run needs a plain module-level function, got {fn!r}, which has no importable name "
            "(functools.partial and callable objects have none). Pass extra arguments through "
            "cluster.run(fn, *args, **kwargs) instead.")
    why = None
    if module in ("__main__", "__mp_main__"):
        why = "it is defined in a notebook cell or a script (module __main__)"
    elif "<lambda>" in qualname:
        why = "it is a lambda, which has no name to import"
    elif "<locals>" in qualname:
        why = "it is defined inside another function, so it has no name to import"
    if why is None:
        try:
            found = resolve_job(f"{module}:{qualname}")
        except Exception as exc:  # noqa: BLE001 - any import failure means the ranks cannot import it either
            why = f"importing it by name failed ({type(exc).__name__}: {exc})"
        else:
            if found is not fn:
                why = f"the name {module}:{qualname} refers to a different object"
    if why is not None:
        raise ValueError(
            f"cluster.run cannot send {qualname} to the ranks: {why}. Each rank is a separate Python process "
            "that imports the job function by name (module:function); it cannot see code defined in a "
            "notebook cell. Put the function in a module under utils/ (for example utils/cluster_jobs.py) "
            "and import it from there.")
    return f"{module}:{qualname}"


# ------------------------------------------------------------------------------------------ input checking

def _check_world_size(world_size: Any) -> int:
    if isinstance(world_size, bool) or not isinstance(world_size, numbers.Integral):
        raise ValueError(f"world_size is the number of ranks, a whole number from 1 to {MAX_WORLD_SIZE}; "
                         f"got {world_size!r}")
    world_size = int(world_size)
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1 (a cluster needs a rank to run on); "
                         f"got {world_size}")
    if world_size > MAX_WORLD_SIZE:
        raise ValueError(f"world_size must be at most {MAX_WORLD_SIZE}: each simulated rank is a real "
                         "process with its own copy of torch (a few hundred MB, about a second to start), "
                         f"so {world_size} would swamp this machine; got {world_size}")
    return world_size


def _check_timeout(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} is a number of seconds greater than 0; got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds greater than 0 (it bounds how long "
                         f"we wait for the ranks before reporting them stuck); got {value!r}")
    return value


def _check_backend(backend: Any, world_size: int) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (gloo runs on CPUs, nccl on CUDA "
                         f"GPUs); got {backend!r}")
    if backend == "nccl":
        import torch
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < world_size:
            raise ValueError(f"backend='nccl' needs one CUDA GPU per rank: world_size={world_size} but this "
                             f"machine has {count}. Use backend='gloo' to simulate GPUs with CPU processes.")
    return backend


def _loopback_interface() -> str | None:
    """Name of the loopback interface ('lo' on Linux, 'lo0' on macOS), so gloo listens on 127.0.0.1 only."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (OSError, AttributeError):
        return None
    for name in names:
        if name.startswith("lo"):
            return name
    return None


# ------------------------------------------------------------------------------------- the rank processes

def _describe_exit(code: int | None) -> str:
    """How a process ended, from its exit code (negative: killed by that signal)."""
    if code is None:
        return "died (its exit status is unknown)"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _ranks_text(ranks) -> str:
    ranks = sorted(ranks)
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(str(r) for r in ranks)


def _log_tail(path: Path, title: str, lines: int = 15) -> str:
    """The last lines of a process's log (crashes, C++ warnings), for error messages; "" if empty."""
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return f"\n--- last output of {title} ---\n" + "\n".join(text.splitlines()[-lines:]) if text else ""


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    # One thread per rank: 4 ranks share 2 cores here, and a BLAS thread pool in the factory would not
    # survive the fork that makes a rank.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = "1"
    loopback = _loopback_interface()
    if loopback and "GLOO_SOCKET_IFNAME" not in env:
        env["GLOO_SOCKET_IFNAME"] = loopback  # gloo then listens on 127.0.0.1 only
    return env


class _RankFactory:
    """Talks to the factory process, which imports torch once and forks rank processes on request.

    The factory is the ranks' parent: it reaps them and reports how they ended, and it sends them signals
    on request (only the parent knows for sure that a pid still belongs to its child, not to a stranger
    that inherited a recycled pid). It kills its ranks and exits when this process goes away.
    """

    def __init__(self, logdir: Path, start_timeout: float):
        self.log = logdir / "factory.log"
        self.ctrl, theirs = socket.socketpair()
        config = {"fd": theirs.fileno(), "owner_pid": os.getpid(),
                  "sys_path": [p for p in sys.path if isinstance(p, str)]}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import utils.cluster as c; c._factory_main()", json.dumps(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, pass_fds=(theirs.fileno(),),
                env=_child_environment(), cwd=os.getcwd())
        theirs.close()
        self.exits: dict[int, int | None] = {}  # pid -> exit code, as the factory reaps its ranks
        self.dead = False
        self._replies: dict[int, dict] = {}
        self._buffer = b""
        self._last_id = 0
        try:
            self.request({"op": "hello"}, timeout=start_timeout)  # answered once torch is imported
        except BaseException:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        return not self.dead and self.proc.poll() is None

    def pump(self, timeout: float) -> None:
        """Take in what the factory said within `timeout` seconds: replies and reports of ranks that ended."""
        if self.dead:
            time.sleep(max(0.0, min(timeout, 0.05)))
            return
        ready, _, _ = select.select([self.ctrl], [], [], max(0.0, timeout))
        if not ready:
            return
        try:
            data = self.ctrl.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self.dead = True
            return
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            message = json.loads(line)
            if "exit" in message:
                self.exits[message["exit"]] = message["code"]
            else:
                self._replies[message["id"]] = message

    def request(self, request: dict, fd: int | None = None, timeout: float = 30.0) -> dict:
        """Send one request (with `fd` attached, for a fork) and wait for its reply."""
        self._last_id += 1
        request = dict(request, id=self._last_id)
        try:
            socket.send_fds(self.ctrl, [(json.dumps(request) + "\n").encode()], [] if fd is None else [fd])
        except OSError:
            self.dead = True
        deadline = time.monotonic() + timeout
        while self._last_id not in self._replies:
            left = deadline - time.monotonic()
            if self.dead or left <= 0:
                state = "died" if self.dead else f"did not answer within {timeout:g} s"
                raise RuntimeError(f"the rank factory process {state}.{_log_tail(self.log, 'the factory')}")
            self.pump(left)
        return self._replies.pop(self._last_id)

    def fork(self, config: dict, fd: int) -> int:
        """Start a rank: the factory forks a child that runs `_rank_main(config, fd)`; return its pid."""
        return self.request({"op": "fork", "config": config}, fd)["pid"]

    def signal(self, pids: list[int], sig: int) -> None:
        if pids and self.alive:
            with contextlib.suppress(RuntimeError):
                self.request({"op": "signal", "pids": pids, "sig": int(sig)}, timeout=5.0)

    def wait_exits(self, pids: list[int], timeout: float) -> list[int]:
        """Wait up to `timeout` seconds for the ranks `pids` to end; return those still running."""
        deadline = time.monotonic() + timeout
        while True:
            left = [pid for pid in pids if pid not in self.exits]
            if not left or self.dead or time.monotonic() >= deadline:
                return left
            self.pump(deadline - time.monotonic())

    def exit_code(self, pid: int, timeout: float = 1.0) -> int | None:
        """Exit code of a rank whose pipe closed (the factory's report may lag a moment behind)."""
        self.wait_exits([pid], timeout)
        return self.exits.get(pid)

    def close(self) -> None:
        """Ask the factory to kill any rank it still has and exit; make sure it did."""
        if self.alive:
            with contextlib.suppress(RuntimeError):
                self.request({"op": "quit"}, timeout=5.0)
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.dead = True
        self.ctrl.close()


class _RankGroup:
    """The rank processes of one start of a cluster, with their pipes and rendezvous store."""

    def __init__(self, factory: _RankFactory, world_size: int, backend: str, timeout: float,
                 start_timeout: float, logdir: Path):
        import torch.distributed as dist

        self.factory = factory
        self.world_size = world_size
        self.logdir = logdir
        self.conns: list[mp_connection.Connection] = []
        self.pids: list[int] = []
        self.stopped = False
        # The store lives here, not in rank 0, so its port is known before any rank starts and no port is
        # ever guessed: the OS picks a free one (port 0). We bind the socket ourselves because TCPStore
        # alone would listen on every interface; this one accepts connections from this machine only.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(2 * world_size + 8)
        port = listener.getsockname()[1]
        fd = listener.detach()  # the store owns (and closes) the socket from now on
        try:
            self.store = dist.TCPStore("127.0.0.1", port, None, True, timedelta(seconds=start_timeout),
                                       wait_for_workers=False, master_listen_fd=fd)
        except BaseException:
            os.close(fd)
            raise
        try:
            for rank in range(world_size):
                parent_conn, child_conn = mp_connection.Pipe(duplex=True)
                config = {"rank": rank, "world_size": world_size, "backend": backend, "port": self.store.port,
                          "timeout": timeout, "log": str(logdir / f"rank{rank}.log"),
                          "sys_path": [p for p in sys.path if isinstance(p, str)]}
                self.conns.append(parent_conn)
                self.pids.append(factory.fork(config, child_conn.fileno()))
                child_conn.close()  # only the rank holds its end now: its death closes the pipe
            self._wait_ready(start_timeout)
        except BaseException:
            self.stop(graceful=False)
            raise

    def _wait_ready(self, start_timeout: float) -> None:
        deadline = time.monotonic() + start_timeout
        waiting = set(range(self.world_size))
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{_ranks_text(waiting)} did not join the process group within "
                                   f"{start_timeout:g} s (start_timeout); the machine may be overloaded."
                                   f"{self.log_tail(min(waiting))}")
            for conn in mp_connection.wait([self.conns[r] for r in waiting], timeout=min(left, 0.5)):
                rank = self.conns.index(conn)
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    raise RuntimeError(f"rank {rank} {_describe_exit(self.exit_code(rank))} while starting."
                                       f"{self.log_tail(rank)}") from None
                if message[0] != "ready":
                    raise RuntimeError(f"rank {rank} could not join the process group:\n{message[1]}")
                waiting.discard(rank)

    def exit_code(self, rank: int) -> int | None:
        return self.factory.exit_code(self.pids[rank])

    def ended(self) -> set[int]:
        """Ranks whose process has ended, as far as the factory has reported."""
        self.factory.pump(0)
        return {rank for rank, pid in enumerate(self.pids) if pid in self.factory.exits}

    def log_tail(self, rank: int) -> str:
        return _log_tail(self.logdir / f"rank{rank}.log", f"rank {rank}")

    def stop(self, graceful: bool) -> None:
        """Stop every rank process: politely if `graceful`, then SIGTERM, then SIGKILL. Runs once."""
        if self.stopped:
            return
        self.stopped = True
        left = list(self.pids)
        if graceful:
            for conn in self.conns:
                with contextlib.suppress(OSError, ValueError):
                    conn.send(("stop",))
            left = self.factory.wait_exits(left, _STOP_GRACE_S)
        for sig, grace in ((signal.SIGTERM, _KILL_GRACE_S), (signal.SIGKILL, 5.0)):
            self.factory.signal(left, sig)
            left = self.factory.wait_exits(left, grace)
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()
        self.store = None


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
        self._world_size = _check_world_size(world_size)
        self._backend = _check_backend(backend, self._world_size)
        self._timeout = _check_timeout(timeout, "timeout")
        self._start_timeout = _check_timeout(start_timeout, "start_timeout")
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
        """True while rank processes are up (False after close() or after a fault, until the next run)."""
        return self._group is not None and not self._group.stopped

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
        timeout = self._timeout if timeout is None else _check_timeout(timeout, "timeout")
        try:
            payload = pickle.dumps((args, kwargs))
        except Exception as exc:
            raise ValueError(f"the arguments of {spec} must be picklable to reach the ranks (tensors, "
                             "numbers, lists, dicts, importable functions): "
                             f"{type(exc).__name__}: {exc}") from None
        with self._lock:
            self._check_open()
            if not self.running:
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
        for conn in group.conns:
            conn.send(("job", spec, payload))
        deadline = time.monotonic() + timeout
        pending = set(range(n))
        # rank -> ("ok", result bytes, out, err) or ("error", summary, traceback, out, err)
        done: dict[int, tuple] = {}
        died: dict[int, int | None] = {}
        first_fault: float | None = None
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
           pending: set[int], done: dict[int, tuple]) -> RankError:
    """Build the error for a failed job. Its first line names the failed ranks and how they failed."""
    tracebacks = {rank: done[rank][2] for rank in raised}
    by_summary: dict[str, list[int]] = {}  # ranks that raised, grouped by what they raised
    for rank in raised:
        by_summary.setdefault(done[rank][1], []).append(rank)
    causes = [f"rank {rank} {_describe_exit(died[rank])}" for rank in sorted(died)]
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
        text = f"{spec}: {_ranks_text(pending)} did not finish within {timeout:g} s"
        if done:
            text += f" ({_ranks_text(done)} finished)"
    if died and group.factory.dead:
        text += "\nThe rank factory process had died, and its ranks with it."
    text += "\nAll rank processes were stopped; the next run() starts fresh ones."
    for rank in sorted(died):
        tail = group.log_tail(rank)
        tracebacks[rank] = f"rank {rank} {_describe_exit(died[rank])}{tail}"
        text += tail
    if not died:
        for ranks in by_summary.values():
            same = f" (the same error as {_ranks_text(ranks[1:])})" if len(ranks) > 1 else ""
            text += f"\n\n--- traceback from rank {ranks[0]}{same} ---\n{tracebacks[ranks[0]].rstrip()}"
    return error_type(text, ranks=failed, tracebacks=tracebacks, job=spec)


# ------------------------------------------------------------------------------------- the factory side

def _factory_main() -> None:
    """Entry point of the factory process: import torch once, then fork ranks until told to quit."""
    config = json.loads(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner handles Ctrl-C and Jupyter's interrupt
    for path in reversed(config["sys_path"]):
        if path not in sys.path:
            sys.path.insert(0, path)
    ctrl = socket.socket(fileno=config["fd"])
    import torch  # noqa: F401 - the point of the factory: every rank forked from here has torch already
    import torch.distributed  # noqa: F401

    children: set[int] = set()
    buffer, fds = b"", []
    try:
        while os.getppid() == config["owner_pid"]:
            _reap(children, ctrl)
            if not select.select([ctrl], [], [], _WATCHDOG_PERIOD_S / 5)[0]:
                continue
            data, new_fds, _, _ = socket.recv_fds(ctrl, 1 << 20, 16)
            if not data:
                break  # the owner is gone
            fds += new_fds
            *lines, buffer = (buffer + data).split(b"\n")
            for line in lines:
                request = json.loads(line)
                reply: dict = {"id": request["id"]}
                if request["op"] == "fork":
                    reply["pid"] = _fork_rank(request["config"], fds.pop(0), ctrl)
                    children.add(reply["pid"])
                elif request["op"] == "signal":
                    for pid in request["pids"]:
                        if pid in children:  # never signal a pid that is no longer our child
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, request["sig"])
                ctrl.sendall((json.dumps(reply) + "\n").encode())
                if request["op"] == "quit":
                    return
    except OSError:
        pass  # the owner is gone
    except Exception:  # noqa: BLE001 - into the factory's log, which error messages quote
        traceback.print_exc()
    finally:
        for pid in children:  # no rank outlives its factory
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # skip the interpreter's slow tear-down of torch


def _reap(children: set[int], ctrl: socket.socket) -> None:
    """Collect ranks that ended and tell the owner how (the exit code names a killing signal)."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        ctrl.sendall((json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}) + "\n").encode())


def _fork_rank(config: dict, fd: int, ctrl: socket.socket) -> int:
    """Fork a rank that runs `_rank_main`; in the factory, return its pid (the child never returns)."""
    pid = os.fork()
    if pid:
        os.close(fd)
        return pid
    code = 1
    try:
        ctrl.close()
        log = os.open(config["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)  # what the rank prints outside jobs (crashes, C++ warnings) goes to its log
        os.dup2(log, 2)
        os.close(log)
        code = _rank_main(config, mp_connection.Connection(fd))
    except BaseException:  # noqa: BLE001 - a rank must never return into the factory's loop
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)  # also skips the interpreter's slow tear-down of torch


# ---------------------------------------------------------------------------------------- the rank side

def _watch_parent(parent_pid: int) -> None:
    """Exit this process when its parent is gone: no rank outlives its factory, no factory its owner."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(3)
        time.sleep(_WATCHDOG_PERIOD_S)


def _rank_main(config: dict, conn: mp_connection.Connection) -> int:
    """Body of a rank process: join the group, then run jobs from the owner until told to stop."""
    import torch
    import torch.distributed as dist

    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    for path in reversed(config["sys_path"]):  # the owner's import path, so its modules import here too
        if path not in sys.path:
            sys.path.insert(0, path)
    rank, world_size = config["rank"], config["world_size"]
    try:
        torch.set_num_threads(1)
        timeout = timedelta(seconds=config["timeout"])
        store = dist.TCPStore("127.0.0.1", config["port"], None, False, timeout)
        if config["backend"] == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(config["backend"], store=store, rank=rank, world_size=world_size,
                                timeout=timeout)
    except BaseException:  # noqa: BLE001 - report any start-up failure to the owner
        conn.send(("init_error", traceback.format_exc()))
        return 1
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break  # the owner is gone
        if message[0] == "stop":
            break
        conn.send(_run_one(message[1], message[2]))
    with contextlib.suppress(Exception):
        dist.destroy_process_group()
    return 0


def _run_one(spec: str, payload: bytes) -> tuple:
    """Run one job, capturing its prints: ("ok", result, out, err) or ("error", summary, tb, out, err)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            fn = resolve_job(spec)
            args, kwargs = pickle.loads(payload)
            result = fn(*args, **kwargs)
            data = pickle.dumps(result)
        except BaseException as exc:  # noqa: BLE001 - everything a job does wrong goes back to the parent
            summary = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
            # Start the traceback at the job, not at this wrapper.
            tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
            text = "".join(traceback.format_exception(type(exc), exc, tb))
            return ("error", summary, text, out.getvalue(), err.getvalue())
    return ("ok", data, out.getvalue(), err.getvalue())
