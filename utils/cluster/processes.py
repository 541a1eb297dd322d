"""The owner's side of a simulated cluster: the rank factory it talks to, and the rank processes of one start.

`_RankFactory` starts the factory process (`utils.cluster.rank._factory_main`) and asks it to fork ranks and
signal them; `_RankGroup` hosts the rendezvous store, starts `world_size` ranks, waits for them to join the
process group and stops them. `utils.cluster.cluster.SimulatedCluster` drives both; see it for the design.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from multiprocessing import connection as mp_connection
from pathlib import Path

#: How long `close()` lets ranks leave the process group politely before SIGTERM, and SIGTERM before SIGKILL.
_STOP_GRACE_S = 3.0
_KILL_GRACE_S = 2.0
#: What the factory process runs: a fresh interpreter that imports only the rank side (and, there, torch).
_FACTORY_ENTRY = "import utils.cluster.rank as c; c._factory_main()"


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


def _innermost(path: Path) -> str:
    """From a faulthandler dump: "in f (file:line)", plus ", called from g (file:line)" for the innermost
    frame of the job's own code when the innermost frame is in a library (torch) or the cluster's loop."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    frames = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("File "):  # File "/x/y.py", line 12 in name
            where, _, name = line[5:].rpartition(" in ")
            file, _, number = where.rpartition(", line ")
            frames.append((name, f"{Path(file.strip(chr(34))).name}:{number}", file))
    if not frames:
        return ""
    text = f"in {frames[0][0]} ({frames[0][1]})"
    own = [f for f in frames if "site-packages" not in f[2] and not f[2].endswith("/utils/cluster/rank.py")
           and "/lib/python" not in f[2]]
    if own and own[0] is not frames[0]:
        text += f", called from {own[0][0]} ({own[0][1]})"
    return text


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
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
                [sys.executable, "-c", _FACTORY_ENTRY, json.dumps(config)],
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

    def signal(self, pids: list[int], sig: int, group: bool = True) -> None:
        """Send `sig` to the ranks `pids` (with `group`, to what their jobs started too)."""
        if pids and self.alive:
            with contextlib.suppress(RuntimeError):
                self.request({"op": "signal", "pids": pids, "sig": int(sig), "group": group}, timeout=5.0)

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
                          "note": str(self._path(rank, "note")), "output": str(self._path(rank, "out")),
                          "stack": str(self._path(rank, "stack")),
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

    def _path(self, rank: int, kind: str) -> Path:
        return self.logdir / f"rank{rank}.{kind}"

    def where(self, ranks, wait_s: float = 0.5) -> dict[int, str]:
        """Where each of `ranks` is in its Python code now, as "in f (file:line), called from g (...)".

        Each rank dumps its stack (faulthandler, on SIGUSR1) into a file; this reads the innermost frame and
        the innermost one of the job's own code (outside torch and the cluster's loop)."""
        ranks = [r for r in ranks if self.pids[r] not in self.factory.exits]
        for rank in ranks:
            with contextlib.suppress(OSError):
                self._path(rank, "stack").write_text("")
        self.factory.signal([self.pids[r] for r in ranks], signal.SIGUSR1, group=False)
        found: dict[int, str] = {}
        deadline = time.monotonic() + wait_s
        while len(found) < len(ranks) and time.monotonic() < deadline:
            time.sleep(0.05)
            for rank in ranks:
                if rank not in found and (text := _innermost(self._path(rank, "stack"))):
                    found[rank] = text
        return found

    def progress(self, rank: int) -> str | None:
        """The last note rank `rank` left in this job (`utils.cluster.rank.progress`), with its age."""
        try:
            raw = self._path(rank, "note").read_bytes().rstrip(b"\0").decode(errors="replace")
        except OSError:
            return None
        stamp, sep, text = raw.partition("\t")
        if not sep:
            return None
        try:
            age = time.monotonic() - float(stamp)
        except ValueError:
            return text
        return f"{text} ({age:.1f} s ago)"

    def output(self, rank: int, lines: int = 20) -> str:
        """The last `lines` lines rank `rank` printed during this job ("" if none)."""
        try:
            text = self._path(rank, "out").read_text(errors="replace").rstrip()
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def dead(self) -> dict[int, int | None]:
        """Ranks that are gone, as far as the factory has reported (all of them if the factory is gone)."""
        if not self.factory.alive:
            return dict.fromkeys(range(self.world_size))
        self.factory.pump(0)
        return {rank: self.factory.exits[pid] for rank, pid in enumerate(self.pids) if pid in self.factory.exits}

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
