"""Expert parallelism inside a pipeline stage: MoE blocks whose routed experts are sharded over a group.

The ``ep`` ranks of one pipeline rank form an expert-parallel group; each MoE block of their chunk sends
tokens to the rank holding their experts with an all-to-all in flight while the partner chunk of an
overlapped pair computes (DeepSeek-V3 report, Sec. 3.2.2).
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
from torch import nn

from utils.pipeline.executor.stage import Clock, Tape

# ------------------------------------------------------------------------------ expert-parallel MoE block

class ExpertParallelBlocks:
    """Runs the toy decoder's blocks with their routed experts sharded over an expert-parallel group.

    Per block (DeepSeek-V3 Sec. 3.2.2, flat dispatch): attention and routing on this rank's sequences;
    **dispatch**: every (token, chosen expert) row goes to the rank holding that expert
    (``all_to_all_single(async_op=True)``: the chunk yields while it is in flight); the experts run on the
    rows they received; **combine**: results come back the same way; the rows are weighted by their gates
    and added to the shared experts' output and the residual. Rank ``e`` of the group holds experts
    ``e * n_routed / ep ... (e + 1) * n_routed / ep - 1``; the others are removed from its copy.
    """

    def __init__(self, group, ep: int, ep_rank: int):
        self.group, self.ep, self.ep_rank = group, ep, ep_rank

    @staticmethod
    def handles(part: nn.Module) -> bool:
        return hasattr(part, "moe") and hasattr(part, "attn")

    def shard(self, chunk: nn.Module) -> None:
        """Keep only this rank's routed experts (the others become parameter-free placeholders)."""
        for part in chunk.parts:
            if self.handles(part):
                moe = part.moe
                per_rank = moe.n_routed // self.ep
                for e in range(moe.n_routed):
                    if e // per_rank != self.ep_rank:
                        moe.experts[e] = nn.Identity()

    def block_steps(self, block, x, tape: Tape, clock: Clock, comms: list, label: str):
        moe = block.moe
        per_rank = moe.n_routed // self.ep
        h = x + block.attn(block.attn_norm(x))
        tokens = block.ffn_norm(h).reshape(-1, x.shape[-1])
        affinity = moe.affinity(tokens)
        expert_idx, gates = moe.route(affinity)
        shared = moe.shared_output(tokens)
        # One row per (token, chosen expert), sorted by expert: the rows for each rank are contiguous.
        flat_expert = expert_idx.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        token_of_row = order // expert_idx.shape[1]
        per_expert = torch.bincount(flat_expert, minlength=moe.n_routed)
        got = torch.empty_like(per_expert)
        dist.all_to_all_single(got, per_expert, group=self.group)  # how many rows of each expert will come
        send_splits = per_expert.view(self.ep, per_rank).sum(1).tolist()
        recv_counts = got.view(self.ep, per_rank)
        recv_splits = recv_counts.sum(1).tolist()
        # The combine segment needs these three; cutting them keeps the segments' graphs apart.
        h, gates, shared = tape.cut(h), tape.cut(gates), tape.cut(shared)
        rows = yield from tape.all_to_all(tokens[token_of_row], send_splits, recv_splits, self.group,
                                          f"dispatch {label}", clock, comms)
        experts_here = torch.arange(per_rank, device=rows.device).repeat(self.ep)
        local_expert = torch.repeat_interleave(experts_here, recv_counts.reshape(-1))
        out = torch.zeros_like(rows)
        for j in range(per_rank):
            idx = (local_expert == j).nonzero().squeeze(1)
            if idx.numel():
                out = out.index_add(0, idx, moe.experts[self.ep_rank * per_rank + j](rows[idx]))
        back = yield from tape.all_to_all(out, recv_splits, send_splits, self.group, f"combine {label}",
                                          clock, comms)
        gate_of_row = gates.reshape(-1)[order].unsqueeze(-1)
        routed = torch.zeros_like(shared).index_add(0, token_of_row, gate_of_row * back)
        return h + (shared + routed).reshape(x.shape)


# -------------------------------------------------------------------------------------- groups

def expert_groups(n_ranks: int, ep: int):
    """The expert-parallel groups (ranks ``p * ep ... p * ep + ep - 1`` for each pipeline rank p).

    Creating a group is collective (every rank of the default group calls it), so every rank calls this,
    and the groups are kept for the life of the default group.
    """
    if ep == 1:
        return None
    return _new_groups(id(dist.group.WORLD), n_ranks, ep)


@functools.cache
def _new_groups(world: int, n_ranks: int, ep: int) -> list:
    # ``world`` (the default group's identity) is part of the key: a new default group needs new groups
    return [dist.new_group(list(range(p * ep, (p + 1) * ep))) for p in range(n_ranks)]
