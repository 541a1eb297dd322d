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

# The course palette: Okabe & Ito's eight colours ("Color Universal Design", 2008), distinguishable under
# protanopia, deuteranopia and tritanopia, and three greys. Every colour of every figure comes from here.
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
}
GREYS: dict[str, str] = {"grey": "#999999", "light grey": "#E0E0E0", "dark grey": "#333333"}

# One colour per op kind, all light enough for black micro-batch numbers on top.
KIND_COLORS: dict[str, str] = {
    "F": OKABE_ITO["sky blue"],          # forward
    "B": OKABE_ITO["bluish green"],      # full backward (input + weights)
    "I": OKABE_ITO["orange"],            # backward for input only
    "W": OKABE_ITO["yellow"],            # backward for weights only
    "FB": OKABE_ITO["reddish purple"],   # DualPipe's overlapped forward & backward pair
    "comm": OKABE_ITO["vermillion"],     # communication (p2p, expert all-to-all)
    "idle": GREYS["light grey"],         # waiting
}

# DualPipe feeds micro-batches from both ends. Direction 0 (left to right) is drawn plain,
# direction 1 (right to left) hatched, so the two streams stay apart even in grey-scale print.
DIRECTION_HATCH: dict[int, str] = {0: "", 1: "///"}
DIRECTION_LABELS: dict[int, str] = {0: "direction 0 (plain)", 1: "direction 1 (hatched)"}
EDGE_COLOR = GREYS["dark grey"]

# Colours for whole schedules (idle bars, comparison lines): also Okabe-Ito, so figures comparing
# schedules stay readable for colour-blind learners. They never stand for an op kind.
SCHEDULE_COLORS: dict[str, str] = {
    "naive": OKABE_ITO["black"],
    "gpipe": GREYS["grey"],
    "1f1b": OKABE_ITO["blue"],
    "1f1b-overlap": OKABE_ITO["sky blue"],
    "zb1p": OKABE_ITO["orange"],
    "dualpipe": OKABE_ITO["reddish purple"],
    "dualpipev": OKABE_ITO["bluish green"],
    "interleaved1f1b": OKABE_ITO["vermillion"],
    "zbv": "#9C8500",  # Okabe-Ito yellow, darkened so lines and bars show on white
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
