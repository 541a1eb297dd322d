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
import numbers

import torch

from utils import inputs as arg


def _check_router_inputs(affinity: torch.Tensor, k: int, bias: torch.Tensor | None,
                         where: str = "router", values: bool = True) -> int:
    """Validate what every router needs; return the number of experts.

    ``values=False`` skips the checks of the values (finite, non-negative): a model's own forward routes
    what its router computed, and shape inference (torch.distributed.pipelining's) runs it on uninitialised
    tensors whose values mean nothing."""
    arg.tensor(affinity, "affinity", where=where, min_dims=1, floating=True, nonempty=False, finite=values)
    n_experts = affinity.shape[-1]
    if n_experts == 0:
        raise arg.InputError("a router needs at least one expert (n_experts = 0): there is nothing to route to")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        arg.whole(k, "k", where=where, why="the number of experts each token goes to")
    if k < 1:
        raise arg.InputError(f"K = {k}: each token must be sent to at least one expert (K >= 1)")
    if k > n_experts:
        raise arg.InputError(
            f"K = {k} is larger than the number of experts ({n_experts}): a token cannot use an expert twice")
    if bias is not None:
        arg.tensor(bias, "bias", where=where, floating=True, finite=values)
        if bias.shape != (n_experts,):
            raise arg.InputError(
                f"bias has shape {tuple(bias.shape)}, expected ({n_experts},): one balancing bias per expert")
    if values and bool((affinity < 0).any()):
        arg.fail("affinity", "non-negative", affinity, where=where,
                 why="affinities are sigmoid outputs in [0, 1], and gates divide each chosen affinity by "
                     "their sum")
    return n_experts


def _normalised_gates(affinity: torch.Tensor, expert_idx: torch.Tensor, values: bool = True) -> torch.Tensor:
    """Gate weights: the chosen original affinities, normalised to sum to 1 (DeepSeek-V3 eq. 13)."""
    chosen = affinity.gather(-1, expert_idx)
    total = chosen.sum(dim=-1, keepdim=True)
    if values and bool((total == 0).any()):
        tokens = int((total == 0).sum())
        raise arg.InputError(
            f"{tokens} token(s) chose experts whose affinities are all 0, so their gates (each affinity "
            f"divided by the sum) would be 0/0. Affinities are sigmoid outputs, which are never exactly 0 for "
            f"finite logits: check how the affinities were computed.")
    return chosen / total


def topk_route(
    affinity: torch.Tensor, k: int, bias: torch.Tensor | None = None, *, check_values: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain top-K routing (DeepSeek-V3 section 2.1.2, eqs. 12-13; bias as in 2.1.2 "auxiliary-loss-free").

    Picks, for every token, the `k` experts with the highest `affinity + bias`; the gate weights are the
    picked experts' original affinities divided by their sum. Gradients flow from the gates into
    `affinity` (the selection itself is discrete).
    """
    _check_router_inputs(affinity, k, bias, "topk_route", check_values)
    scores = affinity if bias is None else affinity + bias
    expert_idx = scores.topk(k, dim=-1).indices
    return expert_idx, _normalised_gates(affinity, expert_idx, check_values)


def experts_per_node(n_experts: int, n_nodes: int) -> int:
    """Experts on each node under the contiguous layout; ValueError if they do not divide evenly."""
    n_experts = arg.whole(n_experts, "n_experts", low=1, where="experts_per_node",
                          why="there must be experts to place on nodes")
    n_nodes = arg.whole(n_nodes, "n_nodes", low=1, where="experts_per_node",
                        why="experts must live on at least one node")
    if n_experts % n_nodes:
        raise ValueError(
            f"{n_experts} experts do not divide evenly over {n_nodes} nodes: every node holds the same "
            "number of experts (contiguous layout), as every GPU holds the same number"
        )
    return n_experts // n_nodes


def node_of_expert(expert_idx: torch.Tensor, n_experts: int, n_nodes: int) -> torch.Tensor:
    """The node that holds each expert in `expert_idx` (contiguous layout)."""
    return _expert_ids(expert_idx, n_experts, "node_of_expert") // experts_per_node(n_experts, n_nodes)


def nodes_per_token(expert_idx: torch.Tensor, n_experts: int, n_nodes: int) -> torch.Tensor:
    """How many distinct nodes each token's chosen experts span; shape `expert_idx.shape[:-1]`."""
    arg.tensor(expert_idx, "expert_idx", where="nodes_per_token", min_dims=1, integer=True)
    nodes = node_of_expert(expert_idx, n_experts, n_nodes)
    hit = torch.zeros(*nodes.shape[:-1], n_nodes, dtype=torch.bool, device=nodes.device)
    hit.scatter_(-1, nodes, True)
    return hit.sum(dim=-1)


def _expert_ids(expert_idx, n_experts: int, where: str) -> torch.Tensor:
    """``expert_idx`` if it is an integer tensor of expert ids in 0..n_experts-1."""
    arg.tensor(expert_idx, "expert_idx", where=where, integer=True, nonempty=False)
    n_experts = arg.whole(n_experts, "n_experts", low=1, where=where)
    if expert_idx.numel() and (int(expert_idx.min()) < 0 or int(expert_idx.max()) >= n_experts):
        arg.fail("expert_idx", f"expert ids from 0 to {n_experts - 1}", expert_idx, where=where,
                 why="there are n_experts experts")
    return expert_idx


def node_limited_route(
    affinity: torch.Tensor, k: int, n_nodes: int, max_nodes: int, bias: torch.Tensor | None = None, *,
    check_values: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Node-limited top-K routing (DeepSeek-V3 sections 2.1.2 "Node-Limited Routing" and 3.2.2).

    Each token may use experts on at most `max_nodes` (M) of the `n_nodes` nodes:

    1. score every node by the sum of the highest `ceil(K / M)` selection scores (`affinity + bias`) among
       its experts (the paper uses K/M, which is an integer there: K = 8, M = 4);
    2. keep the M best nodes;
    3. take the top-K experts inside the kept nodes; gates as in `topk_route`.

    With M = n_nodes no node is dropped and the result equals `topk_route`.
    """
    n_experts = _check_router_inputs(affinity, k, bias, "node_limited_route", check_values)
    per_node = experts_per_node(n_experts, n_nodes)
    max_nodes = arg.whole(max_nodes, "max_nodes", where="node_limited_route")
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
    return expert_idx, _normalised_gates(affinity, expert_idx, check_values)


def route(
    affinity: torch.Tensor, k: int, n_nodes: int = 1, max_nodes: int | None = None,
    bias: torch.Tensor | None = None, *, check_values: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K routing, node-limited when the experts live on several nodes (`max_nodes` defaults to all).

    With one node this is `topk_route`; otherwise `node_limited_route` (identical to top-K when
    `max_nodes == n_nodes`). The MoE layer and its expert-parallel twin both route through here, with
    ``check_values=False``: the values are their router's own (a learner's affinities are checked).
    """
    n_nodes = arg.whole(n_nodes, "n_nodes", low=1, where="route", why="experts live on at least one node")
    max_nodes = n_nodes if max_nodes is None else arg.whole(max_nodes, "max_nodes", where="route",
                                                            why="nodes a token may use")
    if n_nodes == 1 and max_nodes == 1:
        return topk_route(affinity, k, bias, check_values=check_values)
    return node_limited_route(affinity, k, n_nodes, max_nodes, bias, check_values=check_values)
