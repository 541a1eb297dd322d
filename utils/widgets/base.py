"""The one wiring every widget of the course uses: controls -> a pure function -> its ``View``.

A widget reads its controls, calls one pure, unit-tested function and shows the ``utils.view.View`` it
returns: the figure as a PNG, the table(s) as HTML, the note above them, or the teaching message of an
invalid setting in place of a traceback (a ``ValueError`` the function raises counts as one). May import:
ipywidgets, matplotlib, ``utils.figures``, ``utils.view``.

Displayed, a widget offers three views of itself (``live_mimebundle``): the live widget for JupyterLab; a
static HTML copy of what it first shows (its chart as an embedded PNG, its table, the sentence that it is
live in JupyterLab) for readers without a kernel, such as the course website or GitHub; and a short text for
nbval and consoles. Each reader picks the richest view it can show.
"""

from __future__ import annotations

import base64
import contextvars
import functools
import html
import inspect
import numbers
from collections.abc import Callable, Mapping

import ipywidgets as widgets
import matplotlib.pyplot as plt
import traitlets

from utils.figures import OKABE_ITO, figure_png
from utils.view import View

SLIDER_STYLE = {"description_width": "90px"}
CONTROL_LAYOUT = widgets.Layout(width="320px")


def error_html(message: str) -> str:
    """The message of a bad setting, as the widgets show it."""
    return (f"<div style='border-left:4px solid {OKABE_ITO['vermillion']};padding:6px 10px;background:#fff4ec'>"
            f"<b>This combination is not allowed.</b><br>{html.escape(message)}</div>")


def note_html(view: View) -> str:
    """A view's note: one sentence in italics, or several as a list."""
    notes = view.notes
    if len(notes) == 1:
        return f"<i>{html.escape(notes[0])}</i>"
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in notes) + "</ul>" if notes else ""


def table_html(view: View) -> str:
    """A view's table(s) as HTML: each titled table under its title, numbers to 4 significant digits."""
    parts = []
    for title, frame in view.tables.items():
        if title:
            parts.append(f"<h4>{html.escape(title)}</h4>")
        parts.append(frame.to_html(float_format=lambda x: f"{x:.4g}", na_rep="-"))
    return "".join(parts)


LIVE_NOTE = ("Interactive widget: run this notebook in JupyterLab (<code>make lab</code>) to move its "
             "controls. Shown here as it first appears:")


def static_html(shown, title: str) -> str:
    """A static copy of what a widget shows now: its message, chart and table, as one HTML block.

    `shown` has the widget's display parts: ``message`` and ``table`` (HTML widgets) and ``image`` (a PNG
    Image widget, hidden while a message replaces it). The chart is embedded as a data URI, so the copy needs
    no file beside the notebook; notebooks/sanitize.cfg hides its bytes from nbval, like any other picture.
    """
    parts = [f"<p><i>{LIVE_NOTE} <code>{html.escape(title)}</code>.</i></p>"]
    if shown.message.value:
        parts.append(shown.message.value)
    if shown.image.value and shown.image.layout.display != "none":
        data = base64.b64encode(shown.image.value).decode("ascii")
        parts.append(f"<img src='data:image/png;base64,{data}' alt='{html.escape(title)}: the chart'"
                     " style='max-width:100%'/>")
    if shown.table.value:
        parts.append(shown.table.value)
    return ("<div class='course-widget-static' style='border-left:4px solid #56B4E9;padding-left:8px'>"
            + "\n".join(parts) + "</div>")


def live_mimebundle(shown, **kwargs) -> dict:
    """What displaying a widget stores: the live view, the static HTML copy, and ``repr`` as plain text."""
    bundle = shown.widget._repr_mimebundle_(**kwargs)
    bundle["text/html"] = static_html(shown, repr(shown))
    bundle["text/plain"] = repr(shown)
    return bundle


# The starting values a learner asked for, while the widget that will show them is being built (see checked_start).
_REQUESTED: contextvars.ContextVar[tuple[str, Mapping]] = contextvars.ContextVar("requested_start")


def checked_start(build: Callable) -> Callable:
    """Wrap a widget's constructor or factory so a starting value its controls cannot show teaches.

    ipywidgets silently clamps a slider's value into its range (``ranks=0`` would show 1) and answers a value
    no dropdown offers with a trait error. Here both raise ValueError naming the widget, the control and its
    range, before the first (possibly slow) computation. Every ``WiredWidget`` subclass gets it automatically.
    """
    signature = inspect.signature(build)
    who = build.__qualname__.replace(".__init__", "")

    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        try:
            requested = dict(signature.bind(*args, **kwargs).arguments)
        except TypeError as err:
            raise ValueError(f"{who}: {err}") from None
        token = _REQUESTED.set((who, requested))
        try:
            return build(*args, **kwargs)
        except traitlets.TraitError as err:
            shown = ", ".join(f"{k}={v!r}" for k, v in requested.items() if isinstance(v, str | int | float))
            raise ValueError(f"{who}: a starting value is not one of its dropdown's choices ({err}); asked for "
                             f"{shown}.") from None
        finally:
            _REQUESTED.reset(token)

    return wrapper


def check_requested(controls: Mapping[str, widgets.Widget]) -> None:
    """Raise ValueError if a requested starting value lies outside its slider's range (see checked_start)."""
    who, requested = _REQUESTED.get(("widget", {}))
    for name, want in requested.items():
        control = controls.get(name)
        low, high = getattr(control, "min", None), getattr(control, "max", None)
        if low is None or high is None or isinstance(want, bool) or not isinstance(want, numbers.Real):
            continue
        if not low <= want <= high:
            raise ValueError(f"{who}: {name} must be between {low:g} and {high:g} (the range of its slider, "
                             f"which would silently show {min(max(want, low), high):g} instead); got {want!r}.")


class WiredWidget:
    """Controls wired to ``compute(**settings) -> View``: redrawn on every change of a control.

    The controls stand in two columns (``split`` of them in the first; default half). ``title`` names the
    widget in its text form (``repr``); subclasses may say more. ``_png(view)`` turns the view's figure
    into PNG bytes (a subclass may draw it faster).
    """

    def __init__(self, controls: dict[str, widgets.Widget], compute: Callable[..., View], title: str = "",
                 split: int | None = None):
        check_requested(controls)
        self.controls = controls
        self.compute = compute
        self.title = title or type(self).__name__
        self.image = widgets.Image(format="png")
        self.table = widgets.HTML()
        self.message = widgets.HTML()
        self.view: View | None = None
        self.calls = 0
        rows = list(controls.values())
        half = (len(rows) + 1) // 2 if split is None else split
        self.widget = widgets.VBox([
            widgets.HBox([widgets.VBox(rows[:half]), widgets.VBox(rows[half:])]),
            self.message, self.image, self.table,
        ])
        for control in controls.values():
            control.observe(self.refresh, names="value")
        self.refresh()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = checked_start(cls.__init__)

    def settings(self) -> dict:
        """The current value of every control, as keyword arguments of the pure function."""
        return {name: control.value for name, control in self.controls.items()}

    def refresh(self, change=None) -> View:
        """Recompute from the controls and redraw (called on every control change)."""
        self.calls += 1
        try:
            view = self.compute(**self.settings())
        except ValueError as error:  # a rule of the library: shown as its message, not a traceback
            view = View(error=str(error))
        self.view = view
        if view.error:
            self.message.value = error_html(view.error)
            self.image.layout.display = "none"
            self.table.value = ""
        else:
            self.message.value = note_html(view)
            png = self._png(view)
            self.image.value = png
            self.image.layout.display = None if png else "none"
            self.table.value = table_html(view)
        if view.figure is not None:
            plt.close(view.figure)  # shown as a PNG; keep pyplot from drawing it again at the end of the cell
        return view

    def _png(self, view: View) -> bytes:
        return figure_png(view.figure) if view.figure is not None else b""

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={value!r}" for name, value in self.settings().items())
        return f"{self.title}({values})"

    def _repr_mimebundle_(self, **kwargs):
        # The live widget for Jupyter, a static copy for readers without a kernel, a short text for nbval.
        return live_mimebundle(self, **kwargs)
