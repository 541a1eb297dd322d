"""Our generators against torch.distributed.pipelining (torch 2.13), built without processes.

The schedule classes compute every rank's ``pipeline_order`` in their constructors from a few attributes of
their stage objects, so simple stand-ins are enough. torch's Schedule1F1B is not used as a reference: in
2.13 its order for the last rank is wrong (it starts at F1); 1F1B is checked against Table 2 and the
validator instead (tests/test_table2.py, tests/test_simulate.py). Interleaved 1F1B and ZB-V match torch's
orders everywhere torch builds them (the validator accepts all of them), and refuse what torch refuses.
"""

import re
from types import SimpleNamespace

import pytest
from torch.distributed.pipelining.schedules import (
    ScheduleDualPipeV,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
    ScheduleZBVZeroBubble,
    _Action,
)

from utils.pipeline.generators.virtual import interleaved_1f1b
from utils.pipeline.registry import make_schedule
from utils.pipeline.schedule import action_parts, parse_action
from utils.pipeline.validation import validate


def stand_in_stage(index: int, n_stages: int, n_ranks: int, rank: int) -> SimpleNamespace:
    """What the schedule constructors read from a stage: its index, the counts, its rank, no
    compiled module."""
    return SimpleNamespace(
        stage_index=index,
        num_stages=n_stages,
        group_size=n_ranks,
        group_rank=rank,
        submod=None,
        is_first=index == 0,
        is_last=index == n_stages - 1,
    )


def torch_compute_lines(pipeline_order: dict) -> list[list[str]]:
    """Per rank, the compute actions (F, B, I, W and overlapped pairs) as strings, dropping idle steps and
    REDUCE_GRAD."""
    keep = {"F", "B", "I", "W", "OVERLAP_F_B"}
    return [
        [str(a) for a in pipeline_order[r] if a is not None and a.computation_type.value in keep]
        for r in sorted(pipeline_order)
    ]


@pytest.mark.parametrize(
    "n_ranks, n_mb", [(1, 2), (1, 5), (2, 4), (2, 9), (3, 6), (4, 8), (4, 11), (5, 16), (8, 16)]
)
def test_dualpipev_equals_torch(n_ranks, n_mb):
    stages = [
        stand_in_stage(0, 2 * n_ranks, n_ranks, 0),
        stand_in_stage(2 * n_ranks - 1, 2 * n_ranks, n_ranks, 0),
    ]
    reference = torch_compute_lines(ScheduleDualPipeV(stages, n_mb).pipeline_order)
    ours = make_schedule("dualpipev", n_ranks, n_mb)
    assert [[str(a) for a in acts] for acts in ours.actions] == reference


@pytest.mark.parametrize("n_ranks, n_mb", [(1, 1), (2, 3), (4, 4), (4, 9), (8, 16)])
def test_gpipe_equals_torch(n_ranks, n_mb):
    reference = torch_compute_lines(
        ScheduleGPipe(stand_in_stage(0, n_ranks, n_ranks, 0), n_mb).pipeline_order
    )
    ours = make_schedule("gpipe", n_ranks, n_mb)
    assert [[str(a) for a in acts] for acts in ours.actions] == reference


def test_string_forms_parse_both_ways():
    """Every action string of torch's DualPipeV order parses with our parse_action, and ours with torch's."""
    stages = [stand_in_stage(0, 6, 3, 0), stand_in_stage(5, 6, 3, 0)]
    for line in torch_compute_lines(ScheduleDualPipeV(stages, 6).pipeline_order):
        for text in line:
            assert str(parse_action(text)) == text
            assert str(_Action.from_str(text)) == text


def test_torch_dualpipev_stage_placement_matches():
    """torch's "v" placement is ours: stage s on rank min(s, 2N-1-s)."""
    stages = [stand_in_stage(0, 8, 4, 0), stand_in_stage(7, 8, 4, 0)]
    sched = ScheduleDualPipeV(stages, 8)
    ours = make_schedule("dualpipev", 4, 8)
    assert tuple(sched.stage_index_to_group_rank[s] for s in range(8)) == ours.stage_to_rank
    for r, acts in enumerate(ours.actions):
        assert {p.stage for a in acts for p in action_parts(a)} == set(ours.stages_on(r))


# ----------------------------------------------------------------- virtual stages: interleaved 1F1B and ZB-V

def torch_interleaved_order(n_ranks: int, n_mb: int, chunks: int = 2) -> list[list[str]]:
    """torch's ScheduleInterleaved1F1B order; its stages on rank 0 are 0, PP, 2PP, ... (any rank gives the
    same order: every rank computes the whole ``pipeline_order``)."""
    stages = [stand_in_stage(c * n_ranks, chunks * n_ranks, n_ranks, 0) for c in range(chunks)]
    return torch_compute_lines(ScheduleInterleaved1F1B(stages, n_mb).pipeline_order)


def torch_zbv_order(n_ranks: int, n_mb: int) -> list[list[str]]:
    stages = [stand_in_stage(0, 2 * n_ranks, n_ranks, 0), stand_in_stage(2 * n_ranks - 1, 2 * n_ranks, n_ranks, 0)]
    return torch_compute_lines(ScheduleZBVZeroBubble(stages, n_mb).pipeline_order)


def lines_of(schedule) -> list[list[str]]:
    return [[str(a) for a in acts] for acts in schedule.actions]


# Every (ranks, micro-batches) torch accepts, odd counts and fewer micro-batches than ranks included.
INTERLEAVED_GRID = [(r, m) for r in (1, 2, 3, 4, 5, 8) for m in range(1, 19)
                    if m % max(1, m // r) == 0]


@pytest.mark.parametrize("n_ranks, n_mb", INTERLEAVED_GRID)
def test_interleaved1f1b_equals_torch(n_ranks, n_mb):
    assert lines_of(make_schedule("interleaved1f1b", n_ranks, n_mb)) == torch_interleaved_order(n_ranks, n_mb)


@pytest.mark.parametrize("chunks", [1, 3, 4])
@pytest.mark.parametrize("n_ranks, n_mb", [(2, 4), (3, 3), (3, 7), (4, 8), (4, 12), (5, 2)])
def test_interleaved_with_v_chunks_equals_torch(n_ranks, n_mb, chunks):
    if n_mb % max(1, n_mb // n_ranks):
        pytest.skip("a count torch refuses")
    ours = interleaved_1f1b(n_ranks, n_mb, chunks_per_rank=chunks)
    assert lines_of(ours) == torch_interleaved_order(n_ranks, n_mb, chunks)
    validate(ours)


@pytest.mark.parametrize("n_ranks, n_mb", [(2, 5), (2, 7), (3, 7), (3, 11), (4, 9), (4, 11), (5, 11), (8, 17)])
def test_interleaved1f1b_refuses_what_torch_refuses(n_ranks, n_mb):
    """Ragged rounds: M not a multiple of max(1, M // PP). torch raises; so do we, with the rule and a fix."""
    with pytest.raises(ValueError, match="rounds"):
        torch_interleaved_order(n_ranks, n_mb)
    with pytest.raises(ValueError, match=r"equal rounds.*multiple of.*Nearest counts that work") as err:
        make_schedule("interleaved1f1b", n_ranks, n_mb)
    below, above = (int(x) for x in re.findall(r"work: (\d+) or (\d+)", str(err.value))[0])
    for m in (below, above):  # the counts the message suggests are accepted by both
        assert lines_of(make_schedule("interleaved1f1b", n_ranks, m)) == torch_interleaved_order(n_ranks, m)


@pytest.mark.parametrize("n_ranks, n_mb", [(r, m) for r in (1, 2, 3, 4, 5, 8) for m in range(1, 20)])
def test_zbv_equals_torch(n_ranks, n_mb):
    """Every count, including fewer than the 2 PP - 1 micro-batches ZB-V's phases fill the V with."""
    ours = make_schedule("zbv", n_ranks, n_mb)
    assert lines_of(ours) == torch_zbv_order(n_ranks, n_mb)
    validate(ours)  # torch's order is valid everywhere: nothing to correct


def test_torch_virtual_placements_match():
    """torch's "loop" placement (interleaved: stage s on rank s mod PP) and "v" placement (ZB-V) are ours."""
    inter = ScheduleInterleaved1F1B([stand_in_stage(0, 8, 4, 0), stand_in_stage(4, 8, 4, 0)], 8)
    assert tuple(inter.stage_index_to_group_rank[s] for s in range(8)) == \
        make_schedule("interleaved1f1b", 4, 8).stage_to_rank
    v = ScheduleZBVZeroBubble([stand_in_stage(0, 8, 4, 0), stand_in_stage(7, 8, 4, 0)], 8)
    assert tuple(v.stage_index_to_group_rank[s] for s in range(8)) == make_schedule("zbv", 4, 8).stage_to_rank
