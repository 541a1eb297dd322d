"""1F1B with overlapped pairs (``1f1b-overlap``): the baseline for DualPipe's communication hiding.

DualPipe hides the expert all-to-all of one chunk behind the computation of another by running a forward
and a backward of *different* micro-batches as one overlapped pair (DeepSeek-V3 report, Sec. 3.2.1,
Figure 4). Plain 1F1B has such pairs too: in its steady state every rank alternates a forward and a
backward of two different micro-batches. Megatron-Core runs exactly those as one unit ("combined 1F1B",
EP all-to-all overlap, ``--overlap-moe-expert-parallel-comm``; ``megatron/core/pipeline_parallel/
combined_1f1b.py``: without pipelining, micro-batch 0's forward alone, then pairs of one micro-batch's backward
with the next one's forward, then the last backward alone, which is this schedule with PP = 1). This module
builds that schedule on a plain linear pipeline of any depth, one stage per rank, one copy of the parameters.

Why the warm-up is deeper than 1F1B's (the arrangement follows from two dependencies):

* a pair is one unit: both of its results (the forward's activation, the backward's input gradient) are
  sent when the pair ends;
* the pair ``(F of m'; B of m)`` on rank r needs the gradient of m from rank r+1, which rank r+1 computes
  in *its* pair for m, and that pair needs a forward output from rank r.

Write ``w_r`` for the forwards rank r runs before its first pair, so its k-th pair is
``(F of w_r + k; B of k)``. For every rank to start a pair each pair-time (no stall in the steady state),
rank r+1's k-th pair must run one pair-time before rank r's k-th pair (which needs its gradient). It
starts as soon as the forward ``w_{r+1} + k`` has come from rank r, so rank r must have finished that
forward by the end of its pair k-2: ``w_{r+1} + k <= w_r + k - 2``, i.e. ``w_r >= w_{r+1} + 2``. The last
rank needs ``w >= 1`` (a pair cannot run the forward and the backward of the same micro-batch: the backward
needs the forward's activations). The smallest warm-up is therefore

    w_r = 2 (PP - 1 - r) + 1        (1F1B's is PP - 1 - r)

Keeping 1F1B's warm-up and pairing its steady F and B instead makes rank r's pair k wait for rank r+1's
pair k, which waits for rank r's pair k-1: two pair-times per micro-batch, half the throughput.

The price is memory: rank r holds ``w_r + 1 = 2 (PP - r)`` stage-activations at its peak (the pair's
forward starts before its backward releases one), twice 1F1B's ``PP - r``: ``2 PP`` on rank 0.
Megatron-Core avoids the deeper warm-up another way: its TransformerConfig requires virtual pipeline stages
(``virtual_pipeline_model_parallel_size``) for EP all-to-all overlap when PP > 1, and interleaves them
(``combined_1f1b_schedule_for_interleaved_pipelining``).

Few micro-batches: a rank runs ``min(w_r, M)`` warm-up forwards and ``M - w_r`` pairs; where ``M <= w_r``
no pair can form on that rank and it runs all its forwards, then all its backwards (GPipe's order there).
With ``M = 1`` the schedule is exactly 1F1B. Any PP >= 1 and M >= 1 work.
"""

from __future__ import annotations

from utils import inputs as arg
from utils.pipeline.generators.common import check_counts, linear_schedule
from utils.pipeline.schedule import Action, ActionLike, OverlappedAction, Schedule


def overlap_warmup(n_ranks: int, rank: int, n_microbatches: int, lead: int = 2) -> int:
    """Forwards rank ``rank`` runs before its first overlapped pair: ``min(lead (PP-1-r) + 1, M)``.

    ``lead`` is how many more warm-up forwards a rank runs than the next one: 2 by default, the fewest that
    keep every pair busy (see this module's docstring: a pair's forward must run one pair ahead of its
    partner on the next rank); 1 is 1F1B's lead, the trap that halves throughput.
    """
    n_ranks, n_microbatches = check_counts("overlap_warmup", n_ranks, n_microbatches)
    rank = arg.whole(rank, "rank", low=0, high=n_ranks - 1, where="overlap_warmup")
    lead = arg.whole(lead, "lead", low=1, where="overlap_warmup",
                     why="warm-up forwards a rank runs beyond the next one's")
    return min(lead * (n_ranks - 1 - rank) + 1, n_microbatches)


def one_f_one_b_overlap(n_ranks: int, n_microbatches: int, *, lead: int = 2) -> Schedule:
    """1F1B whose steady-state forward and backward (of different micro-batches) run as one overlapped pair.

    Rank r: ``w_r = min(2 (PP-1-r) + 1, M)`` warm-up forwards, then ``M - w_r`` pairs
    ``(F of w_r + k; B of k)``, then the last ``w_r`` backwards alone (cool-down). Inside a pair one micro-
    batch's expert all-to-all runs while the other computes (Megatron-Core's combined 1F1B; DeepSeek-V3
    report Sec. 3.2.1 for the pair itself). One stage per rank: 1x parameters, ``2 (PP - r)`` activations.

    ``lead`` (default 2) is the difference in warm-up forwards between neighbouring ranks; ``lead=1`` builds
    the tempting arrangement with 1F1B's warm-up, named ``1f1b-overlap (lead 1)``, for the lesson that shows
    why it stalls.
    """
    check_counts("1f1b-overlap", n_ranks, n_microbatches)
    if isinstance(lead, bool) or not isinstance(lead, int) or lead < 1:
        raise ValueError(
            f"1f1b-overlap: lead (extra warm-up forwards per rank towards the input) must be a whole number "
            f">= 1: with 0 every rank's first pair waits for the next rank's first pair, which waits for "
            f"this rank's forward inside it, a deadlock; got {lead!r}."
        )
    actions: list[list[ActionLike]] = []
    for rank in range(n_ranks):
        warmup = overlap_warmup(n_ranks, rank, n_microbatches, lead)
        pairs = n_microbatches - warmup
        acts: list[ActionLike] = [Action(rank, "F", mb) for mb in range(warmup)]
        acts += [OverlappedAction(Action(rank, "F", warmup + k), Action(rank, "B", k)) for k in range(pairs)]
        acts += [Action(rank, "B", mb) for mb in range(pairs, n_microbatches)]
        actions.append(acts)
    name = "1f1b-overlap" if lead == 2 else f"1f1b-overlap (lead {lead})"
    return linear_schedule(name, n_ranks, n_microbatches, actions)
