"""The seed studies (utils.studies, data/studies/): stored files, the comparison rules, and a fresh run.

The stored files were made by `python -m utils.studies`; a fresh run on another CPU follows another
trajectory, so it is checked against the stored row within the setting's own seed-to-seed spread, not bit
for bit: that catches a changed experiment (other steps, data, model) without failing on another machine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lazy import lazy_module

from utils.studies import STUDIES, compare_to_baseline, load_study, paired_gaps, spread, verdict

nbformat = lazy_module("nbformat")   # imported when a test first uses it, not while collecting


@pytest.mark.parametrize("name", list(STUDIES))
def test_every_study_is_stored_with_every_seed_of_every_setting(name):
    study = STUDIES[name]
    table = load_study(name)
    assert table.index.names == [study.group, "seed"]
    settings = table.index.get_level_values(0).unique()
    assert len(settings) >= 3
    for setting in settings:
        assert tuple(table.loc[setting].index) == study.seeds
    assert not table.isna().any().any()
    assert (table.select_dtypes("number") >= 0).all().all()


def test_the_notebooks_read_their_study():
    for study in STUDIES.values():
        notebook = nbformat.read(study.path.parents[2] / "notebooks" / f"{study.notebook}.ipynb", as_version=4)
        code = "".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
        assert f'load_study("{study.name}")' in code, study.notebook


def _table(baseline, other):
    rows = [{"setting": s, "seed": i, "loss": v} for s, values in (("base", baseline), ("other", other))
            for i, v in enumerate(values)]
    return pd.DataFrame(rows).set_index(["setting", "seed"])


def test_compare_to_baseline_against_a_hand_computed_case():
    # other = base + 1 exactly: the paired gap is 1 with no spread; base's own seed spread is its std, 1.
    table = _table([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    row = compare_to_baseline(table, "loss", "base").loc["other"]
    assert row["mean gap"] == 1 and row["std of gap"] == 0 and row["baseline's seed spread"] == 1
    assert bool(row["within the spread"]) and bool(row["resolved"])
    # relative: gaps 1/1, 1/2, 1/3 (mean 0.6111); spread std/mean = 1/2
    rel = compare_to_baseline(table, "loss", "base", relative=True).loc["other"]
    assert rel["mean gap"] == pytest.approx(0.6111, abs=1e-4) and rel["baseline's seed spread"] == 0.5
    assert not bool(rel["within the spread"])


def test_a_gap_smaller_than_the_seed_noise_is_neither_resolved_nor_outside_the_spread():
    base = np.array([1.0, 1.2, 0.8, 1.1, 0.9, 1.0, 1.15, 0.85])        # seed-to-seed spread about 0.14
    table = _table(base, base + np.array([0.05, -0.04, 0.03, -0.05, 0.04, -0.03, 0.02, -0.01]))
    row = compare_to_baseline(table, "loss", "base").loc["other"]
    assert bool(row["within the spread"]) and not bool(row["resolved"])


def test_paired_gaps_name_the_baseline_rule():
    with pytest.raises(ValueError, match="baseline"):
        paired_gaps(_table([1.0], [2.0]), "loss", "nope")


def test_spread_and_verdict():
    table = _table([1.0, 3.0], [2.0, 2.0])
    out = spread(table)
    assert out.loc["base", ("loss", "mean")] == 2 and out.loc["base", ("loss", "max")] == 3
    assert out.loc["other", ("loss", "std")] == 0
    assert verdict("is it", True) == "is it: yes" and verdict("is it", np.bool_(False)) == "is it: no"


def _close_to_stored(name, setting, seed, fresh: dict):
    stored = load_study(name)
    for column, value in fresh.items():
        noise = stored.loc[setting, column].std()
        assert abs(value - stored.loc[(setting, seed), column]) <= max(noise, 1e-3), (name, setting, column)


@pytest.mark.slow
def test_a_fresh_balancing_run_lands_within_the_stored_spread():
    from utils.moe.explore import DEFAULT_CONFIG, train_toy

    _, h = train_toy(DEFAULT_CONFIG.replace(balancing="bias"), seed=0)
    _close_to_stored("balancing", "bias (aux-loss-free)", 0, {
        "MaxVio (last 20 steps)": float(h.max_violation()[-20:].mean()), "held-out loss": h.eval_loss})


@pytest.mark.slow
def test_a_fresh_node_cap_run_lands_within_the_stored_spread():
    from utils.moe.explore import node_cap_row

    row = node_cap_row(1, seed=0)
    _close_to_stored("node_cap", 1, 0, {k: row[k] for k in ("cross-node MB (two-hop)", "held-out loss")})


@pytest.mark.slow
def test_a_fresh_fp8_run_lands_within_the_stored_spread():
    from utils.fp8.explore import train_in_precisions

    h = train_in_precisions(steps=100, precisions=("fp8",), seed=0)["fp8"]
    _close_to_stored("precisions", "fp8", 0, {"held-out loss": h.eval_loss,
                                              "train loss (last 20 steps)": float(np.mean(h.loss[-20:]))})


def test_t_critical_matches_students_table():
    from utils.studies import t_critical

    # two-sided 95% values of Student's t (any statistics table): df 1, 5, 7, 30, and the normal limit
    for df, value in ((1, 12.706), (5, 2.571), (7, 2.365), (30, 2.042), (100000, 1.960)):
        assert t_critical(df) == pytest.approx(value, abs=2e-3), df
    assert t_critical(7, 0.99) == pytest.approx(3.499, abs=2e-3)
    with pytest.raises(ValueError, match="df"):
        t_critical(0)
