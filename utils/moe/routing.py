"""Token-to-expert routing as pure functions: plain top-K and node-limited top-K (DeepSeek-V3).

Both take the router's affinities `s` (shape `(..., n_experts)`, sigmoid outputs in DeepSeek-V3) and
return `(expert_idx, gate_weights)`, each of shape `(..., k)`:

- `expert_idx` are the chosen experts, best first by the *selection score* `s + bias`;
- `gate_weights` are the chosen *original* affinities normalised to sum to 1 (section 2.1.2, eq. 13):
  the balancing bias steers which experts are picked, never how much each one counts.

Experts are laid out contiguously per node: with `n_experts` experts on `n_nodes` nodes, node `n` holds
experts `n * E_node ... (n + 1) * E_node - 1` where `E_node = n_experts // n_nodes`. The expert-parallel
module shards experts over ranks in the same order, so "node of expert" means the same thing everywhere.

This module imports nothing from the kit.
"""

from __future__ import annotations

import math

import torch


def _check_router_inputs(affinity: torch.Tensor, k: int, bias: torch.Tensor | None) -> int:
    """Validate what every router needs; return the number of experts."""
    if affinity.dim() < 1:
        raise ValueError("affinity must have shape (..., n_experts): one score per expert for each token")
    n_experts = affinity.shape[-1]
    if n_experts == 0:
        raise ValueError("a router needs at least one expert (n_experts = 0): there is nothing to route to")
    if k < 1:
        raise ValueError(f"K = {k}: each token must be sent to at least one expert (K >= 1)")
    if k > n_experts:
        raise ValueError(
            f"K = {k} is larger than the number of experts ({n_experts}): a token cannot use an expert twice"
        )
    if bias is not None and bias.shape != (n_experts,):
        raise ValueError(
            f"bias has shape {tuple(bias.shape)}, expected ({n_experts},): one balancing bias per expert"
        )
    return n_experts


def _normalised_gates(affinity: torch.Tensor, expert_idx: torch.Tensor) -> torch.Tensor:
    """Gate weights: the chosen original affinities, normalised to sum to 1 (DeepSeek-V3 eq. 13)."""
    chosen = affinity.gather(-1, expert_idx)
    return chosen / chosen.sum(dim=-1, keepdim=True)


def topk_route(
    affinity: torch.Tensor, k: int, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain top-K routing (DeepSeek-V3 section 2.1.2, eqs. 12-13; bias as in 2.1.2 "auxiliary-loss-free").

    Picks, for every token, the `k` experts with the highest `affinity + bias`; the gate weights are the
    picked experts' original affinities divided by their sum. Gradients flow from the gates into
    `affinity` (the selection itself is discrete).
    """
    _check_router_inputs(affinity, k, bias)
    scores = affinity if bias is None else affinity + bias
    expert_idx = scores.topk(k, dim=-1).indices
    return expert_idx, _normalised_gates(affinity, expert_idx)


def experts_per_node(n_experts: int, n_nodes: int) -> int:
    """Experts on each node under the contiguous layout; ValueError if they do not divide evenly."""
    if n_experts < 1:
        raise ValueError("at least one expert is needed (n_experts = 0): there is nothing to place on nodes")
    if n_nodes < 1:
        raise ValueError(f"n_nodes = {n_nodes}: experts must live on at least one node")
    if n_experts % n_nodes:
        raise ValueError(
            f"{n_experts} experts do not divide evenly over {n_nodes} nodes: every node holds the same "
            "number of experts (contiguous layout), as every GPU holds the same number"
        )
    return n_experts // n_nodes


def node_of_expert(expert_idx: torch.Tensor, n_experts: int, n_nodes: int) -> torch.Tensor:
    """The node that holds each expert in `expert_idx` (contiguous layout)."""
    return expert_idx // experts_per_node(n_experts, n_nodes)


def nodes_per_token(expert_idx: torch.Tensor, n_experts: int, n_nodes: int) -> torch.Tensor:
    """How many distinct nodes each token's chosen experts span; shape `expert_idx.shape[:-1]`."""
    nodes = node_of_expert(expert_idx, n_experts, n_nodes)
    hit = torch.zeros(*nodes.shape[:-1], n_nodes, dtype=torch.bool, device=nodes.device)
    hit.scatter_(-1, nodes, True)
    return hit.sum(dim=-1)


def node_limited_route(
    affinity: torch.Tensor, k: int, n_nodes: int, max_nodes: int, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Node-limited top-K routing (DeepSeek-V3 sections 2.1.2 "Node-Limited Routing" and 3.2.2).

    Each token may use experts on at most `max_nodes` (M) of the `n_nodes` nodes:

    1. score every node by the sum of the highest `ceil(K / M)` selection scores (`affinity + bias`) among
       its experts (the paper uses K/M, which is an integer there: K = 8, M = 4);
    2. keep the M best nodes;
    3. take the top-K experts inside the kept nodes; gates as in `topk_route`.

    With M = n_nodes no node is dropped and the result equals `topk_route`.
    """
    n_experts = _check_router_inputs(affinity, k, bias)
    per_node = experts_per_node(n_experts, n_nodes)
    if not 1 <= max_nodes <= n_nodes:
        raise ValueError(
            f"M = {max_nodes} nodes per token is impossible with {n_nodes} nodes: M must lie in 1..{n_nodes}"
        )
    if k > max_nodes * per_node:
        raise ValueError(
            f"K = {k} is larger than the {max_nodes * per_node} experts available in M = {max_nodes} "
            f"node(s) of {per_node} experts each: K <= M * experts_per_node"
        )
    scores = affinity if bias is None else affinity + bias
    by_node = scores.unflatten(-1, (n_nodes, per_node))
    node_score = by_node.topk(math.ceil(k / max_nodes), dim=-1).values.sum(dim=-1)
    kept_nodes = node_score.topk(max_nodes, dim=-1).indices
    keep = torch.zeros_like(node_score, dtype=torch.bool).scatter_(-1, kept_nodes, True)
    masked = by_node.masked_fill(~keep.unsqueeze(-1), float("-inf")).flatten(-2)
    expert_idx = masked.topk(k, dim=-1).indices
    return expert_idx, _normalised_gates(affinity, expert_idx)


def route(
    affinity: torch.Tensor, k: int, n_nodes: int = 1, max_nodes: int | None = None,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K routing, node-limited when the experts live on several nodes (`max_nodes` defaults to all).

    With one node this is `topk_route`; otherwise `node_limited_route` (identical to top-K when
    `max_nodes == n_nodes`). The MoE layer and its expert-parallel twin both route through here.
    """
    max_nodes = n_nodes if max_nodes is None else max_nodes
    if n_nodes == 1 and max_nodes == 1:
        return topk_route(affinity, k, bias)
    return node_limited_route(affinity, k, n_nodes, max_nodes, bias)
