"""The course's figure conventions: one colour per op kind, shared by every figure, and PNG export.

Every figure of every notebook takes its colours from ``KIND_COLORS``, so "orange" means
"backward-for-input" everywhere. The palette is Okabe & Ito's, readable with the common forms of
colour blindness; DualPipe's second direction is told apart by hatching, not by a second palette.
Ground layer: imports nothing from the kit.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

# Okabe-Ito colours (Okabe & Ito, "Color Universal Design", 2008): distinguishable under
# protanopia, deuteranopia and tritanopia; all light enough for black micro-batch numbers on top.
KIND_COLORS: dict[str, str] = {
    "F": "#56B4E9",     # forward: sky blue
    "B": "#009E73",     # full backward (input + weights): bluish green
    "I": "#E69F00",     # backward for input only: orange
    "W": "#F0E442",     # backward for weights only: yellow
    "FB": "#CC79A7",    # DualPipe's overlapped forward & backward pair: reddish purple
    "comm": "#D55E00",  # communication (p2p, expert all-to-all): vermillion
    "idle": "#E0E0E0",  # waiting: light grey
}

# Human-readable names for legends, in the order legends list them.
KIND_LABELS: dict[str, str] = {
    "F": "F: forward",
    "B": "B: full backward",
    "I": "I: backward for input",
    "W": "W: backward for weights",
    "FB": "F&B: overlapped pair",
    "comm": "communication",
    "idle": "idle",
}

# DualPipe feeds micro-batches from both ends. Direction 0 (left to right) is drawn plain,
# direction 1 (right to left) hatched, so the two streams stay apart even in grey-scale print.
DIRECTION_HATCH: dict[int, str] = {0: "", 1: "///"}
DIRECTION_LABELS: dict[int, str] = {0: "direction 0 (plain)", 1: "direction 1 (hatched)"}
EDGE_COLOR = "#333333"

# Colours for whole schedules (idle bars, comparison lines): also Okabe-Ito, so figures comparing
# schedules stay readable for colour-blind learners. They never stand for an op kind.
SCHEDULE_COLORS: dict[str, str] = {
    "naive": "#000000",
    "gpipe": "#999999",
    "1f1b": "#0072B2",
    "1f1b-overlap": "#56B4E9",
    "zb1p": "#E69F00",
    "dualpipe": "#CC79A7",
    "dualpipev": "#009E73",
    "interleaved1f1b": "#D55E00",  # vermillion
    "zbv": "#9C8500",              # Okabe-Ito yellow, darkened so lines and bars show on white
}


def png_from_rgba(rgba) -> bytes:
    """Encode an Agg RGBA buffer as an RGB PNG with light compression (a quarter less to compress)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgba)).convert("RGB").save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def figure_png(fig: Figure, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes, encoded with light compression (a widget redraw waits for this)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()
