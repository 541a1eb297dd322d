"""What runs inside the helper processes of a simulated cluster: the rank factory and each rank.

The factory imports torch once and forks ranks on request, reaps them and reports how they ended; it is
started by `utils.cluster.processes._RankFactory` as
`python -c "import utils.cluster.rank as c; c._factory_main()" CONFIG`. A rank joins the process group, then
runs jobs named `module:qualname` and sends back their results and what they printed.

Each rank is the leader of its own process group, so processes a job starts end with their rank: the
factory kills the group when it reaps the rank. What a job prints also goes, line by line, to a file the
owner reads if the rank dies (an `os._exit` leaves no time to send it), and `progress(text)` leaves a note
of what the rank is doing, which the owner quotes if the job hangs or the rank dies.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
import traceback
from datetime import timedelta
from multiprocessing import connection as mp_connection

from utils.cluster.inputs import resolve_job

#: How often the factory and the ranks check that the process that started them is still alive.
_WATCHDOG_PERIOD_S = 0.5
#: Bytes of the progress note a rank keeps (the owner reads the file when a job hangs or a rank dies).
_NOTE_BYTES = 512
_files: dict[str, int] = {}  # in a rank: "note" and "output" -> file descriptors (absent elsewhere)


def progress(text: str) -> None:
    """Note what this rank is doing now (e.g. "action 3 of 12: 1F0, waiting for its input from rank 0").

    The owner of a simulated cluster quotes the last note of every rank that hangs or dies. One write of a
    few hundred bytes, no flush needed; outside a simulated rank (under torchrun) it does nothing.
    """
    fd = _files.get("note")
    if fd is None:
        return
    data = f"{time.monotonic():.3f}\t{text}".encode(errors="replace")[:_NOTE_BYTES]
    os.pwrite(fd, data.ljust(_NOTE_BYTES, b"\0"), 0)


class _Tee(io.StringIO):
    """Captures a job's prints for the owner and writes them through to the output file at once."""

    def write(self, text: str) -> int:
        fd = _files.get("output")
        if fd is not None and text:
            with contextlib.suppress(OSError):
                os.write(fd, text.encode(errors="replace"))
        return super().write(text)


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
                            if request.get("group", True):
                                _kill_group(pid, request["sig"])
                            else:
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
        for pid in children:  # no rank (nor what its jobs started) outlives its factory
            _kill_group(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # skip the interpreter's slow tear-down of torch


def _reap(children: set[int], ctrl: socket.socket) -> None:
    """Collect ranks that ended and tell the owner how (the exit code names a killing signal).

    Before a rank is reaped, its process group (what its jobs started) is killed: while the rank is an
    unreaped zombie its pid, and so the group's id, cannot belong to anyone else.
    """
    while children:
        try:
            if hasattr(os, "waitid"):
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if info is None:
                    return
                _kill_group(info.si_pid, signal.SIGKILL)
                pid, status = os.waitpid(info.si_pid, 0)
            else:  # pragma: no cover - POSIX systems without waitid
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    return
                _kill_group(pid, signal.SIGKILL)
        except ChildProcessError:
            return
        children.discard(pid)
        ctrl.sendall((json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}) + "\n").encode())


def _kill_group(pid: int, sig: int) -> None:
    """Signal rank ``pid`` and every process of its group (what its jobs started)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _fork_rank(config: dict, fd: int, ctrl: socket.socket) -> int:
    """Fork a rank that runs `_rank_main`; in the factory, return its pid (the child never returns)."""
    pid = os.fork()
    if pid:
        os.close(fd)
        with contextlib.suppress(OSError):  # the child does it too; whichever runs first wins the race
            os.setpgid(pid, pid)
        return pid
    code = 1
    try:
        os.setpgid(0, 0)  # a process group of its own: what its jobs start is killed with it
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
            with contextlib.suppress(OSError):
                os.killpg(os.getpgrp(), signal.SIGKILL)  # this rank and what its jobs started
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
    for name in ("note", "output"):
        _files[name] = os.open(config[name], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    # SIGUSR1 writes where this rank's Python code is (even inside a C call such as a collective): the owner
    # asks for it when a job hangs, to say which rank is stuck and which ones wait for it.
    stacks = open(config["stack"], "a")  # noqa: SIM115 - kept open for the life of the rank
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=False)
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
    for fd in _files.values():  # a fresh note and output for this job
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
    out, err = _Tee(), _Tee()
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
