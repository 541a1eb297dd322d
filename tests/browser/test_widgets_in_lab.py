"""The widgets tested the way learners use them: JupyterLab in headless Chromium.

For each widget notebook: open it in JupyterLab, clear and run all cells, wait for the widgets to render,
then in every widget that draws a chart and a metrics table move a slider (arrow key on its handle) and change
a dropdown, and require a new chart image (its bytes) and a new table each time, with no traceback anywhere.
A notebook that does not exist yet is skipped, saying so.

The harness checks itself on a small notebook it writes: a healthy widget passes; a widget whose callbacks
are re-wired to raise, and one that prints a traceback, must fail.
To see the real notebooks fail the same way:  BROWSER_TESTS_BREAK_CALLBACKS=1 make test
(the test then re-wires every widget callback in the kernel to one that raises before touching the controls).

Screenshots of every widget: test-output/browser/.
"""

from __future__ import annotations

import json
import os
import time

import lab
import nbformat
import pytest

BREAK_CALLBACKS = os.environ.get("BROWSER_TESTS_BREAK_CALLBACKS") == "1"


def find_notebook(prefix: str):
    matches = sorted((lab.REPO / "notebooks").glob(f"{prefix}_*.ipynb"))
    return matches[0] if matches else None


def widget_notebook(prefix: str, what: str, needs: set[str]):
    """A parameter: notebook prefix, the widget it shows, controls it must have. Skipped (saying so) while the
    notebook does not exist yet."""
    missing = find_notebook(prefix) is None
    return pytest.param(prefix, what, needs, id=prefix, marks=pytest.mark.skipif(
        missing, reason=f"{what}: notebooks/{prefix}_*.ipynb does not exist yet"))


WIDGET_NOTEBOOKS = [
    widget_notebook("01", "MoE routing widget", {"slider"}),
    widget_notebook("02", "node-limited routing widget", {"slider"}),
    widget_notebook("03", "schedule explorer", {"slider", "dropdown"}),
    widget_notebook("04", "schedule explorer", {"slider", "dropdown"}),
    widget_notebook("05", "schedule explorer / comparison", {"slider", "dropdown"}),
    widget_notebook("06", "FP8 error explorer", {"slider", "dropdown"}),
    widget_notebook("07", "capstone dashboard", {"slider", "dropdown"}),
    widget_notebook("08", "full-scale explorer", {"slider", "dropdown"}),
]


def chart_widgets(driver: lab.NotebookDriver) -> list[int]:
    """Widget cells with a control that show a chart and a table once their first draw has settled."""
    found = []
    for index in driver.interactive_areas():
        sig = driver.settled(index)
        if sig.complete:
            found.append(index)
    return found


def exercise(driver: lab.NotebookDriver, index: int) -> list[lab.Interaction]:
    """Move the first slider and change the first dropdown of a widget; each must redraw chart and table."""
    sig = driver.signature(index)
    done = []
    if sig.sliders:
        done.append(driver.move_slider(index))
    if sig.dropdowns:
        done.append(driver.change_dropdown(index))
    return done


class Stopwatch:
    def __init__(self):
        self.start = self.last = time.monotonic()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(now - self.last, 1)
        self.laps["total"] = round(now - self.start, 1)
        self.last = now


def write_summary(stem: str, record: dict) -> None:
    lab.OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    (lab.OUTPUT_DIR / f"{stem}.json").write_text(json.dumps(record, indent=2))


@pytest.mark.browser
@pytest.mark.timeout(600)  # above the harness's own waits: they fail first, with a reason
@pytest.mark.parametrize("prefix,what,needs", WIDGET_NOTEBOOKS)
def test_widgets_redraw_in_lab(jupyter_lab, prefix, what, needs):
    path = find_notebook(prefix)
    expected = lab.count_widget_cells(path)
    if expected == 0:
        pytest.skip(f"{what}: {path.name} displays no widget in its stored outputs (not executed yet?)")
    clock = Stopwatch()
    driver = jupyter_lab.open(path.relative_to(lab.REPO).as_posix())
    clock.lap("open")
    driver.run_all()
    clock.lap("run_all")
    driver.wait_for_widgets(expected)
    charts = chart_widgets(driver)
    assert charts, f"{path.name}: no widget shows a chart image and a table after running all cells"
    clock.lap("widgets_rendered")
    if BREAK_CALLBACKS:
        driver.break_callbacks()
    interactions = []
    for index in charts:
        interactions += exercise(driver, index)
    driver.check_no_errors()
    clock.lap("interactions")
    exercised = {i.control for i in interactions}
    assert needs <= exercised, (f"{path.name} ({what}): expected to move a {' and a '.join(sorted(needs))}, "
                                f"found only {sorted(exercised) or 'no control'} in its chart widgets")
    shots = jupyter_lab.screenshot_widgets(driver, path.stem, charts)
    write_summary(path.stem, {
        "notebook": path.name, "widget": what, "seconds": clock.laps,
        "chart_widgets": charts, "screenshots": shots,
        "interactions": [vars(i) for i in interactions]})


# -- the harness checks itself -----------------------------------------------------------------------------

SYNTHETIC_CELL = '''import ipywidgets as w, matplotlib.pyplot as plt, numpy as np, pandas as pd
from IPython.display import display

def draw(n=3, kind="sin"):
    if {fail} and n != 3:
        raise ValueError("synthetic failure for n != 3")
    x = np.linspace(0, n, 100)
    y = np.sin(x) if kind == "sin" else np.cos(x)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(x, y)
    ax.set_title(f"{{kind}} up to {{n}}")
    plt.show()
    display(pd.DataFrame({{"n": [n], "kind": [kind], "last": [round(float(y[-1]), 4)]}}))

w.interact(draw, n=w.IntSlider(3, 1, 10), kind=w.Dropdown(options=["sin", "cos"]));'''


def synthetic_notebook(work_dir, name: str, fail: bool = False) -> str:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Browser-test harness self-check (throw-away)"),
        nbformat.v4.new_code_cell(SYNTHETIC_CELL.format(fail=fail))])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    path = work_dir / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path.relative_to(lab.REPO).as_posix()


def open_synthetic(jupyter_lab, work_dir, name, fail=False, **kwargs) -> lab.NotebookDriver:
    driver = jupyter_lab.open(synthetic_notebook(work_dir, name, fail), **kwargs)
    driver.run_all()
    driver.wait_for_widgets(1)
    assert chart_widgets(driver) == [0]
    return driver


@pytest.mark.browser
def test_harness_sees_a_healthy_widget_redraw(jupyter_lab, work_dir):
    driver = open_synthetic(jupyter_lab, work_dir, "healthy")
    slider, dropdown = exercise(driver, 0)
    assert (slider.control, slider.before, slider.after) == ("slider", "3", "4")
    assert (dropdown.control, dropdown.before, dropdown.after) == ("dropdown", "sin", "cos")
    driver.check_no_errors()


@pytest.mark.browser
def test_harness_fails_when_the_callback_is_broken(jupyter_lab, work_dir):
    driver = open_synthetic(jupyter_lab, work_dir, "broken_callback", redraw_s=5)
    assert driver.break_callbacks() >= 2   # interact's observer on each of the two controls
    with pytest.raises(lab.LabError, match="a widget callback raised"):
        driver.move_slider(0, steps=1)


@pytest.mark.browser
def test_harness_fails_on_a_traceback_in_the_widget(jupyter_lab, work_dir):
    driver = open_synthetic(jupyter_lab, work_dir, "raising_callback", fail=True)
    with pytest.raises(lab.LabError, match="traceback"):
        driver.move_slider(0, steps=1)
