"""The computations behind the MoE notebooks' tables, figures and widgets: pure functions, unit-tested.

Notebook 01 (toy MoE): the router step by step (`router_walkthrough`), what an MoE layer costs
(`parameter_table`), training with each balancing method (`train_toy`, cached), the load and
expert-by-task figures, and `train_and_summarise(k, n_experts, balancing)` for its widget.

Notebook 02 (expert parallelism): the layout of experts on ranks and nodes, per-rank traffic tables, and
the node cap sweep: the same toy decoder trained with node-limited routing for every M, its cross-node bytes
(predicted by `traffic_from_routing`, or measured on a cluster) and its loss; `node_cap_summary(M)` for its
widget. Training runs are cached, so a widget shows a setting the notebook already ran at once.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from utils import inputs as arg
from utils.figures import EDGE_COLOR, KIND_COLORS
from utils.moe.data import TASKS, make_dataset
from utils.moe.expert_parallel import (
    DIRECTIONS,
    PHASES,
    SCOPES,
    ExpertLayout,
    measure_traffic,
    split_over_ranks,
    traffic_from_routing,
)
from utils.moe.inputs import (
    check_cluster,
    check_histories,
    check_node_cap,
    check_pair,
    check_series,
    check_sweep,
)
from utils.moe.layer import DeepSeekMoE
from utils.moe.routing import nodes_per_token
from utils.moe.toy_decoder import ToyDecoder, ToyDecoderConfig, build_toy_decoder, moe_layers
from utils.moe.traffic_tables import direction_totals, layout_table, traffic_table  # noqa: F401 - notebook 02's
from utils.moe.train import EVAL_SEED, EVAL_SEQUENCES, TrainingHistory, single_thread, train
from utils.view import View

#: Training steps of every toy run in the notebooks (a few seconds each on 2 cores).
TOY_STEPS = 150
#: Training steps of each node-cap run in notebook 02 (four runs of a 16-expert model).
NODE_CAP_STEPS = 100
#: Notebook 02's cluster: 8 simulated GPUs in 4 nodes of 2, 16 routed experts (2 per GPU), K = 4.
NODE_CAP_LAYOUT = ExpertLayout(n_experts=16, world_size=8, gpus_per_node=2)
NODE_CAP_CONFIG = ToyDecoderConfig(n_routed=16, k=4, d_expert=32, n_nodes=4)
DEFAULT_CONFIG = ToyDecoderConfig()
METHOD_LABELS = {"bias": "bias (aux-loss-free)", "aux": "auxiliary loss", "none": "no balancing"}


# ------------------------------------------------------------------------------------ notebook 01

def same_routing(yours, expected) -> bool:
    """Do two (expert_idx, gate_weights) results pick the same experts with the same gates, in any order?"""
    check_pair(yours, "yours", "same_routing"), check_pair(expected, "expected", "same_routing")
    (idx_a, gates_a), (idx_b, gates_b) = yours, expected
    idx_a, idx_b = torch.as_tensor(idx_a), torch.as_tensor(idx_b)
    if idx_a.shape != idx_b.shape:
        return False
    order_a, order_b = idx_a.argsort(dim=-1), idx_b.argsort(dim=-1)
    same_experts = torch.equal(idx_a.gather(-1, order_a), idx_b.gather(-1, order_b))
    gates_a = torch.as_tensor(gates_a, dtype=torch.float32).gather(-1, order_a)
    return same_experts and torch.allclose(gates_a, torch.as_tensor(gates_b).gather(-1, order_b), atol=1e-6)


def random_routing_cases(n_cases: int = 5, n_experts: int = 8, k: int = 2, seed: int = 0,
                         tokens: int = 6) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
    """Seeded (affinity, k, bias) cases for exercise checks: sigmoid-like affinities, small biases."""
    ToyDecoderConfig(n_routed=n_experts, k=k), arg.whole(seed, "seed", low=0, where="random_routing_cases")
    arg.product_limit((arg.whole(n_cases, "n_cases", low=1), arg.whole(tokens, "tokens", low=1), n_experts),
                      "n_cases x tokens x n_experts", arg.MAX_ELEMENTS, where="random_routing_cases")
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(tokens, n_experts, generator=generator), k,
             0.2 * torch.randn(n_experts, generator=generator)) for _ in range(n_cases)]


def router_walkthrough(layer: DeepSeekMoE, tokens: torch.Tensor) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The router step by step on a few tokens (DeepSeek-V3 eqs. 12-15).

    Returns (affinities: one row per token, one column per expert, s_i = sigmoid(u . e_i), with the
    selection score s_i + b_i in brackets where the bias is non-zero; picks: the chosen experts, their
    affinities, gate weights and the sum of the gates).
    """
    arg.instance(layer, "layer", DeepSeekMoE, "a DeepSeekMoE layer", where="router_walkthrough").check_input(
        arg.tensor(tokens, "tokens", where="router_walkthrough", dims=2), "router_walkthrough")
    with torch.no_grad():
        affinity = layer.affinity(tokens)
        idx, gates = layer.route(affinity)
    bias = layer.expert_bias if layer.balancing == "bias" else torch.zeros(layer.n_routed)

    def cell(value: float, b: float) -> str:
        return f"{value:.3f}" if b == 0 else f"{value:.3f} ({value + b:.3f})"

    names = [f"token {t}" for t in range(tokens.shape[0])]
    affinities = pd.DataFrame(
        [[cell(float(affinity[t, e]), float(bias[e])) for e in range(layer.n_routed)]
         for t in range(len(names))],
        index=names, columns=[f"expert {e}" for e in range(layer.n_routed)],
    )
    picks = pd.DataFrame({
        "picked experts": [", ".join(map(str, row)) for row in idx.tolist()],
        "their affinities": [", ".join(f"{v:.3f}" for v in row) for row in affinity.gather(1, idx).tolist()],
        "gate weights": [", ".join(f"{v:.3f}" for v in row) for row in gates.tolist()],
        "sum of gates": [f"{float(v):.3f}" for v in gates.sum(1)],
    }, index=names)
    return affinities, picks


def parameter_table(layer: DeepSeekMoE, dense_hidden: int) -> pd.DataFrame:
    """Parameters stored vs parameters each token uses: a dense SwiGLU FFN against the MoE layer."""
    arg.instance(layer, "layer", DeepSeekMoE, "a DeepSeekMoE layer", where="parameter_table")
    arg.whole(dense_hidden, "dense_hidden", low=1, where="parameter_table")
    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    d_model = layer.router.in_features
    expert = count(layer.experts[0])
    shared = count(layer.shared_experts)
    router = count(layer.router)
    rows = [
        {"layer": f"dense FFN (hidden {dense_hidden})", "stored": 3 * d_model * dense_hidden,
         "used per token": 3 * d_model * dense_hidden},
        {"layer": f"MoE: {len(layer.shared_experts)} shared + {layer.n_routed} routed, K = {layer.k}",
         "stored": shared + layer.n_routed * expert + router,
         "used per token": shared + layer.k * expert + router},
    ]
    table = pd.DataFrame(rows).set_index("layer")
    table["used / stored"] = (table["used per token"] / table["stored"]).round(3)
    return table


_TRAINED: dict[tuple, tuple[ToyDecoder, TrainingHistory]] = {}


def train_toy(config: ToyDecoderConfig = DEFAULT_CONFIG, steps: int | None = None, seed: int = 0,
              progress: bool = False) -> tuple[ToyDecoder, TrainingHistory]:
    """Build and train a toy decoder for `steps` (default TOY_STEPS); cached, so the same
    (config, steps, seed) trains once per session."""
    arg.instance(config, "config", ToyDecoderConfig, "a ToyDecoderConfig", where="train_toy")  # a cache key
    steps = TOY_STEPS if steps is None else steps
    key = (config, steps, seed)
    if key not in _TRAINED:
        model = build_toy_decoder(config, seed=seed)
        desc = f"K={config.k}, {config.n_routed} experts, {config.balancing}"
        if config.n_nodes > 1:
            desc += f", M={config.max_nodes or config.n_nodes}"
        _TRAINED[key] = model, train(model, steps, seed=seed, progress=progress, desc=desc)
    return _TRAINED[key]


def compare_balancing(methods=("bias", "aux", "none"), config: ToyDecoderConfig = DEFAULT_CONFIG,
                      progress: bool = False) -> dict[str, TrainingHistory]:
    """Train the same toy decoder (same seed, same data) once per balancing method."""
    for method in arg.sequence(methods, "methods", where="compare_balancing"):
        config.replace(balancing=method)  # the config's rule, before any training
    return {m: train_toy(config.replace(balancing=m), progress=progress)[1] for m in methods}


def moving_average(values: np.ndarray, window: int = 10) -> np.ndarray:
    """Trailing mean over `window` steps along the first axis (the first steps average what exists)."""
    values, window = check_series(values, window, "moving_average")
    cumulative = np.cumsum(values, axis=0)
    out = cumulative.copy()
    out[window:] = cumulative[window:] - cumulative[:-window]
    counts = np.minimum(np.arange(1, len(values) + 1), window).reshape(-1, *([1] * (values.ndim - 1)))
    return out / counts


def plot_expert_load(histories: dict[str, TrainingHistory], layer: int = 0, window: int = 10) -> Figure:
    """One panel per balancing method: each expert's share of the token-slots over training."""
    check_histories(histories, "plot_expert_load", ("load",), layer=layer, window=window)
    fig, axes = plt.subplots(1, len(histories), figsize=(4.2 * len(histories), 3.4), sharey=True,
                             squeeze=False)
    for ax, (method, history) in zip(axes[0], histories.items(), strict=True):
        load = moving_average(history.load[:, layer, :], window) * 100
        palette = sns.color_palette("colorblind", load.shape[1])
        for e in range(load.shape[1]):
            ax.plot(np.arange(1, len(load) + 1), load[:, e], color=palette[e], label=f"expert {e}")
        ax.axhline(100 / load.shape[1], color="black", linestyle="--", linewidth=1, label="perfect balance")
        ax.set_title(METHOD_LABELS.get(method, method))
        ax.set_xlabel("training step")
    axes[0, 0].set_ylabel(f"share of token-slots (%), {window}-step mean")
    axes[0, -1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.suptitle(f"Expert load over training, MoE layer {layer}")
    fig.tight_layout()
    return fig


def task_shares(history: TrainingHistory) -> np.ndarray:
    """(layers, tasks, experts): the share of each task's token-slots that went to each expert."""
    check_histories({"history": history}, "task_shares", ("expert_task_counts",))
    counts = history.expert_task_counts.transpose(0, 2, 1)
    return counts / counts.sum(axis=-1, keepdims=True)


def plot_expert_task_heatmap(history: TrainingHistory, title: str = "Which experts each task uses") -> Figure:
    """Seaborn heatmaps, one per MoE layer (one colour scale: a colour is a share): rows tasks, columns experts."""
    shares = task_shares(history) * 100
    top = float(shares.max())
    fig, axes = plt.subplots(1, len(shares), figsize=(5.5 * len(shares), 3.2), squeeze=False)
    for i, (ax, share) in enumerate(zip(axes[0], shares, strict=True)):
        sns.heatmap(share, ax=ax, annot=True, fmt=".0f", cmap="viridis", vmin=0, vmax=top,
                    cbar_kws={"label": "% of task"}, xticklabels=[str(e) for e in range(share.shape[1])],
                    yticklabels=list(TASKS))
        ax.set_title(f"MoE layer {i}")
        ax.tick_params(axis="y", rotation=0)
        ax.set_xlabel("expert")
        ax.set_ylabel("task")
    fig.suptitle(f"{title} (held-out set, % of each task's token-slots)")
    fig.tight_layout()
    return fig


def specialisation(history: TrainingHistory) -> np.ndarray:
    """(layers,) how far tasks' expert choices differ from the average, as total variation distance.

    0 when every task spreads its tokens over experts the same way; (tasks - 1) / tasks when tasks use
    disjoint experts (0.75 for the four tasks).
    """
    shares = task_shares(history)
    mean = shares.mean(axis=1, keepdims=True)
    return 0.5 * np.abs(shares - mean).sum(axis=-1).mean(axis=-1)


def balancing_table(histories: dict[str, TrainingHistory], window: int = 20) -> pd.DataFrame:
    """Loss, accuracy, load balance and task specialisation at the end of training, per method."""
    check_histories(histories, "balancing_table", ("loss", "load", "eval_loss", "expert_task_counts"), window=window)
    rows = []
    for method, h in histories.items():
        rows.append({
            "balancing": METHOD_LABELS.get(method, method),
            "train loss (last 20 steps)": round(float(h.loss[-window:].mean()), 3),
            "held-out loss": round(h.eval_loss, 3),
            "held-out accuracy": round(h.eval_accuracy, 3),
            "MaxVio (last 20 steps)": round(float(h.max_violation()[-window:].mean()), 3),
            "task specialisation": round(float(specialisation(h).mean()), 3),
        })
    return pd.DataFrame(rows).set_index("balancing")


def balancing_seeds(methods=("bias", "aux", "none"), seeds=(0, 1, 2), config: ToyDecoderConfig = DEFAULT_CONFIG,
                    window: int = 20, progress: bool = False) -> pd.DataFrame:
    """The balancing comparison repeated for several seeds (initial weights and batch order; same data).

    One row per (method, seed): MaxVio over the last `window` steps, held-out loss and each MoE layer's task
    specialisation. A difference between methods, or between layers, means something only if it is larger
    than the spread over seeds; `seed_spread` summarises that spread. Runs are cached (`train_toy`).
    """
    rows = []
    for method in methods:
        for seed in seeds:
            _, history = train_toy(config.replace(balancing=method), seed=seed, progress=progress)
            layers = {f"specialisation, layer {i}": round(float(v), 3)
                      for i, v in enumerate(specialisation(history))}
            rows.append({"balancing": METHOD_LABELS.get(method, method), "seed": seed,
                         f"MaxVio (last {window} steps)": round(float(history.max_violation()[-window:].mean()), 3),
                         "held-out loss": round(history.eval_loss, 3), **layers})
    return pd.DataFrame(rows).set_index(["balancing", "seed"])


def seed_spread(table: pd.DataFrame) -> pd.DataFrame:
    """Lowest and highest value over the seeds of every column of a `balancing_seeds` table, per method."""
    return table.groupby(level=0, sort=False).agg(["min", "max"])


def train_and_summarise(k: int = 2, n_experts: int = 8, balancing: str = "bias") -> View:
    """The notebook 01 widget: train a toy decoder with these settings; show load and loss over training."""
    try:
        _, history = train_toy(ToyDecoderConfig(k=k, n_routed=n_experts, balancing=balancing))
    except ValueError as error:
        return View(error=str(error))
    fig, (load_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
    load = moving_average(history.load[:, 0, :]) * 100
    palette = sns.color_palette("colorblind", n_experts)
    for e in range(n_experts):
        load_ax.plot(load[:, e], color=palette[e], linewidth=1)
    load_ax.axhline(100 / n_experts, color="black", linestyle="--", linewidth=1, label="perfect balance")
    load_ax.set(title="Expert load, MoE layer 0 (one line per expert)", xlabel="training step",
                ylabel="share of token-slots (%), 10-step mean")
    load_ax.legend()
    loss_ax.plot(moving_average(history.loss), color="black", label="training loss (10-step mean)")
    loss_ax.axhline(history.eval_loss, color=KIND_COLORS["F"], linestyle=":",
                    label="held-out loss at the end")
    loss_ax.set(title="Language-model loss", xlabel="training step", ylabel="cross-entropy (nats)")
    loss_ax.legend()
    fig.suptitle(f"K = {k}, {n_experts} routed experts, balancing: {METHOD_LABELS[balancing]}")
    fig.tight_layout()
    return View(figure=fig, table=balancing_table({balancing: history}))


# ------------------------------------------------------------------------------------ notebook 02

def moe_inputs(model: ToyDecoder, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The hidden states entering each MoE layer of `model` for `tokens`, flattened to (tokens, d_model)."""
    arg.instance(model, "model", ToyDecoder, "a ToyDecoder (build_toy_decoder())", where="moe_inputs")
    captured: list[torch.Tensor] = []
    def keep(_module, args):
        captured.append(args[0].reshape(-1, args[0].shape[-1]))

    hooks = [layer.register_forward_pre_hook(keep) for layer in moe_layers(model)]
    try:
        with torch.no_grad(), single_thread():
            model.eval()
            model(tokens)
    finally:
        for hook in hooks:
            hook.remove()
        model.train()
    return captured


def node_cap_run(max_nodes: int, progress: bool = False, seed: int = 0) -> tuple[ToyDecoder, TrainingHistory]:
    """The notebook 02 toy decoder (16 experts on 4 nodes, K = 4) trained with node cap M (cached)."""
    check_node_cap(max_nodes, NODE_CAP_LAYOUT.n_nodes, "node_cap_run")
    return train_toy(NODE_CAP_CONFIG.replace(max_nodes=max_nodes), steps=NODE_CAP_STEPS, seed=seed,
                     progress=progress)


_HELD_OUT: dict[tuple, tuple[list[torch.Tensor], list[list[torch.Tensor]]]] = {}


def held_out_routing(max_nodes: int, seed: int = 0) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """For the node-cap-M model and the held-out tokens (cached): per MoE layer, the hidden states entering it
    and, per rank, the experts they pick; tokens are dealt evenly over the 8 ranks."""
    check_node_cap(max_nodes, NODE_CAP_LAYOUT.n_nodes, "held_out_routing")  # before any training
    key = (max_nodes, NODE_CAP_STEPS, seed)
    if key not in _HELD_OUT:
        model, _ = node_cap_run(max_nodes, seed=seed)
        hidden = moe_inputs(model, make_dataset(EVAL_SEQUENCES, seed=EVAL_SEED).inputs)
        routing = []
        for layer, states in zip(moe_layers(model), hidden, strict=True):
            with torch.no_grad():
                idx, _ = layer.route(layer.affinity(states))
            routing.append(split_over_ranks(idx, NODE_CAP_LAYOUT.world_size))
        _HELD_OUT[key] = hidden, routing
    return _HELD_OUT[key]


def measure_node_cap_traffic(cluster, max_nodes: int) -> np.ndarray:
    """Bytes measured on `cluster` (8 ranks) when the node-cap-M model's MoE layers process the held-out
    set: the hidden states entering each layer are dealt over the ranks and run through its expert-parallel
    twin (forward + backward)."""
    check_cluster(cluster, NODE_CAP_LAYOUT.world_size, "measure_node_cap_traffic")
    model, _ = node_cap_run(max_nodes)
    hidden, _ = held_out_routing(max_nodes)
    total = 0
    for layer, states in zip(moe_layers(model), hidden, strict=True):
        total = total + measure_traffic(cluster, layer, split_over_ranks(states, NODE_CAP_LAYOUT.world_size),
                                        NODE_CAP_LAYOUT.gpus_per_node)
    return total


def _cap_row(max_nodes: int, traffic: np.ndarray, direct: np.ndarray, routing, history) -> dict:
    inter = SCOPES.index("inter")
    tokens = sum(int(r.shape[0]) for r in routing[0]) * len(routing)
    layout = NODE_CAP_LAYOUT
    nodes = torch.cat([nodes_per_token(torch.cat(per_rank), layout.n_experts, layout.n_nodes)
                       for per_rank in routing]).float()
    dispatch_row = (NODE_CAP_CONFIG.d_model + 2 * NODE_CAP_LAYOUT.experts_per_node) * 4
    copies = traffic[:, PHASES.index("dispatch"), DIRECTIONS.index("forward"), inter].sum() / dispatch_row
    return {
        "M": max_nodes,
        "nodes per token (mean)": round(float(nodes.mean()), 3),
        "nodes per token (max)": int(nodes.max()),
        "cross-node copies per token": round(float(copies / tokens), 3),
        "cross-node MB (two-hop)": round(traffic[..., inter].sum() / 1e6, 3),
        "within-node MB (two-hop)": round(traffic[..., 1 - inter].sum() / 1e6, 3),
        "cross-node MB (direct)": round(direct[..., inter].sum() / 1e6, 3),
        "held-out loss": round(history.eval_loss, 3),
        "held-out accuracy": round(history.eval_accuracy, 3),
    }


def node_cap_row(max_nodes: int, seed: int = 0) -> dict:
    """One row of `node_cap_sweep` for node cap M and training seed `seed`, with bytes predicted from routing."""
    _, history = node_cap_run(max_nodes, seed=seed)
    _, routing = held_out_routing(max_nodes, seed=seed)
    predicted = sum(traffic_from_routing(r, NODE_CAP_LAYOUT, NODE_CAP_CONFIG.d_model) for r in routing)
    direct = sum(traffic_from_routing(r, NODE_CAP_LAYOUT, NODE_CAP_CONFIG.d_model, hierarchical=False)
                 for r in routing)
    return _cap_row(max_nodes, predicted, direct, routing, history)


def node_cap_sweep(cluster=None, progress: bool = False) -> pd.DataFrame:
    """For every node cap M: nodes per token, cross-node copies and bytes, and the loss it costs.

    Bytes are for one *pass*: the held-out set (512 sequences, 6,656 tokens), dealt evenly over the 8 ranks,
    goes once through both MoE layers, forward (dispatch + combine) and backward (their reverses); bytes are
    summed over the 8 ranks (`pass_description` says it in words; the table's `attrs["pass"]` holds the
    counts). With `cluster` the two-hop bytes are measured on it (and a column says whether they equal the
    prediction); without, they are predicted from the routing (`traffic_from_routing`). The direct-dispatch
    column (no forwarding inside nodes) is always predicted.
    """
    _ = cluster is None or check_cluster(cluster, NODE_CAP_LAYOUT.world_size, "node_cap_sweep")
    rows, predicted_rows = [], []
    for m in range(1, NODE_CAP_LAYOUT.n_nodes + 1):
        _, history = node_cap_run(m, progress=progress)
        _, routing = held_out_routing(m)
        predicted = sum(traffic_from_routing(r, NODE_CAP_LAYOUT, NODE_CAP_CONFIG.d_model) for r in routing)
        direct = sum(traffic_from_routing(r, NODE_CAP_LAYOUT, NODE_CAP_CONFIG.d_model, hierarchical=False)
                     for r in routing)
        predicted_rows.append(_cap_row(m, predicted, direct, routing, history))
        if cluster is not None:
            measured = measure_node_cap_traffic(cluster, m)
            rows.append({**_cap_row(m, measured, direct, routing, history),
                         "measured = predicted": bool(np.array_equal(measured, predicted))})
    _, routing = held_out_routing(NODE_CAP_LAYOUT.n_nodes)
    one_pass = {"tokens": sum(int(r.shape[0]) for r in routing[0]), "moe_layers": len(routing),
                "ranks": NODE_CAP_LAYOUT.world_size}
    _SWEEPS[NODE_CAP_STEPS] = pd.DataFrame(predicted_rows).set_index("M")
    _SWEEPS[NODE_CAP_STEPS].attrs["pass"] = one_pass
    if cluster is None:
        return _SWEEPS[NODE_CAP_STEPS]
    measured = pd.DataFrame(rows).set_index("M")
    measured.attrs["pass"] = one_pass
    return measured


def pass_description(sweep: pd.DataFrame) -> str:
    """What one "pass" of a node cap sweep moved, in words (from the sweep's `attrs["pass"]`)."""
    one_pass = sweep.attrs.get("pass")
    if not one_pass:
        return "one forward + backward pass"
    return (f"one pass: {one_pass['tokens']:,} tokens through {one_pass['moe_layers']} MoE layers, "
            f"forward + backward, summed over {one_pass['ranks']} ranks")


def link_times(sweep: pd.DataFrame, ib_gb_per_s: float = 50.0, nvlink_gb_per_s: float = 160.0
               ) -> pd.DataFrame:
    """Time to move one pass of the sweep's bytes (see `node_cap_sweep`) at DeepSeek-V3's link speeds
    (3.2.2: InfiniBand 50 GB/s per GPU, NVLink 160 GB/s), each rank sending its share (1/8 of the bytes) over
    its own links in parallel: which link sets the all-to-all time, and by how much."""
    check_sweep(sweep, "link_times", ("cross-node MB (two-hop)", "within-node MB (two-hop)"),
                speeds={"ib_gb_per_s": ib_gb_per_s, "nvlink_gb_per_s": nvlink_gb_per_s})
    world = NODE_CAP_LAYOUT.world_size
    table = pd.DataFrame(index=sweep.index)
    # MB / (GB/s) is milliseconds; x 1000 for microseconds. Each rank sends its share over its own links.
    per_rank_ib = sweep["cross-node MB (two-hop)"] / world
    per_rank_nvlink = sweep["within-node MB (two-hop)"] / world
    table["cross-node time (us, IB)"] = (per_rank_ib / ib_gb_per_s * 1e3).round(2)
    table["within-node time (us, NVLink)"] = (per_rank_nvlink / nvlink_gb_per_s * 1e3).round(2)
    return table


_SWEEPS: dict[int, pd.DataFrame] = {}  # predicted sweeps by NODE_CAP_STEPS, for the widget


def plot_node_cap(sweep: pd.DataFrame, highlight: int | None = None) -> Figure:
    """Cross-node megabytes of one pass (two-hop and direct dispatch) and held-out loss against the node cap M.

    A pass is defined by the sweep (`pass_description`): for `node_cap_sweep`, the held-out set through both
    MoE layers, forward + backward, summed over the ranks. Legends sit below the axes, clear of the data.
    """
    check_sweep(sweep, "plot_node_cap", ("cross-node MB (two-hop)", "cross-node MB (direct)", "held-out loss"),
                highlight=highlight)
    fig, (bytes_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4.4))
    m = sweep.index.to_numpy()
    width = 0.38
    if highlight is not None:
        for ax in (bytes_ax, loss_ax):
            ax.axvspan(highlight - 0.5, highlight + 0.5, color=KIND_COLORS["idle"], zorder=0,
                       label=f"your choice: M = {highlight}")
    bytes_ax.bar(m - width / 2, sweep["cross-node MB (two-hop)"], width, color=KIND_COLORS["comm"],
                 label="two-hop dispatch (each node once, then NVLink)")
    bytes_ax.bar(m + width / 2, sweep["cross-node MB (direct)"], width, color=KIND_COLORS["comm"], alpha=0.4,
                 hatch="//", edgecolor=EDGE_COLOR, label="direct dispatch (every expert's GPU)")
    bytes_ax.set(title="Cross-node traffic of one pass", xlabel="node cap M (nodes per token)",
                 ylabel="bytes across nodes (MB)", xticks=m)
    loss_ax.plot(m, sweep["held-out loss"], marker="o", color="black", label="held-out loss after training")
    loss_ax.set(title=f"What the cap costs in quality (one {NODE_CAP_STEPS}-step run per M)",
                xlabel="node cap M (nodes per token)",
                ylabel="cross-entropy (nats)", xticks=m, ylim=(0, 1.25 * sweep["held-out loss"].max()))
    for ax in (bytes_ax, loss_ax):
        ax.title.set_fontsize(10)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, frameon=False)
    description = pass_description(sweep)
    fig.suptitle(description[0].upper() + description[1:], fontsize=10)
    fig.tight_layout()
    return fig


def node_cap_summary(max_nodes: int = NODE_CAP_LAYOUT.n_nodes) -> View:
    """The notebook 02 widget: cross-node bytes and loss against M, with M highlighted, and M's row."""
    try:
        check_node_cap(max_nodes, NODE_CAP_LAYOUT.n_nodes, "node_cap_summary")  # before any training
    except ValueError as error:
        return View(error=str(error))
    sweep = _SWEEPS.get(NODE_CAP_STEPS)
    if sweep is None:
        sweep = node_cap_sweep()
    return View(figure=plot_node_cap(sweep, highlight=max_nodes), table=sweep.loc[[max_nodes]])
