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
