"""Closed forms of the virtual-stage schedules (interleaved 1F1B, ZB-V) and what they pay for: p2p messages.

Units. A rank's share of the model is 1/PP of it (what one 1F1B stage holds). With v chunks per rank, each
chunk (stage) holds 1/v of that share, so on the same model a chunk's forward costs F/v and its backward
B/v, where F and B are the costs of one rank's share (of one 1F1B stage). The simulator takes the costs of
one stage (``utils.pipeline.costs.CostModel``): for a v-chunk schedule pass F/v, B/v, W/v
(``chunk_costs``). Activations are counted per stage (one micro-batch through one chunk), so a v-chunk
schedule's counts are in units v times smaller than 1F1B's (``per_rank_memory`` converts).

* Interleaved 1F1B (Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters
  Using Megatron-LM", Sec. 2.2.2): bubble (PP-1)(F+B)/v, i.e. (PP-1)(f+b) in chunk costs f = F/v,
  b = B/v; its price is point-to-point messages, 2M(vPP-1) per step against 1F1B's 2M(PP-1) (more than v
  times as many: 2.33x at v = 2 on 4 ranks), and more activations on the first ranks ((v-1)P + 2(PP-1-r) + 1
  chunk-activations on rank r, P the micro-batches per round).
* ZB-V (Qi et al. 2024, "Zero Bubble Pipeline Parallelism", Sec. 6): with chunk costs f = b_input = w and
  at least 2PP-1 micro-batches, every rank computes without a gap from its first action to its last
  (the paper's "zero bubble"); what is left is the fill and drain of the V, rank r starting r f late and
  ending r f late: the worst rank idles (PP-1) f = (PP-1) F/2 in one step (``bubble_zbv``). Peak
  activations 2PP chunk-activations on every rank, PP in 1F1B's units: the same as 1F1B's rank 0. Every
  hop of the V but the one at its bottom is a message: 2 (2PP-2) per micro-batch, twice 1F1B's.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from utils import inputs as arg
from utils.pipeline.costs import CostModel
from utils.pipeline.generators.virtual import interleaved_1f1b, interleaved_rounds, zbv_fill_microbatches
from utils.pipeline.registry import CHUNKS_PER_RANK, make_schedule
from utils.pipeline.schedule import Schedule, action_parts
from utils.pipeline.simulate import simulate
from utils.pipeline.timeline import Timeline

#: Schedules with several stages of one model copy per rank, and their closed forms here.
VIRTUAL_SCHEDULES: tuple[str, ...] = ("interleaved1f1b", "zbv")
_TOLERANCE = 1e-12


def _schedule(schedule, where: str) -> Schedule:
    return arg.instance(schedule, "schedule", Schedule, "a Schedule (e.g. make_schedule('zbv', 4, 8))", where=where)


def _costs(costs, where: str) -> CostModel:
    return arg.instance(costs, "costs", CostModel, "a CostModel (e.g. CostModel(F=1, B=2, W=1))", where=where)


def _sizes(where: str, **values) -> None:
    """The counts and costs of a closed form: pp ranks, m micro-batches, v chunks, a rank, durations."""
    pp = arg.whole(values.pop("pp"), "pp", low=1, high=arg.MAX_RANKS, where=where, why="pipeline ranks")
    for name, value in values.items():
        if name == "m":
            arg.whole(value, "m", low=1, high=arg.MAX_MICROBATCHES, where=where, why="micro-batches")
        elif name == "v":
            arg.whole(value, "v", low=1, high=16, where=where, why="model chunks per rank")
        elif name == "rank":
            arg.whole(value, "rank", low=0, high=pp - 1, where=where, why=f"ranks are 0..{pp - 1}")
        else:
            arg.real(value, name, low=0, high=arg.MAX_COST, where=where, why="a duration cannot be negative")


def chunks_per_rank(schedule: Schedule) -> int:
    """v: model chunks per rank's share (1 for 1F1B and DualPipe, whose mirrored copies are whole 1/PP
    stages; 2 for DualPipeV, interleaved 1F1B and ZB-V)."""
    _schedule(schedule, "chunks_per_rank")
    return max(1, schedule.n_chunks // schedule.n_ranks)


def chunk_costs(costs: CostModel, v: int) -> CostModel:
    """The cost model of one chunk when ``costs`` are those of one rank's share (1/PP of the model)."""
    _costs(costs, "chunk_costs")
    v = arg.whole(v, "v", low=1, high=16, where="chunk_costs", why="model chunks per rank")
    if v == 1:
        return costs
    f, b = costs.F / v, costs.B / v
    fb = min(max(costs.FB / v, f, b), f + b)  # the same bounds as FB's, kept through the division's rounding
    return replace(costs, F=f, B=b, W=min(costs.W / v, b), FB=fb, dispatch=costs.dispatch / v,
                   combine=costs.combine / v)


def costs_per_stage(name: str, costs: CostModel) -> CostModel:
    """Stage costs of schedule ``name`` when ``costs`` are those of one rank's share of the model (1/PP).

    Comparing schedules on the same model and the same number of ranks: naive to DualPipe cut the model in PP
    stages, so a stage costs ``costs``; DualPipeV, interleaved 1F1B and ZB-V cut it in v PP stages (each rank
    holds v = 2, ``CHUNKS_PER_RANK``), so each stage has 1/v of the layers and 1/v of the compute and
    all-to-all time. The p2p latency is per hop and stays.
    """
    arg.instance(costs, "costs", CostModel, "a CostModel (e.g. CostModel(F=1, B=2, W=1))", where="costs_per_stage")
    arg.instance(name, "name", str, "a schedule name", where="costs_per_stage")
    return chunk_costs(costs, CHUNKS_PER_RANK.get(name, 1))


# ------------------------------------------------------------------------------------- interleaved 1F1B

def bubble_interleaved(pp: int, F: float, B: float, v: int = 2) -> float:
    """Interleaved 1F1B's bubble (PP-1)(F+B)/v (Narayanan et al. 2021, Sec. 2.2.2).

    ``F``, ``B``: forward and full backward of one rank's share of the model (one 1F1B stage); each of the
    v chunks costs F/v and B/v. Rank 0 waits for the first micro-batch's gradient to come back through
    PP-1 ranks and back, each hop a chunk of 1/v the size. Assumes equal costs on every chunk, p2p latency
    0, and at least PP micro-batches (with fewer, a rank runs out of forwards before the round comes back
    and waits longer).
    """
    _sizes("bubble_interleaved", pp=pp, v=v, F=F, B=B)
    return (pp - 1) * (F + B) / v


def peak_activations_interleaved(rank: int, pp: int, m: int, v: int = 2) -> int:
    """Chunk-activations rank ``rank`` holds at its peak: min((v-1)P + 2(PP-1-r) + 1, vM).

    Its warm-up forwards plus the first steady one (P micro-batches per round, ``interleaved_rounds``), at
    most every micro-batch through its v chunks. In 1F1B's units (divide by v) rank 0 holds PP + (PP-1)/v
    for P = PP, the first stage's factor 1 + (PP-1)/(PP v) over 1F1B given by Korthikanti et al. 2022,
    "Reducing Activation Recomputation in Large Transformer Models". Only the order of the rank's own
    actions matters (an activation is held from its F to its B), so it holds for any costs.
    """
    _sizes("peak_activations_interleaved", pp=pp, m=m, v=v, rank=rank)
    per_round = interleaved_rounds(pp, m)[1]
    return min((v - 1) * per_round + 2 * (pp - 1 - rank) + 1, v * m)


# ------------------------------------------------------------------------------------------------ ZB-V

def bubble_zbv(pp: int, F: float) -> float:
    """ZB-V's worst-rank idle in one step: (PP-1) F/2 = (PP-1) f, f = F/2 the forward of one chunk.

    Assumes (Qi et al. 2024, Sec. 6): chunk costs f = b_input = w (``F = B - W = W`` in a CostModel of one
    chunk), equal on every chunk, p2p latency 0, at least 2PP-1 micro-batches. Then no rank ever waits
    between its first and its last action (``inner_idle`` is 0: the paper's "zero bubble"); rank r starts
    r f after rank 0 and ends r f after it, so every rank idles (PP-1) f of the step. With optimizer
    post-validation (the paper's Sec. 4) the next step's fill overlaps this step's drain.
    """
    _sizes("bubble_zbv", pp=pp, F=F)
    return (pp - 1) * F / 2


def peak_activations_zbv(rank: int, pp: int, m: int) -> int:
    """Chunk-activations rank ``rank`` holds at its peak: min(M, 2PP-1-r) + min(M, r+1) (2PP once
    M >= 2PP-1, on every rank: PP in 1F1B's units). The forwards it runs before its first W."""
    _sizes("peak_activations_zbv", pp=pp, m=m, rank=rank)
    return min(m, 2 * pp - 1 - rank) + min(m, rank + 1)


# ----------------------------------------------------------------------------------- any of the two

def bubble(schedule: Schedule, costs: CostModel) -> float:
    """The closed-form worst-rank idle of ``schedule`` (interleaved1f1b or zbv) under chunk ``costs``."""
    _costs(costs, "bubble")
    v = chunks_per_rank(schedule)
    if schedule.name == "interleaved1f1b":
        return bubble_interleaved(schedule.n_ranks, v * costs.F, v * costs.B, v)
    if schedule.name == "zbv":
        return bubble_zbv(schedule.n_ranks, 2 * costs.F)
    raise ValueError(f"closed forms here cover {', '.join(VIRTUAL_SCHEDULES)}; got {schedule.name!r}.")


def peak_activations(schedule: Schedule, rank: int) -> int:
    """The closed-form peak chunk-activations of ``rank`` (interleaved1f1b or zbv)."""
    _schedule(schedule, "peak_activations")
    pp, m = schedule.n_ranks, schedule.n_microbatches
    if schedule.name == "interleaved1f1b":
        return peak_activations_interleaved(rank, pp, m, chunks_per_rank(schedule))
    if schedule.name == "zbv":
        return peak_activations_zbv(rank, pp, m)
    raise ValueError(f"closed forms here cover {', '.join(VIRTUAL_SCHEDULES)}; got {schedule.name!r}.")


def assumptions_hold(schedule: Schedule, costs: CostModel) -> tuple[bool, str]:
    """Whether ``bubble(schedule, costs)`` is exact; the broken assumption if not."""
    _schedule(schedule, "assumptions_hold"), _costs(costs, "assumptions_hold")
    pp, m = schedule.n_ranks, schedule.n_microbatches
    if costs.p2p > 0 or costs.dispatch > 0 or costs.combine > 0:
        return False, "the closed forms ignore communication time (p2p and all-to-all must be 0)"
    if schedule.name == "interleaved1f1b" and m < pp:
        return False, (f"interleaved 1F1B needs at least PP = {pp} micro-batches: with {m}, a rank finishes "
                       f"its round before the first micro-batch comes back around")
    if schedule.name == "zbv":
        if m < zbv_fill_microbatches(pp):
            return False, (f"(PP-1) F per chunk needs at least 2PP-1 = {zbv_fill_microbatches(pp)} micro-batches "
                           f"to fill the V; with {m}, rank 0 runs out of forwards before the first gradient "
                           f"comes back up the V and waits inside the step")
        if abs(costs.F - costs.I) > _TOLERANCE or abs(costs.F - costs.W) > _TOLERANCE:
            return False, "ZB-V's zero bubble assumes F = B_input = W (here F = B - W = W per chunk)"
    return True, "the formula is exact"


def inner_idle(timeline: Timeline, rank: int) -> float:
    """Idle time of ``rank`` between its first action's start and its last action's end: the bubble the
    zero-bubble paper counts (fill and drain at the ends are left out)."""
    arg.instance(timeline, "timeline", Timeline, "a Timeline (from simulate or execute)", where="inner_idle")
    row = timeline.intervals[timeline.check_rank(rank, "inner_idle")]
    if not row:
        return 0.0
    return (row[-1].end - row[0].start) - timeline.busy(rank)


# ------------------------------------------------------------------------------ what a step sends

def p2p_messages(schedule: Schedule) -> int:
    """Point-to-point messages one step sends: an activation into every F whose previous stage is on
    another rank, a gradient into every B or I whose next stage is (stages on the same rank hand over in
    memory). 1F1B: 2M(PP-1); interleaved with v chunks: 2M(vPP-1); ZB-V and DualPipeV: 2M(2PP-2)."""
    _schedule(schedule, "p2p_messages")
    rank_of = schedule.stage_to_rank
    count = 0
    for rank, actions in enumerate(schedule.actions):
        for action in actions:
            for part in action_parts(action):
                if part.kind == "F":
                    other = schedule.prev_stage(part.stage, part.microbatch)
                elif part.kind in ("B", "I"):
                    other = schedule.next_stage(part.stage, part.microbatch)
                else:
                    continue
                count += other is not None and rank_of[other] != rank
    return count


def per_rank_memory(timeline: Timeline) -> list[dict]:
    """Per rank: peak activations and parameters, in stages (as the Timeline counts them) and in units of
    one rank's share of the model (1/PP: one 1F1B stage), so schedules with v chunks compare fairly."""
    arg.instance(timeline, "timeline", Timeline, "a Timeline (from simulate or execute)", where="per_rank_memory")
    v = chunks_per_rank(timeline.schedule)
    size = timeline.n_ranks / timeline.schedule.n_chunks  # one stage, in units of 1/PP of the model
    rows = []
    for r in range(timeline.n_ranks):
        peak = timeline.peak_activations(r)
        stages = timeline.param_copies(r)
        rows.append({"rank": r, "chunks per rank": v, "peak activations (stages)": peak,
                     "peak activations (1/PP units)": peak * size, "parameters (stages)": stages,
                     "parameters (1/PP units)": stages * size})
    return rows


# ------------------------------------------------------------------------- tables for the lesson (04b)

def bubble_vs_chunks(pp: int, m: int, costs: CostModel, chunks=(1, 2, 3, 4)):
    """Interleaved 1F1B with v = each of ``chunks`` on the same model (``costs`` of one rank's share, each
    chunk 1/v of them; v = 1 is 1F1B): simulated worst-rank idle beside (PP-1)(F+B)/v, step time, messages per
    step and their ratio to 1F1B's, (vPP-1)/(PP-1), and rank 0's peak activations in 1/PP units. A pandas
    DataFrame, one row per v."""
    _sizes("bubble_vs_chunks", pp=pp, m=m), _costs(costs, "bubble_vs_chunks")
    for v in arg.sequence(chunks, "chunks", where="bubble_vs_chunks"):
        arg.whole(v, "every v", low=1, high=16, where="bubble_vs_chunks", why="model chunks per rank")
    baseline = p2p_messages(make_schedule("1f1b", pp, m))  # 2M(PP-1)
    rows = []
    for v in chunks:
        # v = 1 is plain 1F1B (torch's interleaved order with one chunk warms up twice as deep, for nothing)
        schedule = make_schedule("1f1b", pp, m) if v == 1 else interleaved_1f1b(pp, m, v)
        timeline = simulate(schedule, chunk_costs(costs, v))
        rows.append({"chunks per rank v": v, "worst-rank idle": timeline.worst_idle,
                     "(PP-1)(F+B)/v": bubble_interleaved(pp, costs.F, costs.B, v),
                     "step time": timeline.makespan, "p2p messages per step": p2p_messages(timeline.schedule),
                     "messages / 1F1B's": p2p_messages(timeline.schedule) / baseline,
                     "rank 0 peak activations (1/PP units)": timeline.peak_activations(0) / v})
    return pd.DataFrame(rows)


def step_vs_latency(names, pp: int, m: int, costs: CostModel, latencies=(0.0, 0.25, 0.5, 1.0, 2.0)):
    """Each schedule of ``names`` on the same model (``costs`` of one rank's share; two-chunk schedules get
    half-size chunks) as the p2p latency per message grows: step time, worst-rank idle and messages per step.
    A long pandas DataFrame (schedule, p2p latency, step time, worst-rank idle, p2p messages per step)."""
    _sizes("step_vs_latency", pp=pp, m=m), _costs(costs, "step_vs_latency")
    arg.sequence(names, "names", where="step_vs_latency")
    for latency in arg.sequence(latencies, "latencies", where="step_vs_latency"):
        arg.real(latency, "every latency", low=0, high=arg.MAX_COST, where="step_vs_latency")
    rows = []
    for name in names:
        schedule = make_schedule(name, pp, m)
        for latency in latencies:
            stage_costs = chunk_costs(replace(costs, p2p=latency), CHUNKS_PER_RANK.get(name, 1))
            timeline = simulate(schedule, stage_costs)
            rows.append({"schedule": name, "p2p latency": latency, "step time": timeline.makespan,
                         "worst-rank idle": timeline.worst_idle, "p2p messages per step": p2p_messages(schedule)})
    return pd.DataFrame(rows)
