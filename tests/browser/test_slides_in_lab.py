"""Presenting a notebook as slides in JupyterLab (jupyterlab-slideshow's deck mode), as an instructor does.

Open a course notebook in JupyterLab as it is stored (outputs included), run its imports and its widget cells
(running the whole notebook is nbval's job; the deck needs only live widgets), select its first cell and press
the deck button in the notebook toolbar. Then: only the title slide is on screen; the right arrow steps through
its cells and on to the next slide (the next cell the slide rule of tools/slides.py marks), which replaces it;
the left arrow comes back; a Predict slide shows its question first and its experiment on the next press; the
notebook's widget, on its slide, is live: moving its slider redraws the chart and the table.
Screenshots of each step: test-output/slides/.
"""

from __future__ import annotations

import json
import time
import urllib.request

import lab
import nbformat
import pytest
from test_widgets_in_lab import Stopwatch

NOTEBOOK = "notebooks/04_1f1b_and_zero_bubble.ipynb"
OUTPUT_DIR = lab.REPO / "test-output" / "slides"
DECK_WAIT_S = 30
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

# What the deck shows: the active cell and the cells it marks visible (jp-deck-mod-visible).
DECK_STATE = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = Array.from(panel.content.node.querySelectorAll(':scope .jp-Cell'));
    return {
        presenting: !!document.querySelector("[data-jp-deck-mode='presenting']"),
        active: panel.content.activeCellIndex,
        visible: cells.map((c, i) => c.classList.contains('jp-deck-mod-visible')
                                     && getComputedStyle(c).visibility !== 'hidden' ? i : -1).filter(i => i >= 0),
    };
}"""


def slide_starts(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.metadata.get("slideshow", {}).get("slide_type") == "slide"]


def slide_of(nb, start: int) -> list[int]:
    """The cells of the slide that starts at `start`, fragments included, up to the next slide."""
    later = [i for i in slide_starts(nb) if i > start]
    return list(range(start, later[0] if later else len(nb.cells)))


class Deck:
    def __init__(self, driver: lab.NotebookDriver):
        self.driver, self.page = driver, driver.page

    def state(self) -> dict:
        return self.page.evaluate(DECK_STATE)

    def wait(self, predicate, what: str) -> dict:
        deadline = time.monotonic() + DECK_WAIT_S
        while True:
            state = self.state()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise lab.LabError(f"{self.driver.rel_path}: the deck did not show {what}; it shows {state}")
            self.page.wait_for_timeout(100)

    def start_from_first_cell(self) -> dict:
        self.page.evaluate("""() => { const nb = window.jupyterapp.shell.currentWidget.content;
                                      nb.mode = 'command'; nb.activeCellIndex = 0; }""")
        button = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) "
                                   ".jp-NotebookPanel-toolbar [data-jp-item-name='deck'] button")
        button.click()
        return self.wait(lambda s: s["presenting"] and s["visible"], "its first slide")

    def press(self, key: str) -> None:
        # The deck's keys act on the notebook in command mode with the focus inside it, as after a click.
        self.page.evaluate("() => window.jupyterapp.shell.currentWidget.content.activeCell.node.focus()")
        self.page.keyboard.press(key)

    def go_to(self, index: int) -> dict:
        self.page.evaluate("(i) => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = i; }", index)
        return self.wait(lambda s: s["active"] == index and index in s["visible"], f"the slide of cell {index}")

    def shot(self, name: str) -> None:
        OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(OUTPUT_DIR / f"{name}.png"))


DECK_SETTINGS = "/lab/api/settings/jupyterlab-slideshow:plugin"


@pytest.fixture
def deck_off_afterwards(lab_server):
    """The deck remembers that it is on (a user setting), and would open every later notebook as slides: reset
    it, whatever happened in the test."""
    yield
    request = urllib.request.Request(
        lab_server.base_url + DECK_SETTINGS, method="PUT", data=json.dumps({"raw": "{}"}).encode(),
        headers={"Authorization": f"token {lab_server.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass
    assert lab_server.api("GET", DECK_SETTINGS)["settings"].get("active") in (None, False)


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_notebook_presents_as_slides_with_predict_fragments_and_live_widgets(jupyter_lab, deck_off_afterwards):
    nb = nbformat.read(lab.REPO / NOTEBOOK, as_version=4)
    starts = slide_starts(nb)
    assert starts[0] == 0 and len(starts) > 5, starts
    widget_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
        WIDGET_VIEW in o.get("data", {}) for o in c.get("outputs", []))]
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")   # the imports
    assert widget_cells and first_code < widget_cells[0], (first_code, widget_cells)
    clock = Stopwatch()
    driver = jupyter_lab.open(NOTEBOOK)
    clock.lap("open")
    driver.run_cells([first_code, *widget_cells])
    areas = [driver.wait_for_widget_in(cell) for cell in widget_cells]
    clock.lap("run_imports_and_widgets")
    deck = Deck(driver)

    # The title slide alone.
    first = deck.start_from_first_cell()
    assert first["active"] == 0
    assert set(first["visible"]) == set(slide_of(nb, 0)), first
    deck.shot("1-title-slide")

    # The right arrow steps through the cells of the slide (the deck highlights each, so the presenter can run
    # it with Shift+Enter), then moves to the next slide, which replaces the first on screen.
    title = slide_of(nb, 0)
    for step, cell in enumerate(title[1:] + [starts[1]], start=1):
        deck.press("ArrowRight")
        state = deck.wait(lambda s, cell=cell: s["active"] == cell, f"cell {cell} after {step} x ArrowRight")
        expected = title if cell in title else slide_of(nb, starts[1])
        assert set(state["visible"]) == set(expected), (step, state)
    assert 0 not in state["visible"]
    deck.shot("2-next-slide")
    deck.press("ArrowLeft")
    deck.wait(lambda s: s["active"] == title[-1] and 0 in s["visible"], "the title slide again after ArrowLeft")

    # A Predict slide: the question first, the experiment (a fragment) on the next press.
    predict = next(i for i in starts if nb.cells[i].source.startswith("**Predict:**"))
    fragment = predict + 1
    assert nb.cells[fragment].metadata["slideshow"]["slide_type"] == "fragment"
    asked = deck.go_to(predict)
    assert fragment not in asked["visible"], asked
    deck.shot("3-predict-question")
    deck.press("ArrowRight")
    answered = deck.wait(lambda s: fragment in s["visible"], "the experiment after the Predict question")
    assert predict in answered["visible"]
    deck.shot("4-predict-answer")
    clock.lap("navigation")

    # The explorer's slide: the widget is live in the deck.
    widget_cell = widget_cells[0]
    slide = max(i for i in starts if i <= widget_cell)
    on_slide = deck.go_to(slide)
    assert widget_cell in on_slide["visible"], on_slide
    moved = driver.move_slider(areas[0])
    assert moved.before != moved.after
    driver.check_no_errors()
    assert deck.state()["presenting"], "moving a slider left the deck"
    deck.shot("5-live-widget")
    clock.lap("widget")
    # Esc leaves the deck: the whole notebook again.
    deck.press("Escape")
    deck.wait(lambda s: not s["presenting"], "the notebook again after Escape")
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUTPUT_DIR / "timings.json").write_text(json.dumps(
        {"notebook": NOTEBOOK, "seconds": clock.laps, "slides": len(starts), "slider": vars(moved)}, indent=2))
