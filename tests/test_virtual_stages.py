"""Virtual stages (interleaved 1F1B, ZB-V): simulator on multi-chunk placements, closed forms, memory, p2p.

The closed forms (utils.pipeline.virtual_stages) are checked against the simulator under their assumptions
and shown to break where an assumption does not hold; the simulator itself is checked against a naive
reference on placements where several stages share a rank (same-rank handoffs pay no p2p latency).
"""

import json
import math
import subprocess
import sys

import pytest

from utils.pipeline import virtual_stages as vs
from utils.pipeline.costs import CostModel
from utils.pipeline.generators.virtual import interleaved_1f1b, interleaved_rounds, zbv
from utils.pipeline.registry import make_schedule
from utils.pipeline.simulate import simulate


def reference_intervals(schedule, costs):
    """A deliberately plain re-implementation of the simulator's rules (no event queue): sweep the ranks
    until nothing moves; an action starts when its rank is free and its inputs have arrived (+p2p when the
    producing stage lives on another rank)."""
    rank_of, done = schedule.stage_to_rank, {}
    pos, free = [0] * schedule.n_ranks, [0.0] * schedule.n_ranks
    out = [[] for _ in range(schedule.n_ranks)]
    moved = True
    while moved:
        moved = False
        for r, acts in enumerate(schedule.actions):
            while pos[r] < len(acts):
                a = acts[pos[r]]
                s, m = a.stage, a.microbatch
                if a.kind == "F":
                    prev = schedule.prev_stage(s, m)
                    needs = [] if prev is None else [("F", prev)]
                elif a.kind == "W":
                    needs = [("G", s)]
                else:
                    nxt = schedule.next_stage(s, m)
                    needs = [("F", s)] + ([] if nxt is None else [("G", nxt)])
                if any((k, st, m) not in done for k, st in needs):
                    break
                start = max([free[r]] + [done[(k, st, m)] + (costs.p2p if rank_of[st] != r else 0.0)
                                         for k, st in needs])
                free[r] = start + costs.duration(a.kind)
                if a.kind != "W":
                    done[("F" if a.kind == "F" else "G", s, m)] = free[r]
                out[r].append((start, free[r]))
                pos[r] += 1
                moved = True
    return out


@pytest.mark.parametrize("name, ranks, m", [("interleaved1f1b", 2, 4), ("interleaved1f1b", 3, 6),
                                            ("interleaved1f1b", 4, 10), ("zbv", 2, 3), ("zbv", 3, 5),
                                            ("zbv", 4, 9), ("zbv", 3, 2)])
@pytest.mark.parametrize("costs", [CostModel(F=1, B=2, W=1), CostModel(F=1, B=2, W=1, p2p=0.3),
                                   CostModel(F=1.5, B=2.5, W=0.7, p2p=1.0)])
def test_multi_chunk_placements_simulate_like_the_plain_reference(name, ranks, m, costs):
    tl = simulate(make_schedule(name, ranks, m), costs)
    ref = reference_intervals(tl.schedule, costs)
    for r, row in enumerate(tl.intervals):
        assert [t for iv in row for t in (iv.start, iv.end)] == pytest.approx([t for ab in ref[r] for t in ab],
                                                                             abs=1e-9)


def test_same_rank_handoff_pays_no_p2p():
    """ZB-V's bottom of the V (stage N-1 to N) stays on rank N-1: its F starts the moment the previous ends;
    interleaved's wrap-around (stage PP-1 on rank PP-1 to stage PP on rank 0) is a message and pays p2p."""
    costs = CostModel(F=1, B=2, W=1, p2p=0.5)
    v = simulate(make_schedule("zbv", 3, 6), costs)
    at = {str(iv.action): iv for iv in v.intervals[2]}
    assert at["3F0"].start == at["2F0"].end
    inter = simulate(make_schedule("interleaved1f1b", 3, 6), costs)
    last = {str(iv.action): iv for iv in inter.intervals[2]}["2F0"]
    first_of_chunk1 = {str(iv.action): iv for iv in inter.intervals[0]}["3F0"]
    assert first_of_chunk1.start >= last.end + 0.5


# ------------------------------------------------------------------------------ interleaved 1F1B

def equal_rounds(pp, m):
    return m % interleaved_rounds(pp, m)[0] == 0


@pytest.mark.parametrize("v", [1, 2, 3, 4])
@pytest.mark.parametrize("pp", [2, 3, 4, 5, 8])
def test_interleaved_bubble_is_1f1b_bubble_over_v(pp, v):
    """Same model: a rank's share costs F, B; each chunk F/v, B/v. Idle (PP-1)(F+B)/v for any M >= PP."""
    for F, B in [(1, 2), (2, 3), (0.5, 2)]:
        share = CostModel(F=F, B=B, W=0)
        one = simulate(make_schedule("1f1b", pp, 2 * pp), share).worst_idle
        for m in [pp, pp + 1, 2 * pp, 3 * pp + 1, 4 * pp]:
            if not equal_rounds(pp, m):
                continue
            schedule = interleaved_1f1b(pp, m, v)
            tl = simulate(schedule, vs.chunk_costs(share, v))
            assert tl.worst_idle == pytest.approx(vs.bubble_interleaved(pp, F, B, v), abs=1e-9)
            assert tl.worst_idle == pytest.approx(one / v, abs=1e-9)
            if v == 2:
                assert vs.assumptions_hold(schedule, vs.chunk_costs(share, v)) == (True, "the formula is exact")


@pytest.mark.parametrize("pp, m", [(3, 2), (4, 1), (4, 3), (8, 5)])
def test_interleaved_bubble_is_larger_with_fewer_microbatches_than_ranks(pp, m):
    schedule = make_schedule("interleaved1f1b", pp, m)
    costs = CostModel(F=1, B=2, W=0)
    assert simulate(schedule, costs).worst_idle > vs.bubble(schedule, costs) + 0.5
    ok, why = vs.assumptions_hold(schedule, costs)
    assert not ok and "at least PP" in why


@pytest.mark.parametrize("v", [1, 2, 3])
def test_interleaved_peak_activations(v):
    for pp in range(1, 7):
        for m in range(1, 20):
            if not equal_rounds(pp, m):
                continue
            tl = simulate(interleaved_1f1b(pp, m, v), CostModel(F=1, B=2, W=1))
            for r in range(pp):
                assert tl.peak_activations(r) == vs.peak_activations_interleaved(r, pp, m, v)
    # the price of interleaving: rank 0 holds PP + (PP-1)/v of 1F1B's stage-activations, not PP
    tl = simulate(make_schedule("interleaved1f1b", 4, 8), CostModel(F=1, B=2, W=1))
    assert vs.per_rank_memory(tl)[0]["peak activations (1/PP units)"] == 4 + 3 / 2


# ------------------------------------------------------------------------------------------- ZB-V

@pytest.mark.parametrize("pp", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("f", [1.0, 0.5, 2.0])
def test_zbv_zero_bubble_under_its_assumptions(pp, f):
    """F = B_input = W per chunk, M >= 2PP-1: no rank waits between its first and its last action, and the
    step's worst idle is the fill/drain (PP-1) f."""
    costs = CostModel(F=f, B=2 * f, W=f)
    for m in (2 * pp - 1, 2 * pp, 3 * pp + 1, 4 * pp):
        schedule = make_schedule("zbv", pp, m)
        tl = simulate(schedule, costs)
        assert all(vs.inner_idle(tl, r) == pytest.approx(0.0, abs=1e-9) for r in range(pp))
        assert tl.worst_idle == pytest.approx(vs.bubble(schedule, costs), abs=1e-9)
        assert tl.worst_idle == pytest.approx(vs.bubble_zbv(pp, 2 * f), abs=1e-9)  # per rank's share F = 2f
        assert vs.assumptions_hold(schedule, costs)[0]


@pytest.mark.parametrize("costs, broken", [
    (CostModel(F=1, B=2.5, W=1), "F = B_input = W"),
    (CostModel(F=1.5, B=2, W=1), "F = B_input = W"),
    (CostModel(F=1, B=2, W=0.5), "F = B_input = W"),
])
def test_zbv_bubble_appears_when_costs_are_unequal(costs, broken):
    schedule = make_schedule("zbv", 4, 16)
    tl = simulate(schedule, costs)
    assert max(vs.inner_idle(tl, r) for r in range(4)) > 0.4  # gaps inside the ranks' spans
    ok, why = vs.assumptions_hold(schedule, costs)
    assert not ok and broken in why


def test_zbv_with_too_few_microbatches_idles_inside():
    costs = CostModel(F=1, B=2, W=1)
    schedule = make_schedule("zbv", 4, 6)
    tl = simulate(schedule, costs)
    assert vs.inner_idle(tl, 0) > 0
    ok, why = vs.assumptions_hold(schedule, costs)
    assert not ok and "2PP-1 = 7" in why and "waits inside the step" in why


def test_zbv_peak_activations_and_parameters():
    for pp in range(1, 7):
        for m in range(1, 20):
            tl = simulate(zbv(pp, m), CostModel(F=1, B=2, W=1))
            for r in range(pp):
                assert tl.peak_activations(r) == vs.peak_activations_zbv(r, pp, m)
    tl = simulate(make_schedule("zbv", 4, 16), CostModel(F=1, B=2, W=1))
    rows = vs.per_rank_memory(tl)
    # the V balances memory: 2PP chunk-activations on every rank = PP of 1F1B's, like 1F1B's rank 0
    assert [row["peak activations (stages)"] for row in rows] == [8, 8, 8, 8]
    assert {row["peak activations (1/PP units)"] for row in rows} == {4.0}


@pytest.mark.parametrize("name, ranks, m, expected", [
    ("1f1b", 4, 8, 1), ("zb1p", 4, 8, 1), ("interleaved1f1b", 4, 8, 1), ("zbv", 4, 8, 1),
    ("dualpipev", 4, 8, 1), ("dualpipe", 4, 8, 2),
])
def test_parameters_per_rank_in_units_of_one_share(name, ranks, m, expected):
    """Two stages on a rank are two parameter copies for DualPipe (mirrored 1/PP chunks) but one share of
    the model for the virtual-stage schedules (two chunks of 1/(2PP))."""
    tl = simulate(make_schedule(name, ranks, m), CostModel(F=1, B=2, W=1))
    rows = vs.per_rank_memory(tl)
    assert {row["parameters (1/PP units)"] for row in rows} == {expected}
    assert {row["parameters (stages)"] for row in rows} == {1 if name in ("1f1b", "zb1p") else 2}


# --------------------------------------------------------------------------------------- p2p

@pytest.mark.parametrize("pp, m", [(1, 3), (2, 4), (3, 6), (4, 8), (5, 7), (8, 16)])
def test_p2p_messages_per_step(pp, m):
    assert vs.p2p_messages(make_schedule("1f1b", pp, m)) == 2 * m * (pp - 1)
    assert vs.p2p_messages(make_schedule("zbv", pp, m)) == 2 * m * (2 * pp - 2)
    if m >= 2 * pp:
        assert vs.p2p_messages(make_schedule("dualpipev", pp, m)) == 2 * m * (2 * pp - 2)
    for v in (2, 3):
        if equal_rounds(pp, m):
            expected = 2 * m * (v * pp - 1) if pp > 1 else 0
            assert vs.p2p_messages(interleaved_1f1b(pp, m, v)) == expected


def test_p2p_latency_costs_interleaving_more_than_1f1b():
    """Same model: with p2p = 0 interleaving halves the bubble; the hops it adds each pay the latency, so
    with a latency as long as a chunk's compute it is slower than plain 1F1B."""
    def step(name, p2p):
        share = CostModel(F=1, B=2, W=1, p2p=p2p)
        costs = vs.chunk_costs(share, 2) if name == "interleaved1f1b" else share
        return simulate(make_schedule(name, 4, 8), costs).makespan

    assert step("1f1b", 0.0) - step("interleaved1f1b", 0.0) == pytest.approx(4.5)  # (PP-1)(F+B)/2
    assert step("interleaved1f1b", 2.0) > step("1f1b", 2.0)


def test_chunk_costs_and_chunks_per_rank():
    share = CostModel(F=2, B=4, W=2, FB=5, p2p=0.5, dispatch=1, combine=1)
    half = vs.chunk_costs(share, 2)
    assert (half.F, half.B, half.W, half.FB, half.p2p, half.dispatch) == (1, 2, 1, 2.5, 0.5, 0.5)
    assert vs.chunk_costs(share, 1) is share
    assert [vs.chunks_per_rank(make_schedule(n, 4, 8)) for n in ("1f1b", "dualpipe", "dualpipev", "zbv")] == \
        [1, 1, 2, 2]
    assert vs.chunks_per_rank(interleaved_1f1b(4, 8, 3)) == 3
    with pytest.raises(ValueError, match="closed forms here cover"):
        vs.bubble(make_schedule("1f1b", 4, 8), share)


# ------------------------------------------------------------------------------------ command lines

@pytest.mark.parametrize("name", ["interleaved1f1b", "zbv", "Interleaved-1F1B", "ZB-V"])
def test_command_lines(name):
    out = subprocess.run([sys.executable, "-m", "utils.schedules", name, "--ranks", "3", "--microbatches", "6"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == make_schedule(name, 3, 6).rank_lines()
    sim = subprocess.run([sys.executable, "-m", "utils.simulate", name, "--ranks", "3", "--microbatches", "6",
                          "--json"], capture_output=True, text=True, check=True).stdout
    data = json.loads(sim)
    assert data["makespan"] == simulate(make_schedule(name, 3, 6), CostModel(F=1, B=2, W=1)).makespan
    bad = subprocess.run([sys.executable, "-m", "utils.schedules", "interleaved1f1b", "--ranks", "4",
                          "--microbatches", "9"], capture_output=True, text=True)
    assert bad.returncode == 2 and "equal rounds" in bad.stderr and "Traceback" not in bad.stderr
    assert not math.isnan(data["bubble_ratio"])


# ---------------------------------------------------------------------------- explorer and comparison

def test_explorer_puts_the_virtual_closed_forms_beside_the_simulator():
    from utils.pipeline import explore

    for name, kwargs in (("interleaved1f1b", {"F": 1.0, "B": 2.0, "W": 0.5}), ("zbv", {"F": 1.0, "B": 2.0, "W": 1.0})):
        view = explore.explore_schedule(name, 4, 8, plot=False, **kwargs)
        assert view.error is None
        table = view.table
        for quantity in ("bubble: largest idle of any rank", "peak activations (largest of any rank)", "stages held per rank (parameters)"):
            assert table.loc[quantity, "agrees"], (name, quantity)
        assert "Not a row of Table 2" in view.note and "should be exact" in view.note
    view = explore.explore_schedule("zbv", 4, 8, plot=False, F=1.0, B=2.5, W=1.0)
    assert not view.table.loc["bubble: largest idle of any rank", "agrees"] and "F = B_input = W" in view.note


def test_comparison_gives_virtual_schedules_half_size_stages():
    from utils.pipeline import compare

    costs = CostModel(F=1.0, B=2.0, W=1.0, FB=3.0)
    table = compare.comparison_table([2, 4], 8, costs, schedules=("1f1b", "interleaved1f1b", "zbv"))
    for name in ("interleaved1f1b", "zbv"):
        row = table[(table.schedule == name) & (table.ranks == 4)].iloc[0]
        assert row.bubble == simulate(make_schedule(name, 4, 8), vs.chunk_costs(costs, 2)).worst_idle
        assert row.table2_idle == pytest.approx(row.bubble)
    one = table[(table.schedule == "1f1b") & (table.ranks == 4)].iloc[0]
    inter = table[(table.schedule == "interleaved1f1b") & (table.ranks == 4)].iloc[0]
    assert inter.bubble == pytest.approx(one.bubble / 2)


def test_chrome_trace_names_the_stage_of_every_block():
    for name in ("interleaved1f1b", "zbv"):
        tl = simulate(make_schedule(name, 3, 6), CostModel(F=1, B=2, W=1, p2p=0.2))
        trace = json.loads(json.dumps(tl.to_chrome_trace()))
        blocks = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] == 0]
        assert len(blocks) == sum(len(a) for a in tl.schedule.actions)
        for event in blocks:
            assert event["args"]["stages"] == [int(event["name"].split(event["cat"])[0])]
            assert set(event["args"]["stages"]) <= set(tl.schedule.stages_on(event["tid"]))
            assert event["args"]["chunks"] == event["args"]["stages"]  # one chunk per stage: no mirrors
        assert any(e["pid"] == 1 for e in trace["traceEvents"] if e["ph"] == "X")  # the p2p messages


@pytest.mark.parametrize("name, hatched", [("interleaved1f1b", "stages PP and up (hatched)"),
                                           ("zbv", "stages PP and up (hatched)"),
                                           ("dualpipe", "direction 1 (hatched)")])
def test_gantt_legend_says_what_the_hatching_means(name, hatched):
    import matplotlib.pyplot as plt

    from utils.pipeline.plots import TimelineCanvas, plot_timeline

    tl = simulate(make_schedule(name, 4, 8), CostModel(F=1, B=2, W=1))
    ax = plot_timeline(tl)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert hatched in texts
    plt.close(ax.figure)
    canvas = TimelineCanvas()
    assert canvas.render(tl)[:4] == b"\x89PNG"
    assert hatched in [t.get_text() for t in canvas.ax.get_legend().get_texts()]


def test_registered_for_comparison_with_colours():
    from utils.figures import SCHEDULE_COLORS
    from utils.pipeline.registry import CHUNKS_PER_RANK, COMPARED_SCHEDULES, SCHEDULE_NAMES

    for name in vs.VIRTUAL_SCHEDULES:
        assert name in SCHEDULE_NAMES and name in COMPARED_SCHEDULES
        assert CHUNKS_PER_RANK[name] == vs.chunks_per_rank(make_schedule(name, 4, 8)) == 2
    assert len({SCHEDULE_COLORS[n] for n in COMPARED_SCHEDULES}) == len(COMPARED_SCHEDULES)


# ----------------------------------------------------------------------- the lesson's tables and figures

def test_bubble_vs_chunks_table():
    table = vs.bubble_vs_chunks(4, 8, CostModel(F=1, B=2, W=1), chunks=(1, 2, 4))
    assert list(table["chunks per rank v"]) == [1, 2, 4]
    assert list(table["worst-rank idle"]) == pytest.approx(list(table["(PP-1)(F+B)/v"]))
    assert list(table["p2p messages per step"]) == [2 * 8 * (v * 4 - 1) for v in (1, 2, 4)]
    assert table["rank 0 peak activations (1/PP units)"].iloc[0] == 4  # v = 1 is 1F1B: PP
    # (vPP-1)/(PP-1) times 1F1B's messages: more than v (7/3, 15/3 on 4 ranks)
    assert list(table["messages / 1F1B's"]) == pytest.approx([1, 7 / 3, 5])


def test_step_vs_latency_table():
    costs = CostModel(F=1, B=2, W=1)
    table = vs.step_vs_latency(("1f1b", "zbv"), 4, 8, costs, latencies=(0.0, 1.0))
    assert len(table) == 4
    row = table[(table.schedule == "zbv") & (table["p2p latency"] == 1.0)].iloc[0]
    expected = simulate(make_schedule("zbv", 4, 8), vs.chunk_costs(CostModel(F=1, B=2, W=1, p2p=1.0), 2))
    assert row["step time"] == expected.makespan and row["p2p messages per step"] == 96


def test_virtual_figures_have_titles_labels_legends():
    import matplotlib.pyplot as plt

    from utils.pipeline import virtual_figures as vf

    costs = CostModel(F=1, B=2, W=1)
    fig = vf.plot_placements(4)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["1f1b: 4 stages, 3 messages\nper micro-batch each way",
                      "interleaved1f1b: 8 stages, 7 messages\nper micro-batch each way",
                      "zbv: 8 stages, 6 messages\nper micro-batch each way"]
    fig = vf.plot_bubble_vs_chunks(vs.bubble_vs_chunks(4, 8, costs))
    assert all(ax.get_title() and ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert fig.axes[0].get_legend() is not None
    fig = vf.plot_step_vs_latency(vs.step_vs_latency(("1f1b", "zbv"), 4, 8, costs))
    ax = fig.axes[0]
    assert ax.get_title() and "p2p latency" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["1f1b (48 messages per step)",
                                                                   "zbv (96 messages per step)"]
    plt.close("all")


def test_comparison_widget_with_virtual_schedules():
    from utils.pipeline import compare
    from utils.widgets.pipeline import schedule_comparison

    view = compare.explore_comparison("ranks", microbatches=16, schedules=("1f1b", "interleaved1f1b", "zbv"))
    assert view.error is None and set(view.table.schedule) == {"1f1b", "interleaved1f1b", "zbv"}
    widget = schedule_comparison("ranks", microbatches=16, schedules=("1f1b", "zbv"))
    assert "ScheduleComparison" in repr(widget)
