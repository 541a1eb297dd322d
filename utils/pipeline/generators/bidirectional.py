"""DualPipe (DeepSeek-V3 report Sec. 3.2.1) and DualPipeV (deepseek-ai/DualPipe): one ``_dualpipe_rank`` for both.

Each rank's list reads like the report's Figure 5: eight phases, each a loop whose count is a named formula
(``dualpipe_phase_steps``) of the rank, the number of ranks and the number of micro-batches.
"""

from __future__ import annotations

from collections import deque

from utils import inputs as arg
from utils.pipeline.generators.common import check_counts, v_schedule
from utils.pipeline.schedule import Action, ActionLike, OverlappedAction, Schedule

DUALPIPE_ACTIONS_PER_STEP = (1, 2, 3, 2, 2, 2, 2, 1)


def dualpipe_phase_steps(half_ranks: int, half_rank: int, chunks_per_direction: int) -> tuple[int, ...]:
    """How many steps each of DualPipe's eight phases runs on one rank (deepseek-ai/DualPipe ``step()``).

    ``half_ranks`` is half the pipeline (PP/2 for DualPipe, N for DualPipeV), ``half_rank`` the rank's
    distance to the nearer end, ``chunks_per_direction`` the micro-batches fed from each end.
    """
    where = "dualpipe_phase_steps"
    half_ranks = arg.whole(half_ranks, "half_ranks", low=1, high=arg.MAX_RANKS, where=where,
                           why="half the pipeline holds at least one rank")
    half_rank = arg.whole(half_rank, "half_rank", low=0, high=half_ranks - 1, where=where,
                          why="a rank's distance to the nearer end of the pipeline is less than half_ranks")
    arg.whole(chunks_per_direction, "chunks_per_direction", low=2 * half_ranks,
              high=arg.MAX_MICROBATCHES, where=where,
              why="each direction needs 2 x half_ranks micro-batches to fill the pipeline; with fewer the "
                  "phase counts would be negative")
    to_middle = half_ranks - half_rank - 1  # ranks between this one and the middle of the pipeline
    return (
        2 * to_middle,                                          # 1. warm-up forwards of phase 0
        half_rank + 1,                                          # 2. F0 F1
        to_middle,                                              # 3. zero-bubble I1 W1 F1
        chunks_per_direction - 2 * half_ranks + half_rank + 1,  # 4. main overlapped pairs
        to_middle,                                              # 5. cool-down B1, F1&B0
        half_rank + 1,                                          # 6. B1 B0
        to_middle,                                              # 7. W I0
        half_rank + 1,                                          # 8. remaining W
    )


def _dualpipe_rank(
    half_ranks: int,
    half_rank: int,
    chunks_per_direction: int,
    stage_of_phase,
    first_mb_of_phase,
    is_middle: bool,
) -> list[ActionLike]:
    """DualPipe's eight phases on one rank (DeepSeek-V3 report Sec. 3.2.1, Figure 5).

    A rank holds two stages, one per direction; "phase 0" is the stage it starts with, "phase 1" the other.
    ``half_rank`` is the distance to the nearer end of the pipeline. ``stage_of_phase[p]`` is the stage id of
    phase p; ``first_mb_of_phase[p]`` the id of the first micro-batch that phase sees (they arrive in order).
    """
    next_f = [0, 0]  # how many forwards each phase has run
    next_b = [0, 0]  # how many backwards (B or I) each phase has run
    pending_w: deque[Action] = deque()  # I passes whose W was postponed, oldest first
    acts: list[ActionLike] = []

    def forward(phase: int) -> Action:
        mb = first_mb_of_phase[phase] + next_f[phase]
        next_f[phase] += 1
        return Action(stage_of_phase[phase], "F", mb)

    def backward(phase: int, zero_bubble: bool = False) -> Action:
        """Full backward, or with ``zero_bubble`` only its input part I (its W queued for later)."""
        mb = first_mb_of_phase[phase] + next_b[phase]
        next_b[phase] += 1
        stage = stage_of_phase[phase]
        if zero_bubble:
            pending_w.append(Action(stage, "W", mb))
            return Action(stage, "I", mb)
        return Action(stage, "B", mb)

    def weight() -> Action:
        return pending_w.popleft()

    def pair(f_phase: int, b_phase: int) -> OverlappedAction:
        return OverlappedAction(forward(f_phase), backward(b_phase))

    (warmup_forwards, paired_forwards, zero_bubble_steps, main_steps, cooldown_steps, backward_steps,
     weight_backward_steps, final_weights) = dualpipe_phase_steps(half_ranks, half_rank, chunks_per_direction)
    # 1. warm-up: forwards of phase 0 only, two per rank between this rank and the middle
    acts += [forward(0) for _ in range(warmup_forwards)]
    # 2. both directions' forwards, alternating (F0 F1)
    for _ in range(paired_forwards):
        acts += [forward(0), forward(1)]
    # 3. zero-bubble backwards of phase 1 with their W right after (I1 W1 F1)
    for _ in range(zero_bubble_steps):
        acts += [backward(1, zero_bubble=True), weight(), forward(1)]
    # 4. main phase: overlapped pairs F0&B1 then F1&B0
    for i in range(main_steps):
        if i == 0 and is_middle:
            # the two middle ranks run their first pair unoverlapped: the B1 it waits for is the one just
            # produced by its neighbour, so splitting lets F0 start earlier (a smaller bubble)
            acts += [forward(0), backward(1)]
        else:
            acts.append(pair(0, 1))
        acts.append(pair(1, 0))
    # 5. cool-down of phase 0's forwards: B1 then F1&B0
    for _ in range(cooldown_steps):
        acts += [backward(1), pair(1, 0)]
    # 6. backwards of both phases (B1 B0); the second half of them only compute I (zero bubble)
    zero_bubble = False
    for i in range(backward_steps):
        if i == backward_steps // 2 and half_rank % 2 == 1:
            zero_bubble = True
        acts.append(backward(1, zero_bubble))
        if i == backward_steps // 2 and half_rank % 2 == 0:
            zero_bubble = True
        acts.append(backward(0, zero_bubble))
    # 7. a postponed W, then the next input-only backward of phase 0 (W B0)
    for _ in range(weight_backward_steps):
        acts += [weight(), backward(0, zero_bubble=True)]
    # 8. the remaining postponed W passes
    acts += [weight() for _ in range(final_weights)]
    assert not pending_w, "every I has its W"
    return acts


def dualpipe(n_ranks: int, n_microbatches: int) -> Schedule:
    """DualPipe (DeepSeek-V3 report Sec. 3.2.1): micro-batches fed from both ends of the pipeline.

    Rank r holds stage r of direction 0 (stage id r) and stage PP-1-r of direction 1 (stage id PP+(PP-1-r)):
    two copies of the parameters. Micro-batches 0..M/2-1 go in direction 0, M/2..M-1 in direction 1.
    Needs an even number of ranks (the two directions meet in the middle) and an even M >= 2 PP (each
    direction needs PP micro-batches to fill its half of the pipeline before the main phase).
    """
    n_ranks, n_microbatches = check_counts("dualpipe", n_ranks, n_microbatches)
    if n_ranks % 2:
        raise ValueError(
            f"dualpipe needs an even number of ranks: rank r pairs with rank PP-1-r (the two directions "
            f"meet in the middle); got {n_ranks}. Use dualpipev for any number of ranks."
        )
    if n_microbatches % 2 or n_microbatches < 2 * n_ranks:
        raise ValueError(
            f"dualpipe needs an even number of micro-batches, at least 2 x ranks = {2 * n_ranks}: half go "
            f"each way and each direction needs one per rank to fill the pipeline; got {n_microbatches}."
        )
    pp, half_m = n_ranks, n_microbatches // 2
    half = pp // 2
    actions = []
    for rank in range(pp):
        second_half = rank >= half
        own = {0: rank, 1: 2 * pp - 1 - rank}  # direction -> stage id held on this rank
        direction = (int(second_half), 1 - int(second_half))  # phase -> direction
        actions.append(
            _dualpipe_rank(
                half_ranks=half,
                half_rank=min(rank, pp - 1 - rank),
                chunks_per_direction=half_m,
                stage_of_phase=tuple(own[d] for d in direction),
                first_mb_of_phase=tuple(d * half_m for d in direction),
                is_middle=rank in (half - 1, half),
            )
        )
    return Schedule(
        name="dualpipe",
        n_ranks=pp,
        n_microbatches=n_microbatches,
        stage_to_rank=tuple(range(pp)) + tuple(pp - 1 - s for s in range(pp)),
        stage_to_chunk=tuple(range(pp)) * 2,
        routes=(tuple(range(pp)),) * half_m + (tuple(range(pp, 2 * pp)),) * half_m,
        actions=tuple(tuple(a) for a in actions),
    )


def dualpipev(n_ranks: int, n_microbatches: int) -> Schedule:
    """DualPipeV: DualPipe cut in half (the "V" shape; torch.distributed.pipelining's ScheduleDualPipeV).

    N ranks hold 2N stages: rank r holds stages r and 2N-1-r, so a micro-batch goes down the ranks and comes
    back up, with its input and loss on rank 0. One copy of the model's parameters in total, yet each rank
    runs DualPipe's eight phases: rank r < N of DualPipe with 2N ranks and 2K micro-batches runs exactly
    DualPipeV's rank r with N ranks and K micro-batches. The id mapping: DualPipe's stage id s
    (direction 0: s < 2N, direction 1: 2N + s') becomes DualPipeV's stage s mod 2N, and DualPipe's
    micro-batch m (direction 1 has K..2K-1) becomes m mod K. Needs M >= 2N micro-batches.
    """
    n_ranks, n_microbatches = check_counts("dualpipev", n_ranks, n_microbatches)
    n, k = n_ranks, n_microbatches
    if k < 2 * n:
        raise ValueError(
            f"dualpipev needs at least as many micro-batches as stages (2 x ranks = {2 * n}) to fill the V "
            f"before the main overlapped phase; got {k}."
        )
    actions = [
        _dualpipe_rank(
            half_ranks=n,
            half_rank=rank,
            chunks_per_direction=k,
            stage_of_phase=(rank, 2 * n - 1 - rank),
            first_mb_of_phase=(0, 0),
            is_middle=rank == n - 1,
        )
        for rank in range(n)
    ]
    return v_schedule("dualpipev", n, k, actions)
