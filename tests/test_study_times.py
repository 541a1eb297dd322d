"""Each notebook's study time is stated once at its top; README.md and the course map in lessons/README.md
repeat it, and all three must agree (issue #12: the README said 60 minutes where notebook 06 said 75)."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
TIME = re.compile(r"\*\*Time[.:]?\*\*:?\s*(?:About\s+)?(\d+)\s+minutes", re.IGNORECASE)


def notebook_minutes(path: Path) -> int:
    """The minutes the notebook's top cells announce ("**Time.** About 60 minutes", "**Time:** 30 minutes")."""
    cells = json.loads(path.read_text())["cells"]
    top = "\n".join("".join(c["source"]) for c in cells[:3] if c["cell_type"] == "markdown")
    found = TIME.findall(top)
    assert len(found) == 1, f"{path.name}: state the study time once at the top (**Time.** About N minutes)"
    return int(found[0])


def table_minutes(text: str, key) -> dict[str, int]:
    """Minutes per notebook from a markdown table whose rows name the notebook and hold one 'N min' cell."""
    minutes = {}
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        stem = key(line)
        times = [c for c in cells if re.fullmatch(r"\d+ min", c)]
        if stem and len(times) == 1:
            minutes[stem] = int(times[0].split()[0])
    return minutes


def test_the_pattern_reads_both_header_styles():
    assert TIME.findall("**Time.** About 75 minutes; the notebook runs in under a minute") == ["75"]
    assert TIME.findall("**Prerequisites:** notebooks 01-06. **Time:** 30 minutes.") == ["30"]


@pytest.mark.parametrize("source", ["README.md", "lessons/README.md"])
def test_study_times_agree_with_the_notebooks(source):
    text = (ROOT / source).read_text()
    stems = [p.stem for p in NOTEBOOKS]

    def stem_of(line: str) -> str | None:
        named = [s for s in stems if f"`{s}`" in line or f"/{s}.ipynb" in line]
        return named[0] if len(named) == 1 else None

    listed = table_minutes(text, stem_of)
    expected = {p.stem: notebook_minutes(p) for p in NOTEBOOKS}
    assert listed == expected, f"{source} lists study times {listed}; the notebooks say {expected}"
