"""Run the stages of `make test` one after another and say how long each took.

    python -m tools.stages "layer rules=lint-imports --no-cache" "unit=python -m pytest -q tests" ...

Each argument is NAME=COMMAND; COMMAND runs in bash from the repository root, its output passes through.
The first stage that fails stops the run (later stages are listed as skipped; `--keep-going` runs them
anyway), and the exit status is that stage's (1 if it was killed by a signal). A stage given as NAME=
(nothing after the =) is listed as "not set up yet" and neither runs nor fails.

A stage given as +NAME=COMMAND runs beside the stage after it: both start together, for a stage that leaves
a core idle much of the time (the browser tests wait on JupyterLab and Chromium) beside one that does not.
Its output is kept and shown once the stage it ran beside has finished, so the two do not interleave; if
that stage fails, it is stopped as Ctrl-C would stop it. At the end, a table (each stage's own time; the
total is the wall clock):

    make test: stage times
      layer rules       2.9 s  ok
      unit            120.0 s  ok
      browser         100.0 s  ok (beside nbval)
      nbval           119.0 s  ok
      ...
      total           301.5 s

and after it every output line that matched `--remember` (default: "... tests skipped: ..."), so that a run
still ends by saying, for instance, "browser tests skipped: Chromium not installed". To see those lines the
output passes through this process: through a pseudo-terminal when this one writes to a terminal (the
stages keep their colours and live progress), through a pipe otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Stage:
    name: str
    command: str
    beside: bool = False  # runs beside the stage after it (given as +NAME=COMMAND)


def parse_stage(text: str) -> Stage:
    name, sep, command = text.partition("=")
    beside = name.startswith("+")
    name = name.removeprefix("+").strip()
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a stage is NAME=COMMAND (or +NAME=COMMAND), got {text!r}")
    return Stage(name, command.strip(), beside)


REMEMBER = r"\btests skipped: "
_ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")


def _note(line: bytes, remember: re.Pattern, notes: list[str]) -> None:
    """Append output `line` (colours stripped) to `notes` when it matches `remember`."""
    text = _ANSI.sub(b"", line).decode(errors="replace").strip()
    if text and remember.search(text):
        notes.append(text)


def _status(code: int) -> int:
    """A stage's exit status as the run's: itself, or 1 for a stage killed by a signal (negative)."""
    return code if code >= 0 else 1


@contextlib.contextmanager
def _ended_with_us(proc: subprocess.Popen):
    """A SIGTERM to this process (a cancelled CI job; `main` turns it into SystemExit) ends the stage too."""
    try:
        yield
    except SystemExit:
        if proc.poll() is None:
            proc.terminate()
        raise


def run_passing_output(command: str, remember: re.Pattern | None, notes: list[str]) -> int:
    """Run `command` in bash; its output goes to ours as it comes, and lines matching `remember` are
    appended to `notes`. Returns the exit status (negative: killed by that signal)."""
    if remember is None:
        proc = subprocess.Popen(["bash", "-c", command], cwd=ROOT)
        with _ended_with_us(proc):
            return proc.wait()
    if sys.stdout.isatty():
        import fcntl
        import pty
        import termios

        reader, writer = pty.openpty()
        with contextlib.suppress(OSError):  # the same width as this terminal (pytest's lines fit it)
            size = fcntl.ioctl(sys.stdout.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(writer, termios.TIOCSWINSZ, size)
    else:
        reader, writer = os.pipe()
    proc = subprocess.Popen(["bash", "-c", command], cwd=ROOT, stdout=writer, stderr=writer)
    os.close(writer)
    sys.stdout.flush()
    pending = b""
    with _ended_with_us(proc):
        try:
            while True:
                try:
                    data = os.read(reader, 1 << 16)
                except OSError:  # EIO: a pseudo-terminal's other side has closed
                    break
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
                *lines, pending = (pending + data).split(b"\n")
                for line in lines + ([pending] if len(pending) > 1 << 16 else []):
                    _note(line, remember, notes)
        finally:
            os.close(reader)
    _note(pending, remember, notes)
    return proc.wait()


def _signals_as_usual() -> None:
    """In a stage's process before it starts: Ctrl-C's and SIGTERM's signals act, even where this process
    was started with SIGINT ignored (in the background) or holds them blocked (while it starts the stage)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


class _Beside:
    """A stage started in the background, its output kept in a file until the stage beside it is done."""

    def __init__(self, stage: Stage, partner: str):
        self.stage, self.partner = stage, partner
        self.log = tempfile.TemporaryFile()
        print(f"\n=== {stage.name} (beside {partner}; its output follows when {partner} is done): "
              f"{stage.command}", flush=True)
        self.start = time.monotonic()
        # Its own session, so it can be stopped as a whole (bash, pytest and what they started).
        self.proc = subprocess.Popen(["bash", "-c", stage.command], cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_signals_as_usual)
        self.seconds: float | None = None
        self._ended = threading.Thread(target=self._time_it, daemon=True)  # its own time, not its partner's
        self._ended.start()

    def _time_it(self) -> None:
        self.proc.wait()
        self.seconds = time.monotonic() - self.start

    def stop(self, gently: bool = True) -> None:
        """Stop it and whatever it started: as Ctrl-C would (tests clean up after themselves), then harder;
        `gently=False` (this run is ending on SIGTERM) starts with SIGTERM."""
        steps = ((signal.SIGINT, 30.0),) if gently else ()
        for sig, grace in (*steps, (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        with contextlib.suppress(ProcessLookupError):  # what outlived its shell in its process group
            os.killpg(self.proc.pid, signal.SIGTERM)

    def finish(self, remember: re.Pattern | None, notes: list[str]) -> int:
        """Wait for it, show what it printed (noting lines that match `remember`), return its exit status."""
        code = self.proc.wait()
        self._ended.join()
        self.log.seek(0)
        output = self.log.read()
        self.log.close()
        print(f"\n=== {self.stage.name} (ran beside {self.partner}): its output", flush=True)
        os.write(sys.stdout.fileno(), output)
        if remember is not None:
            for line in output.split(b"\n"):
                _note(line, remember, notes)
        sys.stdout.flush()
        return code


def _outcome(code: int) -> str:
    if code == 0:
        return "ok"
    return f"FAILED ({f'killed by {signal.Signals(-code).name}' if code < 0 else f'exit status {code}'})"


def run_stages(stages: list[Stage], keep_going: bool = False, title: str = "stage times",
               remember: str | None = REMEMBER) -> int:
    """Run `stages` (see the module docstring); two +stages in a row are a ValueError (nothing to pair)."""
    for first, second in zip(stages, stages[1:], strict=False):
        if first.beside and second.beside:
            raise ValueError(f"+{first.name} is followed by +{second.name}: a +stage runs beside the one stage "
                             f"after it, which must be an ordinary stage")
    results: list[tuple[str, float | None, str]] = []  # (name, seconds or None, what happened)
    notes: list[str] = []
    pattern = re.compile(remember) if remember else None
    status = 0
    start_all = time.monotonic()
    beside: tuple[_Beside, int] | None = None  # the stage running beside this one, and its row
    ending = False  # leaving on SIGTERM or an error: stop a stage beside at once, not as Ctrl-C would
    try:
        for position, stage in enumerate(stages):
            name, command = stage.name, stage.command
            if not command:
                results.append((name, None, "not set up yet"))
                continue
            if status and not keep_going:
                results.append((name, None, "skipped (an earlier stage failed)"))
                continue
            if stage.beside:
                partner = stages[position + 1] if position + 1 < len(stages) else None
                if partner is not None and partner.command:
                    # No signal between starting it and holding it here, where `finally` finds it.
                    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
                    try:
                        beside = (_Beside(stage, partner.name), len(results))
                    finally:
                        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                    results.append((name, None, "running"))
                    continue  # otherwise there is nothing to run it beside: it runs on its own, as any stage
            print(f"\n=== {name}: {command}", flush=True)
            start = time.monotonic()
            try:
                code = run_passing_output(command, pattern, notes)
            except KeyboardInterrupt:  # Ctrl-C reached the stage too (same process group): it ends by itself
                results.append((name, time.monotonic() - start, "interrupted"))
                if beside is not None:
                    beside[0].stop()
                    beside[0].finish(pattern, notes)
                    results[beside[1]] = (beside[0].stage.name, beside[0].seconds, "interrupted")
                    beside = None
                print_table(results, time.monotonic() - start_all, title, notes)
                return 130
            results.append((name, time.monotonic() - start, _outcome(code)))
            status = status or _status(code)
            if beside is not None:
                other, row = beside
                stopped = bool(code) and not keep_going and other.proc.poll() is None
                if stopped:
                    other.stop()
                other_code = other.finish(pattern, notes)
                beside = None  # only now: until it has finished, `finally` stops it on the way out
                what = f"stopped ({name} failed)" if stopped else _outcome(other_code)
                results[row] = (other.stage.name, other.seconds, f"{what} (beside {name})")
                if other_code and not stopped:
                    status = status or _status(other_code)
    except KeyboardInterrupt:  # Ctrl-C while a stage beside finishes: stop it as Ctrl-C would
        raise
    except BaseException:
        ending = True
        raise
    finally:  # leaving early (an exception, SIGTERM, Ctrl-C while waiting): no stage left running beside
        if beside is not None:
            beside[0].stop(gently=not ending)
    print_table(results, time.monotonic() - start_all, title, notes)
    return status


def print_table(results: list[tuple[str, float | None, str]], total: float, title: str,
                notes: list[str] = ()) -> None:
    width = max([len(name) for name, _, _ in results] + [5])
    print(f"\n{title}:")
    for name, seconds, what in results:
        shown = f"{seconds:7.1f} s" if seconds is not None else "      - "
        print(f"  {name:<{width}}  {shown}  {what}")
    print(f"  {'total':<{width}}  {total:7.1f} s")
    for note in dict.fromkeys(notes):  # each once, in order
        print(note)
    sys.stdout.flush()


class _Parser(argparse.ArgumentParser):
    """A usage error is one line, ``error: <the rule>``, and exit status 2 (as every command of the kit)."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m tools.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="+", type=parse_stage, metavar="NAME=COMMAND")
    parser.add_argument("--keep-going", action="store_true", help="run every stage even after one fails")
    parser.add_argument("--title", default="stage times", help="the heading of the table of times")
    parser.add_argument("--remember", default=REMEMBER, metavar="REGEX",
                        help=f"repeat output lines matching this after the table (default {REMEMBER!r}; '' for none)")
    args = parser.parse_args(argv)
    if any(a.beside and b.beside for a, b in zip(args.stages, args.stages[1:], strict=False)):
        parser.error("two +stages in a row: a +stage runs beside the one stage after it, an ordinary stage")
    # A SIGTERM (a CI job cancelled) ends this process through its `finally`s, which stop a stage running beside.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return run_stages(args.stages, args.keep_going, args.title, args.remember or None)


if __name__ == "__main__":
    sys.exit(main())
