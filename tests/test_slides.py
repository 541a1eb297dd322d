"""Slides: every notebook follows the slide rule of tools/slides.py, and the rule does what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lazy import lazy_module

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tools/ is repository tooling, not part of the installed package
    sys.path.insert(0, str(ROOT))

from tools import slides  # noqa: E402

nbformat = lazy_module("nbformat")   # imported when a test first uses it, not while collecting

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def notebook(*cells):
    """A notebook from ("md" | "code", source) pairs, with ids as a saved notebook has them."""
    nb = nbformat.v4.new_notebook()
    for n, (kind, source) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        cell["id"] = f"c{n}"
        nb.cells.append(cell)
    return nb


def types(nb):
    return [slides.stored_type(cell) for cell in nb.cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_follows_the_slide_rule(path):
    nb = nbformat.read(path, as_version=4)
    assert slides.follows_rule(nb) == [], f"run: python -m tools.slides {path.relative_to(ROOT)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_predict_prompt_and_section_of_every_notebook_starts_a_slide(path):
    nb = nbformat.read(path, as_version=4)
    prompts = 0
    for cell in nb.cells:
        text = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        if cell.cell_type != "markdown":
            continue
        prompts += text.count(slides.PREDICT)
        for line in text.splitlines()[1:]:
            assert not line.startswith(slides.PREDICT), f"a prompt inside a cell: {text[:80]!r}"
        if text.lstrip().startswith((slides.PREDICT, "# ", "## ")):
            assert slides.stored_type(cell) == "slide", text[:80]
    assert prompts >= 1
    assert slides.stored_type(nb.cells[0]) == "slide"
    # "-" is RISE's "continue"; the deck (jupyterlab-slideshow) reads only a missing type that way.
    assert all(slides.stored_type(cell) in ("slide", "fragment", None) for cell in nb.cells)


def test_rule_on_a_small_notebook():
    nb = notebook(("md", "# Title\n\nIntro."), ("code", "import x"),
                  ("md", "## 1. Section\n\nText."), ("code", "a = 1"),
                  ("md", "**Predict:** what is a?"), ("code", "print(a)"), ("code", "more()"),
                  ("md", "Discussion."), ("md", "### Sub"), ("code", "b"))
    assert slides.apply(nb)
    assert types(nb) == ["slide", None, "slide", None, "slide", "fragment", None, None, "slide", None]
    assert "slideshow" not in nb.cells[1].metadata     # a continuing cell carries no slide type at all
    assert not slides.apply(nb)              # idempotent: a second pass changes nothing
    assert slides.follows_rule(nb) == []


def test_a_prompt_or_a_heading_inside_a_cell_is_split_off_into_its_own_cell():
    nb = notebook(("md", "# T"),
                  ("md", "Setup text.\n\n**Predict:** first?\n\n## 2. Next\n\nBody.\n**Predict:** second?"),
                  ("code", "answer()"))
    slides.apply(nb)
    sources = [c.source for c in nb.cells]
    assert sources == ["# T", "Setup text.", "**Predict:** first?", "## 2. Next\n\nBody.", "**Predict:** second?",
                       "answer()"]
    assert [c["id"] for c in nb.cells] == ["c0", "c1", "c1-1", "c1-2", "c1-3", "c2"]
    assert types(nb) == ["slide", None, "slide", "slide", "slide", "fragment"]
    # The text is all still there, in order.
    assert "\n\n".join(sources[1:5]) == "Setup text.\n\n**Predict:** first?\n\n## 2. Next\n\nBody.\n\n**Predict:** second?"


def test_comments_in_fenced_code_and_mentions_of_predict_are_not_split():
    text = ("Read this:\n\n```python\n# a comment, not a heading\nx = 1\n```\n\n"
            "- **Predict, then run.** a cell starting with **Predict:** asks")
    nb = notebook(("md", "# T"), ("md", text))
    slides.apply(nb)
    assert len(nb.cells) == 2 and nb.cells[1].source == text
    assert types(nb) == ["slide", None]


def test_stale_slide_types_are_corrected_and_other_slideshow_metadata_kept():
    nb = notebook(("md", "# T"), ("code", "x"), ("md", "text"))
    nb.cells[1].metadata["slideshow"] = {"slide_type": "-"}                     # RISE's continue
    nb.cells[2].metadata["slideshow"] = {"slide_type": "slide", "other": 1}    # a boundary the rule does not make
    assert slides.follows_rule(nb) != []
    slides.apply(nb)
    assert types(nb) == ["slide", None, None]
    assert "slideshow" not in nb.cells[1].metadata
    assert nb.cells[2].metadata["slideshow"] == {"other": 1}
    assert slides.follows_rule(nb) == [] and not slides.apply(nb)


def test_new_cell_ids_stay_unique():
    nb = notebook(("md", "# T"), ("md", "a\n## B"))
    nb.cells.append(nbformat.v4.new_markdown_cell("x"))
    nb.cells[-1]["id"] = "c1-1"                      # already taken
    slides.apply(nb)
    ids = [c["id"] for c in nb.cells]
    assert len(ids) == len(set(ids)) and "c1-2" in ids
    nbformat.validate(nb)


def test_check_reports_a_notebook_that_breaks_the_rule(tmp_path, capsys):
    nb = notebook(("md", "# T"), ("md", "text\n\n**Predict:** x?"), ("code", "x"))
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert slides.main(["--check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "does not start its cell" in out and "the rule says 'slide'" in out
    assert slides.main([str(path)]) == 0 and "slides updated" in capsys.readouterr().out
    assert slides.main(["--check", str(path)]) == 0, capsys.readouterr().out
    assert slides.main([str(path)]) == 0 and "already follow the rule" in capsys.readouterr().out


def test_command_line_answers_help():
    result = subprocess.run([sys.executable, "-m", "tools.slides", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "slide" in result.stdout


def test_applying_the_rule_leaves_outputs_alone():
    path = next(p for p in NOTEBOOKS if "05_" in p.name)
    nb = nbformat.read(path, as_version=4)
    before = [c.get("outputs") for c in nb.cells if c.cell_type == "code"]
    for cell in nb.cells:                       # forget the rule, then apply it again
        cell.metadata.pop("slideshow", None)
    slides.apply(nb)
    assert [c.get("outputs") for c in nb.cells if c.cell_type == "code"] == before
    assert slides.follows_rule(nb) == []
