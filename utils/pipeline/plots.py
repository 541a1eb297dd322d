"""Figures of pipeline schedules: Gantt timelines, activation memory, idle bars.

Colours come from the course palette (``utils.figures.KIND_COLORS``), so "orange" means "backward-for-input"
in every figure; DualPipe's second direction is told apart by hatching, not by a second palette.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from utils import inputs as arg
from utils.figures import (
    DIRECTION_HATCH,
    DIRECTION_LABELS,
    EDGE_COLOR,
    KIND_COLORS,
    OKABE_ITO,  # noqa: F401 - plots.OKABE_ITO and plots.SCHEDULE_COLORS are read by notebooks
    SCHEDULE_COLORS,  # noqa: F401
)
from utils.pipeline import raster
from utils.pipeline.rank_plots import (  # noqa: F401 - their home was here: plots.plot_memory still works
    activations_over_time,
    held_spans,
    idle_frame,
    plot_idle_bars,
    plot_memory,
)
from utils.pipeline.schedule import KIND_NAMES, KINDS, ActionLike, OverlappedAction, Schedule
from utils.pipeline.timeline import Interval, Timeline, check_timeline

_BAR_HEIGHT = 0.8          # fraction of a rank's row covered by compute blocks
_COMM_HEIGHT = 0.22        # communication is a thin strip under the compute blocks
_LABEL_MIN_PX = 7.0        # a micro-batch number needs this many pixels per character to be readable
_FADED_ALPHA = 0.2         # intervals outside `highlight`
_HIDDEN_ALPHA = 0.35       # communication hidden behind compute is drawn faint: it costs no time
_HATCH_STEP_PX, _HATCH_RUN = 7.0, 0.6  # hatch strokes: pixels apart, run per rise
_LABEL_LIGHTEN = 0.65      # a micro-batch number sits on a box this much lighter than the block: no hatch
#: The box under a micro-batch number: hatching and outlines would strike through the digits otherwise.
_LABEL_BOX = {"boxstyle": "square,pad=0.12", "facecolor": "white", "alpha": _LABEL_LIGHTEN, "edgecolor": "none"}

#: Legend names of the palette's keys, in the order legends list them (the kinds' names are the schedule's).
KIND_LABELS: dict[str, str] = {
    **{kind: f"{kind}: {KIND_NAMES[kind]}" for kind in KINDS},
    "FB": "F&B: overlapped pair",
    "comm": "communication",
    "idle": "idle",
}


# Schedules with one route and several stages per rank (DualPipeV, interleaved 1F1B, ZB-V) hatch the stages
# past the first pass over the ranks: they are not a second direction.
_CHUNK_LABELS: dict[int, str] = {0: "stages 0..PP-1 (plain)", 1: "stages PP and up (hatched)"}
def _options(where: str, title=None, labels=None) -> None:
    """The common keyword options of the plots: a title string and the labels switch (None: automatic)."""
    if title is not None:
        arg.instance(title, "title", str, "a string (or None for the default title)", where=where)
    if labels is not None:
        arg.flag(labels, "labels", where=where)


def direction(schedule: Schedule, stage: int) -> int:
    """0 or 1: which DualPipe direction (or which later chunk of a rank) stage id ``stage`` belongs to.

    Stage ids >= n_ranks exist only in DualPipe (direction 1, fed from the last rank) and in schedules with
    several stages per rank: DualPipeV and ZB-V (the way back up the V) and interleaved 1F1B (the later
    passes over the ranks); every other schedule has a single direction.
    """
    if type(stage) is not int or stage < 0 or not isinstance(schedule, Schedule):  # the fast path: drawing
        arg.instance(schedule, "schedule", Schedule, "a Schedule", where="direction")
        stage = arg.whole(stage, "stage", low=0, where="direction", why="stage ids are 0, 1, 2, ...")
    return 1 if stage >= schedule.n_ranks else 0


def hatch_labels(schedule: Schedule) -> dict[int, str]:
    """Legend text of plain and hatched blocks: DualPipe's two directions, or a rank's first and later chunks."""
    arg.instance(schedule, "schedule", Schedule, "a Schedule", where="hatch_labels")
    return DIRECTION_LABELS if len(set(schedule.routes)) > 1 else _CHUNK_LABELS


def _block_label(action) -> str:
    if isinstance(action, OverlappedAction):
        return f"{action.forward.microbatch},{action.backward.microbatch}"
    return str(action.microbatch)


def _rects(x0, x1, y0, y1) -> np.ndarray:
    """(n, 4, 2) vertices of axis-aligned rectangles: PolyCollection's fast path takes an array."""
    x0, x1, y0, y1 = (np.asarray(a, dtype=float) for a in (x0, x1, y0, y1))
    return np.stack([np.stack([x0, y0], -1), np.stack([x0, y1], -1),
                     np.stack([x1, y1], -1), np.stack([x1, y0], -1)], axis=1)


def _collect_blocks(timeline: Timeline, highlight: Callable[[Interval], bool] | None):
    """Rectangles of every block as arrays grouped by (kind, direction, faded), plus block labels.

    An overlapped pair becomes two half-height rectangles: forward chunk above, backward chunk below.
    """
    groups: dict[tuple[str, int, bool], list[tuple[float, float, float, float]]] = {}
    labels: list[tuple[float, float, float, ActionLike]] = []   # (x centre, y, width, action): text if it fits
    schedule = timeline.schedule
    half = _BAR_HEIGHT / 2
    side = [direction(schedule, stage) for stage in range(schedule.n_stages)]  # asked once per stage
    for row in timeline.intervals:
        for iv in row:
            faded = highlight is not None and not highlight(iv)
            y, a, start, end = iv.rank, iv.action, iv.start, iv.end
            if type(a) is OverlappedAction:
                groups.setdefault(("FB", side[a.forward.stage], faded), []).append((start, end, y - half, y))
                groups.setdefault(("FB", side[a.backward.stage], faded), []).append((start, end, y, y + half))
            else:
                groups.setdefault((a.kind, side[a.stage], faded), []).append((start, end, y - half, y + half))
            if not faded:
                labels.append(((start + end) / 2, y, end - start, a))
    return {key: np.asarray(rows, dtype=float) for key, rows in groups.items()}, labels


def _hatch_segments(boxes: np.ndarray, px_per_unit: float, row_px: float) -> np.ndarray:
    """Diagonal strokes ("/") inside each box, about 7 px apart, as (n, 2, 2) segments for one LineCollection.
    Matplotlib's own hatching redraws the pattern per polygon and costs ~0.3 ms a block; 2,000 hatched
    blocks would blow the widget's redraw budget.
    """
    if len(boxes) == 0:
        return np.zeros((0, 2, 2))
    x0, x1, y0, y1 = boxes.T
    rise_px = (y1 - y0).mean() * row_px
    slant = _HATCH_RUN * rise_px / px_per_unit               # horizontal run of one stroke, in time units
    step = max(_HATCH_STEP_PX / px_per_unit, 1e-12)          # spacing between strokes, in time units
    counts = np.maximum(np.floor((x1 - x0 - slant) / step).astype(int) + 1, 1)
    idx = np.repeat(np.arange(len(boxes)), counts)
    k = np.arange(len(idx)) - np.repeat(np.cumsum(counts) - counts, counts)
    start = x0[idx] + k * step
    end = np.minimum(start + slant, x1[idx])
    # y grows downwards on screen (rank 0 on top), so "/" runs from (start, y1) up to (end, y0).
    return np.stack([np.stack([start, y1[idx]], -1), np.stack([end, y0[idx]], -1)], axis=1)


def _figure_for(n_rows: int, width: float = 12.0) -> tuple[Figure, Axes]:
    """A figure whose margins are fixed in inches (legend on the right): no layout engine to run."""
    height = min(1.6 + 0.36 * n_rows, 9.0)
    fig, ax = plt.subplots(figsize=(width, height))
    fig.subplots_adjust(left=0.8 / width, right=1 - 3.0 / width, bottom=0.6 / height, top=1 - 0.4 / height)
    return fig, ax


def budget_text(timeline: Timeline) -> str:
    """The time budget in a few words, from ``Timeline.budget_shares`` (the one place it is computed):
    ``"idle 22% + comm waits 19% of rank-time"``; the communication part only when a rank waited for it."""
    shares = timeline.budget_shares()
    text = f"idle {shares['idle']:.1%}"
    if shares["comm_exposed"] > 0:
        text += f" + comm waits {shares['comm_exposed']:.1%}"
    return text + " of rank-time"


def _default_title(timeline: Timeline) -> str:
    s = timeline.schedule
    return (f"{s.name} ({timeline.source}): {s.n_ranks} ranks, {s.n_microbatches} micro-batch{'es' if s.n_microbatches != 1 else ''}, "
            f"step {timeline.makespan:.4g} {timeline.time_unit}; {budget_text(timeline)}")


def _legend_handles(kinds: Sequence[str], directions: set[int], comm_kinds: set[bool],
                    hatch_text: Mapping[int, str] = DIRECTION_LABELS) -> list[Patch]:
    handles = [Patch(facecolor=KIND_COLORS[k], edgecolor=EDGE_COLOR, label=KIND_LABELS[k]) for k in kinds]
    for hidden in sorted(comm_kinds):
        label = "communication (hidden behind compute)" if hidden else "communication (exposed: rank waits)"
        handles.append(Patch(facecolor=KIND_COLORS["comm"], alpha=_HIDDEN_ALPHA if hidden else 1.0,
                             edgecolor=EDGE_COLOR, label=label))
    handles.append(Patch(facecolor=KIND_COLORS["idle"], edgecolor="none", label=KIND_LABELS["idle"]))
    if 1 in directions:
        for d in (0, 1):
            handles.append(Patch(facecolor="white", edgecolor=EDGE_COLOR, hatch=DIRECTION_HATCH[d],
                                 label=hatch_text[d]))
    return handles


def _add(ax: Axes, collection) -> None:
    # autolim=False: the limits are set explicitly, and computing data limits of thousands of paths costs
    # a fifth of a redraw.
    ax.add_collection(collection, autolim=False)


def _pixel_scale(ax: Axes, n: int, xlim: tuple[float, float]) -> tuple[float, float]:
    """Pixels per time unit and per rank row of ``ax`` showing ``n`` ranks over ``xlim``."""
    fig, box = ax.figure, ax.get_position()
    return (fig.get_figwidth() * fig.dpi * box.width / (xlim[1] - xlim[0]),
            fig.get_figheight() * fig.dpi * box.height / max(n, 1))


def _idle_rows(timeline: Timeline) -> np.ndarray:
    """Idle = the part of a row no block covers: every rank's row, drawn grey underneath the blocks."""
    rows = np.arange(timeline.n_ranks)
    return np.c_[np.full(len(rows), timeline.start), np.full(len(rows), timeline.end),
                 rows - _BAR_HEIGHT / 2, rows + _BAR_HEIGHT / 2]


def _comm_strips(timeline: Timeline) -> dict[bool, np.ndarray]:
    """The communication strips (start, end, top, bottom) under the blocks, exposed (False) and hidden (True)."""
    strips = {}
    for hidden in (False, True):
        spans = [(c.start, c.end, c.rank) for c in timeline.comms if c.overlapped == hidden]
        if spans:
            s, e, r = np.asarray(spans, dtype=float).T
            strips[hidden] = np.c_[s, e, r + _BAR_HEIGHT / 2 - _COMM_HEIGHT, r + _BAR_HEIGHT / 2]
    return strips


def _draw_blocks(ax: Axes, timeline: Timeline, highlight, labels: bool | None,
                 xlim: tuple[float, float]) -> tuple[list[str], set[int], set[bool]]:
    """Add the idle rows, blocks, hatching, communication strips and labels; return what the legend lists."""
    px_per_unit, row_px = _pixel_scale(ax, timeline.n_ranks, xlim)
    _add(ax, PolyCollection(_rects(*_idle_rows(timeline).T), facecolors=KIND_COLORS["idle"], edgecolors="none",
                            zorder=1))
    groups, block_labels = _collect_blocks(timeline, highlight)
    hatched: dict[bool, list[np.ndarray]] = {}
    for (kind, d, faded), boxes in sorted(groups.items()):
        _add(ax, PolyCollection(
            _rects(*boxes.T), facecolors=KIND_COLORS[kind], edgecolors=EDGE_COLOR, linewidths=0.4,
            alpha=_FADED_ALPHA if faded else 1.0, zorder=2))
        if DIRECTION_HATCH[d]:
            hatched.setdefault(faded, []).append(boxes)
    for faded, boxes in sorted(hatched.items()):
        # One LineCollection of short strokes: Agg strokes it faster than one compound path.
        _add(ax, LineCollection(_hatch_segments(np.concatenate(boxes), px_per_unit, row_px),
                                colors=EDGE_COLOR, linewidths=0.6, zorder=3,
                                alpha=_FADED_ALPHA if faded else 1.0))
    strips = _comm_strips(timeline)
    for hidden, spans in strips.items():
        _add(ax, PolyCollection(_rects(*spans.T), facecolors=KIND_COLORS["comm"], edgecolors="none",
                                alpha=_HIDDEN_ALPHA if hidden else 1.0, zorder=4))
    _label_blocks(ax, block_labels, labels, timeline.n_ranks, xlim)
    return _legend_keys(groups, strips)


def _label_blocks(ax: Axes, block_labels, labels: bool | None, n: int, xlim: tuple[float, float]) -> None:
    """Micro-batch numbers only where they fit (labels=None), always (True) or never (False)."""
    if labels is None or labels:
        px_per_unit, row_px = _pixel_scale(ax, n, xlim)
        fontsize = 7 if n > 8 else 8
        for xc, y, width, action in block_labels:
            if not labels and (row_px < 11 or width * px_per_unit < _LABEL_MIN_PX + 2):
                continue  # not even one character fits (most blocks of a large schedule): skip the text
            text = _block_label(action)
            fits = width * px_per_unit >= _LABEL_MIN_PX * len(text) + 2 and row_px >= 11
            if (labels or fits) and xlim[0] <= xc <= xlim[1]:
                ax.text(xc, y, text, ha="center", va="center", fontsize=fontsize, zorder=5, clip_on=True,
                        bbox=_LABEL_BOX)


def _legend_keys(groups, strips) -> tuple[list[str], set[int], set[bool]]:
    """What the legend lists: the kinds drawn, the directions (1: hatched) and the communication kinds."""
    kinds = [k for k in ("F", "B", "I", "W", "FB") if any(g[0] == k for g in groups)]
    return kinds, {g[1] for g in groups}, set(strips)


def _xlim(timeline: Timeline, xlim: tuple[float, float] | None) -> tuple[float, float]:
    x0, x1 = xlim if xlim is not None else (timeline.start, timeline.end)
    return (x0, x1) if x1 > x0 else (x0, x0 + 1.0)


def _rank_axis(ax: Axes, n: int) -> None:
    ax.set_ylim(n - 0.5, -0.5)   # rank 0 on top, as in the papers' figures
    ax.set_yticks(range(n), [f"rank {r}" for r in range(n)], fontsize=8 if n > 8 else 10)
    ax.set_ylabel("rank")


def _legend(ax: Axes, kinds, directions, comm_kinds, hatch_text=DIRECTION_LABELS) -> None:
    ax.legend(handles=_legend_handles(kinds, directions, comm_kinds, hatch_text), loc="upper left",
              bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)


def plot_timeline(
    timeline: Timeline,
    ax: Axes | None = None,
    *,
    title: str | None = None,
    labels: bool | None = None,
    highlight: Callable[[Interval], bool] | None = None,
    legend: bool = True,
    xlim: tuple[float, float] | None = None,
) -> Axes:
    """Draw ``timeline`` as a Gantt chart: one row per rank (rank 0 on top), one colour per action kind.

    Blocks are coloured by ``KIND_COLORS`` (F, B, I, W, FB); idle time is the grey background of each row;
    communication (``timeline.comms``) is a thin strip under the blocks, faint when hidden behind compute.
    DualPipe's direction 1 (stage ids >= n_ranks; with several stages per rank, the later ones) is hatched;
    an overlapped F&B block shows its forward
    chunk in its upper half and its backward chunk in its lower half, each hatched by its own direction.
    Micro-batch numbers are written on blocks wide enough to read them (``labels=None``: automatic).
    ``highlight(interval) -> bool`` fades the intervals it rejects (to build a schedule up phase by phase).

    Each (kind, direction) group is one ``PolyCollection`` and the hatching one ``LineCollection``, so
    16 ranks x 64 micro-batches draw in tens of milliseconds (``TimelineCanvas`` redraws faster still).
    """
    where = "plot_timeline"
    check_timeline(timeline, where)
    _options(where, title, labels)
    arg.flag(legend, "legend", where=where)
    if highlight is not None and not callable(highlight):
        arg.fail("highlight", "a function interval -> bool (or None)", highlight, where=where,
                 error=arg.InputTypeError)
    if xlim is not None:
        ends = arg.sequence(xlim, "xlim", where=where, why="(start, end) of the time axis")
        if len(ends) != 2 or arg.real(ends[1], "xlim's end", where=where) <= arg.real(ends[0], "xlim's start",
                                                                                        where=where):
            arg.fail("xlim", "(start, end) with end > start", xlim, where=where)
    if ax is None:
        _, ax = _figure_for(timeline.n_ranks)
    xlim = _xlim(timeline, xlim)
    kinds, directions, comm_kinds = _draw_blocks(ax, timeline, highlight, labels, xlim)
    ax.set_xlim(*xlim)
    _rank_axis(ax, timeline.n_ranks)
    ax.set_xlabel(f"time ({timeline.time_unit})")
    ax.set_title(title if title is not None else _default_title(timeline), fontsize=11)
    if legend:
        _legend(ax, kinds, directions, comm_kinds, hatch_labels(timeline.schedule))
    return ax


class TimelineCanvas:
    """One Gantt-chart figure redrawn in place: what a widget needs when a slider moves.

    ``render(timeline) -> PNG bytes`` draws what ``plot_timeline`` draws, but keeps the figure between calls
    and blits: the static frame (axes, rank labels, legend) is rendered once and kept as a background;
    each call restores it and draws only the blocks, the time axis and the title on top. Text is the slow
    part of a matplotlib figure, so this roughly halves a redraw. The background is rebuilt when the number
    of ranks or the legend's entries change. The figure is not managed by pyplot: it never shows by itself.
    """

    def __init__(self, width: float = 12.0):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        width = arg.real(width, "width", low=1, high=50, where="TimelineCanvas", why="inches")
        self.width = width
        self.figure = Figure(figsize=(width, 4.0))
        FigureCanvasAgg(self.figure)
        self.ax = self.figure.add_subplot()
        self._n_ranks: int | None = None
        self._legend_key: tuple | None = None
        self._xlabel: str | None = None
        self._background = None
        # A figure-level title at a fixed place: an axes title would be re-positioned by Axes.draw, which a
        # blitted redraw skips.
        self._title = self.figure.text(0.5, 1.0, "", ha="center", va="bottom", fontsize=11)
        self._stamps = raster.TextStamps(self.figure.dpi)

    def render(self, timeline: Timeline, *, title: str | None = None, labels: bool | None = None) -> bytes:
        """Draw ``timeline`` (replacing the previous one) and return the figure as PNG bytes."""
        check_timeline(timeline, "TimelineCanvas.render")
        _options("TimelineCanvas.render", title, labels)
        ax, n = self.ax, timeline.n_ranks
        for artist in [*ax.collections, *ax.texts]:
            artist.remove()
        if n != self._n_ranks:
            height = min(1.6 + 0.36 * n, 9.0)
            self.figure.set_size_inches(self.width, height)
            self.figure.subplots_adjust(left=0.8 / self.width, right=1 - 3.0 / self.width,
                                        bottom=0.6 / height, top=1 - 0.4 / height)
            _rank_axis(ax, n)
            box = ax.get_position()
            self._title.set_position((box.x0 + box.width / 2, box.y1 + 0.08 / height))
            self._n_ranks, self._background = n, None
        xlim = _xlim(timeline, None)
        ax.set_xlim(*xlim)
        groups, block_labels = _collect_blocks(timeline, None)
        strips = _comm_strips(timeline)
        _label_blocks(ax, block_labels, labels, n, xlim)
        kinds, directions, comm_kinds = _legend_keys(groups, strips)
        xlabel = f"time ({timeline.time_unit})"
        if xlabel != self._xlabel:
            ax.set_xlabel(xlabel)
            self._xlabel = xlabel
        self._title.set_text(title if title is not None else _default_title(timeline))
        hatch_text = hatch_labels(timeline.schedule)
        legend_key = (tuple(kinds), tuple(sorted(directions)), tuple(sorted(comm_kinds)), hatch_text[1])
        if legend_key != self._legend_key:
            if ax.get_legend() is not None:
                ax.get_legend().remove()
            _legend(ax, kinds, directions, comm_kinds, hatch_text)
            self._legend_key, self._background = legend_key, None

        canvas = self.figure.canvas
        changing = [ax.xaxis, self._title, *ax.texts]  # the blocks are painted below them, not artists
        if self._background is None:
            for artist in changing:
                artist.set_visible(False)
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.figure.bbox)
            for artist in changing:
                artist.set_visible(True)
            ax.xaxis.draw(canvas.get_renderer())  # lays out the axis label (the next restore wipes the pixels)
        canvas.restore_region(self._background)
        self._paint(timeline, groups, strips, xlim)
        renderer, rgba = canvas.get_renderer(), np.asarray(canvas.buffer_rgba())
        self._stamps.draw_axis(ax.xaxis, renderer, rgba)
        for text in ax.texts:
            _lighten_under(text, renderer, rgba)
            self._stamps.draw(text, renderer, rgba)
        self._title.draw(renderer)  # new words on every redraw: drawn, not stamped
        return raster.png_bytes(rgba)

    def _paint(self, timeline: Timeline, groups, strips, xlim) -> None:
        """The rectangles ``_draw_blocks`` adds as polygons, painted straight into the canvas's pixels
        (``utils.pipeline.raster``: the same colours, outlines and hatching, several times faster)."""
        ax, dpi = self.ax, self.figure.dpi
        keys = sorted(groups)
        hatched = [groups[k][:, 3] - groups[k][:, 2] for k in keys if DIRECTION_HATCH[k[1]]]
        rise_px = np.concatenate(hatched).mean() * _pixel_scale(ax, timeline.n_ranks, xlim)[1] if hatched else 1.0
        look = raster.Look([to_rgb(KIND_COLORS[k[0]]) for k in keys], [bool(DIRECTION_HATCH[k[1]]) for k in keys],
                           to_rgb(KIND_COLORS["idle"]), to_rgb(EDGE_COLOR), 0.4 * dpi / 72, 0.6 * dpi / 72,
                           _HATCH_STEP_PX, _HATCH_RUN * rise_px)  # as _hatch_segments
        area = raster.PlotArea(np.asarray(self.figure.canvas.buffer_rgba()), ax.transData, ax.bbox.get_points())
        blocks = raster.Blocks.from_boxes([groups[k] for k in keys], _BAR_HEIGHT)
        raster.paint_gantt(area, blocks, timeline.n_ranks, (timeline.start, timeline.end), _BAR_HEIGHT, look)
        raster.paint_strips(area, [(spans, to_rgb(KIND_COLORS["comm"]), _HIDDEN_ALPHA if hidden else 1.0)
                                   for hidden, spans in strips.items()])


def _lighten_under(text, renderer, rgba: np.ndarray) -> None:
    """The canvas's ``_LABEL_BOX``: lighten the pixels under ``text`` (its box, 1 px around) towards white,
    as the box ``plot_timeline`` draws, so the raster's hatching does not strike through the digits."""
    if not text.get_visible() or not text.get_text():
        return
    box = text.get_window_extent(renderer)
    height = rgba.shape[0]
    r0, r1 = max(int(height - box.y1) - 1, 0), min(int(np.ceil(height - box.y0)) + 1, height)
    c0, c1 = max(int(box.x0) - 1, 0), min(int(np.ceil(box.x1)) + 1, rgba.shape[1])
    if r1 > r0 and c1 > c0:
        under = rgba[r0:r1, c0:c1, :3].astype(np.float32)
        rgba[r0:r1, c0:c1, :3] = np.rint(under + (255.0 - under) * _LABEL_LIGHTEN)


def plot_timelines_side_by_side(
    simulated: Timeline, measured: Timeline, *, titles: tuple[str, str] | None = None,
) -> Figure:
    """Two Gantt charts of one schedule, one above the other: the simulator's prediction and a measured run.

    Each keeps its own time axis (simulated units vs milliseconds), so compare shapes and idle fractions.
    """
    where = "plot_timelines_side_by_side"
    check_timeline(simulated, where, "simulated"), check_timeline(measured, where, "measured")
    if titles is not None and (len(arg.sequence(titles, "titles", where=where)) != 2
                               or not all(isinstance(t, str) for t in titles)):
        arg.fail("titles", "two strings (simulated, measured)", titles, where=where)
    n = max(simulated.n_ranks, measured.n_ranks)
    fig, axes = plt.subplots(2, 1, figsize=(12, min(3.0 + 0.7 * n, 12.0)), layout="constrained")
    for i, (ax, tl) in enumerate(zip(axes, (simulated, measured), strict=True)):
        title = titles[i] if titles is not None else _default_title(tl)
        plot_timeline(tl, ax=ax, title=title, legend=(i == 0))
    return fig


def plot_timelines_stacked(timelines: Sequence[Timeline], *, titles: Sequence[str] | None = None,
                           labels: bool | None = None) -> Figure:
    """Gantt charts of several timelines, one above the other, on **one** time axis running to the longest
    step, so that steps of different length are drawn to scale (each panel keeps its own legend; the time
    label is on the bottom panel only)."""
    where = "plot_timelines_stacked"
    timelines = arg.sequence(timelines, "timelines", where=where, why="the timelines to draw, one panel each")
    for i, tl in enumerate(timelines):
        check_timeline(tl, where, f"timelines[{i}]")
    if titles is not None and (len(arg.sequence(titles, "titles", where=where)) != len(timelines)
                               or not all(isinstance(t, str) for t in titles)):
        arg.fail("titles", f"{len(timelines)} strings, one per timeline", titles, where=where)
    height = min(1.5 * len(timelines) + 0.35 * sum(tl.n_ranks for tl in timelines), 14.0)
    fig, axes = plt.subplots(len(timelines), 1, figsize=(12, height), layout="constrained", sharex=True,
                             squeeze=False)
    end = max(tl.makespan for tl in timelines)
    for i, (ax, tl) in enumerate(zip(axes[:, 0], timelines, strict=True)):
        plot_timeline(tl, ax=ax, title=None if titles is None else titles[i], labels=labels, xlim=(0.0, end))
        if i < len(timelines) - 1:
            ax.set_xlabel("")  # the shared axis is read on the bottom panel
    return fig
