"""1f1b-overlap: 1F1B whose steady forward and backward run as one overlapped pair (issue #12, the fair
baseline). Generator shape, validator, simulator (the pair hides the all-to-all), the deeper warm-up's
reason and its memory price, the command lines."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from utils.pipeline.costs import CostModel
from utils.pipeline.generators.overlapped import one_f_one_b_overlap, overlap_warmup
from utils.pipeline.registry import COMPARED_SCHEDULES, SCHEDULE_NAMES, TABLE2_SCHEDULES, make_schedule
from utils.pipeline.schedule import Action, OverlappedAction
from utils.pipeline.simulate import simulate
from utils.pipeline.validation import validate

A2A = CostModel(F=1, B=2, W=1, FB=3, dispatch=0.5, combine=0.5)


def test_registered_under_both_spellings():
    assert SCHEDULE_NAMES.index("1f1b-overlap") == SCHEDULE_NAMES.index("1f1b") + 1  # listed beside 1F1B
    for spelling in ("1f1b-overlap", "1F1B_overlap", "1f1boverlap", "1F1B-Overlap"):
        s = make_schedule(spelling, 3, 5)
        assert s.name == "1f1b-overlap"
    assert "1f1b-overlap" not in TABLE2_SCHEDULES  # not a row of the report's Table 2
    assert COMPARED_SCHEDULES[:5] == ("1f1b", "1f1b-overlap", "zb1p", "dualpipe", "dualpipev")


def test_layout_by_hand():
    s = make_schedule("1f1b-overlap", 2, 5)
    assert s.rank_lines() == [
        "rank 0: 0F0 0F1 0F2 (0F3;0B0)OVERLAP_F_B (0F4;0B1)OVERLAP_F_B 0B2 0B3 0B4",
        "rank 1: 1F0 (1F1;1B0)OVERLAP_F_B (1F2;1B1)OVERLAP_F_B (1F3;1B2)OVERLAP_F_B (1F4;1B3)OVERLAP_F_B 1B4",
    ]


@pytest.mark.parametrize("pp", range(1, 9))
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33])
def test_valid_for_any_size_with_deeper_warmup(pp, m):
    """Rank r: min(2(PP-1-r)+1, M) forwards, then pairs (F of w+k; B of k), then the last w backwards."""
    s = make_schedule("1f1b-overlap", pp, m)
    validate(s)
    for r, acts in enumerate(s.actions):
        w = min(2 * (pp - 1 - r) + 1, m)
        assert w == overlap_warmup(pp, r, m)
        assert acts[:w] == tuple(Action(r, "F", i) for i in range(w))
        pairs = acts[w : w + m - w]
        assert pairs == tuple(OverlappedAction(Action(r, "F", w + k), Action(r, "B", k)) for k in range(m - w))
        assert acts[m:] == tuple(Action(r, "B", i) for i in range(m - w, m))
        assert len(acts) == 2 * m - (m - w)


@pytest.mark.parametrize("pp", [1, 2, 3, 5])
def test_one_microbatch_is_plain_1f1b(pp):
    """No pair can form with one micro-batch: the schedule falls back to 1F1B's F then B on every rank."""
    assert make_schedule("1f1b-overlap", pp, 1).actions == make_schedule("1f1b", pp, 1).actions


def test_few_microbatches_fall_back_to_fill_and_drain_on_early_ranks():
    """PP=4, M=3: ranks 0 and 1 (warm-up 7 and 5 > M) form no pair and run F F F B B B; rank 2 (w=3) also
    none; the last rank (w=1) pairs two."""
    s = make_schedule("1f1b-overlap", 4, 3)
    for r in range(3):
        assert not any(isinstance(a, OverlappedAction) for a in s.actions[r])
        assert [a.kind for a in s.actions[r]] == ["F"] * 3 + ["B"] * 3
    assert sum(isinstance(a, OverlappedAction) for a in s.actions[3]) == 2


def test_issue_quick_check_numbers():
    """4 ranks, 8 micro-batches, F=1, B=2, F&B=3, all-to-all 0.5 + 0.5: 1F1B 55, overlapped 41, DualPipe 37 when
    overlap is free; with pairs computing on 112 of 132 SMs (the default), 44.75 and 39.14 (= 548/14)."""
    names = ("1f1b", "1f1b-overlap", "dualpipe")
    free = {n: simulate(make_schedule(n, 4, 8), replace(A2A, comm_share=0)).makespan for n in names}
    assert free == {"1f1b": 55, "1f1b-overlap": 41, "dualpipe": 37}
    spans = {n: simulate(make_schedule(n, 4, 8), A2A).makespan for n in names}
    # 1f1b-overlap's 7 pairs on its last rank each last 3 x 132/112 instead of 3 (table2.overlap_step_time)
    assert spans == pytest.approx({"1f1b": 55, "1f1b-overlap": 41 + 7 * 3 * 20 / 112, "dualpipe": 548 / 14})


@pytest.mark.parametrize("pp,m", [(2, 6), (4, 8), (4, 13), (6, 20)])
def test_pairs_hide_the_all_to_all_and_keep_the_bubble(pp, m):
    """With F&B = F + B and all-to-all <= min(F, B), every pair hides its all-to-all: only the last rank's
    warm-up F and cool-down B expose theirs; the worst rank idles exactly as long as under 1F1B."""
    plain = simulate(make_schedule("1f1b", pp, m), A2A)
    tl = simulate(make_schedule("1f1b-overlap", pp, m), A2A)
    k = A2A.pair_slowdown  # the pair computes on the SMs the all-to-all leaves
    for iv in tl.intervals[pp - 1]:
        if isinstance(iv.action, OverlappedAction):
            assert iv.duration == pytest.approx(A2A.FB * k)
    assert tl.worst_idle == pytest.approx(plain.worst_idle)
    a2a = A2A.dispatch + A2A.combine
    # each pair saves its two chunks' all-to-all and pays the slower compute
    assert plain.makespan - tl.makespan == pytest.approx((m - 1) * (2 * a2a - (k - 1) * A2A.FB))


@pytest.mark.parametrize("pp,m", [(1, 4), (2, 8), (3, 9), (4, 8), (5, 16)])
def test_memory_price_is_twice_1f1b(pp, m):
    """Rank r holds 2 (PP - r) stage-activations at peak (1F1B: PP - r) once M reaches its warm-up + 1."""
    tl = simulate(make_schedule("1f1b-overlap", pp, m), A2A)
    plain = simulate(make_schedule("1f1b", pp, m), A2A)
    for r in range(pp):
        expected = min(2 * (pp - r), m)
        assert tl.peak_activations(r) == expected
        assert plain.peak_activations(r) == min(pp - r, m)
        assert tl.param_copies(r) == 1


def test_the_trap_1f1b_warmup_halves_throughput():
    """Pairing with 1F1B's warm-up (lead 1): each pair waits for the pair below, which waits for this rank's
    previous pair, so a micro-batch costs two pair-times in the steady state."""
    costs = CostModel(F=1, B=2, W=1, FB=3)
    pp = 4
    spans = {}
    for lead in (1, 2):
        spans[lead] = [simulate(one_f_one_b_overlap(pp, m, lead=lead), costs).makespan for m in (16, 32)]
    per_mb = {lead: (b - a) / 16 for lead, (a, b) in spans.items()}
    assert per_mb == {1: 2 * costs.FB, 2: costs.FB}
    assert one_f_one_b_overlap(pp, 8, lead=1).name == "1f1b-overlap (lead 1)"


@pytest.mark.parametrize("lead", [0, -1, 1.5, True])
def test_bad_lead_is_explained(lead):
    with pytest.raises(ValueError, match="lead"):
        one_f_one_b_overlap(3, 6, lead=lead)


@pytest.mark.parametrize("ranks,mbs", [(0, 4), (2, 0), (2.5, 4)])
def test_bad_counts_are_explained(ranks, mbs):
    with pytest.raises(ValueError, match="1f1b-overlap"):
        make_schedule("1f1b-overlap", ranks, mbs)


def test_command_lines():
    out = subprocess.run([sys.executable, "-m", "utils.schedules", "1f1b-overlap", "--ranks", "4",
                          "--microbatches", "8"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[3].startswith("rank 3: 3F0 (3F1;3B0)OVERLAP_F_B")
    sim = subprocess.run([sys.executable, "-m", "utils.simulate", "1f1b-overlap", "--ranks", "4",
                          "--microbatches", "8", "--dispatch", "0.5", "--combine", "0.5", "--json"],
                         capture_output=True, text=True)
    assert sim.returncode == 0, sim.stderr
    data = json.loads(sim.stdout)
    assert data["makespan"] == pytest.approx(44.75) and data["comm_share"] == 20 / 132
    assert [r["peak_activations"] for r in data["ranks"]] == [8, 6, 4, 2]
