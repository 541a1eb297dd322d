"""Lesson plans: one per notebook, and every link they hold resolves (files and notebook section anchors)."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def notebook_anchors(path: Path) -> set[str]:
    """JupyterLab's anchors: a markdown heading's text with spaces turned into dashes."""
    anchors = set()
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for line in "".join(cell["source"]).splitlines():
            match = re.match(r"#{1,6}\s+(.*\S)\s*$", line)
            if match:
                text = re.sub(r"[*_`]", "", match.group(1))
                anchors.add(text.replace(" ", "-"))
    return anchors


def markdown_anchors(path: Path) -> set[str]:
    anchors = set()
    for line in path.read_text().splitlines():
        match = re.match(r"#{1,6}\s+(.*\S)\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_a_lesson_plan(notebook):
    plan = LESSONS / f"{notebook.stem}.md"
    assert plan.exists(), f"missing lesson plan {plan.relative_to(ROOT)}"
    text = plan.read_text().lower()
    for section in ("objectives", "timing", "misconception", "discussion", "solution"):
        assert section in text, f"{plan.name} has no '{section}' section"


@pytest.mark.parametrize("plan", sorted(LESSONS.glob("*.md")), ids=lambda p: p.name)
def test_links_in_lessons_resolve(plan):
    for target in LINK.findall(plan.read_text()):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path_part, _, anchor = target.partition("#")
        path = (plan.parent / path_part).resolve() if path_part else plan
        assert path.exists(), f"{plan.name}: link to missing file {target}"
        if anchor and path.suffix == ".ipynb":
            assert anchor in notebook_anchors(path), f"{plan.name}: no heading '{anchor}' in {path.name}"
        elif anchor and path.suffix == ".md":
            assert anchor in markdown_anchors(path), f"{plan.name}: no heading '{anchor}' in {path.name}"
