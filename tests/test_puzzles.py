"""Design puzzles: every reference solution passes, plausible wrong answers fail with a kind, specific message,
targets come from the reference solutions, and the notebook check prints hints without leaking solutions."""

import itertools
import json
from collections import deque
from dataclasses import replace
from pathlib import Path

import pytest

from utils.checks import check_puzzle
from utils.pipeline.costs import CostModel
from utils.pipeline.generators.common import linear_schedule
from utils.pipeline.puzzles import (
    PUZZLES,
    Reason,
    capped_one_f_one_b,
    deadlock_puzzle,
    flipped_warmup,
    idle_puzzle,
    memory_cap_puzzle,
    rank_list_puzzle,
    rank_lists,
)
from utils.pipeline.puzzles.course import SLOW_PAIR_COSTS, SLOW_PAIR_IDLE_REASONS
from utils.pipeline.registry import make_schedule
from utils.pipeline.schedule import Action, OverlappedAction
from utils.pipeline.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]


def lines(name, ranks, m):
    return [[str(a) for a in acts] for acts in make_schedule(name, ranks, m).actions]


def fails_with(puzzle, answer, *fragments):
    verdict = puzzle.grade(answer)
    assert not verdict.passed, verdict
    for fragment in fragments:
        assert fragment in verdict.message, (fragment, verdict.message)
    return verdict.message


@pytest.mark.parametrize("key", sorted(PUZZLES))
def test_every_reference_solution_passes(key):
    puzzle = PUZZLES[key]
    verdict = puzzle.grade(puzzle.reference())
    assert verdict.passed, verdict.message
    assert len(puzzle.hints) == 3 and puzzle.statement and "raise NotImplementedError" in puzzle.stub
    assert puzzle.title.startswith("Puzzle:") and puzzle.goal


@pytest.mark.parametrize("key", sorted(PUZZLES))
def test_odd_values_get_words_not_tracebacks(key):
    puzzle = PUZZLES[key]
    for odd in (None, 3, "rank 0: 0F0", [[]], {"a": 1}, [object()] * 4):
        verdict = puzzle.grade(odd)
        assert not verdict.passed and verdict.message and "Traceback" not in verdict.message


# ------------------------------------------------------------------------------------------ memory cap

def test_memory_cap_plausible_wrong_answers():
    p = PUZZLES["gpipe-memory-cap"]
    fails_with(p, lines("gpipe", 4, 8), "rank 0 holds 8 activations", "over the cap of 3")
    fails_with(p, lines("1f1b", 4, 8), "rank 0 holds 4 activations", "over the cap of 3")
    fails_with(p, lines("naive", 4, 8), "idles 72", "where 24 is possible")
    fails_with(p, lines("zb1p", 4, 8), "F and B only", "notebook 04")
    fails_with(p, lines("gpipe", 4, 8)[:3], "4 lists, got 3")
    fails_with(p, [["0X0"]] + lines("gpipe", 4, 8)[1:], "rank 0, item 0", "Cannot read")
    broken = [[str(a) for a in acts] for acts in flipped_warmup("1f1b", 4, 8).actions]
    fails_with(p, broken, "cannot run", "no deadlock")
    # a rank whose stage is wrong gets the validator's placement rule
    wrong_stage = lines("1f1b", 4, 8)
    wrong_stage[1] = [a.replace("1", "2", 1) for a in wrong_stage[1]]
    fails_with(p, wrong_stage, "cannot run")


def test_split_memory_cap_plausible_wrong_answers():
    p = PUZZLES["zero-bubble-memory-cap"]
    fails_with(p, lines("zb1p", 4, 8), "holds 4 activations", "over the cap of 3")
    fails_with(p, capped_one_f_one_b(4, 8, 3, split=False), "idles 24", "where 14 is possible")
    no_w = [[a for a in row if "W" not in a] for row in capped_one_f_one_b(4, 8, 3, split=True)]
    fails_with(p, no_w, "cannot run", "every I has a W")
    assert "peak 3 <= 3" in p.grade(capped_one_f_one_b(4, 8, 3, split=True)).message


def capped_family(pp, m, warmups, deferred=None):
    """1F1B-like lists with the given warm-ups (and, split, deferred W counts): the family the reference is
    the best of."""
    acts = []
    for r in range(pp):
        w, split = min(warmups[r], m), deferred is not None
        row, pending = [Action(r, "F", k) for k in range(w)], deque()
        for k in range(m):
            if w + k < m:
                row.append(Action(r, "F", w + k))
            if not split:
                row.append(Action(r, "B", k))
                continue
            row.append(Action(r, "I", k))
            pending.append(k)
            if len(pending) > deferred[r]:
                row.append(Action(r, "W", pending.popleft()))
        acts.append(row + [Action(r, "W", k) for k in pending])
    return linear_schedule("family", pp, m, acts)


@pytest.mark.parametrize("split", [False, True])
def test_reference_is_the_best_of_its_family_for_the_course_cap(split):
    """No choice of warm-ups (and deferred W) under the cap beats the reference on the course's setting."""
    costs, cap = CostModel(F=1, B=2, W=1), 3
    best = simulate(linear_schedule("ref", 4, 8, rank_lists(capped_one_f_one_b(4, 8, cap, split), 4)), costs).worst_idle
    options = [(w, d) for w in range(cap) for d in range(cap - w)] if split else [(w, None) for w in range(cap)]
    for combo in itertools.product(options, repeat=4):
        warmups = [w for w, _ in combo]
        schedule = capped_family(4, 8, warmups, [d for _, d in combo] if split else None)
        try:
            timeline = simulate(schedule, costs)
        except ValueError:  # a later rank warming up longer than its predecessor can deadlock
            continue
        if max(timeline.peak_activations(r) for r in range(4)) <= cap:
            assert timeline.worst_idle >= best - 1e-9, combo


def test_memory_cap_target_comes_from_the_reference():
    """Other costs, other sizes: the target moves with them, and the reference still passes."""
    for costs in (CostModel(F=1, B=3, W=1), CostModel(F=2, B=2, W=0.5)):
        for pp, m, cap, split in ((3, 6, 2, False), (5, 7, 4, True), (2, 5, 1, True)):
            p = memory_cap_puzzle(pp, m, cap, split, costs)
            ref = capped_one_f_one_b(pp, m, cap, split)
            assert p.grade(ref).passed
            target = simulate(linear_schedule("ref", pp, m, rank_lists(ref, pp)), costs).worst_idle
            assert f"{target:g}" in p.grade(ref).message
    assert "beats our reference" in memory_cap_puzzle(4, 8, 2).grade(
        [[str(a) for a in acts] for acts in capped_family(4, 8, [1, 1, 0, 0]).actions]).message


# ---------------------------------------------------------------------------------------------- deadlock

@pytest.mark.parametrize("key, name", [("1f1b-deadlock", "1f1b"), ("interleaved-deadlock", "interleaved1f1b")])
def test_deadlock_plausible_wrong_answers(key, name):
    p = PUZZLES[key]
    broken = [[str(a) for a in acts] for acts in flipped_warmup(name, 4, 8).actions]
    assert "no deadlock" in p.statement and "wait for each other" in p.statement
    fails_with(p, broken, "unchanged", "no deadlock")
    dropped = [row[:] for row in broken]
    gone = dropped[2].pop()
    fails_with(p, dropped, f"rank 2: you dropped {gone}", "only reorders")
    added = [row[:] for row in broken]
    added[0].append(added[0][0])
    fails_with(p, added, f"rank 0: you added {added[0][0]}")
    half_fixed = [row[:] for row in broken]  # only the last rank repaired: still a cycle further up
    half_fixed[3] = lines(name, 4, 8)[3]
    fails_with(p, half_fixed, "cannot run", "wait for each other")
    # runs, but with no warm-up at all: one micro-batch in flight per rank
    if name == "1f1b":
        slow = [[str(Action(r, k, mb)) for mb in range(8) for k in "FB"] for r in range(4)]
        fails_with(p, slow, "it runs now", "where 9 is possible")
    assert p.grade(lines(name, 4, 8)).passed


def test_deadlock_puzzle_needs_two_ranks_and_two_microbatches():
    for ranks, m in ((1, 8), (4, 1)):
        with pytest.raises(ValueError, match="nothing to fix"):
            deadlock_puzzle("1f1b", ranks, m)
    with pytest.raises(ValueError, match="1f1b or interleaved1f1b"):
        deadlock_puzzle("gpipe", 4, 8)
    for ranks, m in ((2, 2), (3, 5), (5, 10)):
        p = deadlock_puzzle("1f1b", ranks, m)
        assert p.grade(p.reference()).passed


# ------------------------------------------------------------------------------------------------ idle

def test_idle_prediction_plausible_wrong_answers():
    p = PUZZLES["gpipe-idlest-rank"]
    assert p.reference() == ("all", "c")
    fails_with(p, (0, "a"), "rank 0 idles 9", "not the only rank", "compare the work")
    fails_with(p, (3, "b"), "rank 3 idles 9", "not the only rank")
    fails_with(p, ("all", "a"), "right rank, but not (a)", "Where a rank waits")
    fails_with(p, ("all", "d"), "right rank, but not (d)")
    fails_with(p, ("all", "z"), "one of a, b, c, d")
    fails_with(p, (9, "c"), "0..3")
    fails_with(p, "all", "return a pair")
    assert p.grade(("ALL", "C")).passed


def test_idle_prediction_with_a_unique_idlest_rank():
    """1F1B with overlapped pairs (F&B < F+B): the last rank pairs most often, computes least, idles most."""
    reasons = {"a": Reason("rank 0 waits for the first backward", False, "no"),
               "b": Reason("the last rank overlaps most, so computes least", True, "yes")}
    p = idle_puzzle("1f1b-overlap", 4, 8, CostModel(F=1, B=2, W=1, FB=2.5), reasons)
    timeline = simulate(make_schedule("1f1b-overlap", 4, 8), CostModel(F=1, B=2, W=1, FB=2.5))
    idlest = max(range(4), key=timeline.idle)
    assert p.reference() == (idlest, "b") and p.grade((idlest, "b")).passed
    fails_with(p, ("all", "b"), "not all ranks idle alike")
    fails_with(p, (0, "a"), "another rank idles longer")
    assert f"rank {idlest} " not in p.grade((0, "a")).message  # the reply does not give the answer away


# ------------------------------------------------------------------------------------------ rank lists

def test_dualpipev_rank_lists_plausible_wrong_answers():
    p = PUZZLES["dualpipev-rank-lists"]
    right = lines("dualpipev", 4, 8)
    # an overlapped pair written as its two parts: valid, slower, and named
    schedule = make_schedule("dualpipev", 4, 8)
    split_pair = [row[:] for row in right]
    i = next(i for i, a in enumerate(schedule.actions[0]) if isinstance(a, OverlappedAction))
    pair = schedule.actions[0][i]
    split_pair[0][i:i + 1] = [str(pair.forward), str(pair.backward)]
    fails_with(p, split_pair, f"rank 0, position {i}", "one F&B pair", "Your schedule runs")
    fails_with(p, lines("zbv", 4, 8), "rank 0, position", "Your schedule runs")
    swapped = [right[1], right[0], right[2], right[3]]
    fails_with(p, swapped, "cannot run", "holds its stage")
    short = [row[:] for row in right]
    short[2] = short[2][:-1]
    fails_with(p, short, "cannot run", "rule 'every I has a W'")


def test_rank_list_puzzle_other_schedules():
    for name, ranks, m in (("1f1b", 3, 5), ("zbv", 3, 6), ("interleaved1f1b", 2, 4)):
        p = rank_list_puzzle(name, ranks, m)
        assert p.grade(lines(name, ranks, m)).passed
        assert not p.grade(lines("gpipe", ranks, m) if name == "1f1b" else lines(name, ranks, m)[::-1]).passed


# ------------------------------------------------------------------------------- the notebook's check

def test_check_puzzle_reports_without_leaking_the_solution(capsys):
    p = PUZZLES["gpipe-memory-cap"]

    def stub():
        raise NotImplementedError

    assert not check_puzzle(p, stub).attempted
    assert "not attempted yet" in capsys.readouterr().out
    result = check_puzzle(p, lambda: lines("gpipe", 4, 8))
    out = capsys.readouterr().out
    assert not result.passed and "over the cap of 3" in out and "3 hints available" in out
    assert "expected" not in out and "0F0" not in out  # neither the solution nor its lists
    check_puzzle(p, lambda: lines("gpipe", 4, 8), hint=2)
    out = capsys.readouterr().out
    assert "hint 1:" in out and "hint 2:" in out and "hint 3:" not in out
    assert check_puzzle(p, lambda: p.reference(), hint=3).passed
    out = capsys.readouterr().out
    assert "✅" in out and "our reference design" in out and "A solver proves" in out and "hint 3:" in out


def test_wrong_schedule_answers_are_drawn(monkeypatch):
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(plt.gcf()))
    PUZZLES["gpipe-memory-cap"].show(lines("gpipe", 4, 8))
    PUZZLES["gpipe-memory-cap"].show("not a schedule")  # nothing to draw: no error either
    assert len(shown) == 1
    plt.close("all")


def test_notebooks_carry_the_stubs_of_their_puzzles():
    """A notebook that grades a puzzle shows the library's stub, so the two cannot drift apart."""
    used = 0
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        for key, puzzle in PUZZLES.items():
            if any(f'PUZZLES["{key}"]' in c for c in cells):
                used += 1
                assert any(puzzle.stub.splitlines()[0] in c for c in cells), (path.name, key)
    assert used >= 1


def test_puzzle_repr_is_its_statement():
    p = replace(PUZZLES["gpipe-memory-cap"])
    assert p.statement in repr(p) and p._repr_markdown_().startswith("**Puzzle:")


def test_lesson_solutions_solve_their_notebooks_puzzles():
    """Each lesson's solution code for a puzzle of its notebook passes the grader (lessons/NN_x.md holds the
    solutions of notebooks/NN_x.ipynb)."""
    import re

    graded = 0
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        keys = [k for k in PUZZLES if any(f'PUZZLES["{k}"]' in c for c in cells)]
        if not keys:
            continue
        lesson = (ROOT / "lessons" / f"{path.stem}.md").read_text()
        blocks = re.findall(r"```python\n(.*?)```", lesson, flags=re.S)
        for key in keys:
            stub_name = re.match(r"def (\w+)\(", PUZZLES[key].stub).group(1)
            solutions = [b for b in blocks if f"def {stub_name}(" in b]
            assert solutions, f"{path.stem}: no solution of {key} ({stub_name}) in the lesson"
            namespace: dict = {}
            exec(solutions[0], namespace)  # noqa: S102 - the course's own lesson text
            verdict = PUZZLES[key].grade(namespace[stub_name]())
            assert verdict.passed, (path.stem, key, verdict.message)
            graded += 1
    assert graded >= 1


# ------------------------------------------------------------------------------------- the FP8 puzzle (06)

def test_fp8_scaling_puzzle_right_and_wrong_answers(capsys):
    from utils.fp8.puzzles import SCALING_PUZZLE, ScalingPuzzle, scaling_options

    p = SCALING_PUZZLE
    right = p.reference()
    table = scaling_options(*p.data)
    ok = table[table["ordinary error"] <= p.max_error]
    assert (right[0], right[1]) == tuple(ok.iloc[0][["format", "granularity"]])  # cheapest that meets the limit
    assert p.grade(right).passed and p.grade(list(right)).passed
    fails_with(p, ("e4m3", "tensor"), "over the 3% limit", "outlier channels set this scale")
    fails_with(p, ("e4m3", "row"), "over the 3% limit", "squeezed toward zero")
    fails_with(p, ("e5m2", right[1]), "E5M2 keeps 2 mantissa bits")
    # MX's four times as many scales are E8M0 bytes: the same 4096 bytes as the tiles' FP32 scales, both pass
    assert p.grade(("e4m3", "mx1x32")).passed and p.grade(("e4m3", "tile1x128")).passed
    loose = ScalingPuzzle(max_error=0.05)          # E5M2 per tensor (4 bytes of scales) now meets the limit
    assert loose.reference() == ("e5m2", "tensor")
    fails_with(loose, ("e4m3", "tile1x128"), "accurate enough", "fewer bytes")
    fails_with(p, ("e4m2", "row"), "choose a format")
    fails_with(p, "tile1x128", "return a pair")
    assert not check_puzzle(p, lambda: ("e4m3", "tensor")).passed
    out = capsys.readouterr().out
    assert "over the 3% limit" in out and "3 hints available" in out and "granularity" in out  # the table
    # the target follows the data: a milder outlier lets a cheaper scale through
    mild = ScalingPuzzle(outlier=10.0)
    assert mild.reference() != right and mild.grade(mild.reference()).passed
    with pytest.raises(ValueError, match="raise the limit"):
        ScalingPuzzle(max_error=0.001).reference()


def test_lesson_06_solves_the_fp8_puzzle():
    import re

    from utils.fp8.puzzles import SCALING_PUZZLE

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "lessons" / "06_fp8_mixed_precision.md").read_text(), re.S)
    namespace: dict = {}
    exec(next(b for b in blocks if "def my_scaling(" in b), namespace)  # noqa: S102 - the course's own lesson
    assert SCALING_PUZZLE.grade(namespace["my_scaling"]()).passed
    cells = json.loads((ROOT / "notebooks" / "06_fp8_mixed_precision.ipynb").read_text())["cells"]
    assert any(SCALING_PUZZLE.stub.splitlines()[0] in "".join(c["source"]) for c in cells)


def test_overlap_idle_prediction_and_rank_lists():
    """05's prediction (1F1B-overlap with an all-to-all: the last rank pairs most, hides most, idles most) and
    07's lists (the communication baseline written by hand)."""
    p = PUZZLES["overlap-idlest-rank"]
    # half the SMs to communication and a small all-to-all: a pair costs more than it hides, so rank 0 (fewest
    # pairs) is busy least; the notebook's own tables show the last rank idling most at 20 of 132 SMs
    assert p.reference() == (0, "c") and "dispatch 0.25 and combine 0.25" in p.statement and "0.5 of the SMs" in p.statement
    fails_with(p, (3, "a"), "rank 3 idles", "another rank idles longer")
    fails_with(p, ("all", "d"), "not all ranks idle alike")
    fails_with(p, (0, "b"), "right rank, but not (b)")
    lists = PUZZLES["1f1b-overlap-rank-lists"]
    fails_with(lists, lines("1f1b", 4, 8), "rank 0, position", "Your schedule runs")
    unpaired = lines("1f1b-overlap", 4, 8)
    i = next(i for i, a in enumerate(unpaired[3]) if "OVERLAP" in a)
    pair = make_schedule("1f1b-overlap", 4, 8).actions[3][i]
    unpaired[3][i:i + 1] = [str(pair.forward), str(pair.backward)]
    fails_with(lists, unpaired, f"rank 3, position {i}", "one F&B pair")


def test_idle_puzzles_name_only_the_costs_their_schedule_uses_and_hint_at_exposed_communication():
    gpipe, overlap = PUZZLES["gpipe-idlest-rank"], PUZZLES["overlap-idlest-rank"]
    assert "W =" not in gpipe.statement and "F&B" not in gpipe.statement   # met in notebooks 04 and 05
    assert "F&B = " in overlap.statement and "all-to-all" in overlap.statement
    # with communication, idle is step - compute - exposed communication: the hints must say so, or they lead
    # to "all ranks alike" (every rank computes the same), which the grader rejects
    assert "exposed" in overlap.hints[0] and "exposed" in overlap.hints[1]
    assert not overlap.grade(("all", "c")).passed and overlap.grade(overlap.reference()).passed


def test_notebook_05_hints_lead_to_an_answer_the_grader_accepts():
    """Follow each hint of 05's puzzles as a learner would and grade where they lead.

    overlap-idlest-rank: hint 1 defines idle as step - compute - exposed communication; hint 3 prices a pair
    against its two chunks alone, so compute is counted per rank, not assumed equal: the rank the hints point to,
    with the reason they describe (the most pairs, the least time busy), is the grader's answer. The hints of
    the GPipe puzzle ("step minus compute", "count the work") would lead to the wrong rank here.
    dualpipev-rank-lists: the warm-up formula of hint 3 is in ranks (N), the count the reference lists run."""
    p = PUZZLES["overlap-idlest-rank"]
    timeline = simulate(make_schedule("1f1b-overlap", 4, 8), SLOW_PAIR_COSTS)
    budgets = [timeline.budget(r) for r in range(4)]
    idle = [timeline.makespan - b.compute - b.comm_exposed for b in budgets]     # hint 1
    led_to = max(range(4), key=lambda r: idle[r])
    assert "busy for the least time" in p.hints[2] and "2 x F&B = 6" in p.hints[2] and "= 4" in p.hints[2]
    assert not any("computes the same" in h for h in p.hints)
    right = next(k for k, r in SLOW_PAIR_IDLE_REASONS.items() if r.right)  # the reason hint 3 describes
    assert led_to == 0 and p.grade((led_to, right)).passed
    by_pairs_hidden = max(range(4), key=lambda r: -budgets[r].comm_exposed)  # "pairs hide": the wrong rank
    assert not p.grade((by_pairs_hidden, "a")).passed
    v = PUZZLES["dualpipev-rank-lists"]
    assert "PP-1-r" not in " ".join(v.hints) and "2(N-1-r)" in v.hints[2]
    reference = make_schedule("dualpipev", 4, 8)
    for r in range(4):  # warm-up: 2(N-1-r) forwards of the rank's first stage, then phase 2 adds one more
        row = reference.actions[r]
        leading = next(i for i, a in enumerate(row) if not (isinstance(a, Action) and a.kind == "F"
                                                             and a.stage == r))
        assert leading == 2 * (4 - 1 - r) + 1


def test_split_memory_cap_names_the_solvers_proven_optimum():
    """The reference (idle 14) passes and is told that a solver proves 7; the stored optimum passes as such."""
    from utils.pipeline.puzzles.course import _stored_optimum

    p = PUZZLES["zero-bubble-memory-cap"]
    assert "proven optimum" in p.statement
    ref = p.grade(capped_one_f_one_b(4, 8, 3, split=True))
    assert ref.passed and "idle 14" in ref.message and "proves 7 possible" in ref.message
    best = p.grade(_stored_optimum("cap/zb1p/3"))
    assert best.passed and "idle 7" in best.message and "optimum a solver proves" in best.message
