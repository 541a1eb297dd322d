"""A tiny decoder-only transformer whose feed-forward networks are DeepSeekMoE layers.

Structure (kept stable: the pipeline notebooks cut it into stages, the FP8 notebook swaps its linears):

    model.embed   nn.Embedding(vocab, d_model)          tokens -> (batch, seq, d_model)
    model.blocks  nn.ModuleList of Block                 each (batch, seq, d_model) -> same shape
    model.norm    nn.RMSNorm(d_model)
    model.head    nn.Linear(d_model, vocab)              -> logits

so `model(tokens) == model.head(model.norm(blocks[-1](...blocks[0](model.embed(tokens)))))`.
Positions enter through rotary embeddings inside attention (no parameters outside the blocks), so a
pipeline stage is just a slice of `model.blocks`. Every matmul is an `nn.Linear`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from utils import inputs as arg
from utils.moe.layer import BALANCING_METHODS, DeepSeekMoE


@dataclass(frozen=True)
class ToyDecoderConfig:
    """Sizes of the toy decoder; the defaults train on a CPU in seconds."""

    vocab_size: int = 15  # utils.moe.data.TaskVocabulary().size
    d_model: int = 64
    n_heads: int = 4
    n_blocks: int = 2
    n_routed: int = 8
    n_shared: int = 1
    k: int = 2
    d_expert: int = 64
    balancing: str = "bias"
    bias_gamma: float = 0.01
    aux_alpha: float = 0.01
    n_nodes: int = 1
    max_nodes: int | None = None

    def __post_init__(self):
        where = "ToyDecoderConfig"
        for name in ("vocab_size", "d_model", "n_heads", "n_blocks", "n_routed", "k", "d_expert", "n_nodes"):
            arg.whole(getattr(self, name), name, low=1, where=where)
        arg.whole(self.n_shared, "n_shared", low=0, where=where, why="the number of shared experts")
        arg.whole(self.k, "k", low=1, high=self.n_routed, where=where,
                  why=f"K must lie in 1..{self.n_routed}, the number of routed experts")
        if not isinstance(self.balancing, str) or self.balancing not in BALANCING_METHODS:
            raise arg.InputError(f"balancing = {self.balancing!r}: choose one of {BALANCING_METHODS}")
        arg.real(self.bias_gamma, "bias_gamma", low=0, high=1.0, where=where, why="a small bias step")
        arg.real(self.aux_alpha, "aux_alpha", low=0, high=1.0, where=where, why="a small loss weight")
        if self.max_nodes is not None:
            arg.whole(self.max_nodes, "max_nodes", low=1, high=self.n_nodes, where=where,
                      why=f"a token uses 1..{self.n_nodes} nodes")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise arg.InputError(f"d_model = {self.d_model} must split into {self.n_heads} heads of even size "
                                 "(for rotary)")
        per_block = 4 * self.d_model ** 2 + (self.n_routed + self.n_shared) * 3 * self.d_model * self.d_expert
        arg.product_limit((self.n_blocks, per_block + self.n_routed * self.d_model), "the decoder's parameters "
                          "(n_blocks x (attention + experts))", arg.MAX_PARAMETERS, where=where)

    def replace(self, **changes) -> ToyDecoderConfig:
        """A copy with some fields changed."""
        unknown = sorted(set(changes) - set(asdict(self)))
        if unknown:
            raise arg.InputTypeError(f"ToyDecoderConfig has no field {', '.join(unknown)}; its fields are "
                                     f"{', '.join(asdict(self))}.")
        return ToyDecoderConfig(**{**asdict(self), **changes})


def rotate(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021) on (batch, heads, seq, head_dim), half-split form."""
    arg.tensor(x, "x", where="rotate", min_dims=2, floating=True, finite=False)
    if x.shape[-1] % 2:
        arg.fail("x", "a tensor whose last dimension (head_dim) is even", x, where="rotate",
                 why="rotary embeddings rotate pairs of numbers")
    seq, dim = x.shape[-2], x.shape[-1]
    freqs = 10000.0 ** (-torch.arange(0, dim // 2, dtype=torch.float32, device=x.device) / (dim // 2))
    angles = torch.arange(seq, dtype=torch.float32, device=x.device)[:, None] * freqs[None, :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., : dim // 2], x[..., dim // 2 :]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary positions; projections are nn.Linear."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        d_model = arg.whole(d_model, "d_model", low=1, where="CausalSelfAttention")
        n_heads = arg.whole(n_heads, "n_heads", low=1, where="CausalSelfAttention")
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"d_model = {d_model} must split into {n_heads} heads of even size (for rotary)")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, d_model = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(rotate(q), rotate(k), v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(batch, seq, d_model))


class Block(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then + MoE(norm(x))."""

    def __init__(self, config: ToyDecoderConfig):
        super().__init__()
        arg.instance(config, "config", ToyDecoderConfig, "a ToyDecoderConfig", where="Block")
        self.attn_norm = nn.RMSNorm(config.d_model)
        self.attn = CausalSelfAttention(config.d_model, config.n_heads)
        self.ffn_norm = nn.RMSNorm(config.d_model)
        self.moe = DeepSeekMoE(
            config.d_model, config.n_routed, config.k, config.d_expert, n_shared=config.n_shared,
            balancing=config.balancing, bias_gamma=config.bias_gamma, aux_alpha=config.aux_alpha,
            n_nodes=config.n_nodes, max_nodes=config.max_nodes,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.moe(self.ffn_norm(x))


class ToyDecoder(nn.Module):
    """embed -> blocks -> norm -> head. See the module docstring for the structure others rely on."""

    def __init__(self, config: ToyDecoderConfig):
        super().__init__()
        self.config = arg.instance(config, "config", ToyDecoderConfig, "a ToyDecoderConfig", where="ToyDecoder")
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        self.norm = nn.RMSNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        vocab = self.config.vocab_size
        arg.tensor(tokens, "tokens", where="ToyDecoder", dims=2, integer=True)
        if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
            arg.fail("tokens", f"token ids from 0 to {vocab - 1}", tokens, where="ToyDecoder",
                     why="the embedding has one row per token of the vocabulary")
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def moe_layers(model: nn.Module) -> list[DeepSeekMoE]:
    """Every DeepSeekMoE layer of `model`, in module order."""
    arg.instance(model, "model", nn.Module, "a torch model (nn.Module)", where="moe_layers")
    return [m for m in model.modules() if isinstance(m, DeepSeekMoE)]


def build_toy_decoder(config: ToyDecoderConfig | None = None, seed: int = 0) -> ToyDecoder:
    """A freshly initialised ToyDecoder; the same seed always gives the same weights."""
    config = ToyDecoderConfig() if config is None else arg.instance(
        config, "config", ToyDecoderConfig, "a ToyDecoderConfig (or None for the default)",
        where="build_toy_decoder")
    seed = arg.whole(seed, "seed", low=0, where="build_toy_decoder", why="seeds are whole numbers >= 0")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyDecoder(config)
