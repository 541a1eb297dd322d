"""The validator: every broken rule raises ValueError naming the rank, the action and the rule."""

from dataclasses import replace

import numpy  # noqa: F401 - the bulk checks run where numpy is loaded (as in a notebook); the tests compare them
import pytest

from utils.pipeline.registry import make_schedule
from utils.pipeline.schedule import Action, OverlappedAction, Schedule, parse_action
from utils.pipeline.validation import check_structure, validate


def edit(schedule: Schedule, rank: int, new_line: str) -> Schedule:
    """The schedule with rank ``rank``'s list replaced by the actions written in ``new_line``."""
    acts = list(schedule.actions)
    acts[rank] = tuple(parse_action(t) for t in new_line.split())
    return replace(schedule, actions=tuple(acts))


def line(schedule: Schedule, rank: int) -> str:
    return " ".join(str(a) for a in schedule.actions[rank])


GPIPE = make_schedule("gpipe", 2, 2)  # rank 0: 0F0 0F1 0B0 0B1 / rank 1: 1F0 1F1 1B0 1B1
ZB = make_schedule("zb1p", 2, 2)  # rank 1: 1F0 1I0 1F1 1I1 1W0 1W1
V = make_schedule("dualpipev", 2, 4)


@pytest.mark.parametrize(
    "schedule, rank, new_line, rule, words",
    [
        (GPIPE, 0, "0F0 0B0 0B1", "F exactly once", "0F1"),
        (GPIPE, 0, "0F0 0F1 0F1 0B0 0B1", "runs exactly once", "appears twice"),
        (GPIPE, 0, "0F0 0F1 0B0", "every forward has a backward", "micro-batch 1"),
        (GPIPE, 0, "0B0 0F0 0F1 0B1", "F before its B/I", "comes later"),
        (GPIPE, 0, "0F0 0F1 0B0 0B1 1F0", "rank that holds its stage", "stage 1 lives on rank 1"),
        (GPIPE, 0, "0F0 0F1 0B0 0B1 0F5", "micro-batches exist", "micro-batch 5"),
        (GPIPE, 0, "0F0 0F1 0B0 0B1 9F0", "stages exist", "stage 9"),
        (GPIPE, 0, "0F0 0F1 0B0 0I0 0W0 0B1", "not both", "twice"),
        (GPIPE, 0, "0F0 0F1 0I0 0B1", "every I has a W", "0W0"),
        (GPIPE, 0, "0F0 0F1 0B0 0W0 0B1", "a W follows an I", "nothing left"),
        (ZB, 1, "1F0 1W0 1I0 1F1 1I1 1W1", "I before its W", "1I0"),
        (GPIPE, 0, "0F0 0F1 (0F0;0B0)OVERLAP_F_B 0B1", "runs exactly once", "appears twice"),
        (GPIPE, 0, "(0F0;0B0)OVERLAP_F_B 0F1 0B1", "F before its B/I", "pair"),
        (GPIPE, 1, "1F0 1B1 1F1 1B0", "F before its B/I", "1F1"),
    ],
)
def test_broken_rule_names_rank_action_and_rule(schedule, rank, new_line, rule, words):
    with pytest.raises(ValueError) as err:
        validate(edit(schedule, rank, new_line))
    message = str(err.value)
    assert message.startswith(f"rank {rank}")
    assert rule in message and words in message


def test_stage_order_on_a_v_rank():
    """Rank 0 of DualPipeV holds stages 0 and 3: it must run 0F0 before 3F0."""
    text = line(V, 0).replace("0F0", "TMP").replace("3F0", "0F0").replace("TMP", "3F0")
    with pytest.raises(ValueError, match="stages in pipeline order along the route"):
        validate(edit(V, 0, text))


def test_backward_stage_order_on_a_v_rank():
    """DualPipeV with one rank holds stages 0 and 1: stage 1's backward must come before stage 0's."""
    s = make_schedule("dualpipev", 1, 2)
    assert line(s, 0) == "0F0 1F0 0F1 1B0 (1F1;0B0)OVERLAP_F_B 1B1 0I1 0W1"
    with pytest.raises(ValueError, match="backward goes up the route"):
        validate(edit(s, 0, "0F0 1F0 0F1 1B0 (1F1;0B0)OVERLAP_F_B 0I1 0W1 1B1"))


def test_deadlock_names_the_cycle():
    """Rank 0 waits for 1B0 before running 0F1; rank 1 runs 1F1 (needing 0F1) before 1B0: a cycle."""
    s = make_schedule("gpipe", 2, 2)
    s = edit(s, 0, "0F0 0B0 0F1 0B1")
    s = edit(s, 1, "1F0 1F1 1B0 1B1")
    with pytest.raises(ValueError) as err:
        validate(s)
    message = str(err.value)
    assert "no deadlock" in message and "wait for each other forever" in message
    assert "rank 0 waits at 0B0" in message and "rank 1 waits at 1F1" in message
    assert "Stuck ranks and their next actions: rank 0: 0B0, rank 1: 1F1" in message


def test_self_deadlock_inside_a_pair():
    """A pair whose backward needs a gradient only a later action on the same rank makes."""
    s = make_schedule("dualpipev", 1, 2)
    acts = "0F0 1F0 0F1 (1F1;1B0)OVERLAP_F_B 0B0 1B1 0B1"
    validate(edit(s, 0, acts))  # fine: 1B0 only needs 1F0 (done) because stage 1 holds the loss
    bad = "0F0 0F1 (1F0;0B0)OVERLAP_F_B 1F1 1B0 1B1 0B1"
    with pytest.raises(ValueError, match="F before its B/I|no deadlock|pipeline order"):
        validate(edit(s, 0, bad))


def test_deadlock_from_swapped_lists_across_ranks():
    s = make_schedule("1f1b", 3, 3)
    s = edit(s, 2, "2F1 2B1 2F0 2B0 2F2 2B2")  # last rank takes micro-batch 1 first...
    s = edit(s, 1, "1F0 1B0 1F1 1B1 1F2 1B2")  # ...but rank 1 waits for 2B0 before it sends 1F1
    with pytest.raises(ValueError, match="no deadlock"):
        validate(s)


@pytest.mark.parametrize(
    "field, value, rule",
    [
        ("actions", ((),), "one action list per rank"),
        ("stage_to_rank", (0, 5), "stages live on existing ranks"),
        ("stage_to_chunk", (0,), "every stage has a rank and a chunk"),
        ("routes", ((0, 1),), "one route per micro-batch"),
        ("routes", ((0, 0), (0, 1)), "distinct existing stages"),
        ("routes", ((), (0, 1)), "distinct existing stages"),
    ],
)
def test_malformed_schedule_fields(field, value, rule):
    with pytest.raises(ValueError, match=rule):
        validate(replace(GPIPE, **{field: value}))


def test_route_membership():
    """A micro-batch may only visit its route's stages (DualPipe: direction 1 micro-batches skip stage 0)."""
    s = make_schedule("dualpipe", 2, 4)  # micro-batches 2, 3 take stages 2, 3
    text = line(s, 0).replace("0F0", "0F2", 1)
    with pytest.raises(ValueError, match="only visits the stages of its route"):
        validate(edit(s, 0, text))


def test_not_a_schedule():
    with pytest.raises(ValueError, match="expects a Schedule"):
        validate("0F0 0B0")
    with pytest.raises(ValueError, match="Action or OverlappedAction"):
        check_structure(replace(GPIPE, actions=(("0F0",), GPIPE.actions[1])))


def test_good_schedules_pass_including_hand_written_pairs():
    validate(GPIPE)
    s = make_schedule("1f1b", 2, 3)
    # overlap rank 1's steady F and B as a pair: still valid
    validate(edit(s, 1, "1F0 (1F1;1B0)OVERLAP_F_B (1F2;1B1)OVERLAP_F_B 1B2"))
    assert isinstance(parse_action("(1F1;1B0)OVERLAP_F_B"), OverlappedAction)
    assert Action(1, "B", 0) in s.actions[1]


def test_the_same_schedule_object_is_checked_once_a_changed_one_again():
    from utils.pipeline.validation import _check_structure_once

    s = make_schedule("1f1b", 4, 8)
    check_structure(s)
    hits = _check_structure_once.cache_info().hits
    check_structure(s)
    assert _check_structure_once.cache_info().hits == hits + 1
    swapped = replace(s, actions=(s.actions[1], s.actions[0], *s.actions[2:]))
    for _ in range(2):  # a broken schedule is never remembered as checked
        with pytest.raises(ValueError, match="rank that holds its stage"):
            check_structure(swapped)


def _outcome(check, schedule) -> str:
    try:
        check(schedule)
    except ValueError as err:
        return str(err)
    return "passes"


def _mutants(schedule: Schedule, rng, count: int):
    """Small edits of ``schedule``: actions swapped, dropped, doubled, moved to another rank, renumbered,
    pairs split or made (most break a rule; some do not)."""
    for _ in range(count):
        rows = [list(r) for r in schedule.actions]
        r = rng.randrange(len(rows))
        if not rows[r]:
            continue
        i, j = rng.randrange(len(rows[r])), rng.randrange(len(rows[r]))
        plain = [a for a in rows[r] if isinstance(a, Action)]
        edit_kind = rng.randrange(8)
        if edit_kind == 0:
            rows[r][i], rows[r][j] = rows[r][j], rows[r][i]
        elif edit_kind == 1:
            del rows[r][i]
        elif edit_kind == 2:
            rows[r].insert(j, rows[r][i])
        elif edit_kind == 3:
            rows[rng.randrange(len(rows))].insert(0, rows[r].pop(i))
        elif edit_kind == 4 and isinstance(rows[r][i], Action):
            a = rows[r][i]
            rows[r][i] = Action(a.stage + rng.choice((-1, 1)) if a.stage else 1, a.kind, a.microbatch)
        elif edit_kind == 5 and isinstance(rows[r][i], Action):
            a = rows[r][i]
            rows[r][i] = Action(a.stage, rng.choice("FBIW"), rng.randrange(schedule.n_microbatches + 1))
        elif edit_kind == 6 and isinstance(rows[r][i], OverlappedAction):
            rows[r][i:i + 1] = list(rows[r][i].parts)[::rng.choice((1, -1))]
        elif edit_kind == 7 and len(plain) > 1:
            f = next((a for a in plain if a.kind == "F"), None)
            b = next((a for a in plain if a.kind in "BI"), None)
            if f is not None and b is not None:
                rows[r] = [a for a in rows[r] if a not in (f, b)]
                rows[r].insert(min(i, len(rows[r])), OverlappedAction(f, b))
        yield replace(schedule, actions=tuple(tuple(row) for row in rows))


@pytest.mark.parametrize("name, ranks, microbatches", [
    ("gpipe", 3, 4), ("1f1b", 4, 8), ("zb1p", 4, 6), ("dualpipe", 4, 8), ("dualpipev", 2, 4),
    ("1f1b-overlap", 4, 8), ("interleaved1f1b", 4, 8), ("zbv", 2, 4)])
def test_the_bulk_check_and_the_action_by_action_walk_agree(name, ranks, microbatches):
    """check_structure checks rules 2-4 on all actions at once (numpy) and walks the lists only to name a
    broken rule: on hundreds of edited schedules its verdict and message are the walk's."""
    import random

    from utils.pipeline.validation import check_structure_by_action

    rng = random.Random(f"{name}-{ranks}-{microbatches}")
    schedule = make_schedule(name, ranks, microbatches)
    verdicts = set()
    for mutant in _mutants(schedule, rng, 300):
        walked = _outcome(check_structure_by_action, mutant)
        assert _outcome(check_structure, mutant) == walked
        verdicts.add(walked == "passes")
    assert verdicts == {True, False}  # the edits both keep and break the rules


@pytest.mark.parametrize("name", ["gpipe", "1f1b", "zb1p", "dualpipe", "dualpipev", "1f1b-overlap",
                                  "interleaved1f1b", "zbv"])
def test_every_generated_schedule_passes_the_bulk_check(name):
    """The library's own schedules never need the action-by-action walk (it only names broken rules)."""
    from utils.pipeline.validation import _rules_hold

    for ranks, microbatches in ((2, 4), (4, 8), (8, 24)):
        assert _rules_hold(make_schedule(name, ranks, microbatches))
