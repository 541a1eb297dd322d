"""The widgets tested the way learners use them: JupyterLab in headless Chromium, on one widget gallery.

Strict nbval executes every course notebook (notebooks/*.ipynb) and compares every output, each widget's
static copy (its first chart and table) included, so re-running those notebooks in a browser only repeated
it, at minutes a run. What nbval cannot see is the browser: that a widget renders in JupyterLab, that moving
a control reaches the kernel and redraws the chart and the table, that no traceback shows. That is checked
here, once per widget family, on a gallery notebook this module writes from GALLERY
(test-output/browser/widget_gallery.ipynb): one cell per family, calling the public factory that the course
notebooks call, with cheap settings: the gallery's first cell cuts the toy trainings behind the MoE widgets to
10 steps (notebook 01's run 150, notebook 02's node-cap runs 100), the MoE widget starts at K = 1 with 4 experts
and the FP8 explorer at K = 128; the other calls are their notebook's own.

    family               factory                  shown in notebooks   controls moved
    moe-training         moe_training_widget      01                   slider, dropdown
    node-cap             node_cap_widget          02                   slider
    schedule-explorer    schedule_explorer        03, 04, 04b, 05      slider, dropdown
    schedule-comparison  schedule_comparison      04, 04b, 05          slider
    fp8-explorer         fp8_explorer             06                   slider, dropdown
    capstone-dashboard   recipe_dashboard_widget  07                   slider, dropdown
    full-scale-explorer  scale_explorer           08                   slider, dropdown

One page for all: the gallery is opened in JupyterLab once for the module and its first cell run; then each
family's test (its id is the family) runs the family's cell, waits for the widget, requires a chart image and
a table, moves the first slider (arrow key on its handle) and changes the first dropdown, and requires a new
chart image (its bytes) and a new table each time, with no traceback in its cell nor from its callbacks (they
go to the kernel's stderr). A family that breaks fails alone, and says which it is.
`test_gallery_covers_every_widget_of_the_course_notebooks` (no browser) keeps the gallery complete: every public
factory of utils/widgets/ is a family, and each family lists exactly the course notebooks whose stored outputs
show its widget.

The harness checks itself on a small notebook it writes (one page, one cell per check): a healthy widget
passes; a widget whose callbacks are re-wired to raise, and one that prints a traceback, must fail.
To see the gallery fail the same way:  BROWSER_TESTS_BREAK_CALLBACKS=1 make test
(each family's test then re-wires every widget callback in the kernel to one that raises before touching the
controls: every family must fail).

Screenshots of every widget: test-output/browser/gallery-<family>.png (FAILED-gallery-<family>-*.png on a
failure); timings and the controls moved: test-output/browser/widget_gallery.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass

import lab
import nbformat
import pytest

BREAK_CALLBACKS = os.environ.get("BROWSER_TESTS_BREAK_CALLBACKS") == "1"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@dataclass(frozen=True)
class Family:
    id: str                    # the test id
    what: str                  # named in every failure
    module: str
    factory: str
    call: str                  # the gallery cell's last line: the factory with cheap settings
    notebooks: tuple[str, ...]  # the course notebooks (prefixes) whose widget cells call `factory`
    needs: frozenset[str]      # control kinds that must be moved
    label: str                 # a control label of this family's widget (the right widget is in its cell)

    @property
    def source(self) -> str:
        return f"from {self.module} import {self.factory}\n\n{self.call}"


SLIDER_AND_DROPDOWN = frozenset({"slider", "dropdown"})
GALLERY = [
    Family("moe-training", "MoE training widget", "utils.widgets.moe", "moe_training_widget",
           'moe_training_widget(k=1, n_experts=4, balancing="bias")', ("01",), SLIDER_AND_DROPDOWN,
           "K (experts/token)"),
    Family("node-cap", "node-cap widget (node-limited routing)", "utils.widgets.moe", "node_cap_widget",
           "node_cap_widget(max_nodes=2)", ("02",), frozenset({"slider"}), "node cap M"),
    Family("schedule-explorer", "schedule explorer", "utils.widgets.pipeline", "schedule_explorer",
           'schedule_explorer("1f1b-overlap", ranks=4, microbatches=8, dispatch=0.5, combine=0.5)',
           ("03", "04", "04b", "05"), SLIDER_AND_DROPDOWN, "schedule"),
    Family("schedule-comparison", "schedule comparison", "utils.widgets.pipeline", "schedule_comparison",
           'schedule_comparison("microbatches", ranks=4)',
           ("04", "04b", "05"), frozenset({"slider"}), "ranks (fixed)"),
    Family("fp8-explorer", "FP8 error explorer", "utils.widgets.fp8", "fp8_explorer",
           "fp8_explorer(k=128)", ("06",), SLIDER_AND_DROPDOWN, "outlier channels"),
    Family("capstone-dashboard", "capstone dashboard", "utils.widgets.capstone", "recipe_dashboard_widget",
           'recipe_dashboard_widget("DeepSeek-V3 (report)")', ("07",), SLIDER_AND_DROPDOWN,
           "pipeline devices (PP)"),
    Family("full-scale-explorer", "full-scale explorer", "utils.widgets.scale", "scale_explorer",
           "scale_explorer()", ("08",), SLIDER_AND_DROPDOWN, "InfiniBand GB/s"),
]

SETUP_SOURCE = '''# The browser tests' widget gallery (tests/browser/test_widgets_in_lab.py writes it; throw-away).
# Cheap toy trainings: the browser checks drawing and redrawing; nbval runs notebooks 01 and 02 as they are.
from utils.moe import explore as moe_explore

assert hasattr(moe_explore, "TOY_STEPS") and hasattr(moe_explore, "NODE_CAP_STEPS"), "renamed? update the gallery"
moe_explore.TOY_STEPS = 10
moe_explore.NODE_CAP_STEPS = 10'''
SETUP_CELL = 1                       # after the title
GALLERY_PATH = lab.OUTPUT_DIR / "widget_gallery.ipynb"


def cell_of(family: Family) -> int:
    return SETUP_CELL + 1 + GALLERY.index(family)


def write_gallery(path=GALLERY_PATH) -> str:
    """Write the gallery notebook (no outputs); return its path relative to the repository."""
    cells = [nbformat.v4.new_markdown_cell("# Widget gallery of the browser tests (throw-away)\n\n"
                                           "One cell per widget family; written by tests/browser/"
                                           "test_widgets_in_lab.py."),
             nbformat.v4.new_code_cell(SETUP_SOURCE)]
    cells += [nbformat.v4.new_code_cell(family.source) for family in GALLERY]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path.relative_to(lab.REPO).as_posix()


# -- the gallery stays complete ----------------------------------------------------------------------------

def widget_factories() -> set[str]:
    """The public factories of utils/widgets/ (every public top-level function but base.py's helpers)."""
    names = set()
    for path in (lab.REPO / "utils" / "widgets").glob("*.py"):
        if path.name not in ("__init__.py", "base.py"):
            names |= set(re.findall(r"^def ([a-z]\w*)\(", path.read_text(), flags=re.M))
    return names


def widget_cells_of_the_course(factories: set[str]) -> dict[str, set[str]]:
    """factory -> prefixes of the course notebooks with a cell that calls it and shows a widget (stored
    outputs; tqdm's progress bars are widgets too, but call no factory)."""
    found: dict[str, set[str]] = {}
    for path in sorted((lab.REPO / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code" or not any(WIDGET_VIEW in out.get("data", {})
                                                      for out in cell.get("outputs", [])):
                continue
            for name in set(re.findall(r"\b(\w+)\(", "".join(cell["source"]))) & factories:
                found.setdefault(name, set()).add(path.stem.split("_")[0])
    return found


def test_gallery_covers_every_widget_of_the_course_notebooks():
    factories = widget_factories()
    in_gallery = {family.factory for family in GALLERY}
    assert factories == in_gallery, (
        f"widget factories in utils/widgets/ but not in the browser tests' GALLERY: "
        f"{sorted(factories - in_gallery)}; in GALLERY but gone: {sorted(in_gallery - factories)}")
    shown = widget_cells_of_the_course(factories)
    assert shown, "no course notebook shows a widget in its stored outputs (not executed yet?)"
    listed = {family.factory: set(family.notebooks) for family in GALLERY}
    assert shown == listed, f"notebooks showing each widget: stored outputs say {shown}, GALLERY says {listed}"


# -- each family in one shared JupyterLab page -------------------------------------------------------------

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


@dataclass
class Gallery:
    driver: lab.NotebookDriver   # the gallery's page
    record: dict                 # -> widget_gallery.json


@pytest.fixture(scope="module")
def gallery(module_lab):
    """The gallery, written, opened in JupyterLab and its first cell run: once for all the family tests."""
    clock = Stopwatch()
    for stale in lab.OUTPUT_DIR.glob("FAILED-gallery-*.png"):   # of an earlier run
        stale.unlink()
    rel_path = write_gallery()
    driver = module_lab.open(rel_path)
    clock.lap("open")
    driver.run_cells([SETUP_CELL])
    clock.lap("setup_cell")
    record = {"notebook": rel_path, "seconds": clock.laps, "families": {}}
    yield Gallery(driver, record)
    write_summary("widget_gallery", record)


@contextlib.contextmanager
def named(gallery: Gallery, family: Family, where: dict):
    """A failure names the family (the page's messages name only the gallery notebook) and leaves
    screenshots of the page and of the family's widget."""
    try:
        yield
    except Exception as exc:
        stem = f"FAILED-gallery-{family.id}"
        gallery.driver.screenshot(lab.OUTPUT_DIR / f"{stem}-page.png")
        if where.get("area") is not None:
            gallery.driver.screenshot(lab.OUTPUT_DIR / f"{stem}-widget.png", where["area"])
        raise lab.LabError(f"{family.what} [{family.id}] ({family.factory}, as in notebooks "
                           f"{', '.join(family.notebooks)}): {exc}") from exc


@pytest.mark.browser
@pytest.mark.timeout(600)  # above the harness's own waits: they fail first, with a reason
@pytest.mark.parametrize("family", GALLERY, ids=[family.id for family in GALLERY])
def test_widget_family_renders_and_redraws_in_lab(gallery, family):
    driver, clock, where = gallery.driver, Stopwatch(), {}
    with named(gallery, family, where):
        driver.run_cells([cell_of(family)])
        clock.lap("run_cell")
        where["area"] = area = driver.wait_for_widget_in(cell_of(family))
        first = driver.wait_complete(area)          # a chart image and a table
        labels = [control["label"] for control in first.sliders + first.dropdowns]
        assert family.label in labels, f"its cell shows a widget with the controls {labels}"
        clock.lap("rendered")
        if BREAK_CALLBACKS:
            driver.break_callbacks()
        interactions = exercise(driver, area)
        driver.check_no_errors(cell=cell_of(family))
        clock.lap("interactions")
        exercised = {i.control for i in interactions}
        assert family.needs <= exercised, (f"expected to move a {' and a '.join(sorted(family.needs))}, "
                                           f"moved only {sorted(exercised) or 'no control'}")
    shot = lab.OUTPUT_DIR / f"gallery-{family.id}.png"
    driver.screenshot(shot, area)
    gallery.record["families"][family.id] = {
        "call": family.call, "seconds": clock.laps, "screenshot": shot.name,
        "interactions": [vars(i) for i in interactions]}


# -- the harness checks itself -----------------------------------------------------------------------------
# On a small notebook it writes, opened once for the module: one cell per check, each run by its own test (a
# re-run builds a new widget, so the sabotage of one check does not reach the others, in whatever order).

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
SYNTHETIC_CHECKS = {"healthy": False, "broken_callback": False, "raising_callback": True}  # check -> fail
SYNTHETIC_PATH = lab.OUTPUT_DIR / "harness_self_check.ipynb"


def synthetic_notebook(path=SYNTHETIC_PATH) -> str:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Browser-test harness self-check (throw-away)"),
        *(nbformat.v4.new_code_cell(f"# {check}\n" + SYNTHETIC_CELL.format(fail=fail))
          for check, fail in SYNTHETIC_CHECKS.items())])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path.relative_to(lab.REPO).as_posix()


@pytest.fixture(scope="module")
def synthetic(module_lab) -> lab.NotebookDriver:
    return module_lab.open(synthetic_notebook())


def run_synthetic(driver: lab.NotebookDriver, check: str) -> int:
    """Run the cell of `check`; return its widget area once it shows its chart and table."""
    cell = 1 + list(SYNTHETIC_CHECKS).index(check)
    driver.run_cells([cell])
    area = driver.wait_for_widget_in(cell)
    assert area in driver.interactive_areas() and driver.settled(area).complete
    return area


@pytest.mark.browser
def test_harness_sees_a_healthy_widget_redraw(synthetic):
    area = run_synthetic(synthetic, "healthy")
    slider, dropdown = exercise(synthetic, area)
    assert (slider.control, slider.before, slider.after) == ("slider", "3", "4")
    assert (dropdown.control, dropdown.before, dropdown.after) == ("dropdown", "sin", "cos")
    synthetic.check_no_errors(cell=1)


@pytest.mark.browser
def test_harness_fails_when_the_callback_is_broken(synthetic):
    area = run_synthetic(synthetic, "broken_callback")
    assert synthetic.break_callbacks() >= 2   # interact's observer on each of the two controls
    redraw_s, synthetic.redraw_s = synthetic.redraw_s, 5
    try:
        with pytest.raises(lab.LabError, match="a widget callback raised"):
            synthetic.move_slider(area, steps=1)
    finally:
        synthetic.redraw_s = redraw_s


@pytest.mark.browser
def test_harness_fails_on_a_traceback_in_the_widget(synthetic):
    area = run_synthetic(synthetic, "raising_callback")
    with pytest.raises(lab.LabError, match="traceback"):
        synthetic.move_slider(area, steps=1)
