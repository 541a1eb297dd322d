"""Chimera (Li and Hoefler, SC'21) against the paper: its D = 4 order (the paper's four-stage figure), its bubble (Sec. 3.1,
Table 1: D - 2 slots where forward and backward take one slot each), its memory (Table 1: two weight copies,
(D/2 + 1) to D activations per worker), its rules on counts (even D, Sec. 3.1; N a multiple of D, Sec. 3.5),
torch's own schedule validator, and the executor's gradients against one process."""

from __future__ import annotations

import pytest
from bad_inputs import assert_teaches
from torch.distributed.pipelining.schedules import _Action, _validate_schedule

from utils.pipeline.costs import CostModel
from utils.pipeline.generators.chimera import (
    chimera,
    chimera_bubble,
    chimera_peak_activations,
    chimera_phase_steps,
    dualpipe_over_chimera,
)
from utils.pipeline.registry import COMPARED_SCHEDULES, SCHEDULE_NAMES, TABLE2_SCHEDULES, make_schedule
from utils.pipeline.schedule import OverlappedAction, action_parts
from utils.pipeline.simulate import simulate
from utils.pipeline.validation import validate

#: The paper's unit: forward and backward one slot each (Sec. 3.1, its four-stage figure, Table 1).
SLOT = CostModel(F=1, B=1, W=0)

# The four-stage figure (D = 4, N = 4) in the kit's ids: the down pipeline's stage i is id i on worker i, the up
# pipeline's stage i is id 4 + i on worker 3 - i; micro-batches 0 and 1 go down, 2 and 3 go up. Worker 0
# runs down forwards 0, 1, then 1F1B on the up pipeline's last stage (2, 3), then the down backwards 0, 1:
FIGURE_3 = [
    "rank 0: 0F0 0F1 7F2 7B2 7F3 7B3 0B0 0B1",
    "rank 1: 1F0 6F2 1F1 6F3 6B2 1B0 6B3 1B1",
    "rank 2: 5F2 2F0 5F3 2F1 2B0 5B2 2B1 5B3",
    "rank 3: 4F2 4F3 3F0 3B0 3F1 3B1 4B2 4B3",
]


def test_d4_order_is_the_papers_figure():
    assert make_schedule("chimera", 4, 4).rank_lines() == FIGURE_3


def test_registered_for_reference_only():
    assert "chimera" in SCHEDULE_NAMES
    assert "chimera" not in TABLE2_SCHEDULES and "chimera" not in COMPARED_SCHEDULES
    assert make_schedule("Chimera", 4, 8).name == "chimera"


def test_placement_is_dualpipes():
    """Stage r down and stage D-1-r up on rank r, mirrored stages sharing a chunk, half the micro-batches
    entering at each end: DualPipe's placement exactly; the schedules differ only in their actions."""
    for d, n in ((2, 4), (4, 8), (8, 16)):
        ours, dual = make_schedule("chimera", d, n), make_schedule("dualpipe", d, n)
        assert (ours.stage_to_rank, ours.stage_to_chunk, ours.routes) == \
            (dual.stage_to_rank, dual.stage_to_chunk, dual.routes)
        assert [ours.stages_on(r) for r in range(d)] == [(r, 2 * d - 1 - r) for r in range(d)]


@pytest.mark.parametrize("d, n", [(2, 2), (2, 6), (4, 4), (4, 12), (6, 18), (8, 8), (8, 32), (16, 48)])
def test_valid_full_backward_no_pairs(d, n):
    s = make_schedule("chimera", d, n)
    validate(s)
    parts = [p for row in s.actions for a in row for p in action_parts(a)]
    assert not any(isinstance(a, OverlappedAction) for row in s.actions for a in row)
    assert {p.kind for p in parts} == {"F", "B"}
    # each basic unit: D/2 forwards and D/2 backwards per direction on every rank (chimera_phase_steps)
    for r in range(d):
        a, b, *_ = chimera_phase_steps(d, r)
        assert a + b == d // 2 and a == d // 2 - min(r, d - 1 - r)
        assert len(s.actions[r]) == 2 * n


@pytest.mark.parametrize("d, n", [(2, 4), (4, 4), (4, 8), (8, 16)])
def test_torch_validator_accepts_it(d, n):
    """torch.distributed.pipelining's own _validate_schedule (torch 2.13) on our strings read by torch's
    parser: every stage on one rank, every F before its B. Each of the 2D stage ids sees its direction's
    N/2 micro-batches, so torch is asked for N/2 per stage."""
    s = make_schedule("chimera", d, n)
    actions = {r: [_Action.from_str(str(a)) for a in row] for r, row in enumerate(s.actions)}
    placed = _validate_schedule(actions, pp_group_size=d, num_stages=2 * d, num_microbatches=n // 2)
    assert placed == dict(enumerate(s.stage_to_rank))


def test_bubble_by_hand_d4():
    """F = B = 1 (a slot each), D = 4, N = 4. Rank 0 runs 0F0 [0,1] and 0F1 [1,2], then waits for micro-batch 2
    to come up three ranks (4F2 on rank 3 [0,1], 5F2 on rank 2 [1,2], 6F2 on rank 1 [2,3]): idle [2,3]. 7F2
    [3,4] 7B2 [4,5] 7F3 [5,6] 7B3 [6,7] 0B0 [7,8]; 0B1 needs 1B1, which rank 1 runs after 6B3 [7,8] (itself
    after 7B3): 1B1 [8,9], idle [8,9] here, 0B1 [9,10]. Two idle slots, D - 2, on every rank, in a step of
    2N + D - 2 = 10: the ratio (D-2)/(2N+D-2) = 0.2 of Table 1. 1F1B on the same 4 ranks idles 2(D-1) = 6."""
    tl = simulate(make_schedule("chimera", 4, 4), SLOT)
    assert [(iv.start, iv.end) for iv in tl.intervals[0]] == [(0, 1), (1, 2), (3, 4), (4, 5), (5, 6), (6, 7),
                                                              (7, 8), (9, 10)]
    assert [tl.idle(r) for r in range(4)] == [2, 2, 2, 2]
    assert tl.makespan == 10 and tl.bubble_ratio == pytest.approx(0.2)
    assert simulate(make_schedule("1f1b", 4, 4), SLOT).worst_idle == 6


@pytest.mark.parametrize("d", [2, 4, 6, 8, 16])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_bubble_is_the_papers_d_minus_2_slots(d, k):
    """Table 1 in the kit's units: with F = B (the paper's slot), every rank idles (D-2) F, i.e.
    (PP/2 - 1)(F + B), for any N = K D (direct concatenation is seamless when F = B), and the bubble ratio
    is (D-2)/(2N+D-2); GPipe and 1F1B idle 2(D-1) slots."""
    n = k * d
    for unit in (1.0, 2.5):
        tl = simulate(make_schedule("chimera", d, n), CostModel(F=unit, B=unit, W=0))
        assert tl.worst_idle == pytest.approx((d - 2) * unit) == pytest.approx((d / 2 - 1) * (unit + unit))
        assert min(tl.idle(r) for r in range(d)) == pytest.approx(tl.worst_idle)
        assert tl.bubble_ratio == pytest.approx((d - 2) / (2 * n + d - 2))
        assert chimera_bubble(d, n, unit, unit) == pytest.approx(tl.worst_idle)
    assert simulate(make_schedule("1f1b", d, n), SLOT).worst_idle == 2 * (d - 1)


@pytest.mark.parametrize("d", [2, 4, 6, 8, 12])
@pytest.mark.parametrize("k", [1, 2, 3, 6])
@pytest.mark.parametrize("F, B", [(1, 2), (1, 1.5), (2, 3), (1, 3), (2, 1), (0.5, 0.25)])
def test_bubble_when_forward_and_backward_differ(d, k, F, B):
    """The kit's closed form beyond the paper's unit: (D-2)(max(F, B) + (K-1)|B-F|). A junction of two basic
    units leaves (D-2)|B-F| idle: the intermediate bubbles of direct concatenation (Sec. 3.5)."""
    tl = simulate(make_schedule("chimera", d, k * d), CostModel(F=F, B=B, W=0))
    expected = chimera_bubble(d, k * d, F, B)
    assert expected == pytest.approx((d - 2) * (max(F, B) + (k - 1) * abs(B - F)))
    assert [tl.idle(r) for r in range(d)] == pytest.approx([expected] * d)


def test_bubble_with_b_twice_f_pinned():
    """D = 4, B = 2F = 2: one unit idles (D-2) B = 4; two units 4 + (D-2)(B-F) = 6; with enough units
    Chimera falls behind 1F1B (D = 8, N = 32: 30 against 1F1B's (D-1)(F+B) = 21)."""
    c = CostModel(F=1, B=2, W=0)
    assert [simulate(make_schedule("chimera", 4, n), c).worst_idle for n in (4, 8)] == [4, 6]
    assert simulate(make_schedule("chimera", 8, 32), c).worst_idle == 30
    assert simulate(make_schedule("1f1b", 8, 32), c).worst_idle == 21


@pytest.mark.parametrize("d", [2, 4, 6, 8, 16])
def test_memory_is_the_papers(d):
    """Table 1: weights 2 M_theta (two stages per worker), activations from (D/2 + 1) M_a to D M_a, whatever
    N: rank r holds D/2 + min(r, D-1-r) + 1 stage-activations at its peak."""
    for n in (d, 3 * d):
        tl = simulate(make_schedule("chimera", d, n), CostModel(F=1, B=2, W=0))
        peaks = [tl.peak_activations(r) for r in range(d)]
        assert peaks == [chimera_peak_activations(d, r) for r in range(d)]
        assert peaks == [d // 2 + min(r, d - 1 - r) + 1 for r in range(d)]
        assert (min(peaks), max(peaks)) == (d // 2 + 1, d)
        assert [tl.param_copies(r) for r in range(d)] == [2] * d
    one = simulate(make_schedule("1f1b", d, 2 * d), SLOT)
    assert [one.param_copies(r) for r in range(d)] == [1] * d and one.peak_activations(0) == d


def test_what_dualpipe_adds():
    rows = {row.aspect: row for row in dualpipe_over_chimera()}
    assert list(rows) == ["placement", "backward", "bubble", "overlap", "activations per rank", "micro-batches"]
    assert "I and W" in rows["backward"].dualpipe and "full B" in rows["backward"].chimera
    assert "F&B" in rows["overlap"].dualpipe and "20 of 132 SMs" in rows["overlap"].price
    assert "PP+1" in rows["activations per rank"].dualpipe
    # the claims hold in the kit: same placement, DualPipe pairs and splits, Chimera does neither
    dual = make_schedule("dualpipe", 4, 8)
    kinds = {p.kind for row in dual.actions for a in row for p in action_parts(a)}
    assert {"I", "W"} <= kinds and any(isinstance(a, OverlappedAction) for row in dual.actions for a in row)
    c = CostModel(F=1, B=2, W=1)
    assert max(simulate(dual, c).peak_activations(r) for r in range(4)) == 4 + 1
    assert max(simulate(make_schedule("chimera", 4, 8), c).peak_activations(r) for r in range(4)) == 4


# ------------------------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("d, n", [(3, 6), (5, 10), (1, 2)])
def test_odd_ranks_refused_with_the_rule(d, n):
    assert_teaches(lambda: make_schedule("chimera", d, n), "even number of ranks", "Sec. 3.1", f"got {d}")


@pytest.mark.parametrize("d, n, nearest", [(4, 6, "4 or 8"), (4, 2, "4"), (8, 20, "16 or 24"), (2, 3, "2 or 4")])
def test_counts_not_a_multiple_of_d_refused_with_the_rule(d, n, nearest):
    message = assert_teaches(lambda: chimera(d, n), "multiple of the number of ranks", "basic units",
                             "Sec. 3.5", f"got {n}")
    assert f"Nearest counts that work: {nearest}." in message
    assert "DualPipe needs only an even number" in message


@pytest.mark.parametrize("call, words", [
    (lambda: chimera_phase_steps(4, 4), ("rank",)),
    (lambda: chimera_phase_steps(3, 0), ("even",)),
    (lambda: chimera_bubble(4, 6, 1, 2), ("multiple of pp = 4",)),
    (lambda: chimera_bubble(4, 2, 1, 2), ("n_microbatches",)),
    (lambda: chimera_bubble(4, 8, -1, 2), ("F", "negative")),
    (lambda: chimera_peak_activations(6, 6), ("rank",)),
    (lambda: chimera_peak_activations(5, 0), ("even",)),
])
def test_closed_forms_refuse_bad_input(call, words):
    assert_teaches(call, *words)


# ---------------------------------------------------------------------------------------- the executor

def test_executor_gradients_equal_one_process():
    """Four ranks, one basic unit (N = D = 4): the losses and gradients of one process, both mirrored copies
    of each chunk holding the same summed gradient (tests/test_execute.py's check, one small case: it starts
    processes)."""
    from test_execute import check_against_reference, check_timeline

    from utils.cluster.cluster import SimulatedCluster
    from utils.pipeline.executor.execute import execute
    from utils.pipeline.executor.models import mlp_spec

    spec = mlp_spec(n_layers=8)
    microbatches = spec.make_microbatches(4)
    with SimulatedCluster(world_size=4, timeout=120) as cluster:
        result = execute(cluster, make_schedule("chimera", 4, 4), spec, microbatches)
    check_against_reference(result, spec, microbatches)
    check_timeline(result)


@pytest.mark.parametrize("costs", [CostModel(F=1, B=2, W=1), CostModel(F=1, B=2, W=1, dispatch=0.5, combine=0.5),
                                   CostModel(F=1, B=2, W=0.25)])
def test_bubble_sources_separate_the_split_from_the_two_directions(costs):
    """Each row is the simulator's step and largest idle of the schedule it names: the W split alone is ZB1P, the
    two directions alone DualPipe's order with a full backward, both without pairs DualPipe's pairs run apart."""
    from utils.pipeline.compare import bubble_sources, full_backward, without_pairs

    table = bubble_sources(8, 16, costs)
    dualpipe = make_schedule("dualpipe", 8, 16)
    expected = [make_schedule("1f1b", 8, 16), make_schedule("zb1p", 8, 16), full_backward(dualpipe),
                without_pairs(dualpipe), dualpipe]
    for (label, row), schedule in zip(table.iterrows(), expected, strict=True):
        timeline = simulate(schedule, costs)
        assert (row["step"], row["bubble"]) == (timeline.makespan, timeline.worst_idle), label
    bubble = table["bubble"].to_numpy()
    assert bubble[1] < bubble[0] and bubble[2] < bubble[0] and bubble[3] < min(bubble[1], bubble[2])
