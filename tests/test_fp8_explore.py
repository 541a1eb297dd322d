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
    fig, table = explore_fp8(**SMALL)
    assert isinstance(fig, Figure) and len(fig.axes) == 6          # three heatmaps and their colour bars
    assert isinstance(table, pd.DataFrame) and list(table.columns) == ["value"]
    assert len(table) == 10 and np.isfinite(table["value"]).all()
    assert all(ax.get_title() for ax in fig.axes[:3])


def test_explore_is_deterministic():
    _, first = explore_fp8(**SMALL)
    _, second = explore_fp8(**SMALL)
    pd.testing.assert_frame_equal(first, second)


def _value(table, starts_with):
    return table.loc[[i for i in table.index if i.startswith(starts_with)][0], "value"]


def test_outliers_under_per_tensor_scaling_flush_values_tiles_do_not():
    # K = 1024: the outlier channels sit in the first of eight 1x128 tiles of each row.
    _, per_tensor = explore_fp8(granularity="tensor", outlier=1e4, k=1024, rows=16)
    _, tiles = explore_fp8(granularity="tile1x128", outlier=1e4, k=1024, rows=16)
    flushed = "quantisation: fraction flushed"
    assert _value(per_tensor, flushed) > 5 * _value(tiles, flushed)
    mean = "quantisation: mean relative"
    assert _value(per_tensor, mean) > 2 * _value(tiles, mean)


def test_promotion_and_accumulator_bits_show_in_the_table():
    _, never = explore_fp8(k=2048, rows=16, promote_every=None)
    _, promoted = explore_fp8(k=2048, rows=16, promote_every=128)
    _, wide = explore_fp8(k=2048, rows=16, promote_every=None, accum_bits=20)
    accumulation = "GEMM vs FP64 of the same FP8 inputs"
    assert _value(never, accumulation) > 5 * _value(promoted, accumulation)
    assert _value(wide, accumulation) < _value(never, accumulation) / 10
    assert _value(never, "accumulator model, positive inputs: worst-case error, no") > 0.002


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("granularity", ["tensor", "row", "tile1x128", "block128x128", "mx1x32"])
@pytest.mark.parametrize("scale_rule", ["fp32", "pow2"])
def test_every_widget_combination_runs(fmt, granularity, scale_rule):
    _, table = explore_fp8(fmt, granularity, scale_rule, outlier=100.0, k=128, rows=8)
    assert np.isfinite(table["value"]).all()


def test_outlier_activations():
    x, mask = outlier_activations(8, 512, outlier=1000.0, n_outlier_channels=4)
    channels = mask[0].nonzero().flatten().tolist()
    assert channels == [3, 34, 65, 96] and mask.all(0).sum() == 4 and (mask.any(0) == mask.all(0)).all()
    assert x[:, channels].abs().mean() > 100 * x[:, ~mask[0]].abs().mean()
    with pytest.raises(ValueError, match=">= 1"):
        outlier_activations(outlier=0.5)


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
    assert len(fig.axes[0].lines) == 2 and fig.axes[1].get_ylabel() == "relative loss gap (%)"


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
