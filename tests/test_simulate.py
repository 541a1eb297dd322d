"""The simulator: hand-computed timelines, communication, bad costs, the CLI, properties of many schedules."""

import json
import math
import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.pipeline.costs import CostModel
from utils.pipeline.registry import SCHEDULE_NAMES, make_schedule
from utils.pipeline.schedule import OverlappedAction, parse_action
from utils.pipeline.simulate import ascii_timeline, simulate

UNIT = CostModel(F=1, B=2, W=1, FB=3)


def test_naive_is_serial():
    """One micro-batch at a time: the step is M x PP x (F + B), and each rank works 1/PP of it."""
    tl = simulate(make_schedule("naive", 4, 3), UNIT)
    assert tl.makespan == 3 * 4 * 3
    assert tl.busy(0) == 9 and tl.idle(0) == 27
    assert tl.bubble_ratio == pytest.approx(0.75)


def test_gpipe_fill_and_drain():
    """GPipe: the last forward ends at (M + PP - 1) F and the backward drain takes (M + PP - 1) B."""
    pp, m = 4, 6
    tl = simulate(make_schedule("gpipe", pp, m), UNIT)
    assert tl.makespan == (m + pp - 1) * (UNIT.F + UNIT.B)
    assert [tl.peak_activations(r) for r in range(pp)] == [m] * pp


def test_1f1b_intervals_by_hand():
    """Two ranks, two micro-batches, F=1, B=2: rank 1 runs F0 [1,2] B0 [2,4] F1 [4,5] B1 [5,7]."""
    tl = simulate(make_schedule("1f1b", 2, 2), UNIT)
    assert [(str(iv.action), iv.start, iv.end) for iv in tl.intervals[1]] == [
        ("1F0", 1, 2),
        ("1B0", 2, 4),
        ("1F1", 4, 5),
        ("1B1", 5, 7),
    ]
    assert [(str(iv.action), iv.start, iv.end) for iv in tl.intervals[0]] == [
        ("0F0", 0, 1),
        ("0F1", 1, 2),
        ("0B0", 4, 6),
        ("0B1", 7, 9),
    ]
    assert [tl.peak_activations(r) for r in range(2)] == [2, 1]


def test_input_backward_is_b_minus_w():
    tl = simulate(make_schedule("zb1p", 1, 1), CostModel(F=1, B=3, W=1))
    assert [(str(iv.action), iv.end - iv.start) for iv in tl.intervals[0]] == [
        ("0F0", 1),
        ("0I0", 2),
        ("0W0", 1),
    ]


def test_overlapped_pair_lasts_fb_and_releases_both_results_at_its_end():
    s = make_schedule("dualpipev", 1, 2)  # 0F0 1F0 0F1 1B0 (1F1;0B0) 1B1 0I1 0W1
    tl = simulate(s, CostModel(F=1, B=2, W=1, FB=2.5))
    pair = next(iv for iv in tl.intervals[0] if isinstance(iv.action, OverlappedAction))
    assert pair.end - pair.start == 2.5
    nxt = tl.intervals[0][tl.intervals[0].index(pair) + 1]
    assert str(nxt.action) == "1B1" and nxt.start == pair.end  # 1B1 needs 1F1, produced by the pair


def test_pair_with_input_backward():
    s = make_schedule("dualpipev", 1, 2)
    acts = "0F0 1F0 0F1 1B0 (1F1;0I0)OVERLAP_F_B 0W0 1B1 0I1 0W1"
    s = replace(s, actions=(tuple(parse_action(a) for a in acts.split()),))
    tl = simulate(s, CostModel(F=1, B=2, W=0.5, FB=2.5))
    pair = tl.intervals[0][4]
    assert pair.end - pair.start == 2.0  # max(F, B - W, FB - W)


def test_p2p_latency_on_every_hop():
    """Naive with latency d: each micro-batch crosses PP-1 links forward and PP-1 back."""
    pp, m, d = 3, 2, 0.25
    tl = simulate(make_schedule("naive", pp, m), replace(UNIT, p2p=d))
    assert tl.makespan == pytest.approx(m * (pp * 3 + 2 * (pp - 1) * d))
    p2p = [c for c in tl.comms if c.label.startswith("p2p")]
    assert len(p2p) == m * 2 * (pp - 1) and all(c.end - c.start == d for c in p2p)


def test_no_p2p_between_stages_on_one_rank():
    """DualPipeV's rank N-1 holds two consecutive stages: the hop between them costs nothing."""
    tl0 = simulate(make_schedule("dualpipev", 1, 2), UNIT)
    tl1 = simulate(make_schedule("dualpipev", 1, 2), replace(UNIT, p2p=5))
    assert tl0.makespan == tl1.makespan and tl1.comms == ()


def test_all_to_all_blocks_plain_actions():
    """In 1F1B every F, B and I waits for its own dispatch and combine (W has none)."""
    costs = CostModel(F=1, B=2, W=1, dispatch=0.25, combine=0.25)
    tl = simulate(make_schedule("1f1b", 1, 2), costs)
    assert [iv.end - iv.start for iv in tl.intervals[0]] == [1.5, 2.5, 1.5, 2.5]
    assert len(tl.comms) == 8 and not any(c.overlapped for c in tl.comms)
    tl = simulate(make_schedule("zb1p", 1, 1), costs)
    assert [iv.end - iv.start for iv in tl.intervals[0]] == [1.5, 1.5, 1]


def test_all_to_all_hidden_inside_pairs():
    """Inside F&B each chunk's all-to-all runs while the partner computes: hidden when it is shorter."""
    hidden = CostModel(F=1, B=2, W=1, FB=3, dispatch=0.25, combine=0.25, comm_share=0)  # free overlap
    tl = simulate(make_schedule("dualpipev", 2, 4), hidden)
    pairs = [iv for row in tl.intervals for iv in row if iv.kind == "FB"]
    assert pairs and all(iv.end - iv.start == 3 for iv in pairs)
    pair_comms = [c for c in tl.comms if c.label.startswith("all-to-all")]
    assert len(pair_comms) == 2 * len(pairs) and all(c.overlapped for c in pair_comms)
    # longer than the partner's compute (F = 1): the excess 1.5 - 1 shows
    long = CostModel(F=1, B=2, W=1, FB=3, dispatch=0.75, combine=0.75, comm_share=0)
    tl = simulate(make_schedule("dualpipev", 2, 4), long)
    pairs = [iv for row in tl.intervals for iv in row if iv.kind == "FB"]
    assert all(iv.end - iv.start == 3.5 for iv in pairs)


def test_hiding_costs_the_sms_the_communication_takes():
    """By default a pair that hides an all-to-all computes on 112 of 132 SMs: 132/112 times its F&B, and the
    partner it hides behind computes that much longer too; plain actions and pairs with nothing to hide keep
    the whole GPU."""
    k = 132 / 112
    for a, excess in ((0.5, 0.0), (1.5, 1.5 - k)):  # (all-to-all, what shows beyond the slowed partner F)
        costs = CostModel(F=1, B=2, W=1, dispatch=a / 2, combine=a / 2)
        tl = simulate(make_schedule("dualpipev", 2, 4), costs)
        pairs = [iv for row in tl.intervals for iv in row if iv.kind == "FB"]
        assert pairs and all(iv.end - iv.start == pytest.approx(3 * k + excess) for iv in pairs)
        lone = [iv for row in tl.intervals for iv in row if iv.kind in "FB" and len(iv.kind) == 1]
        assert all(iv.end - iv.start == pytest.approx(costs.duration(iv.kind) + a) for iv in lone if iv.kind != "W")
        for r in range(tl.n_ranks):  # the slowed compute counts as compute; the budget still adds up
            b = tl.budget(r)
            assert b.compute + b.comm_exposed + b.idle == pytest.approx(tl.makespan)
    nothing_to_hide = simulate(make_schedule("dualpipev", 2, 4), CostModel(F=1, B=2, W=1))
    assert all(iv.end - iv.start == 3 for row in nothing_to_hide.intervals for iv in row if iv.kind == "FB")
    share_zero = CostModel(F=1, B=2, W=1, dispatch=0.25, combine=0.25, comm_share=0)
    assert simulate(make_schedule("dualpipe", 4, 8), share_zero).makespan < \
        simulate(make_schedule("dualpipe", 4, 8), replace(share_zero, comm_share=20 / 132)).makespan


def test_dualpipe_hides_what_1f1b_exposes():
    """Same chunk costs and all-to-all: the all-to-all lengthens 1F1B's step far more than DualPipe's."""
    base = CostModel(F=1, B=2, W=1, FB=2.5, comm_share=0)  # what is hidden, with overlap free
    ep = replace(base, dispatch=0.3, combine=0.3)
    grow = {}
    for name, ranks in (("1f1b", 4), ("dualpipe", 4)):
        s = make_schedule(name, ranks, 16)
        grow[name] = simulate(s, ep).makespan - simulate(s, base).makespan
    assert grow["dualpipe"] < grow["1f1b"] / 2


def test_deadlock_is_explained_even_without_check():
    s = make_schedule("gpipe", 2, 2)
    bad = (tuple(parse_action(a) for a in "0F0 0B0 0F1 0B1".split()), s.actions[1])
    with pytest.raises(ValueError, match="no deadlock"):
        simulate(replace(s, actions=bad), UNIT, check=False)


def test_check_catches_structure_before_running():
    s = make_schedule("gpipe", 2, 2)
    with pytest.raises(ValueError, match="rank that holds its stage"):
        simulate(replace(s, actions=(s.actions[1], s.actions[0])), UNIT)


def test_costs_must_be_a_cost_model():
    with pytest.raises(ValueError, match="CostModel"):
        simulate(make_schedule("gpipe", 2, 2), {"F": 1, "B": 2, "W": 1})


BAD_COSTS = [
    (dict(F=1, B=2, W=3), "W <= B"),
    (dict(F=1, B=1, W=1.5, FB=2), "W <= B"),
    (dict(F=-1, B=2, W=1), "cannot be negative"),
    (dict(F=1, B=-2, W=1), "cannot be negative"),
    (dict(F=1, B=2, W=-0.5), "cannot be negative"),
    (dict(F=1, B=2, W=1, p2p=-1), "cannot be negative"),
    (dict(F=1, B=2, W=1, dispatch=-0.1), "cannot be negative"),
    (dict(F=1, B=2, W=1, combine=-0.1), "cannot be negative"),
    (dict(F=math.nan, B=2, W=1), "finite"),
    (dict(F=1, B=math.nan, W=1), "finite"),
    (dict(F=1, B=2, W=math.nan), "finite"),
    (dict(F=1, B=2, W=1, FB=math.nan), "finite"),
    (dict(F=1, B=2, W=1, p2p=math.inf), "finite"),
    (dict(F=1, B=2, W=1, FB=1.5), "max\\(F, B\\)"),
    (dict(F=3, B=2, W=1, FB=2.5), "max\\(F, B\\)"),
    (dict(F=1, B=2, W=1, FB=3.5), "F \\+ B"),
    (dict(F=0, B=2, W=1), "positive"),
    (dict(F=1, B=0, W=0), "positive"),
    (dict(F="1", B=2, W=1), "must be a number"),
    (dict(F=1, B=2, W=None), "must be a number"),
    (dict(F=True, B=2, W=1), "must be a number"),
]


@pytest.mark.parametrize("kwargs, message", BAD_COSTS)
def test_bad_costs_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CostModel(**kwargs)


def test_cost_model_defaults():
    c = CostModel(F=1, B=2, W=0.5)
    assert c.FB == 3 and c.I == 1.5 and c.p2p == 0


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "utils.simulate", *args], capture_output=True, text=True)


def test_cli_json():
    res = run_cli(
        "1f1b",
        "--ranks",
        "4",
        "--microbatches",
        "8",
        "--F",
        "1",
        "--B",
        "2",
        "--W",
        "1",
        "--FB",
        "3",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["makespan"] == 8 * 3 + 9
    assert [r["rank"] for r in data["ranks"]] == [0, 1, 2, 3]
    assert set(data["ranks"][0]) == {"rank", "busy", "idle", "peak_activations", "param_copies", "compute",
                                     "comm_exposed"}
    assert data["ranks"][0]["idle"] == 9 and data["ranks"][0]["peak_activations"] == 4
    assert data["ranks"][0]["compute"] == 24 and data["ranks"][0]["comm_exposed"] == 0


def test_cli_table_and_ascii_timeline():
    res = run_cli("dualpipe", "--ranks", "4", "--microbatches", "8", "--FB", "2.5", "--p2p", "0")
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[0].startswith("dualpipe: makespan")
    assert sum(line.startswith("rank ") and line.endswith("|") for line in out) == 4 and "X" in res.stdout


def test_cli_bad_costs():
    res = run_cli("1f1b", "--ranks", "2", "--microbatches", "2", "--W", "5")
    assert res.returncode == 2 and "W <= B" in res.stderr


def test_ascii_timeline_marks_idle():
    text = ascii_timeline(simulate(make_schedule("naive", 2, 1), UNIT), width=12)
    assert text.splitlines()[0] == "rank  0 |FF......BBBB|"


# ---------------------------------------------------------------- properties

MIN_MB = {"dualpipe": lambda r: 2 * r, "dualpipev": lambda r: 2 * r}


@st.composite
def schedules(draw):
    name = draw(st.sampled_from(SCHEDULE_NAMES))
    ranks = draw(st.integers(1, 16))
    if name in ("dualpipe", "chimera"):
        ranks = max(2, ranks - ranks % 2)
    low = MIN_MB.get(name, lambda r: 1)(ranks)
    mbs = draw(st.integers(low, max(low, 64)))
    if name == "dualpipe":
        mbs += mbs % 2
    if name == "chimera":  # basic units of PP micro-batches (Li and Hoefler, Sec. 3.5)
        mbs = max(ranks, mbs - mbs % ranks)
    while name == "interleaved1f1b" and mbs % max(1, mbs // ranks):  # equal rounds only
        mbs -= 1
    return make_schedule(name, ranks, mbs)


@st.composite
def costs(draw):
    F = draw(st.floats(0.1, 4))
    B = draw(st.floats(0.1, 4))
    W = draw(st.floats(0, 1)) * B
    FB = max(F, B) + draw(st.floats(0, 1)) * min(F, B)
    p2p = draw(st.sampled_from([0.0, 0.0, 0.1, 1.0]))
    a2a = draw(st.sampled_from([0.0, 0.0, 0.2]))
    return CostModel(F, B, W, min(FB, F + B), p2p, a2a, a2a)


@settings(max_examples=60, deadline=None)
@given(schedules(), costs())
def test_every_generated_schedule_validates_and_simulates(schedule, cost):
    tl = simulate(schedule, cost)  # validates first; raises on any deadlock
    assert len(tl.intervals) == schedule.n_ranks
    assert [len(row) for row in tl.intervals] == [len(a) for a in schedule.actions]
    span = tl.makespan
    for r in range(schedule.n_ranks):
        assert tl.idle(r) >= -1e-9  # bubble is never negative
        assert span >= tl.busy(r) - 1e-9  # no rank computes longer than the step
        row = tl.intervals[r]
        assert all(
            a.end <= b.start + 1e-9 for a, b in zip(row, row[1:], strict=False)
        )  # one at a time, in order
    assert 0 <= tl.bubble_ratio < 1


def _intervals(timeline):
    return [[tuple(iv) for iv in row] for row in timeline.intervals], [
        (c.rank, c.label, c.start, c.end, c.overlapped) for c in timeline.comms]


@settings(max_examples=30, deadline=None)
@given(schedules(), costs())
def test_the_same_timeline_with_and_without_numpy(schedule, cost):
    """The bulk passes run on numpy where the process has it and on lists otherwise (utils.pipeline.runtime):
    both give the very same timeline, to the last bit."""
    from unittest import mock

    from utils.pipeline import runtime

    with_numpy = simulate(replace(schedule), cost)
    with mock.patch.object(runtime, "loaded_numpy", lambda: None):
        without = simulate(replace(schedule), cost)
    assert _intervals(without) == _intervals(with_numpy)


def test_the_command_line_does_not_import_numpy():
    """``python -m utils.simulate`` on a learner's size starts in about 0.1 s; importing numpy would add as
    much again, more than the bulk passes save there (utils.pipeline.runtime.loaded_numpy)."""
    code = ("import sys; from utils.pipeline.simulate import main; "
            "main(['dualpipev', '--ranks', '16', '--microbatches', '64', '--json']); "
            "print('numpy' in sys.modules, file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "False"


def test_a_pair_that_waits_for_nothing_draws_its_communication_hidden():
    """A pair's all-to-all is drawn hidden when the pair lasts its compute, even when float sums (132/112 of
    an F&I) land one bit past it."""
    from utils.pipeline.optimal import load_precomputed

    found = load_precomputed()["compare/dualpipe/a2a/own-peak"]
    tl = simulate(found.schedule, found.case.costs())
    pairs = {(r, iv.start) for r, row in enumerate(tl.intervals) for iv in row if iv.kind in ("FB", "FI")}
    pair_comms = [c for c in tl.comms if (c.rank, c.start) in pairs or c.label.startswith("all-to-all")]
    assert pair_comms and all(c.overlapped for c in pair_comms if c.label.startswith("all-to-all"))
