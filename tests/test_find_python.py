"""Which Python builds .venv: tools/find_python.sh, and the Makefile rules that use its answer.

The script runs against a PATH that holds only stub interpreters (shell scripts answering the probe the way
a real Python would), so the machine's own Pythons never leak in. The Makefile is exercised in a scratch copy
of its inputs, with stubs that also play `-m venv` and `-m pip`, so the real .venv is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "find_python.sh"
SH = shutil.which("sh") or "/bin/sh"

# A stub interpreter: answers the isolated probe (`-I -c ...`) with "X.Y.Z /real/path", like a real Python.
STUB = """#!/bin/sh
if [ "$1" = "-I" ] && [ "$2" = "-c" ]; then echo "{version} {real}"; exit 0; fi
exit 3
"""


def stub(folder: Path, name: str, version: str, body: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(body if body is not None else STUB.format(version=version, real=f"/opt/py{version}/bin/python"))
    path.chmod(0o755)
    return path


def find(path_dirs: list[Path], python: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": os.pathsep.join(str(d) for d in path_dirs), "HOME": os.environ.get("HOME", "/tmp")}
    if python is not None:
        env["PYTHON"] = python
    return subprocess.run([SH, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)


def supported_versions() -> list[str]:
    text = SCRIPT.read_text()
    low = int(re.search(r"^MIN_MINOR=(\d+)", text, re.M).group(1))
    high = int(re.search(r"^MAX_MINOR=(\d+)", text, re.M).group(1))
    return [f"3.{m}" for m in range(low, high + 1)]


def test_supported_range_starts_where_the_project_requires_and_ends_at_3_14():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == f">={supported_versions()[0]}"
    # torch 2.13.0 publishes CPython wheels up to cp314 (checked on PyPI); raise together with the torch pin.
    assert supported_versions()[-1] == "3.14"


def test_takes_the_first_supported_version_on_path(tmp_path):
    bin_ = tmp_path / "bin"
    stub(bin_, "python3.12", "3.12.4")
    stub(bin_, "python3.13", "3.13.1")
    stub(bin_, "python3", "3.13.1")
    result = find([bin_])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "3.12.4 /opt/py3.12.4/bin/python\n"


def test_falls_back_to_python3_then_python(tmp_path):
    bin_ = tmp_path / "bin"
    stub(bin_, "python", "3.11.9")
    assert find([bin_]).stdout == "3.11.9 /opt/py3.11.9/bin/python\n"
    stub(bin_, "python3", "3.14.0")
    assert find([bin_]).stdout == "3.14.0 /opt/py3.14.0/bin/python\n"


def test_skips_names_that_lie_about_their_version_or_do_not_run(tmp_path):
    bin_ = tmp_path / "bin"
    stub(bin_, "python3.11", "3.10.13")                          # a mislabelled 3.10
    stub(bin_, "python3.12", "", body="#!/bin/sh\necho 'pyenv: python3.12: command not found' >&2\nexit 127\n")
    stub(bin_, "python3.13", "", body="#!/bin/sh\necho garbage\n")
    stub(bin_, "python3", "3.15.0")                              # too new
    stub(bin_, "python", "3.13.2")
    result = find([bin_])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "3.13.2 /opt/py3.13.2/bin/python\n"


@pytest.mark.parametrize("version", ["3.11.0", "3.12.1", "3.13.0", "3.14.2"])
def test_python_variable_accepts_each_supported_version(tmp_path, version):
    chosen = stub(tmp_path / "elsewhere", "mypython", version)
    stub(tmp_path / "bin", "python3.11", "3.11.7")   # PYTHON= wins over what is on PATH
    result = find([tmp_path / "bin"], python=str(chosen))
    assert (result.returncode, result.stdout) == (0, f"{version} /opt/py{version}/bin/python\n")


def test_python_variable_may_name_a_command_on_path(tmp_path):
    stub(tmp_path / "bin", "python3.13", "3.13.0")
    stub(tmp_path / "bin", "python3.11", "3.11.7")
    assert find([tmp_path / "bin"], python="python3.13").stdout.startswith("3.13.0 ")


@pytest.mark.parametrize("version,why", [
    ("3.10.13", "too old"), ("2.7.18", "too old"),
    ("3.15.0", "newer than torch 2.13 supports"), ("4.0.0", "newer than torch 2.13 supports")])
def test_python_variable_outside_the_range_is_refused_saying_why(tmp_path, version, why):
    chosen = stub(tmp_path / "elsewhere", "py", version)
    stub(tmp_path / "bin", "python3.11", "3.11.7")   # never used as a silent substitute
    result = find([tmp_path / "bin"], python=str(chosen))
    assert result.returncode == 1 and result.stdout == ""
    assert f"Python {version} is {why}" in result.stderr
    assert "Supported: Python 3.11, 3.12, 3.13 or 3.14." in result.stderr
    assert "PYTHON=" in result.stderr


def test_python_variable_that_does_not_exist(tmp_path):
    result = find([tmp_path], python="python3.99")
    assert result.returncode == 1
    assert "python3.99: not found" in result.stderr


def test_nothing_suitable_lists_what_was_tried_and_the_supported_versions(tmp_path):
    bin_ = tmp_path / "bin"
    stub(bin_, "python3", "3.10.13")
    stub(bin_, "python3.12", "", body="#!/bin/sh\necho 'pyenv: python3.12: command not found' >&2\nexit 127\n")
    result = find([bin_])
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "No supported Python for the course. Supported: Python 3.11, 3.12, 3.13 or 3.14."
    assert "  python3.11: not found" in lines
    assert any(line.startswith("  python3.12 (") and "pyenv: python3.12: command not found" in line
               for line in lines)
    assert "  python3: Python 3.10.13 is too old" in lines
    assert "  python: not found" in lines


def test_the_message_names_every_supported_version():
    assert supported_versions() == ["3.11", "3.12", "3.13", "3.14"]
    assert re.search(r'^SUPPORTED="3\.11, 3\.12, 3\.13 or 3\.14"$', SCRIPT.read_text(), re.M)


def test_real_interpreter_running_the_tests_is_accepted():
    import sys

    result = find([Path(sys.executable).parent], python=sys.executable)
    assert result.returncode == 0, result.stderr
    version, real = result.stdout.split(" ", 1)
    assert version == ".".join(map(str, sys.version_info[:3]))
    assert real.strip() == os.path.realpath(sys.executable)


# -- the Makefile: choose, build, rebuild when the choice changes -------------------------------------------

# Plays a base interpreter: the probe, and `-m venv DIR` (writes a venv python that plays pip and -c).
BASE = """#!/bin/sh
if [ "$1" = "-I" ] && [ "$2" = "-c" ]; then echo "{version} $0"; exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    mkdir -p "$3/bin"
    printf '#!/bin/sh\\necho "$*" >> "%s/calls"\\ncase "$*" in *version_info*) echo {minor};; *torch*) echo "Python {version}, torch stub";; esac\\n' "$3" > "$3/bin/python"
    chmod +x "$3/bin/python"
    echo "venv from {version}" >> "$3/created"
    exit 0
fi
exit 3
"""


@pytest.fixture
def scratch(tmp_path):
    for name in ("Makefile", "requirements.txt", "pyproject.toml", "tools/find_python.sh"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def make_setup(scratch: Path, bin_: Path, python: str | None = None) -> subprocess.CompletedProcess:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    env = {"PATH": os.pathsep.join([str(bin_), "/usr/bin", "/bin"]), "HOME": str(scratch)}
    args = [make, "-s", "setup"] + ([f"PYTHON={python}"] if python else [])
    return subprocess.run(args, cwd=scratch, env=env, capture_output=True, text=True, timeout=60)


def base(bin_: Path, name: str, version: str) -> Path:
    minor = ".".join(version.split(".")[:2])
    return stub(bin_, name, version, body=BASE.format(version=version, minor=minor))


def test_make_builds_from_the_found_python_and_keeps_it(scratch):
    bin_ = scratch / "bin"
    py311 = base(bin_, "python3.11", "3.11.7")
    first = make_setup(scratch, bin_)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"Creating .venv with Python 3.11.7 ({py311})" in first.stdout
    assert (scratch / ".venv/.python").read_text() == f"3.11.7 {py311}\n"
    again = make_setup(scratch, bin_)
    assert again.returncode == 0 and "Creating" not in again.stdout and "rebuilding" not in again.stdout
    assert (scratch / ".venv/created").read_text() == "venv from 3.11.7\n"   # built once


def test_make_rebuilds_the_venv_when_the_chosen_python_changes(scratch):
    bin_ = scratch / "bin"
    base(bin_, "python3.11", "3.11.7")
    py313 = base(scratch / "other", "python3.13", "3.13.1")
    assert make_setup(scratch, bin_).returncode == 0
    switched = make_setup(scratch, bin_, python=str(py313))
    assert switched.returncode == 0, switched.stdout + switched.stderr
    assert "Python changed" in switched.stdout and "rebuilding .venv" in switched.stdout
    assert (scratch / ".venv/created").read_text() == "venv from 3.13.1\n"   # a fresh venv, not an update
    assert (scratch / ".venv/.python").read_text() == f"3.13.1 {py313}\n"
    calls = (scratch / ".venv/calls").read_text()
    assert "-m pip install -q -r requirements.txt" in calls


def test_make_without_python_keeps_the_venv_of_an_earlier_choice_while_that_python_runs(scratch):
    bin_ = scratch / "bin"
    base(bin_, "python3.11", "3.11.7")
    py313 = base(scratch / "other", "python3.13", "3.13.1")
    assert make_setup(scratch, bin_, python=str(py313)).returncode == 0
    kept = make_setup(scratch, bin_)                       # PYTHON= not given again: no rebuild to 3.11
    assert kept.returncode == 0 and "rebuilding" not in kept.stdout, kept.stdout + kept.stderr
    assert (scratch / ".venv/created").read_text() == "venv from 3.13.1\n"
    py313.unlink()                                          # that Python is gone: the first one on PATH
    moved = make_setup(scratch, bin_)
    assert moved.returncode == 0 and "rebuilding .venv" in moved.stdout, moved.stdout + moved.stderr
    assert (scratch / ".venv/created").read_text() == "venv from 3.11.7\n"


def test_make_keeps_a_venv_built_before_the_choice_was_recorded_if_its_python_matches(scratch):
    bin_ = scratch / "bin"
    base(bin_, "python3.11", "3.11.7")
    assert make_setup(scratch, bin_).returncode == 0
    (scratch / ".venv/.python").unlink()          # as left by the Makefile that insisted on python3.11
    (scratch / ".venv/.python-wanted").unlink()
    kept = make_setup(scratch, bin_)
    assert kept.returncode == 0 and "rebuilding" not in kept.stdout
    assert (scratch / ".venv/created").read_text() == "venv from 3.11.7\n"


def test_make_refuses_an_unsupported_python_and_leaves_the_venv_alone(scratch):
    bin_ = scratch / "bin"
    base(bin_, "python3.11", "3.11.7")
    assert make_setup(scratch, bin_).returncode == 0
    old = base(scratch / "other", "python3.10", "3.10.13")
    refused = make_setup(scratch, bin_, python=str(old))
    assert refused.returncode != 0
    assert "Python 3.10.13 is too old" in refused.stderr
    assert "Supported: Python 3.11, 3.12, 3.13 or 3.14." in refused.stderr
    assert (scratch / ".venv/created").read_text() == "venv from 3.11.7\n"
