"""Expert parallelism: routed experts sharded over the ranks of a cluster, tokens moved by all-to-all.

DeepSeek-V3 section 3.2 (and 2.1.2, "Node-Limited Routing", for the routing rule). Ranks are grouped into nodes of `gpus_per_node`
ranks; rank r holds experts `r * E_r ... (r + 1) * E_r - 1` (E_r = experts per rank), so node n holds a
contiguous block of experts, the layout `utils.moe.routing` assumes. Every rank keeps its own tokens (data
parallel), a copy of the router and shared experts, and its own routed experts only.

A forward pass on each rank:

1. route its tokens (sigmoid affinities, top-K or node-limited top-K);
2. **dispatch**: send each token, with its gate weights for the destination's experts, to the ranks that
   hold its chosen experts (`dist.all_to_all_single`);
3. the receiving ranks run their experts and weight the results by the gates;
4. **combine**: send the results back (`all_to_all_single` with the split sizes swapped) and add them up.

`hierarchical=True` dispatches the way DeepSeek-V3 does (3.2.2): a token crosses to each chosen *node* once,
to the rank with the same in-node index, which forwards it inside the node to the ranks holding its
experts; combine reduces inside the node first and crosses back once. So cross-node copies per token are
at most the number of nodes it uses, which node-limited routing caps at M. `hierarchical=False` sends
straight to each expert's rank.

The backward pass is an all-to-all too (the gradient of an all-to-all is the reverse all-to-all); both
directions go through `TrafficLedger`, which counts the bytes each rank sends, within its node or across
nodes. `traffic_from_routing` predicts the same numbers from routing decisions alone, without a cluster.
Functions whose names end in `_job` run on every rank of a `SimulatedCluster` (or under torchrun).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from utils import inputs as arg
from utils.moe.layer import DeepSeekMoE
from utils.moe.routing import route

PHASES = ("dispatch", "combine")
DIRECTIONS = ("forward", "backward")
SCOPES = ("intra", "inter")  # within a node (NVLink in DeepSeek-V3), across nodes (InfiniBand)


@dataclass(frozen=True)
class ExpertLayout:
    """How `n_experts` routed experts sit on `world_size` ranks grouped in nodes of `gpus_per_node`."""

    n_experts: int
    world_size: int
    gpus_per_node: int

    def __post_init__(self):
        arg.whole(self.n_experts, "n_experts", low=1, where="ExpertLayout", why="expert parallelism needs at least one expert")
        arg.whole(self.world_size, "world_size", low=1, high=arg.MAX_EXPERT_RANKS, where="ExpertLayout")
        arg.whole(self.gpus_per_node, "gpus_per_node", low=1, where="ExpertLayout")
        if self.world_size % self.gpus_per_node:
            raise ValueError(
                f"{self.world_size} ranks do not fill whole nodes of {self.gpus_per_node} GPUs: "
                "world_size must be a multiple of gpus_per_node"
            )
        if self.n_experts % self.world_size:
            raise ValueError(
                f"{self.n_experts} experts are not divisible by {self.world_size} ranks: every rank must "
                "hold the same number of experts (otherwise one GPU carries more work and memory)"
            )

    @property
    def n_nodes(self) -> int:
        return self.world_size // self.gpus_per_node

    @property
    def experts_per_rank(self) -> int:
        return self.n_experts // self.world_size

    @property
    def experts_per_node(self) -> int:
        return self.n_experts // self.n_nodes

    def check_rank(self, rank, where: str, name: str = "rank") -> int:
        if type(rank) is int and 0 <= rank < self.world_size:  # the fast path: traffic loops call these a lot
            return rank
        return arg.whole(rank, name, low=0, high=self.world_size - 1, where=f"ExpertLayout.{where}",
                         why=f"the layout has ranks 0..{self.world_size - 1}")

    def node_of_rank(self, rank: int) -> int:
        return self.check_rank(rank, "node_of_rank") // self.gpus_per_node

    def local_index(self, rank: int) -> int:
        """Position of `rank` inside its node (its in-node index)."""
        return self.check_rank(rank, "local_index") % self.gpus_per_node

    def rank_of_expert(self, expert: int) -> int:
        if type(expert) is not int or not 0 <= expert < self.n_experts:
            expert = arg.whole(expert, "expert", low=0, high=self.n_experts - 1, where="ExpertLayout.rank_of_expert",
                               why=f"the layout has experts 0..{self.n_experts - 1}")
        return expert // self.experts_per_rank

    def experts_of_rank(self, rank: int) -> range:
        rank = self.check_rank(rank, "experts_of_rank")
        return range(rank * self.experts_per_rank, (rank + 1) * self.experts_per_rank)

    def scope(self, src: int, dst: int) -> int:
        """Index into SCOPES: 0 if the two ranks share a node, 1 if the bytes cross nodes."""
        return int(self.node_of_rank(src) != self.node_of_rank(dst))


class TrafficLedger:
    """Bytes one rank sends to other ranks, as `bytes[phase, direction, scope]` (see PHASES, ...)."""

    def __init__(self, layout: ExpertLayout, rank: int):
        _layout(layout, "TrafficLedger")
        self.layout, self.rank = layout, layout.check_rank(rank, "TrafficLedger")
        self.bytes = np.zeros((len(PHASES), len(DIRECTIONS), len(SCOPES)), dtype=np.int64)

    def record(self, phase: str, direction: str, send_counts: list[int], row_bytes: int) -> None:
        """Count `send_counts[dst]` rows of `row_bytes` sent to each other rank (rows kept here are free)."""
        for dst, rows in enumerate(send_counts):
            if dst != self.rank and rows:
                scope = self.layout.scope(self.rank, dst)
                self.bytes[PHASES.index(phase), DIRECTIONS.index(direction), scope] += rows * row_bytes


def _all_to_all(rows, send_counts, recv_counts, ledger, phase, direction) -> torch.Tensor:
    out = rows.new_empty((sum(recv_counts), rows.shape[1]))
    dist.all_to_all_single(out, rows.contiguous(), output_split_sizes=recv_counts,
                           input_split_sizes=send_counts)
    if ledger is not None:
        ledger.record(phase, direction, send_counts, rows.shape[1] * rows.element_size())
    return out


class _AllToAll(torch.autograd.Function):
    """all_to_all_single whose backward is the reverse all_to_all (split sizes swapped)."""

    @staticmethod
    def forward(ctx, rows, send_counts, recv_counts, ledger, phase):
        ctx.counts, ctx.ledger, ctx.phase = (send_counts, recv_counts), ledger, phase
        return _all_to_all(rows, send_counts, recv_counts, ledger, phase, "forward")

    @staticmethod
    def backward(ctx, grad):
        send_counts, recv_counts = ctx.counts
        grad_rows = _all_to_all(grad, recv_counts, send_counts, ctx.ledger, ctx.phase, "backward")
        return grad_rows, None, None, None, None


def _exchange(payload: torch.Tensor, dest: torch.Tensor, ledger: TrafficLedger | None):
    """Send row i of `payload` to rank `dest[i]`; return what arrived and a function that sends results back.

    `give_back(results)` takes one row per arrived row and returns them on the sender, in payload order.
    """
    order = torch.argsort(dest, stable=True)
    send = torch.bincount(dest, minlength=dist.get_world_size())
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send)  # first tell every rank how many rows to expect
    send_counts, recv_counts = send.tolist(), recv.tolist()
    received = _AllToAll.apply(payload[order], send_counts, recv_counts, ledger, "dispatch")

    def give_back(results: torch.Tensor) -> torch.Tensor:
        back = _AllToAll.apply(results, recv_counts, send_counts, ledger, "combine")
        return torch.empty_like(back).index_copy(0, order, back)

    return received, give_back


def _send_to_groups(x, gates, selected, n_groups: int, rank_of_group: Callable, then: Callable, ledger):
    """One hop: each row goes once to every group (node or rank) holding one of its selected experts.

    The payload row is [x, gates for that group's experts, selection mask]; `then(x, gates, mask)` runs
    where it lands and returns one result row each; results come back and are summed per original row.
    """
    rows, width = selected.shape[0], selected.shape[1] // n_groups
    used = selected.view(rows, n_groups, width).any(dim=-1)
    row, group = used.nonzero(as_tuple=True)
    payload = torch.cat(
        [x[row], gates.view(rows, n_groups, width)[row, group],
         selected.view(rows, n_groups, width)[row, group].to(x.dtype)], dim=1,
    )
    received, give_back = _exchange(payload, rank_of_group(group), ledger)
    got_x, got_gates, got_mask = received.split([x.shape[1], width, width], dim=1)
    results = then(got_x, got_gates, got_mask > 0.5)
    return torch.zeros_like(x).index_add(0, row, give_back(results))


class ExpertParallelMoE(nn.Module):
    """The expert-parallel twin of a DeepSeekMoE layer on one rank: same outputs and gradients.

    Holds copies of the router and shared experts (replicated, data parallel: their gradients must be
    summed over ranks) and this rank's routed experts only.
    """

    def __init__(self, layer: DeepSeekMoE, layout: ExpertLayout, rank: int, hierarchical: bool = True):
        super().__init__()
        arg.instance(layer, "layer", DeepSeekMoE, "a DeepSeekMoE layer", where="ExpertParallelMoE")
        rank = _layout(layout, "ExpertParallelMoE").check_rank(rank, "ExpertParallelMoE")
        hierarchical = arg.flag(hierarchical, "hierarchical", where="ExpertParallelMoE")
        if layout.n_experts != layer.n_routed:
            raise ValueError(f"the layout places {layout.n_experts} experts but the layer has "
                             f"{layer.n_routed}")
        if layer.n_nodes > 1 and layer.n_nodes != layout.n_nodes:
            raise ValueError(
                f"the layer routes over {layer.n_nodes} nodes but the layout has {layout.n_nodes}: "
                "node-limited routing must count the nodes the experts actually live on"
            )
        self.layout, self.rank, self.hierarchical = layout, rank, hierarchical
        self.k, self.n_nodes, self.max_nodes = layer.k, layer.n_nodes, layer.max_nodes
        self.balancing = layer.balancing
        self.router = copy.deepcopy(layer.router)
        self.shared_experts = copy.deepcopy(layer.shared_experts)
        mine = layout.experts_of_rank(rank)
        self.local_experts = nn.ModuleList(copy.deepcopy(layer.experts[e]) for e in mine)
        self.register_buffer("expert_bias", layer.expert_bias.detach().clone())

    def replicated_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters every rank holds a copy of (router, shared experts), by name."""
        return {n: p for n, p in self.named_parameters() if not n.startswith("local_experts.")}

    def _run_local_experts(self, x, gates, mask) -> torch.Tensor:
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.local_experts):
            rows = mask[:, e].nonzero().squeeze(1)
            if rows.numel():
                out = out.index_add(0, rows, gates[rows, e : e + 1] * expert(x[rows]))
        return out

    def forward(self, x: torch.Tensor, ledger: TrafficLedger | None = None) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        affinity = torch.sigmoid(self.router(tokens))
        bias = self.expert_bias if self.balancing == "bias" else None
        expert_idx, gates = route(affinity, self.k, self.n_nodes, self.max_nodes, bias, check_values=False)
        dense_gates = torch.zeros_like(affinity).scatter(1, expert_idx, gates)
        selected = torch.zeros_like(affinity, dtype=torch.bool).scatter(1, expert_idx, True)
        layout, g = self.layout, self.layout.gpus_per_node
        if self.hierarchical:
            node, local = layout.node_of_rank(self.rank), layout.local_index(self.rank)

            def within_node(x1, gates1, mask1):  # on the rank that received the token for this node
                return _send_to_groups(x1, gates1, mask1, g, lambda q: node * g + q,
                                       self._run_local_experts, ledger)

            routed = _send_to_groups(tokens, dense_gates, selected, layout.n_nodes, lambda n: n * g + local,
                                     within_node, ledger)
        else:
            routed = _send_to_groups(tokens, dense_gates, selected, layout.world_size, lambda r: r,
                                     self._run_local_experts, ledger)
        shared = torch.zeros_like(tokens)
        for expert in self.shared_experts:
            shared = shared + expert(tokens)
        return (shared + routed).reshape(x.shape)


# ------------------------------------------------------------------------------------------- rank jobs

def _rebuild(layer_kwargs: dict, layer_state: dict) -> DeepSeekMoE:
    layer = DeepSeekMoE(**layer_kwargs)
    layer.load_state_dict(layer_state)
    return layer


def ep_forward_backward_job(layer_kwargs: dict, layer_state: dict, tokens_per_rank: list, grad_per_rank: list,
                            gpus_per_node: int, hierarchical: bool = True) -> dict:
    """On every rank: forward this rank's tokens through the expert-parallel layer, backward with the given
    output gradient, sum the replicated parameters' gradients over ranks (data parallel).

    Returns this rank's output, input gradient, gradients of its experts (by global expert index) and of the
    replicated parameters, and its traffic `bytes[phase, direction, scope]`.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    layout = ExpertLayout(layer_kwargs["n_routed"], world, gpus_per_node)
    ep = ExpertParallelMoE(_rebuild(layer_kwargs, layer_state), layout, rank, hierarchical)
    ledger = TrafficLedger(layout, rank)
    x = tokens_per_rank[rank].clone().requires_grad_(True)
    out = ep(x, ledger)
    (out * grad_per_rank[rank]).sum().backward()
    replicated = ep.replicated_parameters()
    for param in replicated.values():
        dist.all_reduce(param.grad)
    experts = {e: {n: p.grad.clone() for n, p in expert.named_parameters()}
               for e, expert in zip(layout.experts_of_rank(rank), ep.local_experts, strict=True)}
    return {"output": out.detach(), "input_grad": x.grad, "expert_grads": experts,
            "replicated_grads": {n: p.grad.clone() for n, p in replicated.items()}, "traffic": ledger.bytes}


def single_process_reference(layer: DeepSeekMoE, tokens_per_rank: list, grad_per_rank: list) -> dict:
    """What `ep_forward_backward_job` must give, computed by the ordinary layer on all tokens at once."""
    layer = copy.deepcopy(layer)
    x = torch.cat(tokens_per_rank).clone().requires_grad_(True)
    out = layer(x)
    (out * torch.cat(grad_per_rank)).sum().backward()
    sizes = [t.shape[0] for t in tokens_per_rank]
    return {
        "output": list(out.detach().split(sizes)),
        "input_grad": list(x.grad.split(sizes)),
        "expert_grads": {e: {n: p.grad for n, p in expert.named_parameters()}
                         for e, expert in enumerate(layer.experts)},
        "replicated_grads": {n: p.grad for n, p in layer.named_parameters() if not n.startswith("experts.")},
    }


def run_expert_parallel(cluster, layer: DeepSeekMoE, tokens_per_rank: list, gpus_per_node: int,
                        hierarchical: bool = True, grad_seed: int = 0) -> tuple[list[dict], dict]:
    """Run the expert-parallel forward+backward on `cluster` and the single-process reference.

    The output gradient is random (seeded) so every parameter gets a non-trivial gradient.
    Returns (per-rank results, reference).
    """
    _cluster_inputs(cluster, layer, tokens_per_rank, gpus_per_node, hierarchical, "run_expert_parallel")
    arg.whole(grad_seed, "grad_seed", low=0, where="run_expert_parallel")
    generator = torch.Generator().manual_seed(grad_seed)
    grads = [torch.randn(t.shape, generator=generator, dtype=t.dtype) for t in tokens_per_rank]
    results = cluster.run(ep_forward_backward_job, layer.init_kwargs, layer.state_dict(), tokens_per_rank,
                          grads, gpus_per_node, hierarchical)
    return results, single_process_reference(layer, tokens_per_rank, grads)


def max_differences(results: list[dict], reference: dict) -> dict[str, float]:
    """Largest absolute difference between expert-parallel and single-process results, by quantity."""
    def biggest(pairs):
        return max((float((a - b).abs().max()) for a, b in pairs if a.numel()), default=0.0)

    expert_pairs = [(g, reference["expert_grads"][e][n]) for r in results
                    for e, grads in r["expert_grads"].items() for n, g in grads.items()]
    replicated_pairs = [(g, reference["replicated_grads"][n.replace("local_", "")]) for r in results
                        for n, g in r["replicated_grads"].items()]
    return {
        "output": biggest(zip([r["output"] for r in results], reference["output"], strict=True)),
        "input grad": biggest(zip([r["input_grad"] for r in results], reference["input_grad"], strict=True)),
        "routed expert grads": biggest(expert_pairs),
        "router + shared grads": biggest(replicated_pairs),
    }


def ep_forward_job(layer_kwargs: dict, layer_state: dict, tokens_per_rank: list, gpus_per_node: int,
                   hierarchical: bool = True, backward: bool = True) -> np.ndarray:
    """On every rank: forward (and backward of sum of outputs) of this rank's tokens; return its traffic."""
    rank, world = dist.get_rank(), dist.get_world_size()
    layout = ExpertLayout(layer_kwargs["n_routed"], world, gpus_per_node)
    ep = ExpertParallelMoE(_rebuild(layer_kwargs, layer_state), layout, rank, hierarchical)
    ledger = TrafficLedger(layout, rank)
    out = ep(tokens_per_rank[rank], ledger)
    if backward:
        out.sum().backward()
    return ledger.bytes


def ep_step_time_job(layer_kwargs: dict, layer_state: dict, tokens_per_rank: list, gpus_per_node: int,
                     hierarchical: bool = True, repeats: int = 5) -> float:
    """On every rank: median seconds of one expert-parallel forward + backward (ranks start each repeat
    together, after a barrier). For the benchmark; wall-clock time on a shared CPU, not GPU time."""
    import time

    rank, world = dist.get_rank(), dist.get_world_size()
    layout = ExpertLayout(layer_kwargs["n_routed"], world, gpus_per_node)
    ep = ExpertParallelMoE(_rebuild(layer_kwargs, layer_state), layout, rank, hierarchical)
    times = []
    for _ in range(repeats + 1):  # the first run warms up
        dist.barrier()
        start = time.perf_counter()
        ep(tokens_per_rank[rank]).sum().backward()
        dist.barrier()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def measure_traffic(cluster, layer: DeepSeekMoE, tokens_per_rank: list, gpus_per_node: int,
                    hierarchical: bool = True) -> np.ndarray:
    """Bytes each rank sent in one forward+backward on `cluster`: array (ranks, phase, direction, scope)."""
    _cluster_inputs(cluster, layer, tokens_per_rank, gpus_per_node, hierarchical, "measure_traffic")
    return np.stack(cluster.run(ep_forward_job, layer.init_kwargs, layer.state_dict(), tokens_per_rank,
                                gpus_per_node, hierarchical))


# ----------------------------------------------------------------------- traffic without a cluster

def _add_hop(traffic: np.ndarray, layout: ExpertLayout, rows: np.ndarray, dispatch_bytes: int,
             combine_bytes: int) -> None:
    """Add one hop of `rows[src, dst]` rows: dispatch src->dst, combine dst->src, and their gradients back."""
    fwd, bwd = DIRECTIONS.index("forward"), DIRECTIONS.index("backward")
    dispatch, combine = PHASES.index("dispatch"), PHASES.index("combine")
    for src, dst in zip(*np.nonzero(rows), strict=True):
        if src == dst:
            continue
        n, scope = int(rows[src, dst]), layout.scope(src, dst)
        traffic[src, dispatch, fwd, scope] += n * dispatch_bytes
        traffic[dst, combine, fwd, scope] += n * combine_bytes
        traffic[src, combine, bwd, scope] += n * combine_bytes   # gradient of combine: back along it
        traffic[dst, dispatch, bwd, scope] += n * dispatch_bytes


def traffic_from_routing(expert_idx_per_rank: list[torch.Tensor], layout: ExpertLayout, d_model: int,
                         hierarchical: bool = True, itemsize: int = 4) -> np.ndarray:
    """The bytes `ExpertParallelMoE` sends in one forward+backward, predicted from routing decisions alone.

    `expert_idx_per_rank[r]` is (tokens on rank r, K). Returns (ranks, phase, direction, scope) like
    `measure_traffic`. A dispatched row carries the token, its gates and a selection mask for the
    destination's experts; a combined row carries d_model numbers.
    """
    where = "traffic_from_routing"
    _layout(layout, where)
    if len(arg.sequence(expert_idx_per_rank, "expert_idx_per_rank", where=where)) != layout.world_size:
        arg.fail("expert_idx_per_rank", f"one tensor per rank ({layout.world_size})", expert_idx_per_rank,
                 where=where)
    for idx in expert_idx_per_rank:
        arg.tensor(idx, "every expert_idx", where=where, dims=2, integer=True, nonempty=False)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= layout.n_experts):
            arg.fail("every expert_idx", f"expert ids from 0 to {layout.n_experts - 1}", idx, where=where)
    arg.whole(d_model, "d_model", low=1, where=where, why="numbers per token")
    arg.whole(itemsize, "itemsize", low=1, high=8, where=where, why="bytes per number (1 for FP8, 2 for BF16)")
    hierarchical = arg.flag(hierarchical, "hierarchical", where=where)
    world, g = layout.world_size, layout.gpus_per_node
    traffic = np.zeros((world, len(PHASES), len(DIRECTIONS), len(SCOPES)), dtype=np.int64)
    used_ranks = np.zeros((world, world), dtype=np.int64)   # [src, expert rank]: tokens of src using it
    used_nodes = np.zeros((world, layout.n_nodes), dtype=np.int64)
    for src, idx in enumerate(expert_idx_per_rank):
        ranks = np.zeros((idx.shape[0], world), dtype=bool)
        np.put_along_axis(ranks, (idx // layout.experts_per_rank).numpy(), True, axis=1)
        used_ranks[src] = ranks.sum(0)
        used_nodes[src] = ranks.reshape(-1, layout.n_nodes, g).any(-1).sum(0)
    if not hierarchical:
        row_bytes = (d_model + 2 * layout.experts_per_rank) * itemsize
        _add_hop(traffic, layout, used_ranks, row_bytes, d_model * itemsize)
        return traffic
    hop1 = np.zeros((world, world), dtype=np.int64)  # src -> same in-node index on each used node
    hop2 = np.zeros((world, world), dtype=np.int64)  # that rank -> expert ranks in its node
    for src in range(world):
        local = layout.local_index(src)
        for node in range(layout.n_nodes):
            peer = node * g + local
            hop1[src, peer] += used_nodes[src, node]
            for q in range(node * g, (node + 1) * g):
                hop2[peer, q] += used_ranks[src, q]
    _add_hop(traffic, layout, hop1, (d_model + 2 * layout.experts_per_node) * itemsize, d_model * itemsize)
    _add_hop(traffic, layout, hop2, (d_model + 2 * layout.experts_per_rank) * itemsize, d_model * itemsize)
    return traffic


def cross_node_copies(experts: list[int], src_rank: int, layout: ExpertLayout,
                      hierarchical: bool = True) -> int:
    """How many times one token from `src_rank` crosses to another node when dispatched to `experts`.

    Two-hop (DeepSeek-V3 3.2.2): once per other node holding one of its experts. Direct: once per GPU on
    another node holding one of its experts (a token going to two experts on one GPU is sent once).
    """
    src_rank = _layout(layout, "cross_node_copies").check_rank(src_rank, "cross_node_copies", "src_rank")
    arg.flag(hierarchical, "hierarchical", where="cross_node_copies")
    home = layout.node_of_rank(src_rank)
    ranks = {layout.rank_of_expert(e) for e in experts}
    if hierarchical:
        return len({layout.node_of_rank(r) for r in ranks} - {home})
    return sum(layout.node_of_rank(r) != home for r in ranks)


def split_over_ranks(tokens: torch.Tensor, world_size: int) -> list[torch.Tensor]:
    """Deal rows of `tokens` into `world_size` equal contiguous shares (data parallel)."""
    world_size = arg.whole(world_size, "world_size", low=1, high=arg.MAX_EXPERT_RANKS, where="split_over_ranks")
    arg.tensor(tokens, "tokens", where="split_over_ranks", min_dims=1, finite=False, nonempty=False)
    if tokens.shape[0] % world_size:
        raise ValueError(f"{tokens.shape[0]} tokens do not split evenly over {world_size} ranks")
    return list(tokens.chunk(world_size))


def traffic_totals(traffic: np.ndarray) -> dict[str, int]:
    """Total bytes over all ranks and both directions: {'intra-node': ..., 'cross-node': ...}."""
    check_traffic(traffic, "traffic_totals")
    by_scope = traffic.sum(axis=(0, 1, 2))
    return {"intra-node": int(by_scope[0]), "cross-node": int(by_scope[1])}


# ----------------------------------------------------------------------------------------- input checks

def _layout(layout, where: str) -> ExpertLayout:
    return arg.instance(layout, "layout", ExpertLayout, "an ExpertLayout(n_experts, world_size, gpus_per_node)",
                        where=where)


def check_traffic(traffic, where: str) -> np.ndarray:
    """``traffic`` if it is a (ranks, phase, direction, scope) array of bytes, as the functions above give."""
    shape = (len(PHASES), len(DIRECTIONS), len(SCOPES))
    if not isinstance(traffic, np.ndarray) or traffic.ndim != 4 or traffic.shape[1:] != shape:
        arg.fail("traffic", f"a numpy array of shape (ranks, {', '.join(map(str, shape))}) from measure_traffic "
                 "or traffic_from_routing", traffic, where=where, error=arg.InputTypeError)
    return traffic


def _cluster_inputs(cluster, layer, tokens_per_rank, gpus_per_node, hierarchical, where: str) -> None:
    """What the cluster runs need, checked before any rank does anything."""
    if not (callable(getattr(cluster, "run", None)) and isinstance(getattr(cluster, "world_size", None), int)):
        arg.fail("cluster", "a SimulatedCluster", cluster, where=where, error=arg.InputTypeError)
    arg.instance(layer, "layer", DeepSeekMoE, "a DeepSeekMoE layer", where=where)
    tokens = arg.sequence(tokens_per_rank, "tokens_per_rank", where=where, why="one tensor per rank")
    if len(tokens) != cluster.world_size:
        arg.fail("tokens_per_rank", f"one tensor per rank ({cluster.world_size})", tokens_per_rank, where=where)
    for t in tokens:
        layer.check_input(t, where)
    ExpertLayout(layer.n_routed, cluster.world_size, arg.whole(gpus_per_node, "gpus_per_node", low=1, where=where))
    arg.flag(hierarchical, "hierarchical", where=where)
