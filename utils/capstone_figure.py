"""The capstone dashboard's figure (notebook 07): four panels drawn from the tables of `utils.capstone`.

One rank's time budget per schedule (compute, waiting for the all-to-all hatched, idle: the step), memory per device relative to 1F1B on one axis, cross-node bytes against the node cap, FP8
error per scaling granularity. Every panel keeps its legend off the data and its title whole at the size the
notebook shows it (12 x 8.5 inches). `utils.capstone.recipe_dashboard` calls `plot_dashboard`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from utils import figures
from utils.fp8.formats import GRANULARITY_LABELS as FP8_LABELS
from utils.fp8.formats import WEIGHT_GRANULARITY

#: How the FP8 panel names each granularity (its group shape, from utils.fp8.formats; DeepSeek-V3's marked).
GRANULARITY_LABELS = {g: label + (" (DeepSeek-V3)" if g in WEIGHT_GRANULARITY else "")
                      for g, label in FP8_LABELS.items()}


def _time_panel(ax, config, ok: pd.DataFrame) -> None:
    """One rank's time budget per schedule, its three parts stacked: compute, waiting for the all-to-all
    (hatched), idle; the bar's height is the step."""
    names = list(ok.index)
    x = np.arange(len(names))
    rank = int(ok["rank"].iloc[0])
    bottom = np.zeros(len(names))
    for column, colour, hatch, label in (
        ("compute", figures.KIND_COLORS["F"], None, f"computing, rank {rank}"),
        ("comm_exposed", figures.KIND_COLORS["comm"], "//", f"waiting for the all-to-all, rank {rank}"),
        ("idle", figures.KIND_COLORS["idle"], None, f"idle, rank {rank}"),
    ):
        ax.bar(x, ok[column], bottom=bottom, color=colour, hatch=hatch, edgecolor=figures.EDGE_COLOR, label=label)
        bottom = bottom + ok[column].to_numpy()
    for xi, total in zip(x, ok["makespan"], strict=True):
        ax.text(xi, total, f"{total:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.45 * max(ok["makespan"].max(), 1e-9))
    ax.set_title(f"Step time of rank {rank}: compute + exposed all-to-all + idle\n(PP={config.pp}, "
                 f"{config.microbatches} micro-batches)", fontsize=10)
    ax.set_xlabel("schedule")
    ax.set_ylabel("simulated time units")
    ax.legend(fontsize=8, loc="upper right", frameon=False)


def _memory_panel(ax, config, ok: pd.DataFrame) -> None:
    """Parameters and activation memory per device (peak activations x stage size), both relative to 1F1B on
    the same devices (one axis)."""
    names = list(ok.index)
    x = np.arange(len(names))
    base = ok.loc["1f1b"] if "1f1b" in ok.index else ok.iloc[0]
    params = ok["params_per_device"] / base["params_per_device"]
    acts = ok["activation_memory"] / base["activation_memory"]
    for offset, values, colour, label in ((-0.2, params, figures.KIND_COLORS["W"], "parameters"),
                                          (0.2, acts, figures.KIND_COLORS["F"], "activation memory")):
        bars = ax.bar(x + offset, values, 0.4, color=colour, edgecolor=figures.EDGE_COLOR, label=label)
        # label only what differs from 1F1B, so neighbouring labels do not collide
        ax.bar_label(bars, ["" if abs(v - 1) < 1e-9 else f"{v:.3g}x" for v in values], fontsize=7, padding=1)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.3 * max(params.max(), acts.max()))
    ax.set_title(f"Memory per device on the same {config.pp} devices (worst rank)", fontsize=10)
    ax.set_xlabel("schedule")
    ax.set_ylabel("x 1F1B's per device")
    ax.legend(fontsize=8, loc="upper left", frameon=False)


def plot_dashboard(config, pipe: pd.DataFrame, cap: pd.DataFrame, fp8: pd.DataFrame) -> Figure:
    """Four panels: one rank's time budget per schedule, memory per schedule, cross-node bytes vs M, FP8 error.

    `config` is a `utils.capstone.RecipeConfig`; `pipe`, `cap` and `fp8` its `pipeline_table`,
    `node_cap_table` and `fp8_table`.
    """
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), layout="constrained")
    ok = pipe.dropna(subset=["makespan"])
    _time_panel(axes[0, 0], config, ok)
    _memory_panel(axes[0, 1], config, ok)
    ax = axes[1, 0]
    for column, marker, style, colour, label in (
        ("cross_node_KiB_bf16", "o", "-", figures.KIND_COLORS["comm"], "cross-node (InfiniBand), BF16"),
        ("cross_node_KiB_fp8_dispatch", "^", "-.", figures.KIND_COLORS["comm"], "cross-node, FP8 where the report uses it"),
        ("intra_node_KiB_bf16", "s", "--", figures.KIND_COLORS["F"], "within node (NVLink), BF16"),
    ):
        ax.plot(cap.index, cap[column], marker=marker, linestyle=style, color=colour, label=label)
    # the cap's line stops below the legend, which fills the top of the axes (the data end at 1/1.45 of it)
    ax.axvline(config.node_cap, ymax=0.72, color=figures.EDGE_COLOR, linestyle=":", label=f"cap M = {config.node_cap}")
    ax.set_ylim(0, 1.45 * cap[["cross_node_KiB_bf16", "intra_node_KiB_bf16"]].to_numpy().max())
    ax.set_title(f"All-to-all per token vs node cap\n{config.experts} experts, top-{config.top_k}, "
                 f"{config.nodes} nodes", fontsize=10)
    ax.set_xticks(list(cap.index))
    ax.set_xlabel("max nodes per token (M)")
    ax.set_ylabel("KiB per token per layer (fwd + bwd)")
    ax.legend(fontsize=8, loc="upper left", framealpha=0.95, edgecolor="white")  # one column: inside the axes
    ax = axes[1, 1]
    labels = [GRANULARITY_LABELS[g] for g in fp8.index]
    y = np.arange(len(labels))
    ax.barh(y - 0.2, 100 * fp8["mean_rel_error"], 0.4, color=figures.KIND_COLORS["B"],
            label="mean relative error (% of the value)")
    ax.barh(y + 0.2, 100 * fp8["flushed_to_zero"], 0.4, color=figures.KIND_COLORS["idle"],
            edgecolor=figures.EDGE_COLOR, label="values flushed to zero (% of all values)")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.35 * 100 * fp8[["mean_rel_error", "flushed_to_zero"]].to_numpy().max())
    ax.set_title(f"FP8 E4M3 error with {config.outlier:g}x outlier channels", fontsize=10)
    ax.set_xlabel("percent (error: of each value; flushed: of all values)")
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    fig.suptitle(f"DeepSeek-V3's training recipe on one screen (computed live; {config.comm_label})",
                 fontsize=11)
    return fig
