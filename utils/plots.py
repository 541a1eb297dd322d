"""Figures of the course: one colour per op kind, Gantt timelines, activation memory, idle bars.

Every figure of every notebook takes its colours from `KIND_COLORS`, so "orange" means
"backward-for-input" everywhere. The palette is Okabe & Ito's, readable with the common forms of
colour blindness; DualPipe's second direction is told apart by hatching, not by a second palette.
"""

from __future__ import annotations

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
