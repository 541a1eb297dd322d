"""The slowest tests, so a regression in the test suite's time is seen by the next person who runs it.

    python -m tools.slowest_tests                        # read test-output/junit-unit.xml (`make test` writes it)
    python -m tools.slowest_tests some.xml --top 20      # any JUnit XML pytest wrote (--junitxml=...)
    python -m tools.slowest_tests --run -- -m "not browser" tests/   # run pytest now, then report

Prints the ten slowest tests (setup + call + teardown, as pytest's JUnit report counts them) and the ten
slowest test files, with their share of the total. The JUnit XML is pytest's own format, so the numbers are
the same with or without pytest-xdist (`-n 2`): per test, not wall clock of the whole run.
Exit status: 0, or 2 when the XML is missing or unreadable (with one line saying why).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_XML = ROOT / "test-output" / "junit-unit.xml"


def read_durations(xml_path: Path) -> list[tuple[str, float, str]]:
    """(test id, seconds, outcome) of every test case in a JUnit XML written by pytest."""
    cases = []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        file = case.get("file")
        if not file:  # junit_family xunit2 (pytest's default) has no file attribute: a.b.test_x -> a/b/test_x.py
            parts = classname.split(".")
            while parts and not parts[-1].startswith("test"):
                parts.pop()  # a test class's name
            file = "/".join(parts) + ".py" if parts else classname
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
        cases.append((f"{file}::{name}", float(case.get("time", 0) or 0), outcome))
    return cases


def report(cases: list[tuple[str, float, str]], top: int = 10) -> str:
    total = sum(seconds for _, seconds, _ in cases) or 1e-9
    lines = [f"{len(cases)} tests, {total:.1f} s in total (summed per test; wall clock is less with -n 2)",
             "", f"The {top} slowest tests:"]
    for test, seconds, outcome in sorted(cases, key=lambda c: -c[1])[:top]:
        note = "" if outcome == "passed" else f"  [{outcome}]"
        lines.append(f"  {seconds:7.2f} s  {100 * seconds / total:4.1f}%  {test}{note}")
    per_file: dict[str, list[float]] = defaultdict(list)
    for test, seconds, _ in cases:
        per_file[test.split("::", 1)[0]].append(seconds)
    lines += ["", f"The {top} slowest files:"]
    for file, times in sorted(per_file.items(), key=lambda kv: -sum(kv[1]))[:top]:
        lines.append(f"  {sum(times):7.2f} s  {100 * sum(times) / total:4.1f}%  {file} ({len(times)} tests)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.slowest_tests", description=__doc__.split("\n\n")[0])
    parser.add_argument("xml", nargs="?", type=Path, default=None,
                        help=f"a JUnit XML from pytest (default: {DEFAULT_XML.relative_to(ROOT)})")
    parser.add_argument("--top", type=int, default=10, help="how many tests and files to list (default 10)")
    parser.add_argument("--run", action="store_true",
                        help="run pytest now (arguments after --; default: the unit tests) and report on that run")
    parser.add_argument("pytest_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be at least 1")
    if args.run:
        with tempfile.TemporaryDirectory() as tmp:
            xml = Path(tmp) / "junit.xml"
            pytest_args = args.pytest_args or ["-q", "-m", "not browser"]
            subprocess.run([sys.executable, "-m", "pytest", *pytest_args, f"--junitxml={xml}"], cwd=ROOT)
            if not xml.exists():
                print("error: pytest wrote no JUnit XML (see its output above)", file=sys.stderr)
                return 2
            print(report(read_durations(xml), args.top))
        return 0
    xml = args.xml or DEFAULT_XML
    if not xml.exists():
        print(f"error: {xml} not found: run `make test` (or `make unit`) first, or pass --run", file=sys.stderr)
        return 2
    try:
        cases = read_durations(xml)
    except ET.ParseError as exc:
        print(f"error: {xml} is not a JUnit XML ({exc})", file=sys.stderr)
        return 2
    print(report(cases, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
