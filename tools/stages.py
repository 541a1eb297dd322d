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
"""

from __future__ import annotations

import argparse
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


def run_stages(stages: list[tuple[str, str]], keep_going: bool = False, title: str = "stage times") -> int:
    results: list[tuple[str, float | None, str]] = []  # (name, seconds or None, what happened)
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
        proc = subprocess.Popen(["bash", "-c", command], cwd=ROOT)
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the stage too (same process group): let it end, then stop
            code = proc.wait()
            results.append((name, time.monotonic() - start, "interrupted"))
            print_table(results, time.monotonic() - start_all, title)
            return 130
        seconds = time.monotonic() - start
        if code == 0:
            results.append((name, seconds, "ok"))
        else:
            why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            results.append((name, seconds, f"FAILED ({why})"))
            status = status or (code if code > 0 else 1)
    print_table(results, time.monotonic() - start_all, title)
    return status


def print_table(results: list[tuple[str, float | None, str]], total: float, title: str) -> None:
    width = max([len(name) for name, _, _ in results] + [5])
    print(f"\n{title}:")
    for name, seconds, what in results:
        shown = f"{seconds:7.1f} s" if seconds is not None else "      - "
        print(f"  {name:<{width}}  {shown}  {what}")
    print(f"  {'total':<{width}}  {total:7.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="+", type=parse_stage, metavar="NAME=COMMAND")
    parser.add_argument("--keep-going", action="store_true", help="run every stage even after one fails")
    parser.add_argument("--title", default="stage times", help="the heading of the table of times")
    args = parser.parse_args(argv)
    return run_stages(args.stages, args.keep_going, args.title)


if __name__ == "__main__":
    sys.exit(main())
