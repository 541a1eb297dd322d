"""Bad input at the course level: the exercise checks, the capstone dashboard and its configuration, and the
limits README.md documents. The pure functions behind the widgets return the rule as the view's error."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from bad_inputs import BAD, assert_teaches, assert_view_error, call_with, expand

from utils import capstone
from utils import inputs as arg
from utils.checks import check, check_puzzle
from utils.pipeline.puzzles import PUZZLES

ROOT = Path(__file__).resolve().parents[1]
SMALL = capstone.PRESETS["classroom (small)"]

TABLE = [
    (check, dict(answer=abs, reference=abs, inputs=[(1,), (-2,)]),
     {"answer": [3, None], "inputs": [5, "ab"], "name": [3, ""], "hints": [5, "a hint", [3]],
      "hint": ["yes", -1, 1.5, None], "compare": [3], "show": ["draw"], "explain": [1], "rtol": "nonneg",
      "atol": "nonneg"}),
    (check_puzzle, dict(puzzle=PUZZLES["gpipe-memory-cap"], answer=lambda: None),
     {"puzzle": [None, "gpipe-memory-cap"], "answer": [[["0F0"]], None]}),
    (capstone.RecipeConfig, dict(),
     {"pp": BAD["count"] + [arg.MAX_RANKS + 2], "microbatches": BAD["count"] + [arg.MAX_MICROBATCHES + 1],
      "F": "positive", "B": "positive", "W": "nonneg", "FB": [math.nan, -1.0, 99.0], "comm_ratio": "nonneg",
      "ep_ranks": BAD["count"] + [3, 10_000], "nodes": BAD["count"] + [7], "experts": BAD["count"] + [100],
      "top_k": BAD["count"] + [300], "node_cap": BAD["count"] + [9], "d_model": BAD["count"] + [10**9],
      "tokens_per_rank": BAD["count"] + [10**7], "outlier": [0.5, math.nan, math.inf, "10", None],
      "seed": BAD["index"]}),
    (capstone.pipeline_table, dict(config=SMALL), {"config": [3, "classroom (small)", {"pp": 4}]}),
    (capstone.node_cap_table, dict(config=SMALL), {"config": [3]}),
    (capstone.fp8_table, dict(config=SMALL), {"config": [3]}),
    (capstone.routed_experts, dict(config=SMALL, max_nodes=2), {"config": [3], "max_nodes": BAD["count"] + [5]}),
    (capstone.bytes_per_value, dict(), {"granularity": ["tile", None, 3]}),
    (capstone.claims_table, dict(config=SMALL), {"config": [3, "report"]}),
]


@pytest.mark.parametrize("fn, kwargs, parameter, value", expand(TABLE))
def test_bad_input_gets_a_teaching_error(fn, kwargs, parameter, value, capsys):
    assert_teaches(call_with(fn, kwargs, parameter, value))


@pytest.mark.parametrize("fn, kwargs", [(fn, kwargs) for fn, kwargs, _ in TABLE if fn is not capstone.claims_table],
                         ids=[fn.__qualname__ for fn, _, _ in TABLE if fn is not capstone.claims_table])
def test_the_valid_calls_of_the_table_run(fn, kwargs, capsys):
    fn(**kwargs)


def test_the_examples_of_the_issue(capsys):
    assert_teaches(lambda: check(abs, abs, inputs=5), "inputs", "list or tuple")
    assert_teaches(lambda: check(1, 1, hint="yes"), "hint")
    assert_teaches(lambda: check(1.0, 1.0, rtol=-1e-3), "rtol")
    # a learner who passes the result of their function instead of the function gets the rule, not a crash
    assert_teaches(lambda: check(abs(-1), abs, inputs=[(1,)]), "answer", "function")


@pytest.mark.parametrize("overrides, words", [
    (dict(pp=3), ("even",)), (dict(microbatches=0), ("microbatches",)), (dict(top_k=300), ("top_k", "16")),
    (dict(pp=4, microbatches=6), ("micro-batches",)), (dict(nodes=0), ("nodes",)),
    (dict(tokens_per_rank=0), ("tokens_per_rank",)), (dict(comm_ratio=math.nan), ("comm_ratio",)),
    (dict(colour="blue"), ("colour", "settings")), (dict(outlier=1e40), ("outlier",)),
    (dict(pp=10_000), ("MAX_RANKS",)), (dict(F=1e308), ("MAX_COST",)), (dict(plot="yes"), ("plot",)),
    (dict(config="classroom (small)"), ("config",)), (dict(experts=6, ep_ranks=4, nodes=2, top_k=2), ("divisible",)),
])
def test_the_dashboard_shows_the_rule_instead_of_a_nan_row_or_a_traceback(overrides, words):
    base = {} if "config" in overrides else {"config": SMALL}
    view = capstone.recipe_dashboard(**{**base, "plot": False, **overrides})
    assert_view_error(view, *words)


def test_the_dashboard_still_draws_a_valid_configuration():
    view = capstone.recipe_dashboard(SMALL, plot=False)
    assert view.error is None and not view.pipeline.isna().any().any()


# ------------------------------------------------------------------------------------------- limits

def test_every_limit_has_a_name_a_value_and_a_reason():
    assert set(arg.LIMITS) >= {"MAX_RANKS", "MAX_MICROBATCHES", "MAX_WORLD_SIZE", "MAX_COST", "MAX_ELEMENTS"}
    for name, limit in arg.LIMITS.items():
        assert limit.name == name and int(limit) > 0 and len(limit.why) > 30


def test_readme_documents_every_limit_and_why():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Limits"):]
    section = section[:section.index("\n## ", 5)] if "\n## " in section[5:] else section
    for name, limit in arg.LIMITS.items():
        assert name in section, f"README's Limits section does not mention {name}"
        assert re.search(rf"{name}\D+{int(limit):,}|{int(limit):,}\D+{name}|{name}\D+{int(limit)}\b", section) or \
            f"{int(limit):,}" in section or str(int(limit)) in section, f"README does not give {name}'s value"
