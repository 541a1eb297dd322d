"""An FP8 design puzzle (notebook 06): the cheapest scaling that keeps ordinary values accurate next to outliers.

The learner picks a format and a scaling granularity for activations with a few huge channels. The grader
quantises with the library (``utils.fp8.formats.quantize_dequantize``), measures the error on the ordinary
values, and computes the target from the reference solution: the option with the fewest scale bytes that
meets the error limit (``cheapest_accurate_scaling``), never a number written down here. Graded through
``utils.checks.check_puzzle`` like the pipeline puzzles (same attributes: title, statement, stub, hints,
goal, grade, show).
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from functools import cached_property

import pandas as pd
import torch

from utils.fp8.explore import outlier_activations
from utils.fp8.formats import GRANULARITIES, quantize, quantize_dequantize

#: What the grader found: ``passed`` and a kind, specific paragraph.
Verdict = namedtuple("Verdict", "passed message")
FORMATS_TO_TRY = ("e4m3", "e5m2")


def scaling_options(x: torch.Tensor, mask: torch.Tensor) -> pd.DataFrame:
    """Every (format, granularity): bytes of scales, mean relative error of the ordinary values (``~mask``)
    and the share of them flushed to zero. One row per option, cheapest scales first."""
    rows = []
    ordinary = ~mask
    for fmt in FORMATS_TO_TRY:
        for granularity in GRANULARITIES:
            x_hat = quantize_dequantize(x, fmt, granularity)
            error = ((x_hat - x).abs() / x.abs().clamp_min(1e-30))[ordinary]
            flushed = ((x_hat == 0) & (x != 0))[ordinary].float().mean()
            rows.append({"format": fmt, "granularity": granularity,
                         "scale bytes": quantize(x, fmt, granularity).nbytes - x.numel(),
                         "ordinary error": float(error.mean()), "flushed": float(flushed)})
    return pd.DataFrame(rows).sort_values(["scale bytes", "format"], kind="stable").reset_index(drop=True)


def cheapest_accurate_scaling(x: torch.Tensor, mask: torch.Tensor, max_error: float) -> tuple[str, str]:
    """The reference solution: the (format, granularity) with the fewest scale bytes whose ordinary values err
    at most ``max_error`` on average (ties: E4M3 first). ValueError if no option meets the limit."""
    table = scaling_options(x, mask)
    good = table[table["ordinary error"] <= max_error]
    if good.empty:
        raise ValueError(f"no FP8 format and granularity keeps the ordinary values within {max_error:.1%} here "
                         f"(best: {table['ordinary error'].min():.1%}); raise the limit.")
    row = good.iloc[0]
    return row["format"], row["granularity"]


@dataclass(frozen=True, eq=False)
class ScalingPuzzle:
    """Pick the cheapest FP8 scaling of outlier activations that keeps ordinary values within ``max_error``."""

    outlier: float = 3000.0
    max_error: float = 0.03
    rows: int = 128
    cols: int = 1024
    spacing: int = 256
    title: str = "Puzzle: the cheapest FP8 scaling that survives outliers"

    @property
    def data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return outlier_activations(rows=self.rows, cols=self.cols, outlier=self.outlier, spacing=self.spacing)

    @cached_property
    def table(self) -> pd.DataFrame:
        """``scaling_options`` of the puzzle's data, computed once."""
        return scaling_options(*self.data)

    @property
    def statement(self) -> str:
        choices = ", ".join(f'`"{g}"`' for g in GRANULARITIES)
        return (
            f"Activations of {self.rows} tokens x {self.cols} channels, N(0, 1) except 4 channels {self.outlier:g} "
            f"times larger (`outlier_activations(rows={self.rows}, cols={self.cols}, outlier={self.outlier:g}, "
            f"spacing={self.spacing})`). Choose an FP8 format (`e4m3` or `e5m2`) and a scaling granularity "
            f"({choices}) so that the ordinary values (all but the "
            f"outlier channels) err at most **{self.max_error:.0%}** on average, with as few bytes of scales as "
            f"possible. Predict first, then check your choice."
        )

    stub: str = ('def my_scaling():\n'
                 '    """(format, granularity), e.g. ("e4m3", "tensor")."""\n'
                 '    raise NotImplementedError  # your choice here')
    hints: tuple[str, ...] = (
        "Two things limit accuracy: the mantissa bits of the format, and how far the scale is from the values "
        "it serves.",
        "A scale shared with an outlier squeezes every ordinary value it covers toward zero, and a scale shared "
        "over many tokens is set by the largest outlier among them. How many ordinary values share a scale "
        "with an outlier per tensor, per row, per 128 x 128 block, per 1 x 128 tile, per 1 x 32 group?",
        "E5M2's 2 mantissa bits round by up to 12.5%; E4M3's 3 bits by up to 6.25%. Count the bytes of scales: "
        "an FP32 scale takes 4 bytes, an MX (E8M0) power-of-two scale 1.",
    )

    @property
    def goal(self) -> str:
        return f"ordinary values within {self.max_error:.0%} with the fewest scale bytes"

    def reference(self) -> tuple[str, str]:
        """The reference solution, from the library's quantiser (``cheapest_accurate_scaling``)."""
        return cheapest_accurate_scaling(*self.data, self.max_error)

    def grade(self, answer) -> Verdict:
        """Judge a (format, granularity) pair; never raises."""
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            return Verdict(False, 'return a pair (format, granularity), e.g. ("e4m3", "tile1x128").')
        fmt, granularity = (str(a).lower() for a in answer)
        if fmt not in FORMATS_TO_TRY or granularity not in GRANULARITIES:
            return Verdict(False, f"choose a format from {', '.join(FORMATS_TO_TRY)} and a granularity from "
                                  f"{', '.join(GRANULARITIES)}; got {answer!r}.")
        table, (best_fmt, best_granularity) = self.table, self.reference()
        row = table[(table["format"] == fmt) & (table["granularity"] == granularity)].iloc[0]
        best = table[(table["format"] == best_fmt) & (table["granularity"] == best_granularity)].iloc[0]
        said = (f"{fmt} with {granularity} scales: the ordinary values err {row['ordinary error']:.1%} on "
                f"average, {row['flushed']:.1%} of them flush to zero, and the scales take {int(row['scale bytes'])} "
                f"bytes")
        if row["ordinary error"] > self.max_error:
            why = ("E5M2 keeps 2 mantissa bits: its rounding alone costs more than the limit, whatever the scale"
                   if fmt == "e5m2" else
                   "the outlier channels set this scale, so every ordinary value sharing it is squeezed toward zero")
            return Verdict(False, f"{said}, over the {self.max_error:.0%} limit: {why}.")
        if row["scale bytes"] > best["scale bytes"]:
            return Verdict(False, f"{said}: accurate enough, but another choice meets the limit with fewer bytes "
                                  f"of scales.")
        return Verdict(True, f"{said}: the cheapest choice within {self.max_error:.0%}.")

    def show(self, answer, _goal=None) -> None:
        """Print every option's numbers (called on a wrong answer: the table is the lesson)."""
        print(self.table.round(4).to_string(index=False))

    def __repr__(self) -> str:
        return f"{self.title}\n\n{self.statement}"

    def _repr_markdown_(self) -> str:
        return f"**{self.title}**\n\n{self.statement}"


#: Notebook 06's puzzle.
SCALING_PUZZLE = ScalingPuzzle()
