"""Schedule types: string forms shared with torch.distributed.pipelining, parsing, helpers."""

import pytest

from utils.schedules import Action, OverlappedAction, Schedule, parse_action


def test_action_strings_match_torch_form():
    assert str(Action(1, "F", 0)) == "1F0"
    assert str(Action(2, "I", 3)) == "2I3"
    assert str(Action(2, "W", 3)) == "2W3"
    pair = OverlappedAction(Action(0, "F", 7), Action(7, "B", 3))
    assert str(pair) == "(0F7;7B3)OVERLAP_F_B"


@pytest.mark.parametrize("text", ["1F0", "2I3", "2W3", "12B40", "(0F7;7B3)OVERLAP_F_B", "(3F1;4I0)OVERLAP_F_B"])
def test_parse_action_inverts_str(text):
    assert str(parse_action(text)) == text


@pytest.mark.parametrize("text", ["", "F0", "1X0", "1F", "(0F7;7F3)OVERLAP_F_B", "(0B7;7B3)OVERLAP_F_B", "1f0"])
def test_parse_action_rejects_bad_text(text):
    with pytest.raises(ValueError, match="expected"):
        parse_action(text)


def test_schedule_helpers():
    f = [Action(s, "F", 0) for s in range(4)]
    b = [Action(s, "B", 0) for s in range(4)]
    # a V placement: rank 0 holds stages 0 and 3, rank 1 holds 1 and 2
    s = Schedule("dualpipev", 2, 1, (0, 1, 1, 0), (0, 1, 2, 3), ((0, 1, 2, 3),),
                 ((f[0], f[3], b[3], b[0]), (f[1], f[2], b[2], b[1])))
    assert s.n_stages == 4 and s.n_chunks == 4
    assert s.stages_on(0) == (0, 3) and s.stages_on(1) == (1, 2)
    assert s.route_of(0) == (0, 1, 2, 3)
    assert s.prev_stage(0, 0) is None and s.next_stage(0, 0) == 1
    assert s.next_stage(3, 0) is None and s.prev_stage(3, 0) == 2
    assert s.rank_lines() == ["rank 0: 0F0 3F0 3B0 0B0", "rank 1: 1F0 2F0 2B0 1B0"]
    assert str(s).splitlines()[0].startswith("dualpipev: 2 ranks")
