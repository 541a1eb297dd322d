"""Virtual stages: several model chunks per rank. Interleaved 1F1B (Megatron-LM) and ZB-V (zero bubble, "V").

A rank that holds v chunks of the model instead of one waits less for the pipeline to fill: the first
micro-batch reaches the last rank after PP-1 chunk-forwards of 1/v the size, so the bubble shrinks by v, at
the price of v times as many point-to-point messages (every chunk boundary is a hop).

    interleaved_1f1b   stages r, r+PP, r+2PP, ... on rank r (the model wraps around the ranks v times);
                       Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU
                       Clusters Using Megatron-LM", Sec. 2.2.2
    zbv                stages r and 2PP-1-r on rank r (down the ranks and back up: a "V"), backward split
                       into I and W; Qi et al. 2024, "Zero Bubble Pipeline Parallelism", Sec. 6 (ZB-V)

Both orders equal, action for action, the ``pipeline_order`` of torch.distributed.pipelining's
``ScheduleInterleaved1F1B`` and ``ScheduleZBVZeroBubble`` (torch 2.13): tests/test_torch_pipelining_crosscheck.py.
"""

from __future__ import annotations

from utils import inputs as arg
from utils.pipeline.generators.common import check_counts, v_schedule
from utils.pipeline.schedule import Action, Schedule

#: Model chunks per rank interleaved 1F1B takes: each is a stage, and stages multiply the actions to draw.
MAX_CHUNKS_PER_RANK = 16


def interleaved_rounds(n_ranks: int, n_microbatches: int) -> tuple[int, int]:
    """(rounds, micro-batches per round) of interleaved 1F1B: max(1, M // PP) rounds of M / rounds.

    Megatron-LM sends rounds of PP micro-batches through each chunk in turn (and needs M % PP == 0); torch
    2.13 relaxes this to any M that splits into max(1, M // PP) equal rounds.
    """
    n_ranks, n_microbatches = check_counts("interleaved_rounds", n_ranks, n_microbatches)
    rounds = max(1, n_microbatches // n_ranks)
    return rounds, n_microbatches // rounds


def _valid_interleaved_counts(n_ranks: int, n_microbatches: int) -> tuple[int | None, int]:
    """The nearest micro-batch counts below and above ``n_microbatches`` that make equal rounds."""

    def ok(m: int) -> bool:
        return m % interleaved_rounds(n_ranks, m)[0] == 0

    below = next((m for m in range(n_microbatches - 1, 0, -1) if ok(m)), None)
    above = next(m for m in range(n_microbatches + 1, 2 * n_microbatches + 2) if ok(m))
    return below, above


def interleaved_1f1b(n_ranks: int, n_microbatches: int, chunks_per_rank: int = 2) -> Schedule:
    """Interleaved 1F1B (Megatron-LM, Narayanan et al. 2021, Sec. 2.2.2): v chunks per rank, 1F1B over them.

    The model is cut into v x PP stages; stage s lives on rank s mod PP, so rank r holds stages r, r+PP, ...
    and every micro-batch goes around the ranks v times. Micro-batches run in rounds of P (P = PP when M is
    a multiple of PP): a rank sends one round through its first chunk, the same round through its second
    chunk, and so on, then the next round. Rank r runs (v-1) P + 2 (PP-1-r) warm-up forwards, then
    alternates one forward and one backward, then drains its backwards (backwards visit the chunks in
    reverse order). With chunk costs F/v and B/v the worst rank idles (PP-1)(F+B)/v, v times less than 1F1B.

    ``chunks_per_rank`` is v (the registry's ``interleaved1f1b`` uses 2). Needs M to split into
    max(1, M // PP) equal rounds, as torch's ScheduleInterleaved1F1B does.
    """
    check_counts("interleaved1f1b", n_ranks, n_microbatches)
    v = chunks_per_rank
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_CHUNKS_PER_RANK:
        raise ValueError(
            f"interleaved1f1b: chunks_per_rank is the number of model chunks each rank holds (v), a whole "
            f"number from 1 to {MAX_CHUNKS_PER_RANK} (each chunk is a stage: more multiply the actions to run and draw); got {v!r}."
        )
    pp, m = n_ranks, n_microbatches
    rounds, per_round = interleaved_rounds(pp, m)
    if m % rounds:
        below, above = _valid_interleaved_counts(pp, m)
        nearest = f"{below} or {above}" if below else f"{above}"
        raise ValueError(
            f"interleaved1f1b runs the micro-batches in equal rounds: with PP={pp} ranks and M={m} "
            f"micro-batches there are max(1, M // PP) = {rounds} rounds, so M must be a multiple of {rounds}. "
            f"A rank sends one round through its first chunk, the same round through its next chunk, and "
            f"so on (its k-th forward runs chunk (k // round size) mod v), so with a ragged last round one "
            f"chunk would be asked for more forwards than there are micro-batches. torch.distributed."
            f"pipelining's ScheduleInterleaved1F1B refuses the same counts (Megatron-LM even needs M to be "
            f"a multiple of PP). Nearest counts that work: {nearest}."
        )

    actions = [
        interleaved_rank_actions(rank, pp, m, v, warmup=(v - 1) * per_round + 2 * (pp - 1 - rank))
        for rank in range(pp)
    ]
    stages = tuple(range(v * pp))
    return Schedule(
        name="interleaved1f1b",
        n_ranks=pp,
        n_microbatches=m,
        stage_to_rank=tuple(s % pp for s in stages),
        stage_to_chunk=stages,
        routes=(stages,) * m,
        actions=tuple(tuple(a) for a in actions),
    )


def interleaved_rank_actions(rank: int, n_ranks: int, n_microbatches: int, v: int, warmup: int) -> list[Action]:
    """Rank ``rank``'s list of interleaved 1F1B after ``warmup`` warm-up forwards (capped at v M).

    Its k-th forward runs chunk (k // P) mod v on micro-batch (k // (P v)) P + k mod P (rounds of P
    micro-batches through each chunk in turn, ``interleaved_rounds``); its k-th backward the same rounds
    through the chunks in reverse order. After the warm-up it alternates one forward and one backward, then
    drains its backwards. The generator's warm-up is (v-1) P + 2 (PP-1-r).
    """
    pp, m = check_counts("interleaved_rank_actions", n_ranks, n_microbatches)
    rank = arg.whole(rank, "rank", low=0, high=pp - 1, where="interleaved_rank_actions")
    v = arg.whole(v, "v", low=1, high=MAX_CHUNKS_PER_RANK, where="interleaved_rank_actions", why="chunks per rank")
    warmup = arg.whole(warmup, "warmup", low=0, where="interleaved_rank_actions", why="warm-up forwards")
    per_round = interleaved_rounds(pp, m)[1]

    def action(kind: str, k: int, chunk: int) -> Action:
        return Action(chunk * pp + rank, kind, (k // (per_round * v)) * per_round + k % per_round)

    def forward(k: int) -> Action:
        return action("F", k, (k // per_round) % v)

    def backward(k: int) -> Action:
        return action("B", k, v - 1 - (k // per_round) % v)

    total = v * m  # forwards (and backwards) per rank: every micro-batch through each of its v chunks
    warmup = min(warmup, total)
    acts = [forward(k) for k in range(warmup)]
    for k in range(total - warmup):  # steady state: one forward, one backward
        acts += [forward(warmup + k), backward(k)]
    acts += [backward(k) for k in range(total - warmup, total)]  # cool-down
    return acts


def interleaved1f1b(n_ranks: int, n_microbatches: int) -> Schedule:
    """Interleaved 1F1B with two chunks per rank (stages r and r+PP on rank r): the registry's entry."""
    return interleaved_1f1b(n_ranks, n_microbatches, chunks_per_rank=2)


def zbv_fill_microbatches(n_ranks: int) -> int:
    """Micro-batches ZB-V's phases are written for at least: 2 PP - 1, enough to fill the V."""
    n_ranks = arg.whole(n_ranks, "n_ranks", low=1, high=arg.MAX_RANKS, where="zbv_fill_microbatches")
    return 2 * n_ranks - 1


def zbv(n_ranks: int, n_microbatches: int) -> Schedule:
    """ZB-V ("Zero Bubble Pipeline Parallelism", Qi et al. 2024, Sec. 6): two chunks per rank in a V.

    N ranks, 2N stages; rank r holds stages r (chunk 0, on the way down) and 2N-1-r (chunk 1, on the way
    back up), so each micro-batch's input and its loss are both on rank 0, and a micro-batch crossing the
    bottom of the V (stage N-1 to N) stays on rank N-1: no message. Backwards are split into I (input
    gradient, on the critical path) and W (weight gradient, deferred to fill waits). Per rank:

    1. 2(N-r)-1 forwards of chunk 0 (warm-up down the V);
    2. r times: F of chunk 1, F of chunk 0;
    3. N-r times: F, I, W of chunk 1 (the first gradients start back up);
    4. steady state: F I W of chunk 0, then F I W of chunk 1, until chunk 0's forwards are done and
       chunk 1 has caught up;
    5. r times: I of chunk 0, I of chunk 1 (their W deferred);
    6. N-r times: I of chunk 0 and the oldest deferred W of chunk 0;
    7. the deferred W of chunk 1, then those of chunk 0.

    The phases are written for at least 2N-1 micro-batches (``zbv_fill_microbatches``); with fewer, the
    actions of the micro-batches that do not exist are dropped (torch's ScheduleZBVZeroBubble does the
    same), which keeps the order valid. With chunk costs F = B_input = W and M >= 2N-1 every rank runs
    without a gap from its first action to its last (the paper's "zero bubble"); see
    ``utils.pipeline.virtual_stages.bubble_zbv``.
    """
    check_counts("zbv", n_ranks, n_microbatches)
    n, m = n_ranks, n_microbatches
    planned = max(zbv_fill_microbatches(n), m)
    actions = []
    for rank in range(n):
        down, up = rank, 2 * n - 1 - rank  # chunk 0's and chunk 1's stage ids
        counts = {"F": [0, 0], "I": [0, 0], "W": [0, 0]}  # per kind, per chunk: next micro-batch
        acts: list[Action] = []

        def run(kinds: str, chunk: int, counts=counts, acts=acts, down=down, up=up) -> None:
            """Append the next action of each of ``kinds`` (e.g. "FIW") for ``chunk`` (0 down, 1 up)."""
            for kind in kinds:
                acts.append(Action((down, up)[chunk], kind, counts[kind][chunk]))
                counts[kind][chunk] += 1

        for _ in range(2 * (n - rank) - 1):  # 1. warm-up down the V
            run("F", 0)
        for _ in range(rank):  # 2. both chunks' forwards
            run("F", 1)
            run("F", 0)
        for _ in range(n - rank):  # 3. the first gradients on the way back up
            run("FIW", 1)
        f = counts["F"]
        while f[1] < f[0] or f[0] < planned:  # 4. steady state
            if f[0] < planned:
                run("F", 0)
            run("IW", 0)
            run("FIW", 1)
        for _ in range(rank):  # 5. input gradients only; their W wait
            run("I", 0)
            run("I", 1)
        for _ in range(n - rank):  # 6. I of chunk 0 and a deferred W of chunk 0
            run("IW", 0)
        for chunk in (1, 0):  # 7. the remaining deferred W passes
            while counts["W"][chunk] < counts["I"][chunk]:
                run("W", chunk)
        actions.append(tuple(a for a in acts if a.microbatch < m))
    return v_schedule("zbv", n, m, actions)
