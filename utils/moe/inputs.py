"""What the MoE experiments accept, checked in the voice of ``utils.inputs``: training histories, node-cap
sweeps and clusters (the shared checks of ``utils.moe.explore`` and its callers)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from utils import inputs as arg
from utils.moe.train import TrainingHistory


def check_histories(histories, where: str, needs: tuple[str, ...] = ("loss",), layer=None, window=None) -> dict:
    """``histories`` if it is a non-empty dict {name: TrainingHistory} (or anything with the fields
    ``needs`` that the caller reads); with ``layer``, an MoE layer they hold; with ``window``, a number of
    steps to average over."""
    if not isinstance(histories, dict) or not histories or not all(
            isinstance(h, TrainingHistory) or all(hasattr(h, n) for n in needs) for h in histories.values()):
        arg.fail("histories", "a non-empty dict {name: TrainingHistory}, as train() or compare_balancing() give",
                 histories, where=where, error=arg.InputTypeError)
    if layer is not None:
        arg.whole(layer, "layer", low=0, high=next(iter(histories.values())).load.shape[1] - 1, where=where,
                  why="the MoE layers of the model, numbered from 0")
    if window is not None:
        arg.whole(window, "window", low=1, where=where, why="steps to average over")
    return histories


def check_pair(pair, name: str, where: str) -> tuple:
    """``pair`` if it is (expert_idx, gate_weights), what a router returns."""
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        arg.fail(name, "a pair (expert_idx, gate_weights), as a router returns", pair, where=where,
                 error=arg.InputTypeError)
    return tuple(pair)


def check_series(values, window, where: str) -> tuple[np.ndarray, int]:
    """(values, window) if values are a non-empty array of finite real numbers and window a whole >= 1."""
    values = np.asarray(values) if isinstance(values, (list, tuple)) else values
    if not isinstance(values, np.ndarray) or not values.size or values.dtype.kind not in "iuf" \
            or not np.isfinite(values).all():
        arg.fail("values", "a non-empty numpy array of finite real numbers", values, where=where,
                 error=arg.InputTypeError)
    return values, arg.whole(window, "window", low=1, where=where, why="steps to average over")


def check_sweep(sweep, where: str, columns: tuple[str, ...], highlight=None, speeds=None) -> pd.DataFrame:
    """``sweep`` if it is a table like ``node_cap_sweep()`` returns, with ``columns``; ``highlight`` (if
    given) one of its node caps; ``speeds`` (if given) {name: link speed in GB/s}, each positive."""
    if not isinstance(sweep, pd.DataFrame) or not set(columns) <= set(sweep.columns) or sweep.empty:
        arg.fail("sweep", f"a table like node_cap_sweep() returns, with columns {', '.join(columns)}", sweep,
                 where=where, error=arg.InputTypeError)
    if highlight is not None:
        arg.choice(highlight, "highlight", list(sweep.index), where=where, why="a node cap of the sweep")
    for name, value in (speeds or {}).items():
        arg.real(value, name, low=0, low_open=True, high=1e6, where=where, why="a link speed in GB/s")
    return sweep


def check_node_cap(max_nodes, n_nodes: int, where: str) -> int:
    """``max_nodes`` if it is a node cap M of 1..n_nodes (how many nodes a token's experts may span)."""
    return arg.whole(max_nodes, "max_nodes", low=1, high=n_nodes, where=where,
                     why=f"M = {max_nodes}: a token can use 1..{n_nodes} nodes")


def check_cluster(cluster, world_size: int, where: str) -> None:
    """``cluster`` if it is a simulated cluster of ``world_size`` ranks."""
    if getattr(cluster, "world_size", None) != world_size or not callable(getattr(cluster, "run", None)):
        arg.fail("cluster", f"a SimulatedCluster of {world_size} ranks (notebook 02's layout)", cluster,
                 where=where, error=arg.InputTypeError)
