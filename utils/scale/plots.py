"""Figures of the full-scale model: where a step's seconds go, where a GPU's gigabytes go, and how a
conclusion moves with an assumption. Colours from the course palette (``utils.figures``, Okabe-Ito).

Figures are pyplot figures, like the rest of the course's: a notebook shows them with ``plt.show()``, and the
widget closes each one after turning it into a PNG."""

from __future__ import annotations

import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from utils.figures import EDGE_COLOR, KIND_COLORS, OKABE_ITO, SCHEDULE_COLORS

STEP_PARTS = {
    "compute_s": ("compute (F, B, W of its chunks)", KIND_COLORS["B"], ""),
    "comm_waited_s": ("waiting for communication", KIND_COLORS["comm"], "//"),
    "idle_s": ("idle, the same rank", KIND_COLORS["idle"], ""),
}
# Okabe-Ito colours again; here they stand for kinds of bytes, told apart by the legend and by hatching.
MEMORY_PARTS = {
    "weights": ("BF16 weights", OKABE_ITO["blue"], ""),
    "gradients": ("FP32 gradients", OKABE_ITO["sky blue"], ".."),
    "master_weights": ("FP32 master weights (ZeRO-1 shard)", OKABE_ITO["orange"], ""),
    "optimizer_moments": ("Adam moments (ZeRO-1 shard)", OKABE_ITO["yellow"], "xx"),
    "activations": ("cached activations (peak)", OKABE_ITO["reddish purple"], "//"),
}


def _stacked(ax: Axes, table: pd.DataFrame, parts: dict) -> None:
    bottom = pd.Series(0.0, index=table.index)
    for column, (label, color, hatch) in parts.items():
        ax.bar(table.index, table[column], bottom=bottom, color=color, hatch=hatch, edgecolor=EDGE_COLOR,
               linewidth=0.6, label=label)
        bottom = bottom + table[column]
    # up to seven schedule names side by side: slanted so "interleaved1f1b" never runs into its neighbours
    ax.tick_params(axis="x", labelrotation=25)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
        tick.set_rotation_mode("anchor")


def plot_step_breakdown(ax: Axes, table: pd.DataFrame, title: str) -> None:
    """Stacked bars per schedule: the time budget of the rank that computes least (compute, communication
    waited for, idle; columns of `table`), which sums to the step time. A column ``rank`` names that rank
    under each bar."""
    if "rank" in table:
        table = table.set_axis([f"{name} (rank {int(rank)})" for name, rank in table["rank"].items()])
    _stacked(ax, table, STEP_PARTS)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("schedule")
    ax.set_ylabel("seconds per training step")
    top = table[list(STEP_PARTS)].sum(axis=1).max()
    ax.set_ylim(0, top * 1.35)
    ax.legend(fontsize=8, loc="upper right")


def plot_memory(ax: Axes, table: pd.DataFrame, capacity_gb: float, title: str) -> None:
    """Stacked bars per schedule: the worst GPU's gigabytes by kind, with the GPU's capacity as a line."""
    _stacked(ax, table, MEMORY_PARTS)
    ax.axhline(capacity_gb, color=EDGE_COLOR, linestyle="--", linewidth=1.2, label=f"GPU memory {capacity_gb:g} GB")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("schedule")
    ax.set_ylabel("GB on the fullest GPU")
    top = max(table[list(MEMORY_PARTS)].sum(axis=1).max(), capacity_gb)
    ax.set_ylim(0, top * 1.45)
    ax.legend(fontsize=7.5, loc="upper right", ncol=2)


def scale_figure(steps: pd.DataFrame, memory: pd.DataFrame, capacity_gb: float, setting_text: str) -> Figure:
    """Two panels side by side: `steps` (seconds per schedule) and `memory` (GB per schedule)."""
    fig = plt.figure(figsize=(12, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    plot_step_breakdown(left, steps, "Where a training step's time goes (each schedule's rank computing least)")
    plot_memory(right, memory, capacity_gb, "Where the fullest GPU's memory goes")
    fig.suptitle(f"DeepSeek-V3 at full scale: {setting_text}", fontsize=11)
    return fig


def plot_sweep(table: pd.DataFrame, x: str, x_label: str, marks: dict[str, float] | None = None) -> Figure:
    """How the conclusions move with one assumption `x`: all-to-all : forward compute on every SM and, if
    `table` has ``comm_to_compute_paired``, on the SMs a pair leaves (left axis), and DualPipe's
    step time over 1F1B's (right axis), one point per row of `table`; `marks` draws labelled vertical lines."""
    fig = plt.figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot(table[x], table["moe_layer_comm_to_compute"], marker="o", color=KIND_COLORS["comm"],
            label="all-to-all : forward compute on 132 SMs (left axis)")
    if "comm_to_compute_paired" in table:
        ax.plot(table[x], table["comm_to_compute_paired"], marker="^", linestyle="--", color=KIND_COLORS["comm"],
                label="the same on the 112 SMs a pair leaves (left axis)")
    ax.axhline(1.0, color=KIND_COLORS["comm"], linestyle=":", linewidth=1, label="the report's 1 : 1")
    ax.set_xlabel(x_label)
    ax.set_ylabel("MoE layer's all-to-all time / forward compute time")
    twin = ax.twinx()
    twin.plot(table[x], table["dualpipe_over_1f1b"], marker="s", color=SCHEDULE_COLORS["dualpipe"],
              label="DualPipe step / 1F1B step (right axis)")
    twin.set_ylabel("DualPipe step time / 1F1B step time")
    twin.set_ylim(0, 1.1)
    ax.set_ylim(0, max(2.0, float(table["moe_layer_comm_to_compute"].max()) * 1.15))
    for (label, value), style in zip((marks or {}).items(), ("--", "-.", (0, (1, 1))), strict=False):
        ax.axvline(value, color=EDGE_COLOR, linestyle=style, linewidth=1, label=label)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=3)
    ax.set_title(f"How the conclusion moves with the {x_label}", fontsize=10)
    return fig
