"""Schedule types: string forms shared with torch.distributed.pipelining, parsing, helpers."""

import pytest

from utils.pipeline.schedule import Action, OverlappedAction, Schedule, parse_action


def test_action_strings_match_torch_form():
    assert str(Action(1, "F", 0)) == "1F0"
    assert str(Action(2, "I", 3)) == "2I3"
    assert str(Action(2, "W", 3)) == "2W3"
    pair = OverlappedAction(Action(0, "F", 7), Action(7, "B", 3))
    assert str(pair) == "(0F7;7B3)OVERLAP_F_B"


@pytest.mark.parametrize(
    "text", ["1F0", "2I3", "2W3", "12B40", "(0F7;7B3)OVERLAP_F_B", "(3F1;4I0)OVERLAP_F_B"]
)
def test_parse_action_inverts_str(text):
    assert str(parse_action(text)) == text


@pytest.mark.parametrize(
    "text", ["", "F0", "1X0", "1F", "(0F7;7F3)OVERLAP_F_B", "(0B7;7B3)OVERLAP_F_B", "1f0"]
)
def test_parse_action_rejects_bad_text(text):
    with pytest.raises(ValueError, match="expected"):
        parse_action(text)


def test_schedule_helpers():
    f = [Action(s, "F", 0) for s in range(4)]
    b = [Action(s, "B", 0) for s in range(4)]
    # a V placement: rank 0 holds stages 0 and 3, rank 1 holds 1 and 2
    s = Schedule(
        "dualpipev",
        2,
        1,
        (0, 1, 1, 0),
        (0, 1, 2, 3),
        ((0, 1, 2, 3),),
        ((f[0], f[3], b[3], b[0]), (f[1], f[2], b[2], b[1])),
    )
    assert s.n_stages == 4 and s.n_chunks == 4
    assert s.stages_on(0) == (0, 3) and s.stages_on(1) == (1, 2)
    assert s.route_of(0) == (0, 1, 2, 3)
    assert s.prev_stage(0, 0) is None and s.next_stage(0, 0) == 1
    assert s.next_stage(3, 0) is None and s.prev_stage(3, 0) == 2
    assert s.rank_lines() == ["rank 0: 0F0 3F0 3B0 0B0", "rank 1: 1F0 2F0 2B0 1B0"]
    assert str(s).splitlines()[0].startswith("dualpipev: 2 ranks")


# ---------------------------------------------------------------- generators

import subprocess  # noqa: E402
import sys  # noqa: E402

from utils.pipeline.registry import SCHEDULE_NAMES, make_schedule  # noqa: E402
from utils.pipeline.schedule import action_parts  # noqa: E402
from utils.pipeline.validation import validate  # noqa: E402


def plain_actions(schedule, rank):
    return [str(p) for a in schedule.actions[rank] for p in action_parts(a)]


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_every_generator_builds_a_valid_schedule(name):
    ranks, mbs = 4, 8
    s = make_schedule(name, ranks, mbs)
    validate(s)
    assert (s.name, s.n_ranks, s.n_microbatches) == (name, ranks, mbs)
    assert len(s.actions) == ranks


def test_naive_runs_one_microbatch_at_a_time():
    s = make_schedule("naive", 3, 2)
    assert s.rank_lines()[0] == "rank 0: 0F0 0B0 0F1 0B1"


def test_gpipe_all_forwards_then_all_backwards():
    s = make_schedule("gpipe", 2, 3)
    assert s.rank_lines() == ["rank 0: 0F0 0F1 0F2 0B0 0B1 0B2", "rank 1: 1F0 1F1 1F2 1B0 1B1 1B2"]


def test_1f1b_phases():
    """Rank r: PP-1-r warm-up forwards, then F/B alternating, then the cool-down backwards."""
    s = make_schedule("1f1b", 4, 6)
    assert s.rank_lines()[0] == "rank 0: 0F0 0F1 0F2 0F3 0B0 0F4 0B1 0F5 0B2 0B3 0B4 0B5"
    assert s.rank_lines()[3] == "rank 3: 3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3 3F4 3B4 3F5 3B5"


def test_zb1p_postpones_r_weight_passes_on_rank_r():
    s = make_schedule("zb1p", 3, 4)
    assert s.rank_lines() == [
        "rank 0: 0F0 0F1 0F2 0I0 0W0 0F3 0I1 0W1 0I2 0W2 0I3 0W3",
        "rank 1: 1F0 1F1 1I0 1F2 1I1 1W0 1F3 1I2 1W1 1I3 1W2 1W3",
        "rank 2: 2F0 2I0 2F1 2I1 2F2 2I2 2W0 2F3 2I3 2W1 2W2 2W3",
    ]


def test_dualpipe_layout():
    """Rank r holds stage r of direction 0 (id r) and stage PP-1-r of direction 1 (id PP + PP-1-r)."""
    s = make_schedule("dualpipe", 4, 8)
    assert [s.stages_on(r) for r in range(4)] == [(0, 7), (1, 6), (2, 5), (3, 4)]
    assert s.stage_to_chunk == (0, 1, 2, 3, 0, 1, 2, 3)
    assert s.route_of(0) == (0, 1, 2, 3) and s.route_of(4) == (4, 5, 6, 7)
    assert s.n_chunks == 4
    # rank 0: 2*(PP/2-0-1) = 2 warm-up forwards, then F0 F1 once, then one zero-bubble I1 W1 F1
    assert [str(a) for a in s.actions[0][:7]] == ["0F0", "0F1", "0F2", "7F4", "7I4", "7W4", "7F5"]


def test_dualpipev_layout():
    s = make_schedule("dualpipev", 3, 6)
    assert [s.stages_on(r) for r in range(3)] == [(0, 5), (1, 4), (2, 3)]
    assert all(route == tuple(range(6)) for route in s.routes)
    assert s.n_chunks == 6


@pytest.mark.parametrize("n_half, k", [(1, 2), (1, 5), (2, 4), (2, 7), (3, 6), (4, 8), (4, 13), (8, 16)])
def test_dualpipe_cut_in_half_is_dualpipev(n_half, k):
    """DualPipe with 2N ranks and 2K micro-batches, on rank r < N, runs DualPipeV(N, K)'s rank r list.

    Id mapping: DualPipe stage id s -> DualPipeV stage s (direction 0, s < 2N) or s - 2N (direction 1);
    DualPipe micro-batch m -> m mod K (direction 1's micro-batches K..2K-1 become 0..K-1).
    """
    full = make_schedule("dualpipe", 2 * n_half, 2 * k)
    v = make_schedule("dualpipev", n_half, k)
    pp = 2 * n_half

    def to_v(a):
        if isinstance(a, OverlappedAction):
            return OverlappedAction(to_v(a.forward), to_v(a.backward))
        return Action(a.stage if a.stage < pp else a.stage - pp, a.kind, a.microbatch % k)

    for rank in range(n_half):
        assert [to_v(a) for a in full.actions[rank]] == list(v.actions[rank])


def test_dualpipe_is_mirror_symmetric():
    """Rank PP-1-r runs rank r's list with the two directions swapped."""
    pp, m = 6, 12
    s = make_schedule("dualpipe", pp, m)

    def mirror(a):
        if isinstance(a, OverlappedAction):
            return OverlappedAction(mirror(a.forward), mirror(a.backward))
        direction, pos = divmod(a.stage, pp)
        return Action((1 - direction) * pp + pos, a.kind, (a.microbatch + m // 2) % m)

    for r in range(pp // 2):
        assert [mirror(a) for a in s.actions[r]] == list(s.actions[pp - 1 - r])


def test_cli_prints_one_line_per_rank():
    out = subprocess.run(
        [sys.executable, "-m", "utils.schedules", "1f1b", "--ranks", "2", "--microbatches", "2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == ["rank 0: 0F0 0F1 0B0 0B1", "rank 1: 1F0 1B0 1F1 1B1"]


def test_cli_reports_bad_input():
    res = subprocess.run(
        [sys.executable, "-m", "utils.schedules", "dualpipe", "--ranks", "3", "--microbatches", "6"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "even number of ranks" in res.stderr


BAD_GENERATOR_INPUTS = [
    ("dualpipe", 3, 12, "even number of ranks"),
    ("dualpipe", 5, 20, "even number of ranks"),
    ("dualpipe", 4, 7, "even number of micro-batches"),
    ("dualpipe", 4, 6, "at least 2 x ranks"),
    ("dualpipe", 2, 2, "at least 2 x ranks"),
    ("dualpipe", 8, 15, "even number of micro-batches"),
    ("dualpipev", 4, 7, "at least as many micro-batches as stages"),
    ("dualpipev", 1, 1, "at least as many micro-batches as stages"),
    ("1f1b", 0, 4, "at least 1"),
    ("1f1b", 4, 0, "at least 1"),
    ("gpipe", -2, 4, "at least 1"),
    ("zb1p", 4, -1, "at least 1"),
    ("naive", 2.0, 4, "whole number"),
    ("gpipe", 2, "4", "whole number"),
    ("zb1p", True, 4, "whole number"),
    ("interleaved", 4, 8, "Unknown schedule"),
    ("zb2p", 4, 8, "Unknown schedule"),
    ("", 4, 8, "Unknown schedule"),
]


@pytest.mark.parametrize("name, ranks, mbs, message", BAD_GENERATOR_INPUTS)
def test_bad_generator_input_is_explained(name, ranks, mbs, message):
    with pytest.raises(ValueError, match=message):
        make_schedule(name, ranks, mbs)


@pytest.mark.parametrize("bad", [Action, OverlappedAction])
def test_bad_action_fields(bad):
    with pytest.raises(ValueError):
        if bad is Action:
            Action(0, "X", 0)
        else:
            OverlappedAction(Action(0, "B", 0), Action(1, "B", 0))


def test_negative_action_ids_are_rejected():
    with pytest.raises(ValueError, match=">= 0"):
        Action(-1, "F", 0)
