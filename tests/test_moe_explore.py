"""The pure functions behind the MoE notebooks' tables, figures and widgets, and the widget wiring."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from utils.moe import explore as moe_explore  # noqa: E402
from utils.moe.expert_parallel import ExpertLayout, traffic_from_routing  # noqa: E402
from utils.moe.explore import (  # noqa: E402
    balancing_table,
    layout_table,
    moe_inputs,
    moving_average,
    parameter_table,
    router_walkthrough,
    specialisation,
    task_shares,
    traffic_table,
)
from utils.moe.layer import DeepSeekMoE  # noqa: E402
from utils.moe.toy_decoder import ToyDecoderConfig, build_toy_decoder  # noqa: E402
from utils.moe.train import TrainingHistory  # noqa: E402
from utils.view import View  # noqa: E402
from utils.widgets import moe as widgets_moe


@pytest.fixture
def few_steps(monkeypatch):
    """Train for 3 steps instead of the notebooks' TOY_STEPS, with a fresh cache."""
    monkeypatch.setattr(moe_explore, "TOY_STEPS", 3)
    monkeypatch.setattr(moe_explore, "NODE_CAP_STEPS", 3)
    for cache in ("_TRAINED", "_HELD_OUT", "_SWEEPS"):
        monkeypatch.setattr(moe_explore, cache, {})
    yield
    plt.close("all")


def fake_history(counts: np.ndarray, steps: int = 30) -> TrainingHistory:
    layers, experts, _ = counts.shape
    load = np.full((steps, layers, experts), 1 / experts)
    return TrainingHistory(loss=np.linspace(2, 1, steps), aux_loss=np.zeros(steps), load=load,
                           expert_bias=np.zeros((layers, experts)), eval_loss=1.0, eval_accuracy=0.5,
                           expert_task_counts=counts)


def test_router_walkthrough_shows_affinities_picks_and_gates():
    torch.manual_seed(0)
    layer = DeepSeekMoE(8, 6, 2, 8)
    layer.expert_bias[3] = 0.25
    tokens = torch.randn(4, 8)
    affinities, picks = router_walkthrough(layer, tokens)
    assert affinities.shape == (4, 6)
    assert "(" in affinities.loc["token 0", "expert 3"] and "(" not in affinities.loc["token 0", "expert 0"]
    idx, gates = layer.route(layer.affinity(tokens))
    assert picks["picked experts"].tolist() == [", ".join(map(str, row)) for row in idx.tolist()]
    assert set(picks["sum of gates"]) == {"1.000"}


def test_parameter_table_counts_what_each_token_uses():
    layer = DeepSeekMoE(16, 8, 2, 12, n_shared=1)
    table = parameter_table(layer, dense_hidden=36)
    expert, router = 3 * 16 * 12, 16 * 8
    moe = table.iloc[1]
    assert moe["stored"] == expert * 9 + router
    assert moe["used per token"] == expert * 3 + router
    assert table.iloc[0]["stored"] == table.iloc[0]["used per token"] == 3 * 16 * 36


def test_moving_average():
    np.testing.assert_allclose(moving_average(np.array([1.0, 3.0, 5.0, 7.0]), window=2), [1, 2, 4, 6])


def test_task_shares_and_specialisation():
    same = np.ones((1, 4, 4))                       # every task spreads evenly: no specialisation
    disjoint = np.eye(4).reshape(1, 4, 4)           # task t only uses expert t: full specialisation
    np.testing.assert_allclose(task_shares(fake_history(same)).sum(-1), 1.0)
    assert specialisation(fake_history(same))[0] == pytest.approx(0.0)
    assert specialisation(fake_history(disjoint))[0] == pytest.approx(0.75)  # 1 - 1/4 for 4 tasks


def test_balancing_table_and_figures():
    counts = np.random.default_rng(0).integers(1, 20, size=(2, 8, 4)).astype(float)
    histories = {"bias": fake_history(counts), "none": fake_history(counts)}
    table = balancing_table(histories)
    assert list(table.index) == ["bias (aux-loss-free)", "no balancing"]
    assert table["MaxVio (last 20 steps)"].tolist() == [0.0, 0.0]
    heatmap = moe_explore.plot_expert_task_heatmap(histories["bias"])
    scales = [ax.collections[0].get_clim() for ax in heatmap.axes if ax.get_title().startswith("MoE layer")]
    assert len(scales) == 2 and scales[0] == scales[1]  # one colour is one share in both layers' panels
    figures = (moe_explore.plot_expert_load(histories), heatmap)
    for figure in figures:
        assert figure._suptitle is not None and all(ax.get_xlabel() for ax in figure.axes[:1])
        plt.close(figure)


def test_layout_and_traffic_tables():
    layout = ExpertLayout(16, 8, 2)
    table = layout_table(layout)
    assert table.loc[3, "node"] == 1 and table.loc[3, "experts"] == "6, 7"
    generator = torch.Generator().manual_seed(0)
    routing = [torch.stack([torch.randperm(16, generator=generator)[:4] for _ in range(5)]) for _ in range(8)]
    traffic = traffic_from_routing(routing, layout, d_model=64)
    table = traffic_table(traffic)
    assert table.loc["total"].sum() == traffic.sum()
    assert (table.drop(index="total").sum() == table.loc["total"]).all()


def test_moe_inputs_are_what_the_moe_layers_see():
    model = build_toy_decoder(ToyDecoderConfig(n_blocks=2), seed=0)
    tokens = torch.randint(0, 15, (3, 5))
    first, second = moe_inputs(model, tokens)
    with torch.no_grad():
        h = model.embed(tokens)
        block = model.blocks[0]
        h = h + block.attn(block.attn_norm(h))
        torch.testing.assert_close(first, block.ffn_norm(h).reshape(-1, 64))
    assert second.shape == (15, 64)


def test_train_and_summarise_rejects_bad_settings_without_training(few_steps):
    view = moe_explore.train_and_summarise(k=4, n_experts=4 - 1)
    assert view.figure is None and "must lie in 1..3" in view.error


def test_train_and_summarise_trains_once_per_setting(few_steps):
    view = moe_explore.train_and_summarise(k=2, n_experts=4, balancing="aux")
    assert view.error is None and view.table.shape[0] == 1
    assert len(moe_explore._TRAINED) == 1
    moe_explore.train_and_summarise(k=2, n_experts=4, balancing="aux")
    assert len(moe_explore._TRAINED) == 1  # cached


def test_node_cap_sweep_respects_the_cap_and_the_summary_shows_one_row(few_steps):
    sweep = moe_explore.node_cap_sweep()
    assert list(sweep.index) == [1, 2, 3, 4]
    assert (sweep["nodes per token (max)"] <= sweep.index).all()
    assert (sweep["cross-node copies per token"] <= sweep.index).all()
    assert moe_explore._SWEEPS[3] is sweep  # the widget reuses it
    view = moe_explore.node_cap_summary(2)
    assert view.table.index.tolist() == [2]
    pd.testing.assert_frame_equal(view.table, sweep.loc[[2]])
    assert "1..4" in moe_explore.node_cap_summary(5).error


def test_widget_wires_controls_to_the_pure_function():
    calls = []

    def compute(k, n_experts, balancing):
        calls.append((k, n_experts, balancing))
        if k == 3:
            return View(error="K = 3 is not allowed here")
        return View(plt.figure(), pd.DataFrame({"k": [k]}))

    widget = widgets_moe.moe_training_widget(compute=compute)
    assert calls == [(2, 8, "bias")] and widget.message.value == "" and widget.image.value
    widget.controls["k"].value = 3
    assert calls[-1] == (3, 8, "bias")
    assert "K = 3 is not allowed here" in widget.message.value and widget.image.layout.display == "none"
    widget.controls["balancing"].value = "aux"
    widget.controls["k"].value = 1
    assert calls[-1] == (1, 8, "aux") and widget.message.value == "" and "<table" in widget.table.value
    assert repr(widget) == "MoE training widget(k=1, n_experts=8, balancing='aux')"
    assert widget._repr_mimebundle_()["text/plain"] == repr(widget)


def test_node_cap_widget_wiring():
    seen = []
    widget = widgets_moe.node_cap_widget(2, compute=lambda max_nodes: seen.append(max_nodes) or
                                         View(plt.figure(), pd.DataFrame({"M": [max_nodes]})))
    widget.controls["max_nodes"].value = 3
    assert seen == [2, 3] and repr(widget) == "Node cap widget(max_nodes=3)"


def test_same_routing_ignores_order_within_a_token_only():
    idx, gates = torch.tensor([[0, 3], [2, 1]]), torch.tensor([[0.6, 0.4], [0.7, 0.3]])
    swapped = (torch.tensor([[3, 0], [2, 1]]), torch.tensor([[0.4, 0.6], [0.7, 0.3]]))
    assert moe_explore.same_routing(swapped, (idx, gates))
    assert not moe_explore.same_routing((idx, gates.flip(-1)), (idx, gates))
    assert not moe_explore.same_routing((idx[:1], gates[:1]), (idx, gates))


def test_random_routing_cases_are_seeded():
    a, b = moe_explore.random_routing_cases(seed=3), moe_explore.random_routing_cases(seed=3)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[2], y[2]) for x, y in zip(a, b, strict=True))
    affinity, k, bias = a[0]
    assert affinity.shape == (6, 8) and k == 2 and bias.shape == (8,)


def test_link_times_divide_bytes_by_bandwidth():
    sweep = pd.DataFrame({"cross-node MB (two-hop)": [8.0], "within-node MB (two-hop)": [16.0]}, index=[1])
    times = moe_explore.link_times(sweep, ib_gb_per_s=50, nvlink_gb_per_s=160)
    # 1 MB per rank over 50 GB/s is 20 us; 2 MB per rank over 160 GB/s is 12.5 us.
    assert times.iloc[0].tolist() == [20.0, 12.5]


def test_balancing_seeds_one_row_per_method_and_seed_and_the_spread(few_steps):
    table = moe_explore.balancing_seeds(methods=("bias", "none"), seeds=(0, 1))
    assert table.index.tolist() == [("bias (aux-loss-free)", 0), ("bias (aux-loss-free)", 1),
                                    ("no balancing", 0), ("no balancing", 1)]
    layers = moe_explore.DEFAULT_CONFIG.n_blocks
    assert [c for c in table.columns if c.startswith("specialisation")] == [
        f"specialisation, layer {i}" for i in range(layers)]
    # each row is that run's own numbers: the seed changes weights and batches, so the runs differ
    _, history = moe_explore.train_toy(moe_explore.DEFAULT_CONFIG.replace(balancing="none"), seed=1)
    assert table.loc[("no balancing", 1), "held-out loss"] == round(history.eval_loss, 3)
    assert table.loc[("no balancing", 0), "held-out loss"] != table.loc[("no balancing", 1), "held-out loss"]
    spread = moe_explore.seed_spread(table)
    assert spread.index.tolist() == ["bias (aux-loss-free)", "no balancing"]
    for method in spread.index:
        for column in table.columns:
            values = table.loc[method, column]
            assert spread.loc[method, (column, "min")] == values.min()
            assert spread.loc[method, (column, "max")] == values.max()


def test_node_cap_figure_defines_a_pass_and_keeps_legends_off_the_data(few_steps):
    sweep = moe_explore.node_cap_sweep()
    one_pass = sweep.attrs["pass"]
    held_out = moe_explore.make_dataset(moe_explore.EVAL_SEQUENCES, seed=moe_explore.EVAL_SEED)
    assert one_pass == {"tokens": held_out.inputs.numel(), "moe_layers": 2, "ranks": 8}
    assert moe_explore.pass_description(sweep) == (
        f"one pass: {one_pass['tokens']:,} tokens through 2 MoE layers, forward + backward, summed over 8 ranks")
    assert moe_explore.pass_description(pd.DataFrame()) == "one forward + backward pass"
    for highlight in (None, 2):
        fig = moe_explore.plot_node_cap(sweep, highlight=highlight)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        assert f"{one_pass['tokens']:,} tokens" in fig.get_suptitle()
        for ax in fig.axes:
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
            legend = ax.get_legend().get_window_extent(renderer)
            plot_area = ax.get_window_extent(renderer)
            assert legend.y1 < plot_area.y0            # below the axes: it cannot cover a bar or a point
        plt.close(fig)
