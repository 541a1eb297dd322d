"""Run the stages of `make test` one after another and say how long each took.

    python -m tools.stages "layer rules=lint-imports --no-cache" "unit=python -m pytest -q tests" ...

Each argument is NAME=COMMAND; COMMAND runs in bash from the repository root, its output passes through.
The first stage that fails stops the run (later stages are listed as skipped; `--keep-going` runs them
anyway), and the exit status is that stage's (1 if it was killed by a signal). A stage given as NAME=
(nothing after the =) is listed as "not set up yet" and neither runs nor fails. At the end, a table:

    make test: stage times
      layer rules       2.9 s  ok
      unit             96.0 s  ok
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_stage(text: str) -> tuple[str, str]:
    name, sep, command = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"a stage is NAME=COMMAND, got {text!r}")
    return name.strip(), command.strip()


REMEMBER = r"\btests skipped: "
_ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")


def run_passing_output(command: str, remember: re.Pattern | None, notes: list[str]) -> int:
    """Run `command` in bash; its output goes to ours as it comes, and lines matching `remember` are
    appended to `notes`. Returns the exit status (negative: killed by that signal)."""
    if remember is None:
        return subprocess.Popen(["bash", "-c", command], cwd=ROOT).wait()
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
                text = _ANSI.sub(b"", line).decode(errors="replace").strip()
                if remember.search(text):
                    notes.append(text)
    finally:
        os.close(reader)
    text = _ANSI.sub(b"", pending).decode(errors="replace").strip()
    if text and remember.search(text):
        notes.append(text)
    return proc.wait()


def run_stages(stages: list[tuple[str, str]], keep_going: bool = False, title: str = "stage times",
               remember: str | None = REMEMBER) -> int:
    results: list[tuple[str, float | None, str]] = []  # (name, seconds or None, what happened)
    notes: list[str] = []
    pattern = re.compile(remember) if remember else None
    status = 0
    start_all = time.monotonic()
    for name, command in stages:
        if not command:
            results.append((name, None, "not set up yet"))
            continue
        if status and not keep_going:
            results.append((name, None, "skipped (an earlier stage failed)"))
            continue
        print(f"\n=== {name}: {command}", flush=True)
        start = time.monotonic()
        try:
            code = run_passing_output(command, pattern, notes)
        except KeyboardInterrupt:  # Ctrl-C reached the stage too (same process group): it ends by itself
            results.append((name, time.monotonic() - start, "interrupted"))
            print_table(results, time.monotonic() - start_all, title, notes)
            return 130
        seconds = time.monotonic() - start
        if code == 0:
            results.append((name, seconds, "ok"))
        else:
            why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            results.append((name, seconds, f"FAILED ({why})"))
            status = status or (code if code > 0 else 1)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="+", type=parse_stage, metavar="NAME=COMMAND")
    parser.add_argument("--keep-going", action="store_true", help="run every stage even after one fails")
    parser.add_argument("--title", default="stage times", help="the heading of the table of times")
    parser.add_argument("--remember", default=REMEMBER, metavar="REGEX",
                        help=f"repeat output lines matching this after the table (default {REMEMBER!r}; '' for none)")
    args = parser.parse_args(argv)
    return run_stages(args.stages, args.keep_going, args.title, args.remember or None)


if __name__ == "__main__":
    sys.exit(main())
