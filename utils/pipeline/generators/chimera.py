"""Chimera (Li and Hoefler, "Chimera: Efficiently Training Large-Scale Neural Networks with Bidirectional
Pipelines", SC'21): two pipelines in opposite directions over the same ranks, the scheme DualPipe's
bidirectional placement grew from (the DeepSeek-V3 report, Sec. 3.2.1, compares DualPipe with it).

Placement (paper Sec. 3.1): the "down" pipeline runs stage i on rank i, the "up" pipeline stage i on rank
D-1-i, so each rank holds one stage of each: two copies of the weights. Half of the micro-batches enter at
each end. Each pipeline alone is 1F1B with D/2 micro-batches; merged, each fills the other's bubbles, and for
an even D no two actions ever want one rank at the same time (Sec. 3.1).

The order on one rank, in words. Call *near* the pipeline whose early stage the rank holds (down on ranks
r < D/2, up on the others) and *far* the other one (the rank holds one of its late stages, close to its
loss); let h = min(r, D-1-r) be the rank's distance to the nearer end, a = D/2 - h and b = h. One basic
unit (D micro-batches, D/2 per direction) runs five phases (``chimera_phase_steps``):

    1. a forwards of the near pipeline              (its micro-batches reach this rank first)
    2. b times: far forward, near forward           (both directions flowing in)
    3. a times: far forward, far backward           (1F1B on the far pipeline: its loss is close)
    4. b times: near backward, far backward         (both directions flowing out)
    5. a backwards of the near pipeline             (its gradients come back last)

More micro-batches than ranks (paper Sec. 3.5): N = K D, K basic units concatenated directly. Phase 5 of a
unit and phase 1 of the next interleave (a times: a near backward of the old unit, a near forward of the
new one), so the next unit's forwards fill the bubbles at the end of the last one. This is the order of the
authors' SC'21 runtime (github.com/Shigangli/Chimera, branch ChimeraBk, chimera_bert/bert/
main_with_runtime_direct.py). When a forward and a backward differ in length, direct concatenation leaves
bubbles between units (``chimera_bubble``); Sec. 3.5's forward doubling and backward halving reshape the
passes themselves so that a forward and a backward last alike (forward doubling with activation
recomputation), which one kit action per micro-batch and stage cannot express: they are not built here.

Micro-batches: the down pipeline runs 0 .. N/2-1 and the up pipeline N/2 .. N-1, each in order (DualPipe's
numbering in the kit; for N = D it is the paper's four-stage figure: 0 and 1 down, 2 and 3 up).
"""

from __future__ import annotations

from typing import NamedTuple

from utils import inputs as arg
from utils.pipeline.generators.common import check_counts
from utils.pipeline.schedule import Action, Schedule


def chimera(n_ranks: int, n_microbatches: int) -> Schedule:
    """Chimera (Li and Hoefler, SC'21, Sec. 3.1 and 3.5): two 1F1B pipelines in opposite directions over
    the same D ranks, merged; full backward, no overlapped pairs. The module docstring gives the order.

    Stage ids as in DualPipe: stage i of the down pipeline is id i (on rank i), stage i of the up pipeline is
    id D + i (on rank D-1-i); mirrored stages share a model chunk (two copies of the weights on every rank).
    Needs an even D (the merge is conflict-free only then, Sec. 3.1) and N a multiple of D (the schedule is
    made of basic units of D micro-batches, Sec. 3.5).
    """
    d, n = check_counts("chimera", n_ranks, n_microbatches)
    _check_even(d, "chimera")
    if n % d:
        below = n - n % d
        nearest = f"{below} or {below + d}" if below else f"{d}"
        raise ValueError(
            f"chimera needs the number of micro-batches to be a multiple of the number of ranks (D = {d}): it "
            f"is made of basic units of D micro-batches, D/2 entering at each end, concatenated (Li and "
            f"Hoefler, SC'21, Sec. 3.5); got {n}. Nearest counts that work: {nearest}. DualPipe needs only an "
            f"even number (DeepSeek-V3 report Sec. 3.2.1)."
        )
    half = n // 2
    actions = []
    for rank in range(d):
        down, up = rank, 2 * d - 1 - rank  # the stage ids this rank holds
        near_is_down = rank < d // 2  # the down pipeline's early stages live on the first half of the ranks
        near = (down, 0) if near_is_down else (up, half)  # (stage id, its first micro-batch)
        far = (up, half) if near_is_down else (down, 0)
        actions.append(_chimera_rank(chimera_phase_steps(d, rank), n // d, near, far))
    stages = tuple(range(d))
    return Schedule(
        name="chimera",
        n_ranks=d,
        n_microbatches=n,
        stage_to_rank=stages + tuple(d - 1 - s for s in stages),
        stage_to_chunk=stages * 2,
        routes=(stages,) * half + (tuple(range(d, 2 * d)),) * half,
        actions=tuple(tuple(a) for a in actions),
    )


def chimera_phase_steps(n_ranks: int, rank: int) -> tuple[int, int, int, int, int]:
    """How many steps each of the five phases of one basic unit runs on ``rank`` (Chimera, Sec. 3.1):
    (a, b, a, b, a) with a = D/2 - h, b = h and h = min(rank, D-1-rank) the rank's distance to the nearer
    end. Per unit, the near and the far pipeline each run a + b = D/2 forwards and D/2 backwards."""
    return _phase_steps(n_ranks, rank, "chimera_phase_steps")


def _phase_steps(n_ranks, rank, where: str, name: str = "n_ranks") -> tuple[int, int, int, int, int]:
    d = _check_even(arg.whole(n_ranks, name, low=2, high=arg.MAX_RANKS, where=where,
                              why="two pipelines in opposite directions need at least two ranks"), where)
    rank = arg.whole(rank, "rank", low=0, high=d - 1, where=where, why="ranks are numbered 0 .. n_ranks-1")
    h = min(rank, d - 1 - rank)
    a, b = d // 2 - h, h
    return (a, b, a, b, a)


def _chimera_rank(steps, units: int, near: tuple[int, int], far: tuple[int, int]) -> list[Action]:
    """One rank's list: ``units`` basic units of phases 1-4, phase 5 of one unit woven into phase 1 of the
    next, and the last unit's phase 5 at the end."""
    a, b = steps[0], steps[1]
    done = {"F": [0, 0], "B": [0, 0]}  # per kind, how many the near (0) and the far (1) pipeline have run

    def act(kind: str, which: int) -> Action:
        stage, first = (near, far)[which]
        done[kind][which] += 1
        return Action(stage, kind, first + done[kind][which] - 1)

    acts: list[Action] = []
    for unit in range(units):
        for _ in range(a):  # 1. near forwards; after the first unit each follows a near backward of the last
            acts += [act("B", 0), act("F", 0)] if unit else [act("F", 0)]
        for _ in range(b):  # 2. both directions flow in
            acts += [act("F", 1), act("F", 0)]
        for _ in range(a):  # 3. 1F1B on the far pipeline
            acts += [act("F", 1), act("B", 1)]
        for _ in range(b):  # 4. both directions flow out
            acts += [act("B", 0), act("B", 1)]
    acts += [act("B", 0) for _ in range(a)]  # 5. the near pipeline's last gradients come back
    return acts


def _check_even(d: int, where: str) -> int:
    if d % 2:
        raise ValueError(
            f"{where} needs an even number of ranks: the down and the up pipeline, 1F1B each, merge without two "
            f"actions wanting one rank at the same time only for an even pipeline depth D (Li and Hoefler, "
            f"SC'21, Sec. 3.1); got {d}."
        )
    return d


# ------------------------------------------------------------------------------------ closed forms

def chimera_bubble(pp: int, n_microbatches: int, F: float, B: float) -> float:
    """Idle time of every rank in a Chimera step, in the time units of F and B (p2p latency 0):
    (PP - 2) (max(F, B) + (K - 1) |B - F|) with K = M / PP basic units.

    With F = B, the paper's unit (a slot per pass), it is PP - 2 slots for any M (Li and Hoefler, Sec. 3.1
    and Table 1: bubble ratio (D-2)/(2N+D-2), against 2(D-1) slots for GPipe and 1F1B). When backward and
    forward differ, each junction of two basic units adds (PP - 2)|B - F|: the intermediate bubbles of direct
    concatenation that Sec. 3.5's forward doubling removes. The general form is the kit's, read off its
    simulator and checked there on a grid of sizes and costs (tests/test_chimera.py).
    """
    where = "chimera_bubble"
    pp = _check_even(arg.whole(pp, "pp", low=2, high=arg.MAX_RANKS, where=where,
                               why="two pipelines in opposite directions need at least two ranks"), where)
    m = arg.whole(n_microbatches, "n_microbatches", low=pp, high=arg.MAX_MICROBATCHES, where=where,
                  why="Chimera runs basic units of PP micro-batches")
    if m % pp:
        arg.fail("n_microbatches", f"a multiple of pp = {pp}", m, where=where,
                 why="Chimera runs basic units of PP micro-batches, Sec. 3.5")
    F = arg.real(F, "F", low=0, high=arg.MAX_COST, where=where, why="a duration cannot be negative")
    B = arg.real(B, "B", low=0, high=arg.MAX_COST, where=where, why="a duration cannot be negative")
    return (pp - 2) * (max(F, B) + (m // pp - 1) * abs(B - F))


def chimera_peak_activations(pp: int, rank: int) -> int:
    """Most stage-activations ``rank`` holds at once in Chimera: PP/2 + h + 1, h = min(rank, PP-1-rank).

    From PP/2 + 1 on the end ranks to PP on the middle ones, whatever the number of micro-batches: Li and
    Hoefler's Table 1, activations memory [(D/2 + 1) M_a, D M_a], with M_a one micro-batch through one stage
    (the kit's unit, ``Timeline.peak_activations``). 1F1B holds PP on rank 0; DualPipe PP + 1 (DeepSeek-V3
    report Table 2). The peak comes in phase 3, after a + 2b forwards and one more far forward.
    """
    a, b, *_ = _phase_steps(pp, rank, "chimera_peak_activations", "pp")
    return a + 2 * b + 1


# --------------------------------------------------------------------------- what DualPipe adds on top

class Difference(NamedTuple):
    """One way DualPipe departs from Chimera: the ``aspect``, what each does, and what the change costs."""

    aspect: str
    chimera: str
    dualpipe: str
    price: str


def dualpipe_over_chimera() -> tuple[Difference, ...]:
    """What DualPipe (DeepSeek-V3 report Sec. 3.2.1, Table 2) adds on top of Chimera (Li and Hoefler, SC'21).

    Both place two pipelines in opposite directions over the same ranks (stage r of one direction and stage
    PP-1-r of the other on rank r: two copies of the weights), feed half the micro-batches from each end and
    run each direction in a 1F1B-like order. In the kit they have the same ``stage_to_rank``,
    ``stage_to_chunk`` and ``routes``: only the order of the actions, and what an action is, differ.

    * **Split backward in a bidirectional schedule.** Chimera runs every backward whole. DualPipe splits some
      into I (the input gradient the neighbour waits for) and W (the weight gradient only the optimizer
      needs), as zero bubble does (Qi et al. 2024), and runs W in the holes of its warm-up and cool-down: its
      bubble (PP/2-1)(F&B + B - 3W) does not grow with M (report Sec. 3.2.1), while Chimera's
      (``chimera_bubble``) is PP - 2 passes where F = B, and grows by (PP-2)|B - F| per basic unit otherwise.
    * **Overlapped F&B pairs.** In the steady phase DualPipe runs a forward chunk of one direction and a
      backward chunk of the other as one unit: each chunk is cut into attention, all-to-all dispatch, MLP and
      all-to-all combine, and one chunk's expert all-to-all and pipeline send/receive run while the other
      computes, so both are hidden (report Sec. 3.2.1, Figure 4). Chimera runs a forward, then a backward,
      so whatever communication the model has (the expert all-to-all, the pipeline sends) waits in line.
    * **The SMs that costs.** Communication that runs beside computation needs SMs of its own: DeepSeek-V3
      gives 20 of the H800's 132 SMs to it (report Sec. 3.2.2 and 3.5.1), which the matrix multiplications
      no longer get, and tunes the split by hand.

    DualPipe also relaxes Chimera's rule on counts (M even, not a multiple of PP; report Sec. 3.2.1) and pays
    in memory: up to PP + 1 activations per rank (Table 2) where Chimera holds PP/2 + 1 to PP
    (``chimera_peak_activations``).
    """
    return (
        Difference("placement", "stage r down and stage PP-1-r up on rank r: 2 weight copies",
                   "the same placement: 2 weight copies", "nothing: the same"),
        Difference("backward", "full B", "B split into I and W in warm-up and cool-down (zero bubble)",
                   "activations held until their W"),
        Difference("bubble", "(PP-2)(max(F,B) + (M/PP-1)|B-F|); PP-2 passes where F = B",
                   "(PP/2-1)(F&B+B-3W), not growing with M", "I and W kernels instead of one B"),
        Difference("overlap", "F, then B: all-to-all and PP communication exposed",
                   "F&B pairs hide all-to-all and PP communication behind the other chunk's compute",
                   "20 of 132 SMs (H800) given to communication; hand-tuned split"),
        Difference("activations per rank", "PP/2+1 (end ranks) to PP (middle ranks)", "up to PP+1",
                   "one more than Chimera's fullest rank"),
        Difference("micro-batches", "a multiple of PP", "even (the kit's DualPipe: at least 2 PP)",
                   "nothing: fewer constraints"),
    )
