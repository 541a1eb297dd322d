"""The FP8 error explorer's pure function, the notebook's experiment helpers, and the widget's wiring."""

import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from utils.fp8 import explore as fp8_explore  # noqa: E402
from utils.fp8.accumulation import accumulation_error_vs_k  # noqa: E402
from utils.fp8.explore import (  # noqa: E402
    column_error_profile,
    damaged_channels,
    damaged_channels_table,
    explore_fp8,
    linear_gemm_errors,
    loss_gap_table,
    outlier_activations,
    plot_accumulation_vs_k,
    plot_granularity_errors,
    plot_loss_curves,
    plot_number_line,
    quantization_table,
)
from utils.widgets.fp8 import FP8Explorer, fp8_explorer  # noqa: E402

SMALL = {"k": 256, "rows": 32}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_explore_returns_a_figure_and_a_finite_metrics_table():
    view = explore_fp8(**SMALL)
    fig, table = view.figure, view.table
    assert view.error is None and isinstance(fig, Figure) and len(fig.axes) == 6          # three heatmaps and their colour bars
    assert isinstance(table, pd.DataFrame) and list(table.columns) == ["value"]
    assert len(table) == 10 and np.isfinite(table["value"]).all()
    assert all(ax.get_title() for ax in fig.axes[:3])


def test_explore_is_deterministic():
    first = explore_fp8(**SMALL).table
    second = explore_fp8(**SMALL).table
    pd.testing.assert_frame_equal(first, second)


def _value(table, starts_with):
    return table.loc[[i for i in table.index if i.startswith(starts_with)][0], "value"]


def test_outliers_under_per_tensor_scaling_flush_values_tiles_do_not():
    # K = 1024: the outlier channels sit in the first of eight 1x128 tiles of each row.
    per_tensor = explore_fp8(granularity="tensor", outlier=1e4, k=1024, rows=16).table
    tiles = explore_fp8(granularity="tile1x128", outlier=1e4, k=1024, rows=16).table
    flushed = "quantisation: fraction flushed"
    assert _value(per_tensor, flushed) > 5 * _value(tiles, flushed)
    mean = "quantisation: mean relative"
    assert _value(per_tensor, mean) > 2 * _value(tiles, mean)


def test_promotion_and_accumulator_bits_show_in_the_table():
    never = explore_fp8(k=2048, rows=16, promote_every=None).table
    promoted = explore_fp8(k=2048, rows=16, promote_every=128).table
    wide = explore_fp8(k=2048, rows=16, promote_every=None, accum_bits=20).table
    accumulation = "GEMM vs FP64 of the same FP8 inputs"
    assert _value(never, accumulation) > 5 * _value(promoted, accumulation)
    assert _value(wide, accumulation) < _value(never, accumulation) / 10
    assert _value(never, "accumulator model, positive inputs: worst-case error, no") > 0.002


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("granularity", ["tensor", "row", "tile1x128", "block128x128", "mx1x32"])
@pytest.mark.parametrize("scale_rule", ["fp32", "pow2"])
def test_every_widget_combination_runs(fmt, granularity, scale_rule):
    table = explore_fp8(fmt, granularity, scale_rule, outlier=100.0, k=128, rows=8).table
    assert np.isfinite(table["value"]).all()


def test_outlier_activations():
    x, mask = outlier_activations(8, 512, outlier=1000.0, n_outlier_channels=4)
    channels = mask[0].nonzero().flatten().tolist()
    assert channels == [3, 34, 65, 96] and mask.all(0).sum() == 4 and (mask.any(0) == mask.all(0)).all()
    assert x[:, channels].abs().mean() > 100 * x[:, ~mask[0]].abs().mean()
    with pytest.raises(ValueError, match=">= 1"):
        outlier_activations(outlier=0.5)
    _, spread = outlier_activations(8, 1024, outlier=10.0, spacing=256)
    assert spread[0].nonzero().flatten().tolist() == [3, 259, 515, 771]
    with pytest.raises(ValueError, match="spacing"):
        outlier_activations(spacing=0)


def _profile(spacing, granularities=("tensor", "row", "tile1x128", "block128x128", "mx1x32")):
    x, mask = outlier_activations(64, 1024, outlier=1e4, spacing=spacing)
    return column_error_profile(x, "e4m3", granularities), mask[0].nonzero().flatten().tolist()


def test_column_error_profile_is_the_mean_relative_error_of_each_channel():
    x, _ = outlier_activations(16, 256, outlier=100.0)
    profile = column_error_profile(x, "e4m3", ("row", "mx1x32"))
    assert profile.shape == (256, 2) and profile.index.name == "channel"
    for g in ("row", "mx1x32"):
        from utils.fp8.formats import quantize_dequantize
        x_hat = quantize_dequantize(x, "e4m3", g).double()
        expected = ((x_hat - x.double()).abs() / x.double().abs()).mean(0).numpy()
        np.testing.assert_allclose(profile[g].to_numpy(), expected, rtol=1e-12)
    # a value flushed to zero counts as 100%; zeros in the input are left out of the mean
    column = torch.tensor([[1e4, 1e-6], [1e4, 0.0], [1e4, 2e-6]])   # both tiny values vanish
    flushed = column_error_profile(column, "e4m3", ("tensor",))["tensor"]
    assert flushed.iloc[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2-D"):
        column_error_profile(torch.ones(3))


def test_profiles_confine_an_outliers_damage_to_its_group():
    profile, channels = _profile(spacing=256)                      # one outlier channel per 256
    floor = profile.median().min()
    group = np.arange(1024)
    in_tile = np.isin(group // 128, [c // 128 for c in channels])
    in_mx_group = np.isin(group // 32, [c // 32 for c in channels])
    # outside the outliers' tiles, 1x128 tiles and MX are at E4M3's rounding floor; per tensor and per row are not
    far = ~in_tile
    assert profile.loc[far, "tile1x128"].mean() < 1.2 * floor and profile.loc[far, "mx1x32"].mean() < 1.2 * floor
    assert profile.loc[far, "tensor"].mean() > 3 * floor and profile.loc[far, "row"].mean() > 2 * floor
    # inside a damaged tile but outside the outlier's 32-group, only MX is back at the floor
    between = in_tile & ~in_mx_group
    assert profile.loc[between, "mx1x32"].mean() < 1.2 * floor < profile.loc[between, "block128x128"].mean() / 2


def test_damaged_channels_count_the_groups_an_outlier_spoils():
    spread, channels = _profile(spacing=256)
    counts = damaged_channels(spread)
    assert counts["mx1x32"] <= 32 * len(channels) < counts["block128x128"] <= 128 * len(channels)
    assert counts["tile1x128"] <= 128 * len(channels) < counts["row"] <= counts["tensor"] <= 1024
    packed, _ = _profile(spacing=31)                               # all four outliers in the first tile
    packed_counts = damaged_channels(packed)
    assert packed_counts["tile1x128"] <= 128 and packed_counts["mx1x32"] <= 128
    x_spread, _ = outlier_activations(64, 1024, outlier=1e4, spacing=256)
    table = damaged_channels_table({"spread": x_spread}, granularities=("tile1x128", "mx1x32"))
    assert table["spread"].tolist() == [counts["tile1x128"], counts["mx1x32"]]


def test_quantization_table_rows_and_columns():
    x, mask = outlier_activations(16, 256, outlier=10.0)
    table = quantization_table(x, mask)
    assert list(table.index) == ["tensor", "row", "tile1x128", "block128x128", "mx1x32"]
    assert list(table.columns) == ["rel_error", "mean_rel_error", "nonoutlier_rel_error", "flushed_to_zero",
                                   "calc_diff"]


def test_figures_have_titles_and_labels():
    x, _ = outlier_activations(16, 256, outlier=100.0)
    figures = [plot_number_line(), plot_granularity_errors(x),
               plot_accumulation_vs_k(accumulation_error_vs_k(ks=(128, 256), size=8))]
    for fig in figures:
        ax = fig.axes[0]
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


def test_granularity_figure_has_one_panel_per_granularity_and_layout():
    packed, _ = outlier_activations(16, 256, outlier=1e4)
    spread, _ = outlier_activations(16, 256, outlier=1e4, spacing=128)
    fig = plot_granularity_errors({"packed": packed, "spread": spread})
    axes = np.array(fig.axes).reshape(5, 2)                      # every granularity, MX included; no colour bars
    assert [ax.get_title() for ax in axes[0]] == ["packed", "spread"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["per tensor", "per row", "1 x 128 tiles",
                                                      "128 x 128\nblocks", "MX 1 x 32"]
    assert all(ax.get_xlabel() == "channel (column)" for ax in fig.axes)
    assert [ax.xaxis.label.get_visible() for ax in axes[:, 0]] == [False] * 4 + [True]
    assert all(ax.get_yscale() == "log" for ax in fig.axes) and fig.get_suptitle()
    fig.canvas.draw()                                            # titles and labels inside the figure
    renderer, box = fig.canvas.get_renderer(), fig.bbox
    for ax in fig.axes:
        for text in (ax.title, ax.yaxis.label):
            extent = text.get_window_extent(renderer)
            assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1


def test_linear_gemm_errors_fp8_near_deepgemms_threshold_bf16_far_below():
    table = linear_gemm_errors(in_features=256, out_features=128, tokens=256)
    assert list(table.index) == ["Fprop  y = x W^T", "Dgrad  dx = dy W", "Wgrad  dW = dy^T x"]
    assert (table["calc_diff FP8"] < 1.5e-3).all() and (table["calc_diff BF16"] < 1e-5).all()
    assert table["calc_diff FP8"].idxmax().startswith("Wgrad")       # its activation is quantised twice


def _fake_history(losses, eval_loss, accuracy=0.5):
    return SimpleNamespace(loss=np.array(losses, dtype=float), eval_loss=eval_loss, eval_accuracy=accuracy)


def test_loss_gap_table_and_curves():
    histories = {"bf16": _fake_history([2.0] * 30, 1.0), "fp8": _fake_history([2.0] * 10 + [2.02] * 20, 1.01)}
    table = loss_gap_table(histories, window=20)
    assert table.loc["bf16", "relative gap vs bf16"] == 0
    assert table.loc["fp8", "relative gap vs bf16"] == pytest.approx(0.01)
    assert table.loc["fp8", "held-out gap vs bf16"] == pytest.approx(0.01)
    fig = plot_loss_curves(histories, window=5)
    assert len(fig.axes[0].lines) == 2 and fig.axes[1].get_ylabel() == "relative loss gap, moving average of 5 steps (%)"


def test_train_in_precisions_uses_the_same_start(monkeypatch):
    import utils.moe.train

    seen = []
    monkeypatch.setattr(utils.moe.train, "train", lambda model, steps, **kw: seen.append(model) or kw["seed"])
    from utils.moe.toy_decoder import ToyDecoderConfig
    result = fp8_explore.train_in_precisions(3, seed=5, config=ToyDecoderConfig(n_blocks=1, n_routed=2))
    assert result == {"fp32": 5, "bf16": 5, "fp8": 5}
    weights = [m.embed.weight for m in seen]
    assert torch.equal(weights[0], weights[1]) and torch.equal(weights[0], weights[2])
    assert [getattr(m.blocks[0].attn.qkv, "precision", "fp32") for m in seen] == ["fp32", "bf16", "fp8"]


# -- the widget: wiring only ---------------------------------------------------------------------------------

class Spy:
    def __init__(self):
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return explore_fp8(**{**kwargs, "rows": 8, "k": min(kwargs["k"], 256)})


def test_widget_calls_the_pure_function_and_shows_chart_and_table():
    spy = Spy()
    explorer = FP8Explorer(explore=spy)
    assert spy.calls == [{"outlier": 1.0, "k": 1024, "accum_bits": 14, "fmt": "e4m3",
                          "granularity": "tile1x128", "scale_rule": "fp32", "promote_every": 128}]
    assert explorer.image.value[:4] == b"\x89PNG" and "<table" in explorer.table.value
    assert repr(explorer) == ("FP8Explorer(E4M3, tile1x128, fp32 scales, outliers x1, K=1024, 14-bit "
                              "accumulator, N_C=128)")


def test_widget_control_changes_call_it_again():
    spy = Spy()
    explorer = FP8Explorer(explore=spy)
    before = explorer.table.value
    explorer.controls["outlier"].value = 1e4
    explorer.controls["granularity"].value = "tensor"
    explorer.controls["promote_every"].value = None
    assert len(spy.calls) == 4
    assert spy.calls[-1]["outlier"] == 1e4 and spy.calls[-1]["granularity"] == "tensor"
    assert spy.calls[-1]["promote_every"] is None and explorer.table.value != before


def test_widget_shows_a_library_error_as_a_message():
    def failing(**kwargs):
        raise ValueError("a rule of the library")

    explorer = FP8Explorer(explore=failing)
    assert "a rule of the library" in explorer.message.value


def test_fp8_explorer_builds_with_settings():
    explorer = fp8_explorer(k=128, outlier=10.0)
    assert explorer.settings()["k"] == 128 and "<table" in explorer.table.value
    assert "text/plain" in explorer._repr_mimebundle_()


def test_explore_gives_the_rule_of_a_bad_setting_as_a_view():
    view = explore_fp8(fmt="e3m4", k=128, rows=8)
    assert view.figure is None and view.table is None and "e3m4" in view.error.lower()
