"""Our generators against torch.distributed.pipelining (torch 2.13), built without processes.

The schedule classes compute every rank's ``pipeline_order`` in their constructors from a few attributes of
their stage objects, so simple stand-ins are enough. torch's Schedule1F1B is not used as a reference: in
2.13 its order for the last rank is wrong (it starts at F1); 1F1B is checked against Table 2 and the
validator instead (tests/test_table2.py, tests/test_simulate.py).
"""

from types import SimpleNamespace

import pytest
from torch.distributed.pipelining.schedules import ScheduleDualPipeV, ScheduleGPipe, _Action

from utils.pipeline.registry import make_schedule
from utils.pipeline.schedule import action_parts, parse_action


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
