"""Tables of expert parallelism for notebook 02: which experts live on which rank, and the bytes each rank
sends (from ``utils.moe.expert_parallel``'s traffic arrays). Also reachable as ``utils.moe.explore.*``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from utils import inputs as arg
from utils.moe.expert_parallel import DIRECTIONS, PHASES, SCOPES, ExpertLayout, check_traffic


def layout_table(layout: ExpertLayout) -> pd.DataFrame:
    """Which experts live on which rank, and which node each rank belongs to."""
    arg.instance(layout, "layout", ExpertLayout, "an ExpertLayout", where="layout_table")
    rows = [{"rank": r, "node": layout.node_of_rank(r), "in-node index": layout.local_index(r),
             "experts": ", ".join(map(str, layout.experts_of_rank(r)))} for r in range(layout.world_size)]
    return pd.DataFrame(rows).set_index("rank")


def traffic_table(traffic: np.ndarray) -> pd.DataFrame:
    """Bytes each rank sent in one forward+backward, by phase and scope, with a total row."""
    check_traffic(traffic, "traffic_table")
    columns = {}
    for p, phase in enumerate(PHASES):
        for s, scope in enumerate(SCOPES):
            label = f"{phase} {'within node' if scope == 'intra' else 'across nodes'}"
            columns[label] = traffic[:, p, :, s].sum(axis=1)
    table = pd.DataFrame(columns, index=pd.RangeIndex(traffic.shape[0], name="rank"))
    table.loc["total"] = table.sum()
    return table.astype(int)


def direction_totals(traffic: np.ndarray) -> pd.Series:
    """Total bytes over all ranks, forward vs backward (the backward all-to-alls mirror the forward ones)."""
    check_traffic(traffic, "direction_totals")
    return pd.Series({d: int(traffic[:, :, i, :].sum()) for i, d in enumerate(DIRECTIONS)}, name="bytes")
