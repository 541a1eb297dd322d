"""Figures of virtual stages (notebook 04b): where the chunks live, the bubble against v, the price of latency.

Each figure draws a table of ``utils.pipeline.virtual_stages`` (computed and tested there); colours are the
course's schedule colours (``utils.figures.SCHEDULE_COLORS``).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from utils.figures import EDGE_COLOR, GREYS, SCHEDULE_COLORS
from utils.pipeline.registry import make_schedule


def plot_placements(n_ranks: int = 4, names: Sequence[str] = ("1f1b", "interleaved1f1b", "zbv")) -> Figure:
    """One panel per schedule: a micro-batch's route through the stages (x) and the ranks holding them (y).

    A solid arrow between two stages on different ranks is a point-to-point message; a dotted step between
    two stages of one rank is a hand-over in memory (no message). Each title counts the messages one
    micro-batch sends each way.
    """
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), layout="constrained",
                             squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        schedule = make_schedule(name, n_ranks, 2 * n_ranks)
        route = schedule.route_of(0)
        ranks = [schedule.stage_to_rank[s] for s in route]
        colour = SCHEDULE_COLORS.get(name, EDGE_COLOR)
        hops = 0
        for i in range(len(route) - 1):
            remote = ranks[i] != ranks[i + 1]
            hops += remote
            ax.annotate("", xy=(i + 1, ranks[i + 1]), xytext=(i, ranks[i]),
                        arrowprops={"arrowstyle": "-|>", "color": colour if remote else EDGE_COLOR,
                                    "lw": 1.6 if remote else 1.2, "linestyle": "-" if remote else ":",
                                    "shrinkA": 6, "shrinkB": 6})
        ax.scatter(range(len(route)), ranks, s=140, color=colour, edgecolor=EDGE_COLOR, zorder=3)
        for i, s in enumerate(route):
            ax.text(i, ranks[i], str(s), ha="center", va="center", fontsize=7, color="white", zorder=4)
        ax.set_ylim(n_ranks - 0.5, -0.5)
        ax.set_yticks(range(n_ranks), [f"rank {r}" for r in range(n_ranks)])
        ax.set_xticks(range(len(route)))
        ax.set_xlabel("stage along the route (forward: left to right)")
        ax.set_title(f"{name}: {len(route)} stages, {hops} messages\nper micro-batch each way", fontsize=10)
        ax.grid(axis="y", color=GREYS["light grey"], zorder=0)
    axes[0, 0].set_ylabel("rank holding the stage")
    fig.suptitle(f"Where the stages live on {n_ranks} ranks (solid: a message; dotted: same rank, no message)",
                 fontsize=11)
    return fig


def plot_bubble_vs_chunks(table: pd.DataFrame) -> Figure:
    """``virtual_stages.bubble_vs_chunks``'s table: idle against v (simulated and (PP-1)(F+B)/v) beside the
    messages per step it costs."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    v = table["chunks per rank v"]
    colour = SCHEDULE_COLORS["interleaved1f1b"]
    left.plot(v, table["(PP-1)(F+B)/v"], color=EDGE_COLOR, linestyle="--", label="(PP-1)(F+B)/v")
    left.plot(v, table["worst-rank idle"], "o", color=colour, markersize=8, label="simulated")
    left.set_xticks(list(v))
    left.set_ylim(bottom=0)
    left.set_xlabel("chunks per rank v (v = 1: 1F1B)")
    left.set_ylabel("worst-rank idle (time units)")
    left.set_title("The bubble shrinks as 1/v")
    left.legend(frameon=False)
    right.bar(v, table["p2p messages per step"], color=colour, edgecolor=EDGE_COLOR, width=0.6)
    right.set_xticks(list(v))
    right.set_xlabel("chunks per rank v (v = 1: 1F1B)")
    right.set_ylabel("point-to-point messages per step")
    right.set_title("...and the messages grow as 2M(vPP-1), more than v times")
    return fig


def plot_step_vs_latency(table: pd.DataFrame) -> Figure:
    """``virtual_stages.step_vs_latency``'s table: step time of each schedule as the p2p latency grows.

    Two schedules can share a point (or a whole line): each gets its own marker, dash pattern and marker size
    (the later ones smaller, drawn on top), so a line under another still shows."""
    fig, ax = plt.subplots(figsize=(8, 3.8), layout="constrained")
    markers, dashes = "os^Dv", ("-", "--", "-.", ":")
    for i, (name, part) in enumerate(table.groupby("schedule", sort=False)):
        messages = int(part["p2p messages per step"].iloc[0])
        ax.plot(part["p2p latency"], part["step time"], marker=markers[i % len(markers)],
                linestyle=dashes[i % len(dashes)], markersize=max(9 - 1.5 * i, 4),
                color=SCHEDULE_COLORS.get(name, EDGE_COLOR), label=f"{name} ({messages} messages per step)")
    ax.set_xlabel("p2p latency per message (time units)")
    ax.set_ylabel("step time (time units)")
    ax.set_title("Same model, same ranks: every extra hop pays the latency")
    ax.legend(frameon=False, fontsize=9)
    return fig
