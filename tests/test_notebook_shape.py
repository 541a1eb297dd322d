"""Every notebook follows the course's shape (CONTRIBUTING.md) and is committed executed, cleanly."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
MAX_CODE_LINES = 20  # a longer cell holds library code, which belongs in utils/


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_course_has_its_notebooks_in_order():
    """00 to 08, with 04b (virtual stages) between 04 and 05 and 05b (optimal schedules) between 05 and 06: a
    lettered notebook keeps the numbers readable."""
    assert [p.name.split("_")[0] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "04b", "05", "05b", "06", "07",
                                                         "08"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_shape_objectives_predict_summary_exercises(path):
    nb = load(path)
    markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "Objectives" in markdown and "Prerequisites" in markdown
    assert "Predict" in markdown, "no predict-then-run prompt"
    headings = re.findall(r"^##\s+(.*)$", markdown, flags=re.M)
    assert "Summary" in headings and "Exercises" in headings
    assert headings.index("Summary") < headings.index("Exercises")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_use_the_shared_check_helper(path):
    code = ["".join(c["source"]) for c in load(path)["cells"] if c["cell_type"] == "code"]
    assert any("from utils.checks import check" in c for c in code)
    assert sum(len(re.findall(r"\bcheck(_puzzle)?\(", c)) for c in code) >= 2  # check or check_puzzle


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_executed_in_order_without_errors(path):
    nb = load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c["execution_count"] for c in code]
    assert None not in counts, "some code cells were never executed: run `make notebooks`"
    assert counts == list(range(1, len(code) + 1)), "not one clean top-to-bottom run: run `make notebooks`"
    assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_call_the_library_rather_than_define_it(path):
    for cell in load(path)["cells"]:
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).strip().splitlines()
        assert len(lines) <= MAX_CODE_LINES, f"a {len(lines)}-line cell: move its code into utils/"
