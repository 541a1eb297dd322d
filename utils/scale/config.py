"""A transformer MoE as its published configuration: DeepSeek-V3's numbers as data, not as code.

`ModelConfig` holds the hyper-parameters that fix every parameter count and FLOP of the model: layers, hidden
size, MLA attention (DeepSeek-V3 report Sec. 2.1.1), DeepSeekMoE experts (Sec. 2.1.2) and multi-token
prediction modules (Sec. 2.2). The published configurations live in ``data/scale_models.json``, each field
with its source; `load_model("DeepSeek-V3")` reads them, so the numbers are written down once.

Attention is MLA: queries through a low-rank latent of ``q_lora_rank`` (0: projected directly, as in
DeepSeek-V2-Lite), keys and values through a shared latent of ``kv_lora_rank``, plus a decoupled RoPE key of
``qk_rope_dim`` shared by all heads. FFNs are SwiGLU (three matrices). Ground module: of the kit it imports
only ``utils.inputs`` (the shared argument checks).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

from utils import inputs as arg

DATA = Path(__file__).resolve().parents[2] / "data"
MODELS_JSON = DATA / "scale_models.json"


def check_count(name: str, value, minimum: int, meaning: str) -> int:
    """`value` as an int >= `minimum`, or ValueError naming the rule (`meaning` says what it counts)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} is {meaning}, a whole number >= {minimum}; got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} is {meaning}, so it must be >= {minimum}; got {value}.")
    return value


def check_number(name: str, value, meaning: str, *, positive: bool = True, at_most: float | None = None) -> float:
    """`value` as a finite float (> 0 if `positive`, else >= 0; <= `at_most`), or ValueError with the rule."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} is {meaning}, a number; got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} is {meaning}, a finite number; got {value}.")
    if positive and value <= 0:
        raise ValueError(f"{name} is {meaning}, so it must be > 0; got {value:g}.")
    if not positive and value < 0:
        raise ValueError(f"{name} is {meaning}, so it cannot be negative; got {value:g}.")
    if at_most is not None and value > at_most:
        raise ValueError(f"{name} is {meaning}, so it must be <= {at_most:g}; got {value:g}.")
    return value


def known_changes(obj, changes, kind: str) -> dict:
    """``changes`` if it is a dict of fields ``obj`` has (``with_changes`` takes no other)."""
    if not isinstance(changes, dict):
        arg.fail("changes", f"a dict of {kind} fields", changes, where=f"{kind}.with_changes",
                 error=arg.InputTypeError)
    unknown = sorted(set(changes) - {f.name for f in fields(obj)})
    if unknown:
        raise arg.InputTypeError(f"{kind} has no field {', '.join(map(repr, unknown))}; its fields are "
                                 f"{', '.join(f.name for f in fields(obj))}.")
    return changes


def check_model(model, where: str) -> ModelConfig:
    """``model`` (a name is loaded) if it is a ModelConfig."""
    model = load_model(model) if isinstance(model, str) else model
    return arg.instance(model, "model", ModelConfig, "a ModelConfig or a model name (load_model)", where=where)


def check_counts(obj, rules: dict[str, tuple[str, int]]) -> None:
    """Validate the int fields of frozen dataclass `obj`: field -> (what it counts, minimum); store them as ints."""
    for name, (meaning, minimum) in rules.items():
        object.__setattr__(obj, name, check_count(name, getattr(obj, name), minimum, meaning))


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a DeepSeek-style MoE transformer (names follow the report, Sec. 4.2).

    ``n_layers`` transformer layers, the first ``n_dense_layers`` with a dense SwiGLU FFN of width
    ``dense_ffn``, the rest MoE: ``n_shared_experts`` shared and ``n_routed_experts`` routed experts of width
    ``expert_ffn``, ``top_k`` routed experts per token. ``n_mtp`` multi-token-prediction modules (each one
    more MoE layer plus a projection; they share the embedding and output head). Untied embedding and head.
    """

    name: str
    n_layers: int
    n_dense_layers: int
    hidden: int
    dense_ffn: int
    vocab: int
    n_heads: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_dim: int
    qk_rope_dim: int
    v_head_dim: int
    n_routed_experts: int
    n_shared_experts: int
    top_k: int
    expert_ffn: int
    n_mtp: int = 0

    def __post_init__(self):
        check_counts(self, {
            "n_layers": ("the number of transformer layers", 1),
            "n_dense_layers": ("the number of leading dense-FFN layers", 0),
            "hidden": ("the hidden size", 1),
            "dense_ffn": ("the dense FFN width", 1),
            "vocab": ("the vocabulary size", 1),
            "n_heads": ("the number of attention heads", 1),
            "q_lora_rank": ("the query latent rank (0: no query compression)", 0),
            "kv_lora_rank": ("the key-value latent rank", 1),
            "qk_nope_dim": ("the per-head query/key dimension without RoPE", 1),
            "qk_rope_dim": ("the per-head RoPE dimension (0: none)", 0),
            "v_head_dim": ("the per-head value dimension", 1),
            "n_routed_experts": ("the number of routed experts per MoE layer", 0),
            "n_shared_experts": ("the number of shared experts per MoE layer", 0),
            "top_k": ("the number of routed experts per token", 0),
            "expert_ffn": ("the FFN width of one expert", 1),
            "n_mtp": ("the number of multi-token-prediction modules", 0),
        })
        if self.n_dense_layers > self.n_layers:
            raise ValueError(
                f"n_dense_layers = {self.n_dense_layers} cannot exceed n_layers = {self.n_layers}: the dense "
                f"layers are the first layers of the model."
            )
        if self.n_moe_layers + self.n_mtp > 0:
            if self.n_routed_experts < 1 or not 1 <= self.top_k <= self.n_routed_experts:
                raise ValueError(
                    f"an MoE layer routes each token to top_k of its n_routed_experts, so "
                    f"1 <= top_k <= n_routed_experts; got top_k = {self.top_k}, "
                    f"n_routed_experts = {self.n_routed_experts}."
                )

    @property
    def n_moe_layers(self) -> int:
        """Layers of the main model whose FFN is an MoE layer."""
        return self.n_layers - self.n_dense_layers

    @property
    def qk_head_dim(self) -> int:
        """Per-head query/key dimension: the no-RoPE part plus the decoupled RoPE part (Sec. 2.1.1)."""
        return self.qk_nope_dim + self.qk_rope_dim

    def layer_is_moe(self, layer: int) -> bool:
        """Whether main-model layer `layer` (0-based) has an MoE FFN (every layer after the dense ones)."""
        return layer >= self.n_dense_layers


@cache
def _models() -> dict:
    return json.loads(MODELS_JSON.read_text())


MODEL_NAMES = tuple(_models())


def load_model(name: str = "DeepSeek-V3") -> ModelConfig:
    """The published configuration `name` from ``data/scale_models.json`` (each field there has its source)."""
    models = _models()
    if name not in models:
        raise ValueError(f"Unknown model {name!r}: data/scale_models.json has {', '.join(models)}.")
    return ModelConfig(name=name, **models[name]["config"])


def model_sources(name: str = "DeepSeek-V3") -> dict[str, str]:
    """Per field of `name`'s configuration, where the number comes from (report section or config.json)."""
    return dict(_models()[name]["sources"])


def published_counts(name: str = "DeepSeek-V3") -> dict[str, tuple[float, str]]:
    """The parameter counts the authors published for `name`: quantity -> (value, source)."""
    return {k: (float(v), s) for k, (v, s) in _models()[name]["published"].items()}


CONFIG_FIELDS = tuple(f.name for f in fields(ModelConfig) if f.name != "name")
