"""One stage per rank, every micro-batch through stages 0..PP-1: naive, GPipe, 1F1B, ZB1P (ZB-H1)."""

from __future__ import annotations

from collections import deque

from utils.pipeline.generators.common import check_counts, linear_schedule
from utils.pipeline.schedule import Action, Schedule


def naive(n_ranks: int, n_microbatches: int) -> Schedule:
    """Model split over ranks, one micro-batch at a time: forward through all stages, then backward.

    Only one rank works at any moment: the baseline every pipeline schedule improves on.
    """
    n_ranks, n_microbatches = check_counts("naive", n_ranks, n_microbatches)
    actions = [
        [Action(rank, kind, mb) for mb in range(n_microbatches) for kind in ("F", "B")]
        for rank in range(n_ranks)
    ]
    return linear_schedule("naive", n_ranks, n_microbatches, actions)


def gpipe(n_ranks: int, n_microbatches: int) -> Schedule:
    """GPipe (Huang et al. 2019): all forwards, then all backwards (fill, drain).

    Bubble (PP-1)(F+B) like 1F1B, but every rank holds all M micro-batches' activations at the turn.
    """
    n_ranks, n_microbatches = check_counts("gpipe", n_ranks, n_microbatches)
    actions = []
    for rank in range(n_ranks):
        forwards = [Action(rank, "F", mb) for mb in range(n_microbatches)]
        backwards = [Action(rank, "B", mb) for mb in range(n_microbatches)]
        actions.append(forwards + backwards)
    return linear_schedule("gpipe", n_ranks, n_microbatches, actions)


def one_f_one_b(n_ranks: int, n_microbatches: int) -> Schedule:
    """1F1B (PipeDream-Flush, Narayanan et al. 2021): warm-up forwards, steady one-forward-one-backward,
    cool-down backwards.

    Rank r runs PP-1-r warm-up forwards so the first backward arrives just as its forwards run out; from then
    on it alternates, so it never holds more than PP-r micro-batches' activations (DeepSeek-V3 Table 2: PP).
    """
    n_ranks, n_microbatches = check_counts("1f1b", n_ranks, n_microbatches)
    actions = []
    for rank in range(n_ranks):
        warmup = min(n_ranks - 1 - rank, n_microbatches)
        steady = n_microbatches - warmup
        acts = [Action(rank, "F", mb) for mb in range(warmup)]
        for k in range(steady):
            acts += [Action(rank, "F", warmup + k), Action(rank, "B", k)]
        acts += [Action(rank, "B", mb) for mb in range(steady, n_microbatches)]
        actions.append(acts)
    return linear_schedule("1f1b", n_ranks, n_microbatches, actions)


def zb1p(n_ranks: int, n_microbatches: int) -> Schedule:
    """ZB-H1 ("Zero Bubble Pipeline Parallelism", Qi et al. 2024, Sec. 3.1): 1F1B with the backward split
    into I (gradient for the input, which the previous stage waits for) and W (gradient for the weights, which
    only the optimizer needs).

    Rank r keeps 1F1B's order of F and I, so it holds no more activations than 1F1B (PP - r of them plus
    ``deferred`` not yet released by their W), but it postpones its first ``deferred = r`` W passes to the
    cool-down, where without them it would wait for the I of the next rank. The last rank, which waits
    longest in the cool-down, defers the most.
    """
    n_ranks, n_microbatches = check_counts("zb1p", n_ranks, n_microbatches)
    actions = []
    for rank in range(n_ranks):
        warmup = min(n_ranks - 1 - rank, n_microbatches)
        steady = n_microbatches - warmup
        deferred = min(rank, steady)
        acts = [Action(rank, "F", mb) for mb in range(warmup)]
        pending_w: deque[int] = deque()
        for k in range(steady):
            acts += [Action(rank, "F", warmup + k), Action(rank, "I", k)]
            pending_w.append(k)
            if len(pending_w) > deferred:  # keep `deferred` W passes in hand for the cool-down
                acts.append(Action(rank, "W", pending_w.popleft()))
        for mb in range(steady, n_microbatches):
            acts.append(Action(rank, "I", mb))
            pending_w.append(mb)
            acts.append(Action(rank, "W", pending_w.popleft()))
        acts += [Action(rank, "W", mb) for mb in pending_w]
        actions.append(acts)
    return linear_schedule("zb1p", n_ranks, n_microbatches, actions)


#: Actions one step of each phase adds: F0 | F0 F1 | I1 W1 F1 | F0&B1 F1&B0 | B1 F1&B0 | B1 B0 | W I0 | W.
