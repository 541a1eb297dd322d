"""Bad input to the schedule search (utils.pipeline.optimal, its puzzle and figures, python -m utils.optimal):
a ValueError that states the rule, or from the command line one line ``error: <the rule>`` and status 2,
checked before any search starts. See tests/bad_inputs.py."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import BAD, assert_teaches, call_with, expand

from utils.pipeline import optimal_figures
from utils.pipeline.costs import CostModel
from utils.pipeline.optimal import cli, precomputed, problem, solve
from utils.pipeline.puzzles.optimal import match_the_solver_puzzle
from utils.pipeline.registry import make_schedule

ROOT = Path(__file__).resolve().parents[1]
COSTS = CostModel(F=1, B=2, W=1)
S = make_schedule("1f1b", 2, 2)
TIMES = [0, -1.0, math.nan, math.inf, "1", None, True, 1e9]

# (function, a valid call, {parameter: kind of bad values or the bad values themselves})
TABLE = [
    (solve.optimal_schedule, dict(n_ranks=2, n_microbatches=2, costs=COSTS),
     {"n_ranks": "count", "n_microbatches": "count", "costs": [None, 1.0, (1, 2, 1)],
      "placement": ["x", 3, None, "V"], "split_backward": "flag", "pairs": "flag",
      "max_activations": [0, -1, 1.5, "2", True], "time_limit": TIMES}),
    (solve.optimal_for, dict(schedule=S, costs=COSTS),
     {"schedule": [None, "1f1b", 3], "costs": [None, 1.0], "same_memory": "flag", "time_limit": TIMES}),
    (problem.placement, dict(name="linear", n_ranks=2, n_microbatches=2),
     {"name": ["x", 3, None], "n_ranks": "count", "n_microbatches": "count"}),
    (problem.placement_of, dict(schedule=S), {"schedule": [None, "1f1b"]}),
    (problem.own_rules, dict(schedule=S), {"schedule": [None, "1f1b"]}),
    (problem.min_activations, dict(layout=S), {"layout": [None, "linear"]}),
    (problem.action_lengths, dict(costs=COSTS), {"costs": [None, 1.0, "cheap", [1, 2, 1]]}),
    (match_the_solver_puzzle, dict(n_ranks=2, n_microbatches=2),
     {"n_ranks": "count", "n_microbatches": BAD["count"] + [100], "costs": [None, 1.0]}),
    (optimal_figures.comparison_table, dict(), {"all_to_all": "flag"}),
    (optimal_figures.plot_schedule_and_optimum, dict(name="1f1b"),
     {"name": ["gpipe", None, 3], "all_to_all": "flag", "same_memory": "flag"}),
    (precomputed.load_precomputed, dict(), {"path": [str(ROOT / "no" / "such.json")]}),
]


@pytest.mark.parametrize("fn, kwargs, parameter, value", expand(TABLE))
def test_bad_input_gets_a_teaching_error(fn, kwargs, parameter, value):
    assert_teaches(call_with(fn, kwargs, parameter, value))


@pytest.mark.parametrize("fn, kwargs", [(fn, kwargs) for fn, kwargs, _ in TABLE],
                         ids=[getattr(fn, "__qualname__", str(fn)) for fn, _, _ in TABLE])
def test_the_valid_calls_of_the_table_run(fn, kwargs):
    fn(**kwargs)  # the table's bad values are bad because of the one value changed, nothing else


def test_the_rules_of_a_search_are_named():
    assert_teaches(lambda: solve.optimal_schedule(2, 4, CostModel(F=1.0001, B=2, W=1)), "tick", "F 1.0001")
    assert_teaches(lambda: solve.optimal_schedule(2, 4, CostModel(F=1, B=2, W=0), split_backward=True),
                   "take time", "W")
    assert_teaches(lambda: solve.optimal_schedule(2, 4, CostModel(F=1, B=2, W=1, p2p=0.0005)), "tick", "p2p")
    assert_teaches(lambda: solve.optimal_schedule(2, 4, CostModel(F=1, B=2, W=1, chunk_scale=(1, 2))),
                   "chunk_scale", "same")
    assert_teaches(lambda: solve.optimal_schedule(3, 4, COSTS, "bidirectional"), "even")
    assert_teaches(lambda: solve.optimal_schedule(16, 16, COSTS), "MAX_STAGE_PASSES")
    assert_teaches(lambda: solve.optimal_schedule(2, 4, COSTS, "v", max_activations=1), "max_activations", "2")
    assert_teaches(lambda: solve.optimal_schedule(2, 4, COSTS, placement=S), "placement", "agree")
    assert_teaches(lambda: precomputed.precompute(time_limit=-1), "time_limit")
    assert_teaches(lambda: optimal_figures.plot_gap_vs_cap(None), "table")
    assert_teaches(lambda: optimal_figures.plot_gap_vs_cap(optimal_figures.comparison_table()), "table", "cap")


CASES = [
    (["--ranks", "0", "--microbatches", "4"], "at least 1"),
    (["--ranks", "2", "--microbatches", "4", "--F", "1.0001"], "tick"),
    (["--ranks", "2", "--microbatches", "4", "--comm-share", "1"], "comm_share"),
    (["--ranks", "2", "--microbatches", "4", "--chunk-scale", "1,x"], "chunk-scale"),
    (["--ranks", "2", "--microbatches", "4", "--F", "nan"], "finite"),
    (["--ranks", "2"], "required"),
    (["--ranks", "2", "--microbatches", "3", "--placement", "bidirectional"], "even"),
    (["--ranks", "2", "--microbatches", "4", "--placement", "zigzag"], "invalid choice"),
    (["--ranks", "2", "--microbatches", "4", "--max-activations", "0"], "max_activations"),
    (["--ranks", "2", "--microbatches", "4", "--time-limit", "0"], "time_limit"),
    (["--ranks", "16", "--microbatches", "16"], "MAX_STAGE_PASSES"),
    (["--ranks", "2", "--microbatches", "4", "--W", "0", "--split-backward"], "take time"),
    (["--rank", "2", "--microbatches", "4"], "unrecognized"),
    (["--precompute", "--time-limit", "-1"], "time_limit"),
]


@pytest.mark.parametrize("argv, rule", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_the_command_line_answers_bad_input_in_one_line(capsys, argv, rule):
    try:
        status = cli.main(argv)
    except SystemExit as stop:  # argparse's usage errors
        status = stop.code
    assert status == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert rule.lower() in err.lower(), err


def test_the_real_command_line_says_it_the_same_way_and_answers_help():
    bad = subprocess.run([sys.executable, "-m", "utils.optimal", "--ranks", "2"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.startswith("error: ")
    assert len(bad.stderr.splitlines()) == 1
    helped = subprocess.run([sys.executable, "-m", "utils.optimal", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and "usage" in helped.stdout.lower() and "--placement" in helped.stdout
