"""The experiments and figures of notebook 06 (FP8 mixed precision), and the pure function behind its widget.

`explore_fp8(format, granularity, scale rule, outlier magnitude, K, accumulator bits, N_C)` returns a View:
error heatmaps and a metrics table; utils/widgets/fp8.py only wires controls to it. `column_error_profile`
(mean relative error of each channel, per granularity) and `plot_granularity_errors` show where each scaling
granularity puts an outlier's damage. The other functions build the notebook's tables and figures from utils.fp8.formats, utils.fp8.gemm, utils.fp8.accumulation and
utils.fp8.linear, so every notebook cell stays a call or two.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from utils import inputs as arg
from utils import portable
from utils.figures import GREYS, OKABE_ITO
from utils.fp8.accumulation import accumulation_error, limited_accumulation_gemm
from utils.fp8.formats import (
    FORMATS,
    GRANULARITIES,
    GRANULARITY_LABELS,
    WEIGHT_GRANULARITY,
    calc_diff,
    error_metrics,
    get_format,
    quantize_dequantize,
)
from utils.fp8.linear import EmulatedLinear, convert_linears
from utils.view import View

# Okabe-Ito colours (as utils.pipeline.plots), one per thing compared in this notebook's line plots.
COLORS = {"fp32": OKABE_ITO["black"], "bf16": OKABE_ITO["blue"], "fp8": OKABE_ITO["vermillion"],
          "e4m3": OKABE_ITO["blue"], "e5m2": OKABE_ITO["orange"], "limited": OKABE_ITO["vermillion"],
          "promoted": OKABE_ITO["bluish green"], "tensor": OKABE_ITO["black"], "row": GREYS["grey"],
          "tile1x128": OKABE_ITO["blue"], "block128x128": OKABE_ITO["sky blue"], "mx1x32": OKABE_ITO["vermillion"]}
LINESTYLES = {"fp32": ":", "bf16": "-", "fp8": "--"}
LOG_PROFILE_RANGE = (1.0, 100.0)  # column profiles: mean relative error per channel, 1% to 100% (flushed)
HEATMAP_CMAP = "magma"
LOG_ERROR_RANGE = (-4.0, 0.0)   # heatmaps show log10 relative error from 0.01% to 100% (flushed to zero)
HEATMAP_CHANNELS = 256          # the explorer's heatmaps show the first two 1x128 tiles of each row


def outlier_activations(rows: int = 64, cols: int = 512, outlier: float = 1.0, n_outlier_channels: int = 4,
                        seed: int = 0, spacing: int = 31) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, mask): N(0, 1) activations with `n_outlier_channels` columns scaled by `outlier`.

    LLM activations concentrate their outliers in a few hidden channels (Dettmers et al. 2022, LLM.int8()),
    which is why a scale shared along a row cannot escape them while a 1x128 tile confines them. The outlier
    channels are 3, 3 + spacing, 3 + 2 spacing, ... (mod cols). The default spacing of 31 packs four of them
    into the first 128 columns (3, 34, 65, 96), one in each 32-wide MX group of the first tile; a spacing of
    256 spreads them out, one per 256 channels, as a handful of channels among thousands would be.
    """
    where = "outlier_activations"
    rows = arg.whole(rows, "rows", low=1, where=where, why="tokens")
    cols = arg.whole(cols, "cols", low=1, where=where, why="channels")
    arg.product_limit((rows, cols), "rows x cols", arg.MAX_ELEMENTS, where=where)
    outlier = arg.real(outlier, "outlier", low=1, high=1e30, where=where,
                       why="outlier magnitude must be >= 1 (a multiplier on some channels), and the activations "
                           "stay within float32's range")
    arg.whole(n_outlier_channels, "n_outlier_channels", low=0, high=cols, where=where)
    arg.whole(seed, "seed", low=0, where=where, why="seeds are whole numbers >= 0")
    if isinstance(spacing, bool) or not isinstance(spacing, int) or spacing < 1:
        raise arg.InputError(f"spacing = {spacing}: outlier channels are `spacing` columns apart, so it must be >= 1.")
    x = portable.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    if n_outlier_channels:
        channels = (3 + spacing * torch.arange(n_outlier_channels)) % cols
        mask[:, channels] = True
        x[:, channels] *= outlier
    return x, mask


def quantization_table(x: torch.Tensor, mask: torch.Tensor | None = None, fmt: str = "e4m3",
                       granularities: tuple[str, ...] = tuple(GRANULARITIES), scale_rule: str | None = None
                       ) -> pd.DataFrame:
    """One row per granularity: error_metrics of quantising `x` (outliers given by `mask`)."""
    arg.sequence(granularities, "granularities", where="quantization_table")
    rows = [{"granularity": g, **error_metrics(x, quantize_dequantize(x, fmt, g, scale_rule), mask)}
            for g in granularities]
    return pd.DataFrame(rows).set_index("granularity")


def _log_relative_error(x: torch.Tensor, x_hat: torch.Tensor) -> np.ndarray:
    """log10 |x_hat - x| / |x| per element, clipped to LOG_ERROR_RANGE (exact values show the floor)."""
    relative = ((x_hat.double() - x.double()).abs() / x.double().abs()).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(np.log10(relative), *LOG_ERROR_RANGE)


def _heatmap(ax, values: np.ndarray, title: str, xlabel: str, ylabel: str, label: str,
             vrange=LOG_ERROR_RANGE):
    image = ax.imshow(values, aspect="auto", cmap=HEATMAP_CMAP, vmin=vrange[0], vmax=vrange[1],
                      interpolation="nearest")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.figure.colorbar(image, ax=ax, label=label)


def plot_number_line(formats: tuple[str, ...] = tuple(FORMATS)) -> Figure:
    """Every positive value of each format on a log axis, with the normal/subnormal boundary marked."""
    formats = [get_format(name).name for name in arg.sequence(formats, "formats", where="plot_number_line")]
    fig, ax = plt.subplots(figsize=(11, 2.6))
    for row, name in enumerate(formats):
        f = get_format(name)
        values = torch.unique(torch.arange(256, dtype=torch.int16).to(torch.uint8).view(f.dtype).float())
        values = values[torch.isfinite(values) & (values > 0)].numpy()
        ax.scatter(values, np.full(values.shape, row), marker="|", s=250, color=COLORS[f.name],
                   label=f"{f.name.upper()}: {len(values)} positive values, max {f.max:g}")
        ax.axvline(f.smallest_normal, color=COLORS[f.name], linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set(yticks=range(len(formats)), yticklabels=[n.upper() for n in formats],
           ylim=(-0.7, len(formats) + 0.4),
           xlabel="value (log2 scale); dotted line: smallest normal, subnormals to its left", ylabel="format",
           title="FP8 number lines: E4M3 has finer steps, E5M2 a wider range")
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def column_error_profile(x: torch.Tensor, fmt: str = "e4m3",
                         granularities: tuple[str, ...] = tuple(GRANULARITIES),
                         scale_rule: str | None = None) -> pd.DataFrame:
    """Mean relative error of each channel (column) of `x` after quantisation, one column per granularity.

    Row c is the mean over the tokens (rows of `x`) of |x_hat - x| / |x| in channel c (non-zero values only;
    a value flushed to zero counts 1). Averaging over tokens removes the per-value rounding noise, so the
    profile shows *where* each granularity puts the damage an outlier channel causes (DeepSeek-V3 §3.3.2:
    a smaller group confines an outlier's scale to fewer values).
    """
    arg.tensor(x, "x", where="column_error_profile", dims=2)
    arg.sequence(granularities, "granularities", where="column_error_profile")
    x = x.detach()
    if x.ndim != 2:
        raise ValueError(f"x has shape {tuple(x.shape)}: a column profile needs a 2-D (tokens, channels) tensor.")
    reference = x.double()
    nonzero = reference != 0
    profile = {}
    for g in granularities:
        relative = (quantize_dequantize(x, fmt, g, scale_rule).double() - reference).abs() / reference.abs()
        relative = torch.where(nonzero, relative, torch.zeros_like(relative))
        profile[g] = (relative.sum(0) / nonzero.sum(0).clamp_min(1)).numpy()
    return pd.DataFrame(profile, index=pd.RangeIndex(x.shape[1], name="channel"))


def damaged_channels(profile: pd.DataFrame, factor: float = 1.5) -> pd.Series:
    """Per granularity, how many channels an outlier damaged: channels whose mean relative error exceeds
    `factor` times the typical (median) channel error of the best granularity, i.e. E4M3's own rounding."""
    if not isinstance(profile, pd.DataFrame) or profile.empty:
        arg.fail("profile", "the table column_error_profile() returns", profile, where="damaged_channels",
                 error=arg.InputTypeError)
    arg.real(factor, "factor", low=1, high=1e6, where="damaged_channels", why="times the typical channel error")
    floor = float(profile.median().min())
    return (profile > factor * floor).sum().rename("damaged channels")


def damaged_channels_table(layouts: dict[str, torch.Tensor], fmt: str = "e4m3",
                           granularities: tuple[str, ...] = tuple(GRANULARITIES), factor: float = 1.5
                           ) -> pd.DataFrame:
    """Damaged channels (see `damaged_channels`) per granularity (rows) for each input layout (columns)."""
    if not isinstance(layouts, dict) or not layouts:
        arg.fail("layouts", "a non-empty dict {title: (tokens, channels) tensor}", layouts,
                 where="damaged_channels_table", error=arg.InputTypeError)
    return pd.DataFrame({name: damaged_channels(column_error_profile(x, fmt, granularities), factor)
                         for name, x in layouts.items()}).rename_axis("granularity")


def plot_granularity_errors(x: torch.Tensor | dict[str, torch.Tensor], fmt: str = "e4m3",
                            granularities: tuple[str, ...] = tuple(GRANULARITIES),
                            scale_rule: str | None = None) -> Figure:
    """Column error profiles: one small panel per granularity (rows) and input layout (columns).

    `x` is one (tokens, channels) tensor or a dict {title: tensor}. Each panel shows, per channel, the mean
    relative error over the tokens (`column_error_profile`) on a log axis from 1% to 100%, so the rows show
    where per-tensor, per-row, 1x128 tiles, 128x128 blocks and MX 1x32 groups put an outlier's damage.
    """
    layouts = x if isinstance(x, dict) else {"": x}
    for title, t in layouts.items():
        arg.tensor(t, f"x[{title!r}]" if title else "x", where="plot_granularity_errors", dims=2)
    arg.sequence(granularities, "granularities", where="plot_granularity_errors")
    profiles = {title: column_error_profile(t, fmt, granularities, scale_rule) for title, t in layouts.items()}
    fig, axes = plt.subplots(len(granularities), len(layouts), figsize=(5.5 * len(layouts) + 0.5,
                             1.05 * len(granularities) + 1.1), sharex="col", sharey=True, squeeze=False)
    for col, (title, profile) in enumerate(profiles.items()):
        channels = profile.index.to_numpy()
        for row, g in enumerate(granularities):
            ax = axes[row, col]
            percent = np.clip(100 * profile[g].to_numpy(), LOG_PROFILE_RANGE[0], LOG_PROFILE_RANGE[1])
            ax.fill_between(channels, percent, LOG_PROFILE_RANGE[0], step="mid", linewidth=0,
                            color=COLORS.get(g, OKABE_ITO["black"]))
            ax.set_yscale("log")
            ax.set_ylim(*LOG_PROFILE_RANGE)
            ax.set_yticks([1, 10, 100], ["1%", "10%", "100%"])
            ax.grid(axis="y", color=GREYS["light grey"], linewidth=0.5)
            ax.set_xlim(channels[0] - 0.5, channels[-1] + 0.5)
            label = GRANULARITY_LABELS.get(g, g).replace(" blocks", "\nblocks")  # the longest: two lines
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
            ax.set_xlabel("channel (column)")
            ax.xaxis.label.set_visible(row == len(granularities) - 1)   # one x label per column of panels
        axes[0, col].set_title(title or f"{fmt.upper()}, {len(profile)} channels", fontsize=10)
    fig.suptitle(f"{fmt.upper()}: mean relative error of each channel over the tokens (log scale, 100% = "
                 f"flushed to zero)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_accumulation_vs_k(table: pd.DataFrame, mantissa_bits: int = 14) -> Figure:
    """Worst-case relative error against K from accumulation_error_vs_k (a model, not a measurement)."""
    if not isinstance(table, pd.DataFrame) or not {"K", "accumulation", "max_rel_error"} <= set(table.columns):
        arg.fail("table", "the table accumulation_error_vs_k() returns", table, where="plot_accumulation_vs_k",
                 error=arg.InputTypeError)
    arg.whole(mantissa_bits, "mantissa_bits", low=0, high=52, where="plot_accumulation_vs_k")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    colors = (COLORS["limited"], COLORS["promoted"])
    for (label, group), color in zip(table.groupby("accumulation", sort=False), colors, strict=True):
        ax.plot(group["K"], 100 * group["max_rel_error"], marker="o", color=color, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="K (reduction length, elements)", ylabel="max relative error over outputs (%)",
           title=f"Accumulator model ({mantissa_bits} mantissa bits): error grows with K unless promoted")
    ax.legend()
    fig.tight_layout()
    return fig


def explore_fp8(fmt: str = "e4m3", granularity: str = "tile1x128", scale_rule: str = "fp32",
                outlier: float = 1.0, k: int = 1024, accum_bits: int = 14, promote_every: int | None = 128,
                rows: int = 64, seed: int = 0) -> View:
    """The FP8 error explorer: a View of error heatmaps and a metrics table for one setting (a setting the
    library refuses gives ``View(error=<the rule>)``).

    Activations A (rows x k) with 4 outlier channels scaled by `outlier` are quantised with `granularity`
    and `scale_rule`; weights B (rows x k, N(0, 1/k)) with the matching weight granularity (128x128 blocks
    for 1x128 activation tiles, else the same). The GEMM A @ B.T then runs through the accumulator model
    (`accum_bits` mantissa bits, promotion to FP32 every `promote_every` elements, None: never). The table
    adds the report's accumulation test (random positive matrices, worst case) for this K and accumulator.
    Products are accumulated dequantised (a model: hardware accumulates raw FP8 products and applies the
    scales at promotion, which is why fine-grained scales need promotion at group boundaries).
    """
    try:
        where = "explore_fp8"
        k = arg.whole(k, "k", low=1, where=where, why="the reduction length K of the GEMM")
        rows = arg.whole(rows, "rows", low=1, where=where, why="tokens (rows of A and of B)")
        arg.whole(accum_bits, "accum_bits", low=0, high=52, where=where, why="mantissa bits of the accumulator")
        if promote_every is not None:
            arg.whole(promote_every, "promote_every", low=1, where=where, why="N_C, or None for no promotion")
        arg.product_limit((rows, rows, k), "rows x rows x k (accumulator adds of the model)",
                          arg.MAX_ACCUMULATOR_ADDS, where=where)
        get_format(fmt)
        x, mask = outlier_activations(rows, k, outlier, seed=seed)
        weights = portable.randn(rows, k, generator=torch.Generator().manual_seed(seed + 1)) / k ** 0.5
        x_hat = quantize_dequantize(x, fmt, granularity, scale_rule)
        w_hat = quantize_dequantize(weights, fmt, WEIGHT_GRANULARITY.get(granularity, granularity), scale_rule)
        out = limited_accumulation_gemm(x_hat, w_hat, accum_bits, promote_every)
    except ValueError as error:  # a rule of the library: the widget shows it instead of a traceback
        return View(error=str(error))
    reference = x.double() @ weights.double().T            # unquantised inputs
    exact_fp8 = x_hat.double() @ w_hat.double().T          # the same FP8 inputs, exact accumulation
    accumulation_only = ((out - exact_fp8).abs() / exact_fp8.pow(2).mean().sqrt()).numpy()

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    shown = slice(0, HEATMAP_CHANNELS)   # the outlier tile and the next: 4 columns in 4096 would not show
    channels = f"channel (first {min(k, HEATMAP_CHANNELS)} of {k})"
    _heatmap(axes[0], np.log10(x[:, shown].abs().clamp_min(1e-4).numpy()),
             f"input |A| ({outlier:g}x outlier channels)", channels, "token (row)", "log10 |value|",
             vrange=(-2, max(1.0, np.log10(4 * outlier))))
    _heatmap(axes[1], _log_relative_error(x[:, shown], x_hat[:, shown]),
             f"quantisation error: {fmt.upper()}, {granularity}, {scale_rule} scales", channels,
             "token (row)", "log10 relative error")
    promotion = f"promotion every {promote_every}" if promote_every else "no promotion"
    with np.errstate(divide="ignore"):
        _heatmap(axes[2], np.clip(np.log10(accumulation_only), -7.0, -1.0), f"accumulation error, K={k}, "
                 f"{accum_bits}-bit accumulator,\n{promotion} (vs exact sum of the same FP8 products)",
                 "output column", "output row", "log10 |error| / RMS(output)", vrange=(-7.0, -1.0))
    fig.tight_layout()

    metrics = error_metrics(x, x_hat, mask)
    nc_label = f"N_C = {promote_every or 'never'}"
    table = pd.DataFrame({"metric": [
        "quantisation: relative error (norm)", "quantisation: mean relative error per value",
        "quantisation: relative error of non-outliers", "quantisation: fraction flushed to zero",
        "quantisation: calc_diff", "GEMM vs FP64 of the unquantised inputs: relative error (norm)",
        "GEMM vs FP64 of the unquantised inputs: calc_diff",
        "GEMM vs FP64 of the same FP8 inputs (accumulation only): relative error (norm)",
        "accumulator model, positive inputs: worst-case error, no promotion",
        f"accumulator model, positive inputs: worst-case error, {nc_label}"],
        "value": [metrics["rel_error"], metrics["mean_rel_error"], metrics["nonoutlier_rel_error"],
                  metrics["flushed_to_zero"], metrics["calc_diff"],
                  float((out - reference).norm() / reference.norm()), calc_diff(out, reference),
                  float((out - exact_fp8).norm() / exact_fp8.norm()),
                  accumulation_error(k, accum_bits, None, rows, seed=seed),
                  accumulation_error(k, accum_bits, promote_every, rows, seed=seed)]}).set_index("metric")
    return View(figure=fig, table=table)


def linear_gemm_errors(in_features: int = 512, out_features: int = 256, tokens: int = 512, seed: int = 0
                       ) -> pd.DataFrame:
    """calc_diff against FP32 of the three GEMM outputs of one linear layer (Fprop y, Dgrad dx, Wgrad dW),
    for the FP8 recipe and for BF16 inputs, on random activations and output gradients.

    The data are float32 numbers; the layers compute in float64 so that only the inputs' rounding to FP8 or
    BF16 shows, the same on every CPU."""
    where = "linear_gemm_errors"
    in_features, out_features, tokens = (arg.whole(v, n, low=1, where=where) for v, n in (
        (in_features, "in_features"), (out_features, "out_features"), (tokens, "tokens")))
    arg.whole(seed, "seed", low=0, where=where, why="seeds are whole numbers >= 0")
    arg.product_limit((tokens, max(in_features, out_features)), "tokens x max(in_features, out_features)",
                      arg.MAX_ELEMENTS, where=where)
    # float64 data and arithmetic (the values are float32 numbers): BF16's calc_diff is ~3e-6, and a float32
    # BLAS sum, whose order moves with the CPU, would move its 4th digit.
    generator = torch.Generator().manual_seed(seed)
    x = portable.randn(tokens, in_features, generator=generator).double()
    grad_y = portable.randn(tokens, out_features, generator=generator).double()
    reference = torch.nn.Linear(in_features, out_features, bias=False, dtype=torch.float64)
    with torch.no_grad():
        weight = portable.randn(out_features, in_features, generator=generator) / in_features ** 0.5
        reference.weight.copy_(weight.double())

    def outputs(layer: torch.nn.Module) -> list[torch.Tensor]:
        inputs = x.clone().requires_grad_(True)
        layer.weight.grad = None
        y = layer(inputs)
        y.backward(grad_y)
        return [y.detach(), inputs.grad, layer.weight.grad.clone()]

    expected = outputs(reference)
    table = {"GEMM": ["Fprop  y = x W^T", "Dgrad  dx = dy W", "Wgrad  dW = dy^T x"],
             "FP8 operands": ["x 1x128 tiles, W 128x128 blocks", "dy 1x128 tiles, W 128x128 blocks",
                              "dy, x 128x1 tiles"]}
    for precision in ("fp8", "bf16"):
        got = outputs(EmulatedLinear.from_linear(reference, precision))
        diffs = [calc_diff(g, e) for g, e in zip(got, expected, strict=True)]
        table[f"calc_diff {precision.upper()}"] = diffs
    return pd.DataFrame(table).set_index("GEMM")


def train_in_precisions(steps: int = 100, precisions: tuple[str, ...] = ("fp32", "bf16", "fp8"),
                        seed: int = 0, config=None, progress: bool = False) -> dict:
    """Train the toy MoE decoder once per precision from the same seed, weights and batches.

    "fp32" is the plain model; "bf16" / "fp8" swap every linear but the router and head for an
    EmulatedLinear of that precision (utils.fp8.linear). Returns {precision: TrainingHistory}.
    """
    # Imported here: only this experiment needs the trainer.
    from utils.moe.toy_decoder import ToyDecoderConfig, build_toy_decoder
    from utils.moe.train import train

    where = "train_in_precisions"
    arg.whole(steps, "steps", low=1, high=arg.MAX_TRAIN_STEPS, where=where)
    for precision in arg.sequence(precisions, "precisions", where=where):
        arg.choice(precision, "every precision", ("fp32", "bf16", "fp8"), where=where)
    if config is not None:
        arg.instance(config, "config", ToyDecoderConfig, "a ToyDecoderConfig (or None)", where=where)

    histories = {}
    for precision in precisions:
        model = build_toy_decoder(config, seed=seed)
        if precision != "fp32":
            convert_linears(model, precision)
        histories[precision] = train(model, steps, seed=seed, progress=progress, desc=precision)
    return histories


def loss_gap_table(histories: dict, baseline: str = "bf16", window: int = 20) -> pd.DataFrame:
    """Relative loss gap of each run against `baseline`: mean training loss over the last `window` steps,
    and held-out loss and accuracy after training. Positive gap = worse than the baseline."""
    from utils.moe.inputs import check_histories

    check_histories(histories, "loss_gap_table", ("loss", "eval_loss", "eval_accuracy"))
    arg.choice(baseline, "baseline", list(histories), where="loss_gap_table", why="a run of histories")
    window = arg.whole(window, "window", low=1, where="loss_gap_table", why="steps to average over")
    base = histories[baseline]
    base_train = float(np.mean(base.loss[-window:]))
    rows = []
    for precision, history in histories.items():
        final = float(np.mean(history.loss[-window:]))
        rows.append({"precision": precision, f"train loss (last {window} steps)": final,
                     "relative gap vs " + baseline: (final - base_train) / base_train,
                     "held-out loss": history.eval_loss,
                     "held-out gap vs " + baseline: (history.eval_loss - base.eval_loss) / base.eval_loss,
                     "held-out accuracy": history.eval_accuracy})
    return pd.DataFrame(rows).set_index("precision")


def plot_loss_curves(histories: dict, window: int = 10) -> Figure:
    """Training loss per step (moving average over `window` steps) of each precision, and the relative gap
    of each to BF16 when there is a BF16 run."""
    from utils.moe.inputs import check_histories

    check_histories(histories, "plot_loss_curves")
    shortest = min(len(h.loss) for h in histories.values())
    window = arg.whole(window, "window", low=1, high=shortest, where="plot_loss_curves",
                       why="steps to average over, at most the shortest run")
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    kernel = np.ones(window) / window
    smoothed = {p: np.convolve(h.loss, kernel, mode="valid") for p, h in histories.items()}
    steps = np.arange(window, window + len(next(iter(smoothed.values()))))
    for precision, curve in smoothed.items():   # BF16 wide and solid, the others on top of it dashed: all visible
        axes[0].plot(steps, curve, color=COLORS.get(precision), label=precision.upper(),
                     linestyle=LINESTYLES.get(precision, "-"), linewidth=3 if precision == "bf16" else 1.5)
    axes[0].set(xlabel="training step", ylabel=f"loss (moving average of {window} steps)",
                title="Toy MoE decoder, same seed and batches")
    axes[0].legend()
    if "bf16" in smoothed:
        for precision, curve in smoothed.items():
            if precision != "bf16":
                gap = 100 * (curve - smoothed["bf16"]) / smoothed["bf16"]
                axes[1].plot(steps, gap, color=COLORS.get(precision), label=f"{precision.upper()} vs BF16",
                             linestyle=LINESTYLES.get(precision, "-"))
        axes[1].axhline(0.25, color=GREYS["grey"], linestyle="--", label="report's bound: 0.25%")
        axes[1].axhline(-0.25, color=GREYS["grey"], linestyle="--")
        axes[1].set(xlabel="training step", ylabel=f"relative loss gap, moving average of {window} steps (%)",
                title="Gap to the BF16 run")
        axes[1].legend()
    fig.tight_layout()
    return fig
