"""What every generator shares: the count checks (with the teaching message) and the linear placement."""

from __future__ import annotations

from utils import inputs as arg
from utils.pipeline.schedule import ActionLike, Schedule


def check_counts(name: str, n_ranks, n_microbatches) -> tuple[int, int]:
    """The rule every generator starts with: whole counts, at least one rank and one micro-batch, and
    within the course's size limits (``utils.inputs.MAX_RANKS``, ``MAX_MICROBATCHES``), checked before
    any action is built. Returns the counts as ints."""
    ranks = arg.whole(n_ranks, "n_ranks", low=1, high=arg.MAX_RANKS, where=name,
                      why="a pipeline needs at least one rank")
    microbatches = arg.whole(n_microbatches, "n_microbatches", low=1, high=arg.MAX_MICROBATCHES, where=name,
                             why="a training step needs at least one micro-batch")
    return ranks, microbatches


def linear_schedule(
    name: str, n_ranks: int, n_microbatches: int, actions: list[list[ActionLike]]
) -> Schedule:
    """Stage s on rank s, every micro-batch through stages 0..PP-1 (naive, GPipe, 1F1B, ZB1P)."""
    stages = tuple(range(n_ranks))
    return Schedule(
        name=name,
        n_ranks=n_ranks,
        n_microbatches=n_microbatches,
        stage_to_rank=stages,
        stage_to_chunk=stages,
        routes=(stages,) * n_microbatches,
        actions=tuple(tuple(a) for a in actions),
    )


def v_schedule(name: str, n_ranks: int, n_microbatches: int, actions) -> Schedule:
    """The V placement of DualPipeV and ZB-V: 2N stages on N ranks, rank r holding stages r and 2N-1-r, every
    micro-batch going down the V and back up (stages 0..2N-1), so it enters and leaves on rank 0."""
    stages = tuple(range(2 * n_ranks))
    return Schedule(
        name=name,
        n_ranks=n_ranks,
        n_microbatches=n_microbatches,
        stage_to_rank=tuple(min(s, 2 * n_ranks - 1 - s) for s in stages),
        stage_to_chunk=stages,
        routes=(stages,) * n_microbatches,
        actions=tuple(tuple(a) for a in actions),
    )
