"""The executor's message plan: a pure function of the schedule (no processes needed)."""

import pytest

from utils.pipeline.executor.messages import Message, plan_messages
from utils.pipeline.registry import SCHEDULE_NAMES, make_schedule
from utils.pipeline.schedule import ACT, GRAD, action_parts


def test_two_rank_1f1b_by_hand():
    s = make_schedule("1f1b", 2, 2)
    assert s.rank_lines() == ["rank 0: 0F0 0F1 0B0 0B1", "rank 1: 1F0 1B0 1F1 1B1"]
    p0, p1 = plan_messages(s, 0), plan_messages(s, 1)
    # rank 0 sends each forward's output to stage 1 and receives stage 0's output gradients back
    assert p0.sends == ((Message(ACT, 1, 0, 1),), (Message(ACT, 1, 1, 1),), (), ())
    assert p0.receives == ((), (), (Message(GRAD, 0, 0, 1),), (Message(GRAD, 0, 1, 1),))
    assert p0.from_peer == {1: (Message(GRAD, 0, 0, 1), Message(GRAD, 0, 1, 1))}
    assert p1.receives == ((Message(ACT, 1, 0, 0),), (), (Message(ACT, 1, 1, 0),), ())
    assert p1.sends == ((), (Message(GRAD, 0, 0, 0),), (), (Message(GRAD, 0, 1, 0),))
    assert p1.from_peer == {0: (Message(ACT, 1, 0, 0), Message(ACT, 1, 1, 0))}
    assert p0.keeps == p1.keeps == ((), (), (), ())


def test_dualpipev_turn_is_kept_on_the_rank():
    """DualPipeV: stages 1 and 2 live on rank 1 (of 2), so 1F -> 2F and 2B/2I -> 1B/1I are no messages."""
    s = make_schedule("dualpipev", 2, 4)
    plan = plan_messages(s, 1)
    acts = [str(a) for a in s.actions[1]]
    assert plan.keeps[acts.index("1F0")] == (Message(ACT, 2, 0, 1),)
    assert plan.keeps[acts.index("2B0")] == (Message(GRAD, 1, 0, 1),)
    assert all(m.peer == 0 for row in plan.receives + plan.sends for m in row)
    pair = acts.index("(2F2;1B0)OVERLAP_F_B")
    assert plan.keeps[pair] == () and plan.receives[pair] == ()  # its inputs were kept on the rank
    assert plan.sends[pair] == (Message(ACT, 3, 2, 0), Message(GRAD, 0, 0, 0))  # forward's first, then backward's


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("ranks,microbatches", [(2, 4), (4, 8), (4, 10)])
def test_every_send_is_received_once_in_the_senders_order(name, ranks, microbatches):
    try:
        s = make_schedule(name, ranks, microbatches)
    except ValueError:
        pytest.skip(f"{name} does not run on {ranks} ranks x {microbatches} micro-batches")
    plans = [plan_messages(s, r) for r in range(ranks)]
    for r, plan in enumerate(plans):
        assert len(plan.receives) == len(plan.sends) == len(plan.keeps) == len(s.actions[r])
        for src, queue in plan.from_peer.items():
            sent = [m._replace(peer=src) for row in plans[src].sends for m in row if m.peer == r]
            assert list(queue) == sent  # what src sends here, in src's order
            assert sorted(queue) == sorted(m for row in plan.receives for m in row if m.peer == src)
        # each result crosses once: a message or a hand-off between two of the rank's own stages
        crossings = [(m.kind, m.stage, m.microbatch) for row in plan.sends + plan.keeps for m in row]
        assert len(crossings) == len(set(crossings))
    # every input an action takes from another stage arrives exactly once
    taken = [(d.kind, p.stage, d.microbatch) for acts in s.actions for a in acts for p in action_parts(a)
             for d in s.inputs_of(p) if d.stage != p.stage]
    handed = [(m.kind, m.stage, m.microbatch) for plan in plans for row in plan.sends + plan.keeps for m in row]
    assert sorted(handed) == sorted(taken)


def test_plan_is_pure():
    s = make_schedule("dualpipe", 4, 8)
    assert plan_messages(s, 2) == plan_messages(s, 2)
    assert s == make_schedule("dualpipe", 4, 8)

