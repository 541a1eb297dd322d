"""The pure functions behind the pipeline widgets: their tables are the simulator's and Table 2's numbers."""

import math
from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from utils.pipeline import compare as pc  # noqa: E402
from utils.pipeline import explore as pe  # noqa: E402
from utils.pipeline import table2  # noqa: E402
from utils.pipeline.costs import CostModel  # noqa: E402
from utils.pipeline.registry import make_schedule
from utils.pipeline.schedule import Action, OverlappedAction  # noqa: E402
from utils.pipeline.simulate import simulate


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("name,ranks,mb", [("1f1b", 4, 8), ("zb1p", 4, 8), ("dualpipe", 4, 8),
                                           ("dualpipev", 2, 8), ("gpipe", 3, 5), ("naive", 2, 3)])
def test_table_values_are_the_simulators(name, ranks, mb):
    view = pe.explore_schedule(name, ranks, mb, F=1.0, B=2.0, W=1.0, FB=2.5, p2p=0.0)
    assert view.error is None
    timeline = simulate(make_schedule(name, ranks, mb), CostModel(F=1.0, B=2.0, W=1.0, FB=2.5))
    sim = view.table["simulated"]
    assert sim["step time (makespan)"] == timeline.makespan
    assert sim["bubble: largest idle of any rank"] == timeline.worst_idle
    assert sim["bubble ratio"] == timeline.bubble_ratio
    assert sim["peak activations (largest of any rank)"] == max(timeline.peak_activations(r) for r in range(ranks))
    assert sim["stages held per rank (parameters)"] == max(timeline.param_copies(r) for r in range(ranks))


@pytest.mark.parametrize("name,ranks,pp",
                         [("1f1b", 4, 4), ("zb1p", 8, 8), ("dualpipe", 4, 4), ("dualpipev", 4, 8)])
def test_table2_column_is_utils_table2(name, ranks, pp):
    costs = CostModel(F=1.0, B=2.0, W=1.0, FB=2.5)
    view = pe.explore_schedule(name, ranks, 4 * pp, F=1.0, B=2.0, W=1.0, FB=2.5)
    column = view.table["closed form"]
    assert column["bubble: largest idle of any rank"] == table2.bubble(name, pp, costs)
    assert column["peak activations (largest of any rank)"] == table2.peak_activations(name, pp)
    assert column["stages held per rank (parameters)"] == table2.param_copies(name)
    assert math.isnan(column["step time (makespan)"])
    # F = B - W and W <= F: the assumptions hold, so simulation and formula agree (the report's Table 2).
    assert view.table["agrees"].dropna().tolist() == [True, True, True]
    assert "hold" in view.note


def test_table2_breaks_when_its_assumption_breaks():
    """DualPipe's formula assumes F = B - W; with F = 1, B = 3, W = 1 the simulated bubble differs."""
    view = pe.explore_schedule("dualpipe", 4, 8, F=1.0, B=3.0, W=1.0, FB=3.5)
    assert view.table.loc["bubble: largest idle of any rank", "agrees"] is False
    assert "F = B - W" in view.note


def test_schedules_outside_table2_have_no_formula():
    view = pe.explore_schedule("gpipe", 4, 8)
    assert view.table["closed form"].isna().all()
    assert "does not list gpipe" in view.note


@pytest.mark.parametrize("args,fragment", [
    (("dualpipe", 3, 8), "even number of ranks"),
    (("dualpipe", 4, 6), "at least 2 x ranks"),
    (("dualpipev", 4, 4), "micro-batches"),
    (("1f1b", 4, 8, 1.0, 2.0, 3.0), "W <= B"),
    (("1f1b", 4, 8, 1.0, 2.0, 1.0, 1.5), "F&B"),
    (("1f1b", 4, 8, -1.0), "negative"),
    (("pipedream", 4, 8), "Unknown schedule"),
])
def test_invalid_input_yields_the_message_not_an_exception(args, fragment):
    view = pe.explore_schedule(*args)
    assert view.figure is None and view.table is None
    assert fragment in view.error


def test_figure_has_title_labels_legend():
    view = pe.explore_schedule("dualpipe", 4, 8)
    ax = view.figure.axes[0]
    assert "dualpipe" in ax.get_title() and ax.get_xlabel().startswith("time") and ax.get_ylabel() == "rank"
    assert ax.get_legend() is not None
    assert view.result.makespan == view.table.loc["step time (makespan)", "simulated"]


def test_dualpipev_costs_are_halved_in_comparison():
    costs = CostModel(F=1.0, B=2.0, W=1.0, FB=3.0, p2p=0.5)
    half = pc.costs_per_stage("dualpipev", costs)
    assert (half.F, half.B, half.W, half.FB, half.p2p) == (0.5, 1.0, 0.5, 1.5, 0.5)
    assert pc.costs_per_stage("dualpipe", costs) is costs


def test_comparison_table_matches_simulator_and_reports_invalid_settings():
    costs = CostModel(F=1.0, B=2.0, W=1.0, FB=3.0)
    fig, table = pc.compare_schedules([2, 3, 4], 8, costs, vary="ranks")
    row = table[(table.schedule == "zb1p") & (table.ranks == 4)].iloc[0]
    timeline = simulate(make_schedule("zb1p", 4, 8), costs)
    assert row.bubble == timeline.worst_idle and row.makespan == timeline.makespan
    assert row.table2_idle == table2.bubble("zb1p", 4, costs)
    v_row = table[(table.schedule == "dualpipev") & (table.ranks == 4)].iloc[0]
    v_timeline = simulate(make_schedule("dualpipev", 4, 8), pc.costs_per_stage("dualpipev", costs))
    assert v_row.bubble == v_timeline.worst_idle
    odd = table[(table.schedule == "dualpipe") & (table.ranks == 3)].iloc[0]
    assert math.isnan(odd.bubble) and "even number of ranks" in odd.note
    left, right = fig.axes[:2]
    assert left.get_title() and left.get_xlabel() == "pipeline ranks (devices)" and "idle" in left.get_ylabel()
    assert left.get_legend() is not None and right.get_legend() is not None
    assert fig._suptitle is not None


def test_comparison_over_microbatches():
    costs = CostModel(F=1.0, B=2.0, W=1.0, FB=3.0)
    _, table = pc.compare_schedules(4, [8, 16], costs, vary="microbatches", schedules=("1f1b", "gpipe"))
    assert sorted(set(table.microbatches)) == [8, 16] and set(table.ranks) == {4}
    assert (table.bubble == 9.0).all(), "1F1B and GPipe idle (PP-1)(F+B) whatever the micro-batches"


@pytest.mark.parametrize("kwargs,fragment", [
    ({"ranks": 4, "microbatches": 8, "vary": "stages"}, "vary must be"),
    ({"ranks": 4, "microbatches": 8, "vary": "ranks"}, "sequence of ranks"),
    ({"ranks": [2, 4], "microbatches": 8, "vary": "ranks", "schedules": ("pipedream",)}, "Unknown"),
])
def test_comparison_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        pc.compare_schedules(costs=CostModel(1.0, 2.0, 1.0), **kwargs)


def test_explore_comparison_views():
    view = pc.explore_comparison("microbatches", ranks=2, microbatches=8)
    assert view.error is None
    assert sorted(set(view.table.microbatches)) == [4 * k for k in pc.MICROBATCH_MULTIPLES]
    bad = pc.explore_comparison("ranks", W=3.0)
    assert bad.figure is None and "W <= B" in bad.error


@pytest.mark.parametrize("name,ranks,mb", [("dualpipe", 2, 4), ("dualpipe", 4, 8), ("dualpipe", 8, 20),
                                           ("dualpipev", 1, 2), ("dualpipev", 3, 7), ("dualpipev", 4, 8)])
def test_dualpipe_phase_lengths_cover_every_action(name, ranks, mb):
    schedule = make_schedule(name, ranks, mb)
    for rank in range(ranks):
        lengths = pe.dualpipe_phase_lengths(schedule, rank)
        assert len(lengths) == 8 and sum(lengths) == len(schedule.actions[rank])
        # phase 1 is forwards only and phase 8 weights only, as the report's figure shows
        acts = schedule.actions[rank]
        assert all(isinstance(a, Action) and a.kind == "F" for a in acts[: lengths[0]])
        assert all(isinstance(a, Action) and a.kind == "W" for a in acts[-lengths[7]:])
    of = pe.dualpipe_phase_of(schedule)
    assert len(of) == sum(len(a) for a in schedule.actions)


def test_phase_lengths_refuse_other_schedules():
    with pytest.raises(ValueError, match="eight phases"):
        pe.dualpipe_phase_lengths(make_schedule("1f1b", 2, 2), 0)


def test_plot_dualpipe_phases_fades_later_phases():
    timeline = simulate(make_schedule("dualpipe", 4, 8), CostModel(1.0, 2.0, 1.0, 3.0))
    fig = pe.plot_dualpipe_phases(timeline, phases=[0, 7])
    first, last = fig.axes[:2]
    assert "phase 1" in first.get_title() and "phase 8" in last.get_title()
    assert len(first.texts) < len(last.texts), "only the phases shown so far are labelled"


def test_rank_list_judge_accepts_the_reference_and_explains_a_bad_list(capsys):
    judge = pe.RankListJudge("1f1b")
    expected = judge.reference(1, 4, 8)
    assert expected == [str(a) for a in make_schedule("1f1b", 4, 8).actions[1]]
    verdict, fig = pe.rank_answer_report("1f1b", 1, 4, 8, expected)
    assert verdict.startswith("your list runs") and fig is not None
    backward_first = [expected[-1], *expected[:-1]]   # 1B7 before 1F7: breaks "F before its B"
    judge.show(backward_first, expected)
    assert "cannot run" in capsys.readouterr().out
    all_forwards_first = sorted(expected, key=lambda a: a[1] == "B")   # GPipe order among 1F1B neighbours
    verdict, fig = pe.rank_answer_report("1f1b", 1, 4, 8, all_forwards_first)
    assert "cannot run" in verdict and "deadlock" in verdict and fig is None
    one_more_warmup = [*expected[:3], expected[4], expected[3], *expected[5:]]   # 1F3 before 1B0
    verdict, _ = pe.rank_answer_report("1f1b", 1, 4, 8, one_more_warmup)
    assert "peak activations on rank 1: 4 vs 3" in verdict


@pytest.mark.parametrize("n_half,k", [(1, 2), (2, 4), (3, 7), (4, 8)])
def test_dualpipe_cut_in_half_is_dualpipev(n_half, k):
    full = make_schedule("dualpipe", 2 * n_half, 2 * k)
    assert pe.dualpipe_as_dualpipev(full) == make_schedule("dualpipev", n_half, k).actions
    with pytest.raises(ValueError, match="cuts a dualpipe"):
        pe.dualpipe_as_dualpipev(make_schedule("1f1b", 2, 2))


def test_explore_without_plot_gives_numbers_only():
    view = pe.explore_schedule("1f1b", 4, 8, plot=False)
    assert view.figure is None and view.table.loc["bubble: largest idle of any rank", "simulated"] == 9.0
    assert not plt.get_fignums()


def test_faded_hatching_is_faded_too():
    timeline = simulate(make_schedule("dualpipe", 4, 8), CostModel(1.0, 2.0, 1.0, 3.0))
    fig = pe.plot_dualpipe_phases(timeline, phases=[0])
    alphas = sorted(c.get_alpha() or 1.0 for c in fig.axes[0].collections
                    if type(c).__name__ == "LineCollection")
    assert alphas == [0.2, 1.0]


def test_budget_columns_and_bars_are_one_named_rank_and_table2_idle_agrees_with_communication():
    """The comparison widget's budget is one rank's (the one that computes least), bars stack that rank's idle
    and exposed communication, and Table 2's idle (execution times) equals the simulator's bubble with an
    all-to-all and the default comm_share for every Table 2 row (notebook 05's widget)."""
    costs = CostModel(F=1.0, B=2.0, W=1.0, dispatch=0.5, combine=0.5)
    fig, table = pc.compare_schedules([4, 8, 16], 32, costs, vary="ranks",
                                      schedules=("1f1b", "1f1b-overlap", "zb1p", "dualpipe", "dualpipev"))
    for row in table.itertuples():
        stage_costs = pc.costs_per_stage(row.schedule, costs)
        timeline = simulate(make_schedule(row.schedule, row.ranks, row.microbatches), stage_costs)
        b = timeline.budget(int(row.rank_computing_least))
        assert int(row.rank_computing_least) == timeline.worst_budget().rank
        assert (row.idle, row.comm_exposed, row.not_computing) == (b.idle, b.comm_exposed, b.not_computing)
        assert row.table2_idle == pytest.approx(row.bubble, abs=1e-9), row.schedule
    hatched = [p for p in fig.axes[0].patches if p.get_hatch()]
    plain = [p for p in fig.axes[0].patches if not p.get_hatch()]
    assert [p.get_height() for p in hatched] == pytest.approx(list(table.comm_exposed))
    assert [p.get_height() for p in plain] == pytest.approx(list(table.idle))
    assert [p.get_y() for p in hatched] == pytest.approx(list(table.idle))


def test_explorer_names_the_rank_of_every_budget_number():
    """05's explorer: the bubble with its rank; idle, exposed communication and time not computing of one
    named rank (1F1B-overlap with an all-to-all: rank 3 idles most, rank 0 computes least)."""
    view = pe.explore_schedule("1f1b-overlap", 4, 8, dispatch=0.5, combine=0.5, plot=False)
    sim, tl = view.table["simulated"], view.result
    assert sim["rank of the bubble (idles most)"] == 3 and sim["bubble: largest idle of any rank"] == tl.idle(3)
    worst = int(sim["rank computing least"])
    assert worst == 0
    b = tl.budget(worst)
    assert (sim["idle on the rank computing least"], sim["exposed communication on the rank computing least"],
            sim["time not computing on the rank computing least"]) == (b.idle, b.comm_exposed, b.not_computing)


def test_gains_split_on_one_rank_and_over_chimera():
    """fair_steps with a rank: the saving splits into compute, exposed communication and idle of that rank
    (they sum to the saving). over_chimera: Chimera 48, DualPipe's order with a full backward 45 (idle 8 -> 5),
    its backward split into I and W 43 (idle 5 -> 3), free pairs 37 (exposed 16 -> 10), the SMs given to communication back to 39.14 on rank 0 at 4 x 8."""
    costs = CostModel(F=1.0, B=2.0, W=1.0, dispatch=0.5, combine=0.5)
    steps = pc.fair_steps(16, 64, replace(costs, comm_share=0.0), rank=0)
    dual = steps.loc["dualpipe"]
    assert (dual.saved, dual.d_comm_exposed, dual.d_idle, dual.d_compute) == (22, 16, 6, 0)
    steps = pc.fair_steps(4, 8, costs, rank=0).iloc[1:]
    assert (steps.d_compute + steps.d_comm_exposed + steps.d_idle - steps.saved).abs().max() < 1e-9
    chain = pc.over_chimera(4, 8, costs, rank=0)
    assert list(chain["step time"].round(2)) == [48, 45, 43, 37, 39.14]
    assert chain.index[2] == "+ split backward (pairs run apart)"  # each row names what it adds
    assert list(chain["rank 0 idle"].iloc[:3]) == [8, 5, 3] and list(chain["rank 0 comm_exposed"].iloc[2:4]) == [16, 10]
    full = pc.full_backward(make_schedule("dualpipe", 4, 8))
    assert {a.kind for row in full.actions for a in row} == {"F", "B"}
    unpaired = pc.without_pairs(make_schedule("dualpipe", 4, 8))
    assert not any(isinstance(a, OverlappedAction) for row in unpaired.actions for a in row)
    with pytest.raises(ValueError, match="multiple"):
        pc.over_chimera(4, 10, costs)


def test_comm_share_reaches_the_explorer_and_the_comparison():
    """The widgets' comm_share control: 1F1B-overlap at 4 x 8 with an all-to-all of 1 takes 44.75 with the
    default (pairs compute on 112 of 132 SMs) and 41 with comm_share=0 (overlap free)."""
    a2a = dict(dispatch=0.5, combine=0.5, plot=False)
    step = "step time (makespan)"
    assert pe.explore_schedule("1f1b-overlap", 4, 8, **a2a).table.loc[step, "simulated"] == pytest.approx(44.75)
    assert pe.explore_schedule("1f1b-overlap", 4, 8, comm_share=0.0, **a2a).table.loc[step, "simulated"] == 41
    assert "comm_share" in pe.explore_schedule("1f1b", 4, 8, comm_share=1.5).error
    default = pc.explore_comparison(microbatches=8, dispatch=0.5, combine=0.5, schedules=("1f1b-overlap",)).table
    free = pc.explore_comparison(microbatches=8, dispatch=0.5, combine=0.5, schedules=("1f1b-overlap",),
                                 comm_share=0.0).table
    assert (free.makespan <= default.makespan).all() and (free.makespan < default.makespan).any()
