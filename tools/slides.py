"""Slide boundaries for presenting a notebook in JupyterLab, chosen by one rule (never by hand).

The course presents with jupyterlab-slideshow (JupyterLab's "deck" mode, the deck button in the notebook
toolbar): it shows the live notebook itself as slides, so widgets keep working. (RISE for JupyterLab,
jupyterlab_rise 0.43, presents in a separate app built on JupyterLab 4.3 that cannot load the ipywidgets 8
manager: widgets stay blank there, jupyterlab-contrib/rise#119.) Both read the same standard cell metadata,
`slideshow.slide_type`, which nbconvert's slides use too.

The rule, applied to the cells in order:
1. the first cell (title, objectives) opens a slide;
2. a markdown cell that starts with a heading (`#`, `##` or `###`: title, sections, exercises) opens a slide;
3. a markdown cell that starts with **Predict:** opens a slide, and the code cell right after it (the experiment
   that answers it) is a *fragment*: it appears on the next key press, so the class answers before it is shown;
4. every other cell continues the slide it is on: it carries no slide type (the default; the deck does not
   read RISE's "-" as "continue").

A heading or a Predict prompt in the middle of a markdown cell is first split off into a cell of its own (for
prompts this is the course's convention anyway, CONTRIBUTING.md: "a markdown cell starting with **Predict:**"),
so every section and every prompt starts a slide. Only sources and metadata change, never outputs, so strict
nbval is unaffected.

`make notebooks` applies the rule to each notebook before executing it; `python -m tools.slides NOTEBOOK...`
applies it alone (`--check`: only report notebooks that do not follow it). tests/test_slides.py checks every
committed notebook follows it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PREDICT = "**Predict:**"
_HEADING = re.compile(r"#{1,3} ")
_FENCE = re.compile(r"\s*(```|~~~)")


def _source(cell) -> str:
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def opens_slide(line: str) -> bool:
    """Whether a markdown line begins what must start a slide: a heading (levels 1-3) or a Predict prompt."""
    return bool(_HEADING.match(line)) or line.startswith(PREDICT)


def starts_with_heading(cell) -> bool:
    """Whether a cell is markdown that begins with a heading of level 1-3 (title, section, exercise)."""
    return cell.cell_type == "markdown" and bool(_HEADING.match(_source(cell).lstrip()))


def starts_with_predict(cell) -> bool:
    """Whether a cell is markdown that begins with the course's **Predict:** prompt."""
    return cell.cell_type == "markdown" and _source(cell).lstrip().startswith(PREDICT)


def split_points(source: str) -> list[int]:
    """Offsets of the lines of a markdown source that open a slide but do not start it (outside fenced code,
    where `# ...` is a comment, not a heading)."""
    points, offset, in_fence, seen_text = [], 0, False, False
    for line in source.splitlines(keepends=True):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and seen_text and opens_slide(line):
            points.append(offset)
        seen_text = seen_text or bool(line.strip())
        offset += len(line)
    return points


def split_cells(nb) -> int:
    """Split markdown cells so that every heading and every **Predict:** prompt starts a cell of its own.

    The text from each such line on moves to a new markdown cell right after (ids: the old id plus "-1", "-2",
    ..., kept unique), so the rule can give it its own slide. Returns how many cells were added.
    """
    ids = {cell.get("id") for cell in nb.cells}
    cells, added = [], 0
    for cell in nb.cells:
        source = _source(cell)
        points = split_points(source) if cell.cell_type == "markdown" else []
        if not points:
            cells.append(cell)
            continue
        import nbformat  # here, not at the top: the tests import this module, and nbformat takes seconds

        bounds = [0, *points, len(source)]
        cell.source = source[: points[0]].rstrip()
        cells.append(cell)
        suffix = 0
        for start, end in zip(bounds[1:-1], bounds[2:], strict=True):
            new = nbformat.v4.new_markdown_cell(source[start:end].rstrip())
            if "id" in cell:
                while True:
                    suffix += 1
                    candidate = f"{cell['id'][:60]}-{suffix}"
                    if candidate not in ids:
                        break
                new["id"] = candidate
                ids.add(candidate)
            cells.append(new)
            added += 1
    nb.cells = cells
    return added


def slide_types(nb) -> list[str | None]:
    """The slide type of each cell under the rule: "slide", "fragment", or None (continues the slide)."""
    types = []
    for index, cell in enumerate(nb.cells):
        if index == 0 or starts_with_heading(cell) or starts_with_predict(cell):
            types.append("slide")
        elif cell.cell_type == "code" and starts_with_predict(nb.cells[index - 1]):
            types.append("fragment")
        else:
            types.append(None)
    return types


def stored_type(cell) -> str | None:
    """The slide type stored in a cell's metadata (None: the cell continues the slide it is on)."""
    return cell.metadata.get("slideshow", {}).get("slide_type")


def apply(nb) -> bool:
    """Apply the rule to a notebook in memory: split cells at headings and Predict prompts, then set each cell's
    slide type. Returns whether anything changed."""
    changed = split_cells(nb) > 0
    for cell, slide_type in zip(nb.cells, slide_types(nb), strict=True):
        slideshow = cell.metadata.get("slideshow")
        if slide_type is None:
            if slideshow is None or (slideshow and "slide_type" not in slideshow):
                continue
            slideshow.pop("slide_type", None)
            if not slideshow:
                del cell.metadata["slideshow"]
        elif stored_type(cell) == slide_type:
            continue
        else:
            cell.metadata.setdefault("slideshow", {})["slide_type"] = slide_type
        changed = True
    return changed


def follows_rule(nb) -> list[str]:
    """What in a notebook breaks the rule (empty when it follows it)."""
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and split_points(_source(cell)):
            problems.append(f"cell {index}: a heading or a {PREDICT} prompt that does not start its cell")
    for index, (cell, wanted) in enumerate(zip(nb.cells, slide_types(nb), strict=True)):
        if stored_type(cell) != wanted:
            problems.append(f"cell {index}: slide_type {stored_type(cell)!r}, the rule says {wanted!r}")
    return problems


def apply_to_file(path: Path) -> bool:
    """Apply the rule to the notebook at `path`, writing it only if something changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if not apply(nb):
        return False
    nbformat.write(nb, path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook breaks the rule")
    args = parser.parse_args(argv)
    import nbformat

    failed = False
    for path in args.paths:
        if args.check:
            problems = follows_rule(nbformat.read(path, as_version=4))
            for problem in problems:
                print(f"{path}: {problem}")
            failed |= bool(problems)
        else:
            print(f"{path}: {'slides updated' if apply_to_file(path) else 'slides already follow the rule'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
