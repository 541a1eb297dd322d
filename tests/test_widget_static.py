"""Every widget stores a static copy of what it shows (chart and table) beside its live view.

Readers without a kernel (the course website, GitHub's viewer) show the copy; JupyterLab shows the live
widget; nbval compares the copy's text with the chart's bytes masked (notebooks/sanitize.cfg), like any image.
"""

from __future__ import annotations

import base64
import configparser
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from utils.view import View  # noqa: E402
from utils.widgets import base  # noqa: E402
from utils.widgets.capstone import recipe_dashboard_widget  # noqa: E402
from utils.widgets.fp8 import fp8_explorer  # noqa: E402
from utils.widgets.moe import moe_training_widget, node_cap_widget  # noqa: E402
from utils.widgets.pipeline import schedule_comparison, schedule_explorer  # noqa: E402
from utils.widgets.scale import scale_explorer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
IMG = re.compile(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)'")


def fake_moe(**settings):
    figure, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, len(settings)])
    ax.set_title(str(settings))
    return View(figure=figure, table=pd.DataFrame({"setting": list(settings), "value": list(settings.values())}))


WIDGETS = {
    "schedule explorer": lambda: schedule_explorer("gpipe", ranks=4, microbatches=8),
    "schedule comparison": lambda: schedule_comparison("ranks", microbatches=16),
    "fp8 explorer": lambda: fp8_explorer(k=128),
    "capstone dashboard": lambda: recipe_dashboard_widget("classroom (small)"),
    "moe training": lambda: moe_training_widget(compute=fake_moe),
    "node cap": lambda: node_cap_widget(2, compute=fake_moe),
    "full scale": scale_explorer,
}


def sanitize(text: str) -> str:
    """What nbval compares, with the project's notebooks/sanitize.cfg."""
    config = configparser.ConfigParser()
    config.read(ROOT / "notebooks" / "sanitize.cfg")
    for section in config.sections():
        text = re.sub(config[section]["regex"], config[section]["replace"], text)
    return text


@pytest.fixture(params=list(WIDGETS), scope="module")
def widget(request):
    built = WIDGETS[request.param]()
    yield built
    plt.close("all")


def test_bundle_holds_the_live_view_the_static_copy_and_the_short_text(widget):
    bundle = widget._repr_mimebundle_()
    assert WIDGET_VIEW in bundle, "JupyterLab still gets the live widget"
    assert bundle["text/plain"] == repr(widget)
    copy = bundle["text/html"]
    assert "run this notebook in JupyterLab" in copy and repr(widget).split("(")[0] in copy
    # The chart is the very PNG the widget shows, and the table the very HTML.
    (data,) = IMG.findall(copy)
    assert base64.b64decode(data) == widget.image.value and widget.image.value[:4] == b"\x89PNG"
    assert widget.table.value and widget.table.value in copy
    json.dumps(bundle)   # storable in a notebook as it is


def test_copy_follows_what_the_widget_shows_now():
    explorer = schedule_explorer("gpipe", ranks=4, microbatches=8)
    first = explorer._repr_mimebundle_()["text/html"]
    explorer.controls["ranks"].value = 6
    second = explorer._repr_mimebundle_()["text/html"]
    assert second != first and "6 ranks" in second
    assert base64.b64decode(IMG.findall(second)[0]) == explorer.image.value


def test_an_invalid_setting_is_copied_as_its_message_without_a_chart():
    explorer = schedule_explorer("dualpipe", ranks=4, microbatches=8)
    explorer.controls["ranks"].value = 5
    copy = explorer._repr_mimebundle_()["text/html"]
    assert "even number of ranks" in copy
    assert "<img" not in copy and "<table" not in copy


def test_nbval_compares_the_copy_without_the_chart_bytes():
    a = schedule_explorer("gpipe", ranks=4, microbatches=8)._repr_mimebundle_()["text/html"]
    b = schedule_explorer("gpipe", ranks=4, microbatches=8)
    b.image.value = b"\x89PNG" + b"other pixels"   # a renderer drawing a pixel differently
    b_copy = base.static_html(b, repr(b))
    assert a != b_copy and sanitize(a) == sanitize(b_copy)
    c = schedule_explorer("gpipe", ranks=4, microbatches=16)._repr_mimebundle_()["text/html"]
    assert sanitize(c) != sanitize(a), "the table and the settings are still compared"


def test_every_widget_notebook_stores_the_static_copy_of_each_course_widget():
    """Stored outputs: each course widget carries its copy with a chart or message; no progress bar is stored
    (its stored copy would be its first frame, "0/150": ``tools.notebooks.tidy`` drops them)."""
    found = 0
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
                data = output.get("data", {})
                assert "%|" not in "".join(data.get("text/plain", "")), f"{path.name}: a stored progress bar"
                if WIDGET_VIEW not in data:
                    continue
                html_copy = "".join(data.get("text/html", ""))
                assert "course-widget-static" in html_copy, f"{path.name}: {data.get('text/plain')}"
                assert IMG.search(html_copy) or "not allowed" in html_copy, path.name
                found += 1
    assert found >= 8


def test_a_run_stores_no_progress_bar_and_keeps_every_other_output():
    """``tools.notebooks.tidy``, which every re-execution applies: a tqdm bar (a widget whose text copy is its
    first frame) is dropped, a course widget, a figure and a text output are kept."""
    import nbformat

    from tools.notebooks import tidy

    bar = {"output_type": "display_data", "metadata": {},
           "data": {WIDGET_VIEW: {"model_id": "a"}, "text/plain": "K=2, bias:   0%|          | 0/150 [00:00<?, ?it/s]"}}
    widget = {"output_type": "display_data", "metadata": {},
              "data": {WIDGET_VIEW: {"model_id": "b"}, "text/plain": "VBox()", "text/html": "<div>copy</div>"}}
    text = {"output_type": "stream", "name": "stdout", "text": "loss 0.7 (a 95%|confidence note)\n"}
    nb = nbformat.v4.new_notebook(metadata={"widgets": {"state": {}}})
    cell = nbformat.v4.new_code_cell("train()", outputs=[nbformat.from_dict(o) for o in (bar, widget, text)])
    cell.metadata["execution"] = {"iopub.status.busy": "2026-12-07T09:00:00Z"}
    nb.cells.append(cell)
    tidy(nb)
    assert [o.get("data", {}).get("text/plain", o.get("text")) for o in nb.cells[0].outputs] == \
        ["VBox()", "loss 0.7 (a 95%|confidence note)\n"]
    assert "widgets" not in nb.metadata and "execution" not in nb.cells[0].metadata
