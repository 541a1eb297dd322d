"""A Gantt chart's blocks painted straight into a canvas's pixels with numpy: the explorer's fast redraw.

``plots.plot_timeline`` draws every block as a matplotlib polygon: general and exact, but at 16 ranks x 64
micro-batches Agg fills and strokes ~1,500 small rectangles, and building the polygons takes as long: most
of a widget redraw. A Gantt chart is simpler than a general figure. Each rank is a band, grey where idle;
every block spans the band's height (an overlapped pair: its forward in the upper half, its backward in the
lower half); blocks never overlap. So inside a half-band every pixel row looks the same (but for the
hatching), and ``paint_gantt`` computes one row of colours per half-band (faces, and the outlines where
blocks start and end) and copies it down, four bytes per pixel at once; then it strokes the horizontal
outlines row by row and the hatching pixel by pixel (the few pixels a stroke touches, each with its
antialiased coverage). ``paint_strips`` lays the communication strips over it. The same picture as the
polygons (to the antialiasing of an edge), several times faster.

Text is matplotlib's, drawn once per distinct label and then copied (``TextStamps``); ``png_bytes`` encodes
the canvas for the widget. Imports numpy, the standard library and, for the text, matplotlib.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import numpy as np


class Blocks(NamedTuple):
    """A Gantt chart's boxes as columns: the ``rank`` whose band holds each, its ``start`` and ``end`` in
    time, its ``style`` (an index into ``Look.faces``) and the part of the band it fills (``half``: 0 the
    whole band, 1 its upper half, 2 its lower half: an overlapped pair's forward and backward chunks)."""

    rank: np.ndarray
    start: np.ndarray
    end: np.ndarray
    style: np.ndarray
    half: np.ndarray

    @classmethod
    def from_boxes(cls, styles: list[np.ndarray], bar: float) -> Blocks:
        """From each style's boxes ``(x0, x1, y0, y1)`` (data coordinates, band of rank r from r - bar/2 to
        r + bar/2, or one half of it)."""
        boxes = np.concatenate([b.reshape(-1, 4) for b in styles])
        style = np.repeat(np.arange(len(styles)), [len(b) for b in styles])
        centre = (boxes[:, 2] + boxes[:, 3]) / 2
        rank = np.rint(centre).astype(np.int64)
        half = np.where(boxes[:, 3] - boxes[:, 2] > 0.75 * bar, 0, np.where(centre < rank, 1, 2))
        return cls(rank, boxes[:, 0], boxes[:, 1], style, half)


class Look(NamedTuple):
    """Colours (RGB in 0..1) and strokes, in pixels: each style's face and whether it is hatched, the idle
    grey, the outline's colour and width, a hatch stroke's width, spacing and run (to the right, over its
    box's height)."""

    faces: list[tuple[float, float, float]]
    hatched: list[bool]
    idle: tuple[float, float, float]
    edge: tuple[float, float, float]
    edge_width: float
    hatch_width: float
    hatch_step: float
    hatch_run: float


class PlotArea(NamedTuple):
    """Where the canvas buffer ``rgba`` (writable, (height, width, 4) bytes) shows an axes: ``to_display``
    maps data to display coordinates (its ``transData``); ``box`` is ((x0, y0), (x1, y1)) in display
    coordinates."""

    rgba: np.ndarray
    to_display: object
    box: tuple[tuple[float, float], tuple[float, float]]

    def pixels(self):
        """The area's pixels (a view, rows running downwards), as bytes (h, w, 4) and as one 32-bit word
        per pixel (h, w), and a map from data coordinates to (column, row) in them."""
        height = self.rgba.shape[0]
        (x0, y0), (x1, y1) = np.rint(self.box).astype(int)
        region = self.rgba[height - y1:height - y0, x0:x1]
        words = self.rgba.view(np.uint32).reshape(self.rgba.shape[:2])[height - y1:height - y0, x0:x1]
        return region, words, lambda xy: self.to_display.transform(xy) * (1, -1) + (-x0, y1)


def paint_gantt(area: PlotArea, blocks: Blocks, n_ranks: int, span: tuple[float, float], bar: float,
                look: Look) -> None:
    """Paint ``n_ranks`` bands (rank r from r - bar/2 to r + bar/2, idle grey over ``span`` in time) and
    ``blocks`` on them, outlined and hatched as ``plots.plot_timeline`` draws them; the blocks of a half-band
    must not overlap. Nothing outside the area is touched."""
    _, words, to_pixels = area.pixels()
    h, w = words.shape
    ranks = np.arange(n_ranks)
    # each band's rows: its top, its middle (where a pair's halves meet) and the row just below it
    rows = _rows(to_pixels, np.stack([ranks - bar / 2, ranks, ranks + bar / 2], axis=1).reshape(-1), h)
    bands = tuple(np.sort(rows.reshape(n_ranks, 3), axis=1).T)  # top, middle, below
    cols = _columns(to_pixels, blocks.start, blocks.end, w)
    # one row of colours per half-band (2r: upper, 2r + 1: lower): the style of the block on each column,
    # else idle within ``span``; darkened where an outline crosses (a block starts, or just after it ends)
    upper, lower = blocks.half != 2, blocks.half != 1
    line = np.r_[2 * blocks.rank[upper], 2 * blocks.rank[lower] + 1]
    left, right = np.r_[cols[0][upper], cols[0][lower]], np.r_[cols[1][upper], cols[1][lower]]
    owner = _owners(line, left, right, 2 * n_ranks, w)
    style = np.r_[blocks.style[upper], blocks.style[lower]]
    (i0,), (i1,) = _columns(to_pixels, np.array([span[0]]), np.array([span[1]]), w)
    idle = np.zeros(w, dtype=bool)
    idle[i0:i1] = True
    colors = np.array([*look.faces, look.idle]) * 255
    row_colors = colors[np.where(owner >= 0, style[np.maximum(owner, 0)], len(look.faces))]
    ends = np.r_[left, right]
    inside = ends < w
    count = np.bincount((np.r_[line, line] * w + ends)[inside], minlength=2 * n_ranks * w).reshape(-1, w)
    ink = 1 - (1 - min(look.edge_width, 1.0)) ** count
    row_colors += (np.array(look.edge) * 255 - row_colors) * ink[..., None]
    paint, packed = (owner >= 0) | idle | (count > 0), _packed(row_colors)
    for r in range(n_ranks):  # copied down each half-band, four bytes per pixel
        np.copyto(words[bands[0][r]:bands[1][r]], packed[2 * r], where=paint[2 * r])
        np.copyto(words[bands[1][r]:bands[2][r]], packed[2 * r + 1], where=paint[2 * r + 1])
    _horizontal_outlines(words, blocks, bands, cols, look)
    _hatch(words, blocks, bands, cols, to_pixels, look)


def paint_strips(area: PlotArea, strips: list[tuple[np.ndarray, tuple[float, float, float], float]]) -> None:
    """Lay plain boxes ``(x0, x1, y0, y1)`` (data coordinates, an (n, 4) array) of one colour and opacity per
    group over the picture, each group over the ones before it; boxes may overlap: where ``k`` of a group
    do, its colour covers ``1 - (1 - alpha) ** k`` of the pixel."""
    region, words, to_pixels = area.pixels()
    h, w = words.shape
    for boxes, color, alpha in strips:
        if not len(boxes):
            continue
        left, right = _columns(to_pixels, boxes[:, 0], boxes[:, 1], w)
        rows = np.sort(np.c_[_rows(to_pixels, boxes[:, 2], h), _rows(to_pixels, boxes[:, 3], h)], axis=1)
        key = rows[:, 0] * (h + 1) + rows[:, 1]
        for k in np.unique(key):  # boxes sharing their rows: one row of coverage, copied down
            mine = key == k
            a, b = rows[mine][0]
            if b > a:
                count = _owners(np.zeros(mine.sum(), dtype=np.int64), left[mine], right[mine], 1, w,
                                count=True)[0]
                at = np.flatnonzero(count)
                below = region[a:b, at, :3].astype(np.float32)
                cover = (1 - (1 - alpha) ** count[at])[:, None].astype(np.float32)
                region[a:b, at, :3] = np.rint(below + (np.array(color, dtype=np.float32) * 255 - below) * cover)


def _columns(to_pixels, start: np.ndarray, end: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel columns where boxes from ``start`` to ``end`` begin and end (rounded to pixel edges, as Agg
    snaps axis-aligned rectangles), within the area."""
    xs = to_pixels(np.stack([np.r_[start, end], np.zeros(2 * len(start))], axis=1))[:, 0]
    cols = np.clip(np.rint(xs), 0, w).astype(np.int64)
    return np.minimum(cols[:len(start)], cols[len(start):]), np.maximum(cols[:len(start)], cols[len(start):])


def _rows(to_pixels, y: np.ndarray, h: int) -> np.ndarray:
    """Pixel rows (running downwards) of the heights ``y``, rounded to pixel edges, within the area."""
    return np.clip(np.rint(to_pixels(np.c_[np.zeros_like(y), y])[:, 1]), 0, h).astype(np.int64)


def _owners(row: np.ndarray, left: np.ndarray, right: np.ndarray, n_rows: int, w: int,
            count: bool = False) -> np.ndarray:
    """(n_rows, w): on each row, which of the boxes (``row``, columns ``left:right``) covers each column, -1
    where none does (the boxes of a row must not overlap), or with ``count``, how many do: +(i + 1) where
    box i starts and -(i + 1) where it ends, summed along the row."""
    ids = np.ones(len(row)) if count else np.arange(1, len(row) + 1, dtype=float)
    at = np.r_[row * (w + 1) + left, row * (w + 1) + right]
    marks = np.bincount(at, np.r_[ids, -ids], minlength=n_rows * (w + 1)).reshape(n_rows, w + 1)[:, :w]
    summed = np.rint(np.cumsum(marks, axis=1)).astype(np.int64)
    return summed if count else summed - 1


def _packed(rgb: np.ndarray) -> np.ndarray:
    """Opaque colours (..., 3) in 0..255 as the 32-bit words of the canvas's RGBA bytes."""
    rgba = np.concatenate([np.rint(rgb), np.full((*rgb.shape[:-1], 1), 255.0)], axis=-1).astype(np.uint8)
    return rgba.view(np.uint32)[..., 0]


def _horizontal_outlines(words: np.ndarray, blocks: Blocks, bands, cols, look: Look) -> None:
    """The outlines along the blocks' upper borders and just below their lower ones, for a whole band or
    its halves (between a pair's halves: twice, the upper half's lower border and the lower half's upper)."""
    h, w = words.shape
    (top, mid, below), (left, right) = bands, cols
    n, r = len(top), blocks.rank
    upper_row = np.where(blocks.half == 2, 2 * n + r, r)  # lines: 0..n-1 tops, n..2n-1 below, 2n.. middles
    lower_row = np.where(blocks.half == 1, 2 * n + r, n + r)
    right = np.minimum(right + 1, w)  # the corner just after the block
    count = _owners(np.r_[upper_row, lower_row], np.r_[left, left], np.r_[right, right], 3 * n, w, count=True)
    rows = np.r_[top, below, mid]
    keep = (rows < h) & (count.sum(axis=1) > 0)
    pixels = words[rows[keep]].view(np.uint8).reshape(keep.sum(), w, 4)  # whole rows: faster than picking
    under = pixels[..., :3].astype(np.float32)
    ink = (1 - (1 - min(look.edge_width, 1.0)) ** count[keep]).astype(np.float32)
    pixels[..., :3] = np.rint(under + (np.asarray(look.edge, dtype=np.float32) * 255 - under) * ink[..., None])
    words[rows[keep]] = pixels.view(np.uint32)[..., 0]


def _hatch(words: np.ndarray, blocks: Blocks, bands, cols, to_pixels, look: Look) -> None:
    """Ink the hatch strokes over the hatched blocks, as ``plots._hatch_segments`` draws them: from each
    box's lower left corner, ``hatch_step`` apart, each rising over the box's height while it runs
    ``hatch_run`` to the right (or to the box's edge); antialiased by a pixel centre's distance to it."""
    chosen = np.flatnonzero(np.array(look.hatched, dtype=bool)[blocks.style])
    if not len(chosen):
        return
    (top, mid, below), r, half = bands, blocks.rank[chosen], blocks.half[chosen]
    box_rows = np.c_[np.where(half == 2, mid[r], top[r]), np.where(half == 1, mid[r], below[r])]
    box_cols = np.c_[cols[0][chosen], cols[1][chosen]]
    x0 = to_pixels(np.c_[blocks.start[chosen], np.zeros(len(chosen))])[:, 0]
    x1 = to_pixels(np.c_[blocks.end[chosen], np.zeros(len(chosen))])[:, 0]
    n_strokes = np.maximum(np.floor((x1 - x0 - look.hatch_run) / look.hatch_step) + 1, 1).astype(np.int64)
    box = np.repeat(np.arange(len(chosen)), n_strokes)  # one entry per stroke, then per row it crosses
    k = np.arange(len(box)) - np.repeat(np.cumsum(n_strokes) - n_strokes, n_strokes)
    heights = np.maximum(box_rows[box, 1] - box_rows[box, 0], 0)
    start = x0[box] + k * look.hatch_step
    # columns per row: its run over the box's height, but a stroke ends at the box's right edge (a box
    # narrower than one run gets one stroke, corner to corner)
    slope = np.minimum(look.hatch_run, x1[box] - start) / np.maximum(heights, 1)
    # per stroke, then per row it crosses: where it crosses the row's middle, and the box's columns
    across = 1 / np.hypot(1, slope)  # a pixel's horizontal distance to the stroke, times this: its distance
    first = np.cumsum(heights) - heights
    rise = (np.arange(heights.sum()) - np.repeat(first, heights) + 0.5).astype(np.float32)  # from the bottom
    x = np.repeat(start.astype(np.float32), heights) + np.repeat(slope.astype(np.float32), heights) * rise
    row = np.repeat(box_rows[box, 1] - 1, heights) - (rise - 0.5).astype(np.int64)
    col = np.floor(x)[:, None] + np.array([-1, 0, 1], dtype=np.float32)  # the pixels it may touch
    ink = col + 0.5 - x[:, None]  # their centres' distance to the stroke, then how much it covers them
    np.abs(ink, out=ink)
    ink *= np.repeat(across.astype(np.float32), heights)[:, None]
    np.subtract(look.hatch_width / 2 + 0.5, ink, out=ink)
    np.clip(ink, 0, 1, out=ink)
    lo, hi = (np.repeat(c.astype(np.float32), heights)[:, None] for c in box_cols[box].T)
    ink[(col < lo) | (col >= hi)] = 0.0
    hit = ink > 0
    _mix(words, np.broadcast_to(row[:, None], col.shape)[hit], col[hit].astype(np.int64), look.edge, ink[hit])


def _mix(words: np.ndarray, rows: np.ndarray, cols: np.ndarray, color, ink: np.ndarray) -> None:
    """Lay ``color`` over the pixels (``rows``, ``cols``) of the 32-bit words, covering ``ink`` (0..1) of each."""
    pixels = words[rows, cols].view(np.uint8).reshape(-1, 4)
    under = pixels[:, :3].astype(np.float32)
    under += (np.asarray(color, dtype=np.float32) * 255 - under) * ink[:, None]
    pixels[:, :3] = np.rint(under)
    words[rows, cols] = pixels.view(np.uint32).ravel()


class TextStamps:
    """Text drawn once, then copied: the explorer's canvas writes the same tick labels, axis label and
    micro-batch numbers on every slider move, and matplotlib rasterises text glyph by glyph (about half a
    millisecond a label). A stamp is a text's coverage, rendered by matplotlib on a scratch canvas with the
    artist's own font and alignment, kept by what it says and how; ``draw`` lays it in the artist's colour
    where the artist's layout puts it, to the nearest pixel (text moves with the ticks; a kept stamp ignores
    the fraction of a pixel, which shifts a glyph by less than half a pixel)."""

    def __init__(self, dpi: float):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.transforms import IdentityTransform

        self._figure = Figure(dpi=dpi)
        self._figure.patch.set_alpha(0.0)
        FigureCanvasAgg(self._figure)
        self._pixels = IdentityTransform()
        self._text = self._figure.text(0, 0, "", transform=self._pixels)
        self._kept: dict[tuple, np.ndarray] = {}

    def draw(self, text, renderer, rgba: np.ndarray) -> None:
        """Lay the matplotlib Text ``text`` into the canvas buffer ``rgba`` its ``renderer`` draws on."""
        if not text.get_visible() or not text.get_text():
            return
        box = text.get_window_extent(renderer)
        key = (text.get_text(), text.get_fontproperties(), text.get_rotation(), text.get_horizontalalignment(),
               text.get_verticalalignment(), text.get_linespacing())
        coverage = self._kept.get(key)
        if coverage is None:  # kept under a copy of the font: the artist's own may change later
            if len(self._kept) >= 1024:  # labels are numbers a slider revisits; bound them all the same
                self._kept.clear()
            coverage = self._kept[(*key[:1], key[1].copy(), *key[2:])] = self._render(text, box)
        # the stamp holds the text's box 2 pixels in from its left and bottom edges (rows run downwards)
        h, w = coverage.shape
        top, left = rgba.shape[0] - (int(round(box.y0)) - 2 + h), int(round(box.x0)) - 2
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + h, rgba.shape[0]), min(left + w, rgba.shape[1])
        if r1 <= r0 or c1 <= c0:
            return
        ink = coverage[r0 - top:r1 - top, c0 - left:c1 - left, None] * (1.0 if text.get_alpha() is None
                                                                       else text.get_alpha())
        under = rgba[r0:r1, c0:c1, :3].astype(np.float32)
        color = np.array(_to_rgb(text.get_color()), dtype=np.float32) * 255
        rgba[r0:r1, c0:c1, :3] = np.rint(under + (color - under) * ink)

    def draw_axis(self, axis, renderer, rgba: np.ndarray) -> None:
        """An axis's ticks (matplotlib's own marks), their labels and the axis label, stamped: what
        ``axis.draw`` draws when its label's place is already laid out (it only depends on the tick labels'
        height, which a redraw does not change)."""
        low, high = sorted(axis.get_view_interval())
        slack = 1e-10 * max(abs(low), abs(high), 1.0)  # as matplotlib keeps a tick at the very edge
        axis.get_majorticklabels()  # places the ticks for the current view
        for tick in axis.get_major_ticks():
            if low - slack <= tick.get_loc() <= high + slack:
                tick.tick1line.draw(renderer)
                self.draw(tick.label1, renderer, rgba)
        self.draw(axis.label, renderer, rgba)
        self.draw(axis.offsetText, renderer, rgba)

    def _render(self, text, box) -> np.ndarray:
        """The coverage (0..1, float32) of ``text`` drawn alone, with 2 pixels around its box."""
        scratch = self._text
        scratch.update_from(text)  # font, size, alignment, rotation; and its transform and clipping, undone:
        scratch.set(text=text.get_text(), color="black", alpha=None, clip_on=False, transform=self._pixels)
        w, h = int(np.ceil(box.width)) + 4, int(np.ceil(box.height)) + 4
        self._figure.set_size_inches(w / self._figure.dpi, h / self._figure.dpi)
        anchor = text.get_transform().transform(text.get_unitless_position())
        scratch.set_position((anchor[0] - box.x0 + 2, anchor[1] - box.y0 + 2))  # its box at (2, 2)
        self._figure.canvas.draw()
        return np.asarray(self._figure.canvas.buffer_rgba())[..., 3].astype(np.float32) / 255


def _to_rgb(color) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(color)


def png_bytes(rgba: np.ndarray) -> bytes:
    """An RGBA canvas buffer as PNG bytes, quickly: each row stored as its difference from the row above
    (PNG's "Up" filter; a chart's rows mostly repeat, so this is mostly zeros) and deflated at level 1.

    Pillow tries all five PNG filters on every row; one is enough for a chart and takes half the time.
    """
    height, width, _ = rgba.shape
    rows = np.empty((height, 1 + 4 * width), dtype=np.uint8)
    rows[:, 0] = 2  # the filter type of each row: Up
    flat = np.asarray(rgba, dtype=np.uint8).reshape(height, 4 * width)
    rows[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])  # uint8 arithmetic wraps around, as PNG's does

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.data, 1))
            + chunk(b"IEND", b""))
