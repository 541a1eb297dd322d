"""Models cut into chunks, the unit a pipeline stage runs (DeepSeek-V3 report, Sec. 3.2.1).

A *model spec* is a small, picklable recipe: every rank (and the single-process reference) builds the same
full model from it with the same seed, so every copy starts with the same weights, then keeps the chunks its
stages run. Two specs:

    mlp_spec(width=32, n_layers=16)     a stack of Linear + tanh layers: the model of the first lessons
    decoder_spec(n_blocks=4, ep=1)      the toy MoE decoder (utils.moe.toy_decoder) cut between its blocks,
                                        optionally with its experts sharded over ``ep`` ranks

A spec answers four questions and names itself, which is all the executor and the reference need (the
``ModelSpec`` Protocol below; any object with these members is a spec):

    spec.build()                  the full model (an nn.Module), the same weights for the same seed
    spec.cut(model, n_chunks)     the model as ``n_chunks`` Chunk modules, in forward order
    spec.make_microbatches(n)     n (input, target) pairs, deterministic
    spec.loss(output, target)     the loss of one micro-batch
    spec.ep, spec.name            expert-parallel ranks per pipeline stage (1: none), a short name

A ``Chunk`` is a sequence of named parts (``("layers.3", module)``); running the parts in order is the same
computation as the full model's forward, and every parameter keeps the name it has in the full model, so a
pipeline's gradients can be compared with the reference's name by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn import functional as F

from utils import inputs as arg


@runtime_checkable
class ModelSpec(Protocol):
    """The contract between a model and the executor (``execute``, ``RankPipeline``) and the reference run.

    A spec must be picklable (every rank receives it) and deterministic: ``build()`` gives the same weights
    and ``make_microbatches(n)`` the same data on every rank and in the single-process reference. With
    ``ep`` > 1 it also provides ``shard_loss(output, target, full_target)`` and ``n_routed`` (see
    ``DecoderSpec``).
    """

    #: Expert-parallel ranks per pipeline stage (1: no expert parallelism).
    ep: int
    #: A short name for reports ("mlp", "decoder").
    name: str

    def build(self) -> nn.Module:
        """The full model, with the same weights every time."""
        ...

    def cut(self, model: nn.Module, n_chunks: int) -> list[Chunk]:
        """``model`` as ``n_chunks`` consecutive Chunks (ValueError if it has too few layers)."""
        ...

    def make_microbatches(self, n: int, seed: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` (input, target) pairs, the same for the same seed."""
        ...

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of one micro-batch (the step's loss is their mean)."""
        ...


class Chunk(nn.Module):
    """Consecutive parts of a model, run one after the other: what one pipeline stage computes.

    ``names[i]`` is part i's name in the full model (e.g. ``"blocks.2"``), so ``full_name`` maps this chunk's
    parameter names back to the full model's.
    """

    def __init__(self, parts: list[tuple[str, nn.Module]]):
        super().__init__()
        arg.sequence(parts, "parts", where="Chunk", why="a pipeline stage must compute something")
        for part in parts:
            if not (isinstance(part, tuple) and len(part) == 2 and isinstance(part[0], str)
                    and isinstance(part[1], nn.Module)):
                arg.fail("every part", "a (name, nn.Module) pair", part, where="Chunk", error=arg.InputTypeError)
        self.names = [name for name, _ in parts]
        self.parts = nn.ModuleList(module for _, module in parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for part in self.parts:
            x = part(x)
        return x

    def full_name(self, local_name: str) -> str:
        """``parts.1.weight`` -> ``layers.5.weight``: the parameter's name in the full model."""
        _, index, rest = local_name.split(".", 2)
        return f"{self.names[int(index)]}.{rest}"

    def named_full_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(full-model name, parameter) for every parameter of the chunk."""
        return [(self.full_name(n), p) for n, p in self.named_parameters()]


def split_evenly(n_items: int, n_groups: int) -> list[range]:
    """Split ``range(n_items)`` into ``n_groups`` consecutive ranges whose sizes differ by at most one.

    The first groups get the extra items (as torch.tensor_split does).
    """
    n_groups = arg.whole(n_groups, "n_groups", low=1, where="split_evenly",
                         why="a model is cut into at least one chunk")
    n_items = arg.whole(n_items, "n_items", low=0, where="split_evenly", why="a number of layers")
    if n_items < n_groups:
        raise ValueError(
            f"cannot cut {n_items} layers into {n_groups} chunks: every pipeline stage needs at least one "
            f"layer; use a model with at least {n_groups} layers (or fewer ranks)"
        )
    base, extra = divmod(n_items, n_groups)
    bounds, start = [], 0
    for g in range(n_groups):
        size = base + (1 if g < extra else 0)
        bounds.append(range(start, start + size))
        start += size
    return bounds


# ------------------------------------------------------------------------------------------------ MLP

class MLPLayer(nn.Module):
    """tanh(Linear(x)): one layer of the MLP stack."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x))


class MLPStack(nn.Module):
    """``n_layers`` MLPLayers of the same width: the simplest model to cut into pipeline stages."""

    def __init__(self, width: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(MLPLayer(width) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


@dataclass(frozen=True)
class MLPSpec:
    """A stack of ``n_layers`` tanh(Linear) layers of ``width``, trained to regress random targets (MSE).

    Micro-batches hold ``batch`` examples. ``seed`` fixes the weights, ``data_seed`` the micro-batches.
    """

    width: int = 32
    n_layers: int = 16
    batch: int = 8
    seed: int = 0
    data_seed: int = 1
    ep: int = 1  # no experts: one rank per pipeline stage
    name: str = field(default="mlp", init=False)

    def __post_init__(self):
        for attr in ("width", "n_layers", "batch"):
            arg.whole(getattr(self, attr), attr, low=1, where="mlp_spec")
        for attr in ("seed", "data_seed"):
            arg.whole(getattr(self, attr), attr, low=0, where="mlp_spec", why="seeds are whole numbers >= 0")
        arg.product_limit((self.width + 1, self.width, self.n_layers), "width x (width + 1) x n_layers "
                          "(the parameters)", arg.MAX_PARAMETERS, where="mlp_spec")
        arg.product_limit((self.batch, self.width), "batch x width (one micro-batch)", arg.MAX_ELEMENTS,
                          where="mlp_spec")

    def build(self) -> MLPStack:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return MLPStack(self.width, self.n_layers)

    def cut(self, model: MLPStack, n_chunks: int) -> list[Chunk]:
        return [Chunk([(f"layers.{i}", model.layers[i]) for i in group])
                for group in split_evenly(len(model.layers), n_chunks)]

    def make_microbatches(self, n: int, seed: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` (input, target) pairs of ``batch`` x ``width`` standard normal numbers (seeded)."""
        n, seed = _microbatch_args(n, seed, "MLPSpec.make_microbatches")
        generator = torch.Generator().manual_seed(self.data_seed if seed is None else seed)
        return [(torch.randn(self.batch, self.width, generator=generator),
                 torch.randn(self.batch, self.width, generator=generator)) for _ in range(n)]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output, target)


def mlp_spec(width: int = 32, n_layers: int = 16, batch: int = 8, seed: int = 0,
             data_seed: int = 1) -> MLPSpec:
    """The MLP stack of the first pipeline lessons (cut into as many chunks as the schedule has)."""
    return MLPSpec(width=width, n_layers=n_layers, batch=batch, seed=seed, data_seed=data_seed)


# ----------------------------------------------------------------------------------------- MoE decoder

@dataclass(frozen=True)
class DecoderSpec:
    """The toy MoE decoder (utils.moe.toy_decoder), cut between blocks: chunk 0 starts with the embedding and the
    last chunk ends with the final norm and the head.

    ``ep`` > 1 shards each MoE layer's routed experts over ``ep`` ranks per pipeline stage (expert
    parallelism, DeepSeek-V3 Sec. 3.2): a micro-batch's sequences are split over those ranks, tokens travel
    to their experts' rank by all-to-all and back. The loss is the mean cross-entropy over the answer digits
    of the micro-batch (utils.moe.train.language_model_loss).
    """

    n_blocks: int = 4
    d_model: int = 32
    n_heads: int = 2
    n_routed: int = 4
    k: int = 2
    d_expert: int = 32
    batch: int = 4
    n_digits: int = 4
    seed: int = 0
    data_seed: int = 1
    ep: int = 1
    name: str = field(default="decoder", init=False)

    def __post_init__(self):
        where = "decoder_spec"
        for attr in ("n_blocks", "d_model", "n_heads", "n_routed", "k", "d_expert", "batch", "n_digits"):
            arg.whole(getattr(self, attr), attr, low=1, where=where)
        for attr in ("seed", "data_seed"):
            arg.whole(getattr(self, attr), attr, low=0, where=where, why="seeds are whole numbers >= 0")
        arg.whole(self.batch, "batch", low=1, high=arg.MAX_SEQUENCES, where=where, why="sequences per micro-batch")
        arg.whole(self.ep, "ep", low=1, high=arg.MAX_WORLD_SIZE, where=where,
                  why="ranks per expert-parallel group")
        self.config()  # the decoder's own rules (heads, K <= experts, size), before any rank builds it
        if self.n_routed % self.ep:
            raise ValueError(
                f"decoder_spec: {self.n_routed} routed experts do not divide over ep={self.ep} ranks: every "
                "rank of an expert-parallel group holds the same number of experts")
        if self.batch % self.ep:
            raise ValueError(
                f"decoder_spec: a micro-batch of {self.batch} sequences does not split over ep={self.ep} "
                "ranks: each rank of an expert-parallel group processes batch / ep sequences")

    def config(self):
        from utils.moe.data import TaskVocabulary
        from utils.moe.toy_decoder import ToyDecoderConfig

        return ToyDecoderConfig(vocab_size=TaskVocabulary().size, d_model=self.d_model, n_heads=self.n_heads,
                                n_blocks=self.n_blocks, n_routed=self.n_routed, k=self.k,
                                d_expert=self.d_expert, n_shared=1, balancing="bias")

    def build(self) -> nn.Module:
        from utils.moe.toy_decoder import build_toy_decoder

        return build_toy_decoder(self.config(), seed=self.seed)

    def cut(self, model: nn.Module, n_chunks: int) -> list[Chunk]:
        groups = split_evenly(len(model.blocks), n_chunks)
        chunks = []
        for c, group in enumerate(groups):
            parts = [(f"blocks.{i}", model.blocks[i]) for i in group]
            if c == 0:
                parts.insert(0, ("embed", model.embed))
            if c == n_chunks - 1:
                parts += [("norm", model.norm), ("head", model.head)]
            chunks.append(Chunk(parts))
        return chunks

    def make_microbatches(self, n: int, seed: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` (tokens, targets) pairs of ``batch`` sequences of the synthetic tasks (seeded)."""
        from utils.moe.data import make_dataset

        n, seed = _microbatch_args(n, seed, "DecoderSpec.make_microbatches")
        seed = self.data_seed if seed is None else seed
        data = make_dataset(n * self.batch, n_digits=self.n_digits, seed=seed)
        inputs, targets = data.inputs, data.targets
        return [(inputs[i * self.batch:(i + 1) * self.batch], targets[i * self.batch:(i + 1) * self.batch])
                for i in range(n)]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from utils.moe.train import language_model_loss

        return language_model_loss(output, target)

    def shard_loss(self, output: torch.Tensor, target: torch.Tensor,
                   full_target: torch.Tensor) -> torch.Tensor:
        """This rank's share of the micro-batch loss when its sequences are split over ``ep`` ranks.

        Summed over the expert-parallel group it equals ``loss`` on the whole micro-batch: the sum of the
        cross-entropies of this shard's scored tokens, divided by the number of scored tokens of the whole
        micro-batch.
        """
        from utils.moe.data import IGNORE_INDEX

        total = F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1),
                                ignore_index=IGNORE_INDEX, reduction="sum")
        return total / (full_target != IGNORE_INDEX).sum()


def decoder_spec(n_blocks: int = 4, ep: int = 1, d_model: int = 32, n_routed: int = 4, k: int = 2,
                 batch: int = 4, seed: int = 0, data_seed: int = 1) -> DecoderSpec:
    """The toy MoE decoder cut between its blocks; ``ep`` > 1 shards experts over ``ep`` ranks per stage."""
    return DecoderSpec(n_blocks=n_blocks, ep=ep, d_model=d_model, n_routed=n_routed, k=k, batch=batch,
                       seed=seed, data_seed=data_seed)


def _microbatch_args(n, seed, where: str) -> tuple[int, int | None]:
    n = arg.whole(n, "n", low=1, high=arg.MAX_MICROBATCHES, where=where, why="micro-batches to make")
    if seed is not None:
        seed = arg.whole(seed, "seed", low=0, where=where, why="seeds are whole numbers >= 0")
    return n, seed


def shard_microbatch(x: torch.Tensor, ep: int, ep_rank: int) -> torch.Tensor:
    """Rows ``ep_rank``-th of ``ep`` equal slices of ``x`` along the batch dimension."""
    arg.tensor(x, "x", where="shard_microbatch", min_dims=1, finite=False)
    ep = arg.whole(ep, "ep", low=1, where="shard_microbatch")
    arg.whole(ep_rank, "ep_rank", low=0, high=ep - 1, where="shard_microbatch")
    if x.shape[0] % ep:
        arg.fail("x's first dimension", f"a multiple of ep = {ep}", x, where="shard_microbatch",
                 why="every rank of an expert-parallel group takes an equal share of the rows")
    if ep == 1:
        return x
    rows = x.shape[0] // ep
    return x[ep_rank * rows:(ep_rank + 1) * rows]


def expert_owner(name: str, n_routed: int, ep: int) -> int | None:
    """The rank (within an expert-parallel group) that holds the routed expert a parameter belongs to.

    ``blocks.1.moe.experts.5.up_proj.weight`` -> 5 // (n_routed / ep); None for every other parameter
    (those are replicated on every rank of the group).
    """
    arg.text(name, "name", where="expert_owner")
    n_routed = arg.whole(n_routed, "n_routed", low=1, where="expert_owner")
    ep = arg.whole(ep, "ep", low=1, high=n_routed, where="expert_owner")
    parts = name.split(".")
    if "experts" in parts and "shared_experts" not in parts:
        index = int(parts[parts.index("experts") + 1])
        return index // (n_routed // ep)
    return None
