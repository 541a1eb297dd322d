"""What runs inside the helper processes of a simulated cluster: the rank factory and each rank.

The factory imports torch once and forks ranks on request, reaps them and reports how they ended; it is
started by `utils.cluster.processes._RankFactory` as
`python -c "import utils.cluster.rank as c; c._factory_main()" CONFIG`. A rank joins the process group, then
runs jobs named `module:qualname` and sends back their results and what they printed.
"""

from __future__ import annotations

import contextlib
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
