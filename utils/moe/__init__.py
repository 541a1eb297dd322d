"""Mixture of Experts as in DeepSeek-V3: routing, the layer, a toy decoder that trains, expert parallelism.

    routing          sigmoid affinities, top-K, node-limited routing (report Sec. 2.1.2)
    layer            DeepSeekMoE: shared + routed experts, bias (aux-loss-free) or auxiliary-loss balancing
    toy_decoder      a small decoder whose FFNs are DeepSeekMoE layers
    data             the seeded four-task dataset it trains on
    train            its training loop
    expert_parallel  experts over ranks: layout, all-to-all dispatch and combine, traffic accounting
    explore          the pure functions behind the MoE widgets
    inputs           checks of what the MoE experiments accept (histories, sweeps, clusters)
    traffic_tables   notebook 02's tables of the expert layout and of the bytes each rank sends

May import: torch, numpy, pandas, matplotlib, ``utils.figures``, ``utils.cluster`` (expert_parallel only).
Knows nothing of pipelines or FP8. ``from utils.moe import DeepSeekMoE`` works as it always did.
"""

from utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    name: "layer" for name in
    ("BALANCING_METHODS", "Expert", "balance_bias_update", "expert_balance_loss", "max_violation", "DeepSeekMoE")
})
