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

from utils.moe.layer import DeepSeekMoE


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

    def replace(self, **changes) -> ToyDecoderConfig:
        """A copy with some fields changed."""
        return ToyDecoderConfig(**{**asdict(self), **changes})


def rotate(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021) on (batch, heads, seq, head_dim), half-split form."""
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
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        self.norm = nn.RMSNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def moe_layers(model: nn.Module) -> list[DeepSeekMoE]:
    """Every DeepSeekMoE layer of `model`, in module order."""
    return [m for m in model.modules() if isinstance(m, DeepSeekMoE)]


def build_toy_decoder(config: ToyDecoderConfig | None = None, seed: int = 0) -> ToyDecoder:
    """A freshly initialised ToyDecoder; the same seed always gives the same weights."""
    config = config or ToyDecoderConfig()
    if config.n_blocks < 1:
        raise ValueError(f"n_blocks = {config.n_blocks}: a decoder needs at least one block")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyDecoder(config)
