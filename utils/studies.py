"""Seed studies: the course's learned comparisons repeated over many seeds, stored in data/studies/.

A toy trained for 100-150 steps is chaotic: a top-K choice or an FP8 rounding that flips in one step sends the
run elsewhere, and what flips depends on the seed, on the CPU (AVX-512, AVX2, baseline kernels), on the thread
count and even on what the process allocated before. One run's third digit is noise. So each lesson that
compares learned numbers (notebook 01: balancing methods; 02: node caps; 06: FP32, BF16, FP8 training) reads
its verdict from a study of many seeds, and compares each effect with the seed-to-seed spread.

The studies take minutes, more than a notebook's one-minute budget, so this module runs them once and
stores one CSV row per run in data/studies/ (`python -m utils.studies`, with `--only` to run one study);
the notebooks read the files, so what they print is the same on every machine. tests/test_studies.py
re-trains one run of each study and checks it lands within the stored spread.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from utils import inputs as arg

DATA = Path(__file__).resolve().parent.parent / "data" / "studies"


@dataclass(frozen=True)
class Study:
    """A learned comparison: `group` names the setting compared (method, M, precision), one row per run."""

    name: str
    group: str
    seeds: tuple[int, ...]
    notebook: str

    @property
    def path(self) -> Path:
        return DATA / f"{self.name}.csv"


STUDIES = {
    "balancing": Study("balancing", "balancing", tuple(range(8)), "01_toy_moe"),
    "node_cap": Study("node_cap", "M", tuple(range(6)), "02_expert_parallelism"),
    "precisions": Study("precisions", "precision", tuple(range(8)), "06_fp8_mixed_precision"),
}


def _balancing_rows(seed: int) -> list[dict]:
    from utils.moe.explore import DEFAULT_CONFIG, METHOD_LABELS, specialisation, train_toy

    rows = []
    for method in ("bias", "aux", "none"):
        _, h = train_toy(DEFAULT_CONFIG.replace(balancing=method), seed=seed)
        spec = specialisation(h)
        rows.append({"balancing": METHOD_LABELS[method], "seed": seed,
                     "MaxVio (last 20 steps)": float(h.max_violation()[-20:].mean()),
                     "held-out loss": h.eval_loss, "held-out accuracy": h.eval_accuracy,
                     "specialisation, layer 0": float(spec[0]), "specialisation, layer 1": float(spec[1])})
    return rows


def _node_cap_rows(seed: int) -> list[dict]:
    from utils.moe.explore import NODE_CAP_LAYOUT, node_cap_row

    return [{"seed": seed, **node_cap_row(m, seed=seed)} for m in range(1, NODE_CAP_LAYOUT.n_nodes + 1)]


def _precision_rows(seed: int) -> list[dict]:
    from utils.fp8.explore import train_in_precisions

    return [{"precision": p, "seed": seed, "train loss (last 20 steps)": float(np.mean(h.loss[-20:])),
             "held-out loss": h.eval_loss, "held-out accuracy": h.eval_accuracy}
            for p, h in train_in_precisions(steps=100, seed=seed).items()]


RUNNERS = {"balancing": _balancing_rows, "node_cap": _node_cap_rows, "precisions": _precision_rows}


def run_study(name: str, seeds=None) -> pd.DataFrame:
    """Train every run of study `name` (for `seeds`, default the study's own) and return one row per run."""
    study = STUDIES[arg.choice(name, "name", list(STUDIES), where="run_study")]
    seeds = study.seeds if seeds is None else tuple(arg.sequence(seeds, "seeds", where="run_study"))
    rows = [row for seed in seeds for row in RUNNERS[name](arg.whole(seed, "every seed", low=0))]
    table = pd.DataFrame(rows).set_index([study.group, "seed"]).sort_index(level="seed", sort_remaining=False)
    return table.round(6)


def load_study(name: str) -> pd.DataFrame:
    """The stored study `name` (data/studies/NAME.csv), indexed by (setting, seed), in the order it was run."""
    study = STUDIES[arg.choice(name, "name", list(STUDIES), where="load_study")]
    table = pd.read_csv(study.path, index_col=[0, 1])
    order = list(dict.fromkeys(table.index.get_level_values(0)))
    return table.loc[order]


def spread(table: pd.DataFrame, columns=None, digits: int = 3) -> pd.DataFrame:
    """Per setting (first index level): mean, standard deviation over seeds, min and max of each column."""
    arg.instance(table, "table", pd.DataFrame, "a study table (load_study(...))", where="spread")
    columns = list(table.columns if columns is None else columns)
    grouped = table[columns].groupby(level=0, sort=False)
    out = grouped.agg(["mean", "std", "min", "max"]).round(digits)
    out.columns.names = [None, f"over {table.index.get_level_values(1).nunique()} seeds"]
    return out


def paired_gaps(table: pd.DataFrame, column: str, baseline, relative: bool = True) -> pd.DataFrame:
    """Each setting's `column` minus the baseline setting's, seed by seed (same seed: same weights and data).

    Relative gaps (divided by the baseline's value) unless `relative` is False. Rows: seeds; columns: settings.
    """
    wide = table[column].unstack(level=0)
    arg.choice(baseline, "baseline", list(wide.columns), where="paired_gaps", why="a setting of the study")
    gap = wide.sub(wide[baseline], axis=0)
    gap = gap.div(wide[baseline], axis=0) if relative else gap
    return gap[[c for c in table.index.get_level_values(0).unique() if c != baseline]]


def t_critical(df: int, confidence: float = 0.95) -> float:
    """Two-sided critical value of Student's t with `df` degrees of freedom (2.365 for df = 7 at 95%).

    With a handful of seeds the standard error is itself uncertain, so "two standard errors" would call too many
    gaps real; t's wider cut-off keeps the error rate at 1 - confidence. Computed by integrating t's density
    (Simpson's rule) and bisecting, to stay free of a statistics dependency."""
    df = arg.whole(df, "df", low=1, where="t_critical", why="degrees of freedom: seeds - 1")
    arg.real(confidence, "confidence", low=0, high=0.999999, low_open=True, where="t_critical")
    norm = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def mass(x: float, steps: int = 2000) -> float:       # P(0 < T < x)
        h = x / steps
        f = [norm * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
        return h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    low, high, target = 0.0, 1.0, confidence / 2
    while mass(high) < target:
        high *= 2
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if mass(mid) < target else (low, mid)
    return (low + high) / 2


def compare_to_baseline(table: pd.DataFrame, column: str, baseline, relative: bool = False,
                        digits: int = 4) -> pd.DataFrame:
    """Each setting against `baseline` in `column`, seed by seed, with the noise to judge it by.

    mean gap, std of gap   the paired gap (setting minus baseline, same seed) over the seeds;
    baseline's seed spread the standard deviation of the baseline itself over the seeds: how far two equally
                           valid runs of the *same* setting lie apart;
    within the spread      |mean gap| <= the baseline's seed spread: no larger than rerunning the baseline;
    resolved               a paired t-test at 95%: |mean gap| > t x std / sqrt(seeds), t from Student's
                           distribution with seeds - 1 degrees of freedom (2.365 for 8 seeds): a
                           difference these seeds can tell from zero.
    smallest resolvable    t x std / sqrt(seeds): the smallest mean gap these seeds would call resolved.
    Relative gaps (divided by the baseline, per seed) when `relative`.
    """
    gaps = paired_gaps(table, column, baseline, relative=relative)
    base = table[column].unstack(level=0)[baseline]
    noise = base.std() / base.mean() if relative else base.std()
    mean, std = gaps.mean(), gaps.std()
    resolvable = t_critical(len(gaps) - 1) * std / np.sqrt(len(gaps))
    return pd.DataFrame({"mean gap": mean.round(digits), "std of gap": std.round(digits),
                         "baseline's seed spread": round(float(noise), digits),
                         "within the spread": mean.abs() <= noise,
                         "smallest resolvable": resolvable.round(digits),
                         "resolved": mean.abs() > resolvable}).rename_axis(f"vs {baseline}")


def verdict(question: str, answer: bool) -> str:
    """A line nbval can compare on any machine: the question and yes/no."""
    return f"{question}: {'yes' if answer else 'no'}"


def main(argv=None) -> int:
    parser = arg.ArgumentParser(prog="python -m utils.studies",
                                description="Run the seed studies and store them in data/studies/.")
    parser.add_argument("--only", choices=list(STUDIES), action="append",
                        help="run only this study (repeatable); default: all")
    args = parser.parse_args(argv)
    DATA.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(STUDIES):
        table = run_study(name)
        table.to_csv(STUDIES[name].path)
        print(f"{STUDIES[name].path.relative_to(DATA.parent.parent)}: {len(table)} runs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(arg.run_command(main))
