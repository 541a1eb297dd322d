"""Bad input to the pipeline library: every class of issue #16 (wrong types, empty input, out of range,
NaN/inf/complex, sizes beyond the course's limits) gets a ValueError that states the rule, or, from a
widget's pure function, the rule as the view's error. One table per module; see tests/bad_inputs.py."""

from __future__ import annotations

import math
import time

import pytest
from bad_inputs import (
    BAD,
    assert_teaches,
    assert_view_error,
    call_with,
    expand,
)
from patience import patient

from utils import inputs as arg
from utils.pipeline import compare, explore, plots, table2, virtual_stages
from utils.pipeline.costs import CostModel
from utils.pipeline.generators import bidirectional, chimera, linear, overlapped, virtual
from utils.pipeline.registry import SCHEDULE_NAMES, make_schedule, schedule_key, schedule_name
from utils.pipeline.schedule import (
    Action,
    OverlappedAction,
    Schedule,
    action_kind,
    action_parts,
    parse_action,
)
from utils.pipeline.simulate import ascii_timeline, simulate
from utils.pipeline.validation import validate

COSTS = CostModel(F=1, B=2, W=1)
S14 = make_schedule("1f1b", 4, 8)
TL = simulate(S14, COSTS)
DP = make_schedule("dualpipe", 4, 8)

# (function, a valid call, {parameter: kind of bad values or the bad values themselves})
TABLE = [
    (make_schedule, dict(name="1f1b", n_ranks=4, n_microbatches=8),
     {"name": [3, None, "", "pipedream", ["1f1b"]], "n_ranks": "count", "n_microbatches": "count"}),
    (schedule_key, dict(name="1f1b"), {"name": [3, None, ["1f1b"]]}),
    (schedule_name, dict(name="1f1b"), {"name": [3, None, "pipedream"]}),
    (linear.gpipe, dict(n_ranks=2, n_microbatches=2), {"n_ranks": "count", "n_microbatches": "count"}),
    (bidirectional.dualpipe_phase_steps, dict(half_ranks=2, half_rank=1, chunks_per_direction=4),
     {"half_ranks": "count", "half_rank": BAD["index"] + [2, 9], "chunks_per_direction": [0, 3, 2.5, None]}),
    (overlapped.overlap_warmup, dict(n_ranks=4, rank=1, n_microbatches=8),
     {"rank": BAD["index"] + [4], "n_ranks": "count", "lead": [0, 1.5, None]}),
    (virtual.interleaved_rounds, dict(n_ranks=4, n_microbatches=8), {"n_ranks": "count", "n_microbatches": "count"}),
    (virtual.interleaved_1f1b, dict(n_ranks=2, n_microbatches=4), {"chunks_per_rank": [0, 1.5, None, 10_000]}),
    (virtual.interleaved_rank_actions, dict(rank=0, n_ranks=2, n_microbatches=4, v=2, warmup=3),
     {"rank": BAD["index"] + [2], "v": "count", "warmup": [-1, 1.5, None]}),
    (virtual.zbv_fill_microbatches, dict(n_ranks=4), {"n_ranks": "count"}),
    (chimera.chimera, dict(n_ranks=4, n_microbatches=8),
     {"n_ranks": BAD["count"] + [3, 5], "n_microbatches": BAD["count"] + [2, 6, 9]}),
    (chimera.chimera_phase_steps, dict(n_ranks=4, rank=1), {"n_ranks": BAD["count"] + [3], "rank": BAD["index"] + [4]}),
    (chimera.chimera_bubble, dict(pp=4, n_microbatches=8, F=1, B=2),
     {"pp": BAD["count"] + [3], "n_microbatches": BAD["count"] + [2, 6], "F": "nonneg", "B": "nonneg"}),
    (chimera.chimera_peak_activations, dict(pp=4, rank=0), {"pp": BAD["count"] + [3], "rank": BAD["index"] + [4]}),
    (chimera.dualpipe_over_chimera, dict(), {}),
    (Action, dict(stage=0, kind="F", microbatch=0),
     {"stage": BAD["index"], "microbatch": BAD["index"], "kind": ["X", 3, None, "f"]}),
    (OverlappedAction, dict(forward=Action(0, "F", 1), backward=Action(0, "B", 0)),
     {"forward": ["0F1", None, Action(0, "B", 1)], "backward": ["0B0", None, Action(0, "W", 0)]}),
    (parse_action, dict(text="1F0"), {"text": [3, None, "", "1X0", "F10", ["1F0"]]}),
    (action_parts, dict(action=Action(0, "F", 0)), {"action": ["0F0", None, 3]}),
    (action_kind, dict(action=Action(0, "F", 0)), {"action": ["0F0", None, 3]}),
    (Schedule, dict(name="s", n_ranks=1, n_microbatches=1, stage_to_rank=(0,), stage_to_chunk=(0,),
                    routes=((0,),), actions=((Action(0, "F", 0), Action(0, "B", 0)),)),
     {"name": [3, None, ""], "n_ranks": "count", "n_microbatches": "count", "stage_to_rank": [0, "0", [0.5]],
      "routes": [0, [[None]]], "actions": [None, 5]}),
    (CostModel, dict(F=1, B=2, W=1),
     {"F": "positive", "B": "positive", "W": "nonneg", "FB": BAD["real"][:-3] + [-1.0, 100.0],
      "p2p": "nonneg", "dispatch": "nonneg", "combine": "nonneg"}),
    (COSTS.duration, dict(action="F"), {"action": ["X", 3, None]}),
    (simulate, dict(schedule=S14, costs=COSTS), {"schedule": [None, "1f1b", 3], "costs": [None, 1.0, (1, 2, 1)],
                                                 "check": "flag"}),
    (validate, dict(schedule=S14), {"schedule": [None, "1f1b"]}),
    (ascii_timeline, dict(timeline=TL), {"timeline": [None, S14], "width": "count"}),
    (TL.busy, dict(rank=0), {"rank": BAD["index"] + [4]}),
    (TL.idle, dict(rank=0), {"rank": BAD["index"] + [4]}),
    (TL.budget, dict(rank=0), {"rank": BAD["index"] + [4]}),
    (TL.peak_activations, dict(rank=0), {"rank": BAD["index"] + [4]}),
    (TL.param_copies, dict(rank=0), {"rank": BAD["index"] + [4]}),
    (TL.activation_events, dict(rank=0), {"rank": BAD["index"] + [4]}),
    (TL.to_chrome_trace, dict(), {"us_per_unit": "positive"}),
    (S14.stages_on, dict(rank=0), {"rank": BAD["index"] + [4]}),
    (S14.route_of, dict(microbatch=0), {"microbatch": BAD["index"] + [8]}),
    (S14.prev_stage, dict(stage=1, microbatch=0), {"stage": [9, None], "microbatch": [8, None]}),
    (table2.bubble_1f1b, dict(pp=4, F=1, B=2), {"pp": "count", "F": "nonneg", "B": "nonneg"}),
    (table2.bubble_zb1p, dict(pp=4, F=1, B=2, W=1), {"pp": "count", "W": "nonneg"}),
    (table2.bubble_dualpipe, dict(pp=4, FB=3, B=2, W=1), {"pp": BAD["count"] + [1, 3], "FB": "nonneg"}),
    (table2.peak_activations, dict(method="dualpipe", pp=4), {"method": [3, None, "gpipe"], "pp": [0, 2.5, 3]}),
    (table2.param_copies, dict(method="1f1b"), {"method": [3, None, "naive"]}),
    (table2.bubble, dict(method="1f1b", pp=4, costs=COSTS), {"costs": [None, 1.0]}),
    (table2.assumptions_hold, dict(method="zb1p", costs=COSTS, pp=4, n_microbatches=8),
     {"costs": [None], "pp": "count", "n_microbatches": "count"}),
    (table2.simulated_table2, dict(pp=4, n_microbatches=8, costs=COSTS), {"pp": [0, 3, 2.5, None], "costs": [None]}),
    (virtual_stages.bubble_interleaved, dict(pp=4, F=1, B=2), {"pp": "count", "F": "nonneg", "v": "count"}),
    (virtual_stages.peak_activations_interleaved, dict(rank=0, pp=4, m=8),
     {"rank": BAD["index"] + [4], "m": "count", "v": "count"}),
    (virtual_stages.bubble_zbv, dict(pp=4, F=1), {"pp": "count", "F": "nonneg"}),
    (virtual_stages.peak_activations_zbv, dict(rank=0, pp=4, m=8), {"rank": BAD["index"] + [4], "m": "count"}),
    (virtual_stages.chunk_costs, dict(costs=COSTS, v=2), {"costs": [None, 1.0], "v": "count"}),
    (virtual_stages.inner_idle, dict(timeline=TL, rank=0), {"timeline": [None, S14], "rank": BAD["index"] + [4]}),
    (virtual_stages.p2p_messages, dict(schedule=S14), {"schedule": [None, "1f1b"]}),
    (virtual_stages.bubble_vs_chunks, dict(pp=2, m=4, costs=COSTS), {"pp": "count", "chunks": [[0], [1.5], 3]}),
    (plots.direction, dict(schedule=DP, stage=5), {"schedule": [None, "dualpipe"], "stage": [-1, 1.5, None]}),
    (plots.plot_timeline, dict(timeline=TL),
     {"timeline": [None, S14], "title": [3], "labels": ["yes", 1], "legend": [None, "no"], "highlight": [3],
      "xlim": [(5, 1), (0,), "0-9", (0, math.nan)]}),
    (plots.activations_over_time, dict(timeline=TL, rank=0), {"timeline": [None], "rank": BAD["index"] + [4]}),
    (plots.plot_memory, dict(timeline=TL), {"ranks": [[9], [-1], 3, ["0"]], "title": [3]}),
    (plots.idle_frame, dict(timelines_by_schedule={"1f1b": TL}),
     {"timelines_by_schedule": [{}, None, [TL], {"1f1b": S14}, {3: TL}]}),
    (plots.plot_timelines_side_by_side, dict(simulated=TL, measured=TL),
     {"simulated": [None], "measured": [S14], "titles": [("a",), "ab", (1, 2)]}),
    (plots.TimelineCanvas, dict(), {"width": "positive"}),
    (explore.closed_form, dict(schedule=S14, costs=COSTS), {"schedule": [None], "costs": [None, 1.0]}),
    (explore.simulated_quantities, dict(timeline=TL), {"timeline": [None, S14]}),
    (explore.summary_table, dict(timeline=TL, costs=COSTS), {"timeline": [None], "costs": [None]}),
    (explore.dualpipe_phase_lengths, dict(schedule=DP, rank=0), {"schedule": [None], "rank": BAD["index"] + [4, 9]}),
    (explore.dualpipe_phase_of, dict(schedule=DP), {"schedule": [None, "dualpipe"]}),
    (explore.with_rank_actions, dict(schedule=S14, rank=0, actions=["0F0"]),
     {"schedule": [None], "rank": BAD["index"] + [4], "actions": [None, "0F0", 3, [3], ["0X0"]]}),
    (explore.rank_action_strings, dict(name="1f1b", rank=0, n_ranks=4, n_microbatches=8),
     {"rank": BAD["index"] + [4, 9], "n_ranks": "count"}),
    (explore.rank_answer_report, dict(name="1f1b", rank=0, n_ranks=4, n_microbatches=8, answer=[]),
     {"rank": BAD["index"] + [4, 9], "answer": [None, 3, "0F0 0B0"], "costs": [1.0, "cheap"]}),
    (explore.RankListJudge, dict(name="1f1b"), {"name": [3, None, "pipedream"], "costs": [1.0]}),
    (explore.dualpipe_as_dualpipev, dict(schedule=DP), {"schedule": [None, "dualpipe", S14]}),
    (compare.costs_per_stage, dict(name="1f1b", costs=COSTS), {"name": [3, None], "costs": [None, 1.0]}),
    (compare.comparison_table, dict(ranks=[2, 4], microbatches=8, costs=COSTS),
     {"ranks": [4, [0], [2.5], None, "2,4"], "microbatches": [[8], 0, 2.5], "costs": [None],
      "vary": ["stages", None], "schedules": [("pipedream",), None, "1f1b"]}),
    (compare.fair_steps, dict(ranks=4, microbatches=8, costs=COSTS, rank=0),
     {"ranks": [0, 2.5, None], "microbatches": [0, None], "costs": [None], "rank": [r for r in BAD["index"] if r is not None] + [4]}),
    (compare.without_pairs, dict(schedule=DP), {"schedule": [None, "dualpipe"]}),
    (compare.bubble_sources, dict(ranks=4, microbatches=8, costs=COSTS),
     {"ranks": [3, 0, None], "microbatches": [6, 0, None], "costs": [None, 1.0]}),
    (compare.over_chimera, dict(ranks=4, microbatches=8, costs=COSTS),
     {"ranks": [3, 0, None], "microbatches": [6, 0, None], "costs": [None, 1.0], "rank": BAD["index"] + [4]}),
]


@pytest.mark.parametrize("fn, kwargs, parameter, value", expand(TABLE))
def test_bad_input_gets_a_teaching_error(fn, kwargs, parameter, value):
    assert_teaches(call_with(fn, kwargs, parameter, value))


@pytest.mark.parametrize("fn, kwargs", [(fn, kwargs) for fn, kwargs, _ in TABLE],
                         ids=[getattr(fn, "__qualname__", str(fn)) for fn, _, _ in TABLE])
def test_the_valid_calls_of_the_table_run(fn, kwargs):
    fn(**kwargs)  # the table's bad values are bad because of the one value changed, nothing else


def test_the_errors_name_what_was_given_and_the_rule():
    message = assert_teaches(lambda: make_schedule("1f1b", 2.5, 8), "n_ranks", "whole number", "2.5")
    assert message.startswith("1f1b: ")
    assert_teaches(lambda: parse_action(3), "parse_action", "string", "'1F0'")
    assert_teaches(lambda: Action("a", "F", 0), "stage", "whole number")
    assert_teaches(lambda: Action(0.5, "F", 0), "stage", "0.5")
    assert_teaches(lambda: CostModel(F=1e308, B=2, W=1), "MAX_COST")
    assert_teaches(lambda: CostModel(F=1 + 1j, B=2, W=1), "complex")
    assert_teaches(lambda: explore.dualpipe_phase_lengths(DP, 9), "rank", "0 to 3")
    # a Schedule checks the types of its fields (a string count read as "2" would break every rule later)
    assert_teaches(lambda: Schedule("s", "2", 1, (0,), (0,), ((0,),), ((),)), "n_ranks", "'2'")


def test_a_schedule_built_from_lists_becomes_tuples_and_runs():
    # lists are what a learner writes by hand: accepted and frozen, never "unhashable type: 'list'"
    s = Schedule(name="mine", n_ranks=1, n_microbatches=2, stage_to_rank=[0], stage_to_chunk=[0],
                 routes=[[0], [0]], actions=[["0F0", "0B0"] and [Action(0, "F", 0), Action(0, "B", 0),
                                                                 Action(0, "F", 1), Action(0, "B", 1)]])
    assert isinstance(s.routes[0], tuple) and isinstance(s.actions[0], tuple)
    assert simulate(s, COSTS).makespan == 6


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("ranks, microbatches, limit", [
    (arg.MAX_RANKS + 1, 8, "MAX_RANKS"), (1_000_000, 8, "MAX_RANKS"), (4, arg.MAX_MICROBATCHES + 1, "MAX_MICROBATCHES"),
    (100_000, 100_000, "MAX_RANKS")])
def test_every_schedule_refuses_sizes_beyond_the_limits_at_once(name, ranks, microbatches, limit):
    start = time.perf_counter()
    message = assert_teaches(lambda: make_schedule(name, ranks, microbatches), limit)
    assert time.perf_counter() - start < patient(1.0), "the limit is checked before any action is built"
    assert "at most" in message


def test_the_largest_schedules_the_limits_allow_still_build():
    schedule = make_schedule("dualpipe", arg.MAX_RANKS, arg.MAX_MICROBATCHES)
    assert schedule.n_ranks == arg.MAX_RANKS and schedule.n_microbatches == arg.MAX_MICROBATCHES


def test_costs_too_large_are_refused_so_no_makespan_is_infinite():
    assert_teaches(lambda: CostModel(F=1e308, B=1e308, W=0), "MAX_COST")
    big = CostModel(F=arg.MAX_COST, B=arg.MAX_COST, W=0)
    assert math.isfinite(simulate(make_schedule("gpipe", 8, 64), big).makespan)


# ------------------------------------------------------------------------ the widgets' pure functions

VIEWS = [
    (explore.explore_schedule, dict(name="1f1b", ranks=4, microbatches=8, plot=False),
     {"name": [3, None, "pipedream"], "ranks": BAD["count"] + [2000], "microbatches": BAD["count"] + [4000],
      "F": "positive", "B": "positive", "W": "nonneg", "FB": [math.nan, -1.0, "3"], "p2p": "nonneg",
      "labels": ["yes", 2], "plot": ["no", None]}),
    (compare.explore_comparison, dict(vary="ranks", ranks=4, microbatches=8, schedules=("1f1b",)),
     {"vary": ["stages", None, 3], "ranks": BAD["count"] + [10_000], "microbatches": BAD["count"] + [10_000],
      "F": "positive", "p2p": "nonneg"}),
]


@pytest.mark.parametrize("fn, kwargs, parameter, value", expand(VIEWS))
def test_widget_functions_show_the_rule_instead_of_a_traceback(fn, kwargs, parameter, value):
    start = time.perf_counter()
    view = fn(**{**kwargs, parameter: value})
    assert_view_error(view)
    assert time.perf_counter() - start < patient(5.0), "a bad setting is refused before any simulation"


def test_the_explorer_at_a_huge_size_answers_at_once_with_the_limit():
    start = time.perf_counter()
    view = explore.explore_schedule("zb1p", 2000, 4000)
    assert time.perf_counter() - start < patient(1.0)
    assert_view_error(view, "MAX_RANKS")


def test_a_learner_list_that_is_not_a_list_is_explained_by_the_judge(capsys):
    judge = explore.RankListJudge("1f1b")
    judge.reference(0, 4, 8)
    judge.show(None, [])  # a stub that returned None: a sentence, not a traceback
    assert "answer must be a list or tuple" in capsys.readouterr().out
