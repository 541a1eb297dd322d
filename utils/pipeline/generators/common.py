"""What every generator shares: the count checks (with the teaching message) and the linear placement."""

from __future__ import annotations

from utils.pipeline.schedule import ActionLike, Schedule


def check_counts(name: str, n_ranks, n_microbatches) -> None:
    for label, value in (("n_ranks", n_ranks), ("n_microbatches", n_microbatches)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: {label} must be a whole number (a count); got {value!r}.")
        if value < 1:
            raise ValueError(
                f"{name}: {label} must be at least 1 (a pipeline needs a rank and a micro-batch); "
                f"got {value}."
            )


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
