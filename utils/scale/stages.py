"""Which layers each pipeline chunk holds: the model cut into contiguous chunks of even compute.

A pipeline schedule runs the model as ``n_chunks`` chunks (PP for 1F1B, ZB1P and DualPipe; 2 PP for
DualPipeV, whose V puts two half-size chunks on every rank). The units to place are, in order, the
transformer layers (the first ones dense) and a tail: the final norm, the output head and the MTP modules,
which the report keeps together on the last stage so the MTP module can share the head (Sec. 3.2.3).
The embedding rides with the first layer. The report does not give its cut; we assume the cut that makes
the costliest chunk as cheap as possible (a contiguous partition solved exactly by dynamic programming),
since the slowest stage paces the whole pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from utils.scale.config import ModelConfig, check_count

UNIT_KINDS = ("dense", "moe", "tail")


@dataclass(frozen=True)
class Chunk:
    """Chunk `index`: main-model layers ``first_layer`` .. ``first_layer + n_dense + n_moe - 1`` (dense ones
    first), the embedding if ``embedding`` and the tail (final norm, output head, MTP modules) if ``tail``."""

    index: int
    first_layer: int
    n_dense: int
    n_moe: int
    embedding: bool
    tail: bool

    @property
    def n_layers(self) -> int:
        return self.n_dense + self.n_moe

    def units(self) -> dict[str, int]:
        """How many units of each kind ('dense', 'moe', 'tail') the chunk holds."""
        return {"dense": self.n_dense, "moe": self.n_moe, "tail": int(self.tail)}


def model_units(model: ModelConfig) -> list[str]:
    """The units to place, in pipeline order: one kind per layer, then 'tail'."""
    return ["moe" if model.layer_is_moe(i) else "dense" for i in range(model.n_layers)] + ["tail"]


def balanced_cut(costs: list[float], n_parts: int) -> list[int]:
    """Sizes of `n_parts` non-empty contiguous parts of `costs` whose largest sum is as small as possible.

    Exact dynamic programme over (parts, prefix length); ties go to the cut that puts more units early.
    """
    n = len(costs)
    n_parts = check_count("n_parts", n_parts, 1, "the number of pipeline chunks")
    if n_parts > n:
        raise ValueError(f"cannot cut {n} units into {n_parts} non-empty chunks: each chunk needs one unit.")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[k][i]: smallest possible largest part when the first i units form k parts; cut[k][i] the last cut
    best = [[inf] * (n + 1) for _ in range(n_parts + 1)]
    cut = [[0] * (n + 1) for _ in range(n_parts + 1)]
    best[0][0] = 0.0
    for k in range(1, n_parts + 1):
        for i in range(k, n - (n_parts - k) + 1):
            for j in range(i - 1, k - 2, -1):  # last part is units j..i-1
                value = max(best[k - 1][j], prefix[i] - prefix[j])
                if value < best[k][i] - 1e-12 * max(1.0, abs(value)):
                    best[k][i], cut[k][i] = value, j
    sizes, i = [], n
    for k in range(n_parts, 0, -1):
        j = cut[k][i]
        sizes.append(i - j)
        i = j
    return sizes[::-1]


def plan_chunks(model: ModelConfig, n_chunks: int, unit_cost: Callable[[str], float]) -> tuple[Chunk, ...]:
    """Cut `model` into `n_chunks` pipeline chunks of even cost; `unit_cost(kind)` prices a unit.

    Raises ValueError when there are more chunks than units (each chunk must hold a layer or the tail).
    """
    units = model_units(model)
    if check_count("n_chunks", n_chunks, 1, "the number of pipeline chunks") > len(units):
        raise ValueError(
            f"{n_chunks} pipeline chunks need at least {n_chunks} units to place, but {model.name} has "
            f"{model.n_layers} layers plus its output head: lower PP (each stage must hold some of the model)."
        )
    return chunks_from_sizes(units, balanced_cut([float(unit_cost(kind)) for kind in units], n_chunks))


def chunks_from_sizes(units: list[str], sizes: list[int]) -> tuple[Chunk, ...]:
    """The chunks that take `sizes` consecutive units each (the embedding goes with the first)."""
    chunks, start = [], 0
    for index, size in enumerate(sizes):
        kinds = units[start : start + size]
        chunks.append(Chunk(index=index, first_layer=start, n_dense=kinds.count("dense"),
                            n_moe=kinds.count("moe"), embedding=start == 0, tail="tail" in kinds))
        start += size
    return tuple(chunks)


def equal_layer_cut(model: ModelConfig, n_chunks: int) -> tuple[Chunk, ...]:
    """The naive, report-like cut: `n_chunks` chunks of equal layer counts (the first ``n_layers % n_chunks``
    chunks hold one more), the embedding in the first chunk and the tail (final norm, output head, MTP
    modules) in the last, beside its layers (report Sec. 3.2.3 keeps the MTP module with the head).

    Raises ValueError when there are more chunks than layers (every chunk of this cut holds a layer).
    """
    n_chunks = check_count("n_chunks", n_chunks, 1, "the number of pipeline chunks")
    if n_chunks > model.n_layers:
        raise ValueError(f"an equal-layer cut of {model.name}'s {model.n_layers} layers into {n_chunks} chunks "
                         f"leaves a chunk without a layer: use at most {model.n_layers} chunks.")
    base, extra = divmod(model.n_layers, n_chunks)
    sizes = [base + (index < extra) for index in range(n_chunks)]
    sizes[-1] += 1  # the tail unit, after the last layer
    return chunks_from_sizes(model_units(model), sizes)
