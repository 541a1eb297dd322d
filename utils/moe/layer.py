"""A DeepSeekMoE layer: shared experts plus routed experts, sigmoid affinities, top-K, normalised gates.

DeepSeek-V3 section 2.1.2 (eqs. 12-16), for a token u:

    h' = u + sum_i FFN_shared_i(u) + sum_i g_i FFN_routed_i(u)      (this layer returns h' - u;
    s_i = sigmoid(u . e_i)                                            the residual add lives in the block)
    g_i = s_i / sum_{j in top-K} s_j for the K chosen experts, else 0

Two ways to keep the experts evenly loaded:

- `balancing="bias"`: auxiliary-loss-free balancing (2.1.2): a per-expert bias b_i is added to s_i for
  *selection only*; after each optimiser step `update_bias()` moves b_i by -gamma if expert i was
  overloaded and +gamma if it was underloaded. No extra loss term, so nothing fights the language loss.
- `balancing="aux"`: the classic expert-level balance loss alpha * sum_i f_i P_i (DeepSeek-V2 / GShard
  style, computed over the batch; DeepSeek-V3 keeps only a tiny sequence-wise version of it, eqs. 17-20).
- `balancing="none"`: neither, to show what goes wrong.

All matmuls are `nn.Linear` (a low-precision linear can replace them); the router's projection is the
attribute `router` and must stay in high precision.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from utils import inputs as arg
from utils.moe.routing import route

BALANCING_METHODS = ("bias", "aux", "none")


class Expert(nn.Module):
    """One small SwiGLU feed-forward network: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, d_hidden: int):
        super().__init__()
        d_model = arg.whole(d_model, "d_model", low=1, where="Expert", why="the width of a token")
        d_hidden = arg.whole(d_hidden, "d_hidden", low=1, where="Expert", why="the expert's hidden width")
        arg.product_limit((3, d_model, d_hidden), "3 x d_model x d_hidden (the expert's parameters)",
                          arg.MAX_PARAMETERS, where="Expert")
        self.gate_proj = nn.Linear(d_model, d_hidden, bias=False)
        self.up_proj = nn.Linear(d_model, d_hidden, bias=False)
        self.down_proj = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def balance_bias_update(bias: torch.Tensor, load: torch.Tensor, gamma: float) -> torch.Tensor:
    """Auxiliary-loss-free bias step (DeepSeek-V3 2.1.2): b_i - gamma if overloaded, + gamma if underloaded.

    `load[i]` is how many token-slots expert i received since the last update; "overloaded" means above
    the mean load. An expert exactly at the mean keeps its bias.
    """
    where = "balance_bias_update"
    arg.tensor(bias, "bias", where=where, dims=1, floating=True)
    arg.tensor(load, "load", where=where, dims=1)
    if bias.shape != load.shape:
        raise arg.InputError(f"bias {tuple(bias.shape)} and load {tuple(load.shape)}: need one entry per expert")
    if bool((load < 0).any()):
        arg.fail("load", "non-negative", load, where=where, why="token-slots each expert received")
    arg.real(gamma, "gamma", low=0, where=where, why="the bias update speed: a step size, never negative")
    load = load.to(bias.dtype)
    return bias + gamma * torch.sign(load.mean() - load)


def expert_balance_loss(affinity: torch.Tensor, expert_idx: torch.Tensor, alpha: float) -> torch.Tensor:
    """Classic expert-level balance loss alpha * sum_i f_i P_i over a batch of T tokens.

    f_i = E / (K T) * (tokens that picked expert i)   (1 for every expert when perfectly balanced)
    P_i = mean over tokens of s_i / sum_j s_j          (the normalised affinity; carries the gradient)
    Same form as DeepSeek-V3 eqs. 17-20, taken over the batch instead of one sequence.
    """
    where = "expert_balance_loss"
    arg.tensor(affinity, "affinity", where=where, dims=2, floating=True)
    arg.tensor(expert_idx, "expert_idx", where=where, dims=2, integer=True)
    arg.real(alpha, "alpha", low=0, where=where, why="the weight of the balance loss")
    tokens, n_experts = affinity.shape
    if expert_idx.shape[0] != tokens or int(expert_idx.min()) < 0 or int(expert_idx.max()) >= n_experts:
        arg.fail("expert_idx", f"one row per token ({tokens}) of expert ids in 0..{n_experts - 1}", expert_idx,
                 where=where)
    if bool((affinity < 0).any()) or bool((affinity.sum(dim=-1) == 0).any()):
        arg.fail("affinity", "non-negative, with a positive sum for every token", affinity, where=where,
                 why="P_i divides each affinity by the token's sum")
    k = expert_idx.shape[-1]
    counts = torch.bincount(expert_idx.reshape(-1), minlength=n_experts).to(affinity.dtype)
    f = counts * n_experts / (k * tokens)
    p = (affinity / affinity.sum(dim=-1, keepdim=True)).mean(dim=0)
    return alpha * (f * p).sum()


def max_violation(load: torch.Tensor) -> float:
    """MaxVio = max_i load_i / mean load - 1: 0 when perfectly balanced (Wang et al. 2024, eq. 4, the
    auxiliary-loss-free balancing paper DeepSeek-V3 builds on).

    It is the slowdown relative to perfect balance: with one expert per GPU a step waits for the busiest
    expert, so it takes 1 + MaxVio times as long as a balanced one, and a GPU with the mean load sits idle
    for MaxVio / (1 + MaxVio) of the step (`waiting_share`)."""
    arg.tensor(load, "load", where="max_violation", dims=1)
    if bool((load < 0).any()):
        arg.fail("load", "non-negative", load, where="max_violation", why="token-slots each expert received")
    load = load.double()
    return float(load.max() / load.mean() - 1) if load.sum() > 0 else 0.0


def waiting_share(max_vio: float) -> float:
    """Share of a step that a GPU with the mean load waits for the busiest one: MaxVio / (1 + MaxVio)."""
    if arg.real(max_vio, "max_vio", where="waiting_share") < 0:
        raise arg.InputError(f"MaxVio = {max_vio}: the busiest expert carries at least the mean load, so MaxVio >= 0.")
    return max_vio / (1 + max_vio)


class DeepSeekMoE(nn.Module):
    """Shared + routed experts with sigmoid affinities and top-K normalised gates (DeepSeek-V3 2.1.2).

    Input and output have the same shape `(..., d_model)`. After each forward the layer keeps, detached:
    `last_expert_idx` (tokens, K), `last_load` (experts,) and `aux_loss` (a scalar; zero unless
    `balancing="aux"`). With `n_nodes > 1` and `max_nodes < n_nodes` it uses node-limited routing (2.1.2).
    """

    def __init__(
        self,
        d_model: int,
        n_routed: int,
        k: int,
        d_expert: int,
        n_shared: int = 1,
        balancing: str = "bias",
        bias_gamma: float = 0.01,
        aux_alpha: float = 0.01,
        n_nodes: int = 1,
        max_nodes: int | None = None,
    ):
        super().__init__()
        where = "DeepSeekMoE"
        d_model = arg.whole(d_model, "d_model", low=1, where=where, why="the width of a token")
        d_expert = arg.whole(d_expert, "d_expert", low=1, where=where, why="each expert's hidden width")
        n_routed = arg.whole(n_routed, "n_routed", low=1, where=where,
                             why="an MoE layer needs at least one routed expert")
        k = arg.whole(k, "k", low=1, high=n_routed, where=where,
                      why=f"K must lie in 1..{n_routed}, the number of routed experts")
        if not isinstance(balancing, str) or balancing not in BALANCING_METHODS:
            raise arg.InputError(f"balancing = {balancing!r}: choose one of {BALANCING_METHODS}")
        n_shared = arg.whole(n_shared, "n_shared", low=0, where=where,
                             why="the number of shared experts cannot be negative")
        bias_gamma = arg.real(bias_gamma, "bias_gamma", low=0, high=1.0, where=where,
                              why="the bias step per update: a small non-negative speed (DeepSeek-V3: 0.001)")
        aux_alpha = arg.real(aux_alpha, "aux_alpha", low=0, high=1.0, where=where,
                             why="the weight of the balance loss: small and non-negative")
        arg.product_limit((n_routed + n_shared, 3 * d_expert + 1, d_model),
                          "(n_routed + n_shared) x (3 x d_expert + 1) x d_model (the parameters)",
                          arg.MAX_PARAMETERS, where=where)
        # What it takes to build this layer again (expert-parallel ranks rebuild it from these + state).
        self.init_kwargs = dict(
            d_model=d_model, n_routed=n_routed, k=k, d_expert=d_expert, n_shared=n_shared,
            balancing=balancing, bias_gamma=bias_gamma, aux_alpha=aux_alpha,
            n_nodes=n_nodes, max_nodes=max_nodes,
        )
        self.k, self.n_routed, self.balancing = k, n_routed, balancing
        self.bias_gamma, self.aux_alpha = bias_gamma, aux_alpha
        self.n_nodes = n_nodes
        self.max_nodes = n_nodes if max_nodes is None else max_nodes
        # Fail now, not at the first forward: route a dummy token once to validate (K, nodes, M).
        self._route(torch.full((1, n_routed), 0.5))
        self.router = nn.Linear(d_model, n_routed, bias=False)  # rows are the expert centroids e_i
        self.experts = nn.ModuleList(Expert(d_model, d_expert) for _ in range(n_routed))
        self.shared_experts = nn.ModuleList(Expert(d_model, d_expert) for _ in range(n_shared))
        # A buffer, not a parameter: the optimiser never touches it, only update_bias() does.
        self.register_buffer("expert_bias", torch.zeros(n_routed))
        self.register_buffer("pending_load", torch.zeros(n_routed))
        self.last_expert_idx: torch.Tensor | None = None
        self.last_load = torch.zeros(n_routed)
        self.aux_loss = torch.zeros(())

    def _route(self, affinity: torch.Tensor, bias: torch.Tensor | None = None):
        return route(affinity, self.k, self.n_nodes, self.max_nodes, bias, check_values=False)

    def affinity(self, tokens: torch.Tensor) -> torch.Tensor:
        """s = sigmoid(u . e_i) for every token (rows) and routed expert (columns)."""
        return torch.sigmoid(self.router(self.check_input(tokens, "DeepSeekMoE.affinity")))

    def check_input(self, x, where: str) -> torch.Tensor:
        """``x`` if it can enter this layer: a real tensor (..., d_model) of the layer's dtype, finite."""
        weight = self.router.weight
        # A rank may get no tokens; the values are not checked: shape inference (torch.distributed.pipelining's)
        # runs the layer on uninitialised tensors, and a pass over every number would slow each forward.
        arg.tensor(x, "x", where=where, min_dims=1, floating=True, nonempty=False, finite=False)
        if x.shape[-1] != weight.shape[1]:
            arg.fail("x", f"a tensor whose last dimension is d_model = {weight.shape[1]}", x, where=where,
                     why="each token is a vector of d_model numbers")
        if x.dtype != weight.dtype:
            arg.fail("x", f"a {str(weight.dtype).replace('torch.', '')} tensor like the layer's weights", x,
                     where=where, why=f"convert it with x.to({weight.dtype}) or the layer with "
                                      f"layer.to({x.dtype})")
        return x

    def route(self, affinity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(expert_idx, gate_weights) for these affinities, using the balancing bias if enabled."""
        return self._route(affinity, self.expert_bias if self.balancing == "bias" else None)

    def routed_output(self, tokens: torch.Tensor, expert_idx: torch.Tensor, gates: torch.Tensor
                      ) -> torch.Tensor:
        """sum over the chosen experts of gate * expert(token), as (tokens, d_model).

        The (token, expert) pairs are sorted by expert so each expert runs once on one contiguous slice.
        """
        k = expert_idx.shape[-1]
        flat = expert_idx.reshape(-1)
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=self.n_routed).tolist()
        token_of_pair = order // k
        chunks = tokens[token_of_pair].split(counts)
        expert_out = torch.cat([expert(chunk) for expert, chunk in zip(self.experts, chunks, strict=True)])
        weighted = expert_out * gates.reshape(-1)[order].unsqueeze(-1)
        return torch.zeros_like(tokens).index_add(0, token_of_pair, weighted)

    def shared_output(self, tokens: torch.Tensor) -> torch.Tensor:
        """Sum of the shared experts, which see every token."""
        out = torch.zeros_like(tokens)
        for expert in self.shared_experts:
            out = out + expert(tokens)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.check_input(x, "DeepSeekMoE").reshape(-1, x.shape[-1])
        affinity = self.affinity(tokens)
        expert_idx, gates = self.route(affinity)
        out = self.shared_output(tokens) + self.routed_output(tokens, expert_idx, gates)
        self._record(affinity, expert_idx)
        return out.reshape(x.shape)

    def _record(self, affinity: torch.Tensor, expert_idx: torch.Tensor) -> None:
        self.last_expert_idx = expert_idx.detach()
        self.last_load = torch.bincount(expert_idx.reshape(-1), minlength=self.n_routed).float()
        if self.training:
            self.pending_load += self.last_load
        if self.balancing == "aux" and self.training:
            self.aux_loss = expert_balance_loss(affinity, expert_idx, self.aux_alpha)
        else:
            self.aux_loss = torch.zeros((), device=affinity.device)

    @torch.no_grad()
    def update_bias(self) -> None:
        """Apply the auxiliary-loss-free bias step for the load seen since the last call, then reset it.

        Call once per optimiser step (the training loop does). A no-op unless `balancing="bias"`.
        """
        if self.balancing == "bias" and self.pending_load.sum() > 0:
            self.expert_bias.copy_(balance_bias_update(self.expert_bias, self.pending_load, self.bias_gamma))
        self.pending_load.zero_()
