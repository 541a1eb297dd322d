"""The library's house: subpackages by concept, short modules, old names kept as aliases, the kit not shadowed.

The layer rules themselves (what may import what) are import-linter contracts in pyproject.toml, checked by
``make lint`` and ``make test``; these tests cover what a contract cannot.
"""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from utils import _legacy

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 500


def library_modules():
    return sorted(p for p in (ROOT / "utils").rglob("*.py"))


def test_every_module_is_short():
    long = {str(p.relative_to(ROOT)): n for p in library_modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concept): {long}"


def test_every_subpackage_says_what_lives_there_and_what_it_may_import():
    for init in (ROOT / "utils").rglob("__init__.py"):
        doc = importlib.import_module(".".join(init.relative_to(ROOT).parent.parts)).__doc__ or ""
        assert len(doc.splitlines()) >= 3, f"{init}: needs a docstring listing its modules"
        if init.parent.name != "utils":
            assert "import" in doc, f"{init}: the docstring must say what the package may import"


# A module's private names are its own: no module imports another's (utils.cluster is still to follow).
_PRIVATE_IMPORTS_CHECKED = ("pipeline", "widgets", "moe", "fp8", "capstone.py", "checks.py", "figures.py")


def test_no_module_imports_another_modules_private_names():
    import ast

    offenders = []
    for path in library_modules():
        if path.relative_to(ROOT / "utils").parts[0] not in _PRIVATE_IMPORTS_CHECKED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("utils"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module} {private}")
    assert not offenders, "private names imported from another module (make them public or move them):\n" + \
        "\n".join(offenders)


_OLD = "|".join(sorted(_legacy.MOVED, key=len, reverse=True))
_OLD_IMPORT = re.compile(rf"(from|import)\s+utils\.({_OLD})\b|from utils import [^\n]*\b({_OLD})\b")


@pytest.mark.parametrize("folder", ["utils", "tests", "benchmarks", "tools", "notebooks", "lessons"])
def test_the_course_itself_uses_the_new_names(folder):
    offenders = []
    for path in (ROOT / folder).rglob("*"):
        if path.suffix not in (".py", ".ipynb", ".md") or path.name in ("_legacy.py", "test_layout.py"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _OLD_IMPORT.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "old flat module names (see utils/_legacy.py):\n" + "\n".join(offenders[:20])


@pytest.mark.parametrize("old", sorted(_legacy.MOVED))
def test_old_flat_names_are_the_modules_at_their_new_home(old):
    assert importlib.import_module(f"utils.{old}") is importlib.import_module(f"utils.{_legacy.MOVED[old]}")


def test_old_package_level_names_still_import():
    from utils.cluster import SimulatedCluster
    from utils.fp8 import quantize
    from utils.moe import DeepSeekMoE
    from utils.widgets import schedule_explorer

    assert SimulatedCluster.__module__ == "utils.cluster.cluster"
    assert quantize.__module__ == "utils.fp8.formats"
    assert DeepSeekMoE.__module__ == "utils.moe.layer"
    assert schedule_explorer.__module__ == "utils.widgets.pipeline"
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        getattr(importlib.import_module("utils.moe"), "nonsense")  # noqa: B009


@pytest.mark.parametrize("entry", ["schedules", "simulate", "execute", "launch"])
def test_command_line_entries_answer_help(entry):
    res = subprocess.run([sys.executable, "-m", f"utils.{entry}", "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0 and "usage" in res.stdout.lower()


def _guard_run(tmp_path, code: str) -> subprocess.CompletedProcess:
    # Run a fresh interpreter in a folder that holds a learner's own utils.py, with the guard installed the way
    # the .pth file installs it (the venv may or may not have the .pth: make setup writes it).
    guard = ROOT / "utils" / "_guard.py"
    boot = f"import runpy; runpy.run_path({str(guard)!r}, run_name='dsv3_course_guard'); {code}"
    return subprocess.run([sys.executable, "-c", boot], capture_output=True, text=True, cwd=tmp_path, timeout=120)


def test_a_learners_own_utils_py_fails_loudly_with_an_explanation(tmp_path):
    (tmp_path / "utils.py").write_text("def helper():\n    return 1\n")
    res = _guard_run(tmp_path, "import utils")
    assert res.returncode != 0
    assert "hides the kit" in res.stderr and str(tmp_path / "utils.py") in res.stderr and "Rename" in res.stderr


def test_a_learners_own_utils_folder_fails_loudly_too(tmp_path):
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "__init__.py").write_text("")
    res = _guard_run(tmp_path, "import utils.pipeline")
    assert res.returncode != 0 and "hides the kit" in res.stderr


def test_without_a_shadow_the_guard_lets_the_kit_through(tmp_path):
    res = _guard_run(tmp_path, "import utils.pipeline.costs as c; print(c.__file__)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(ROOT / "utils" / "pipeline" / "costs.py")


def test_colours_come_from_the_course_palette():
    """Every figure takes its colours from utils.figures (OKABE_ITO, GREYS and the keys built on them)."""
    hex_colour = re.compile(r"[\"']#[0-9A-Fa-f]{6}[\"']")
    typed = [f"{p.relative_to(ROOT)}:{n}" for p in library_modules() if p.name != "figures.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if hex_colour.search(line)]
    assert not typed, "colours typed outside utils/figures.py (name them there):\n" + "\n".join(typed)
