"""The full-scale costs fed to the course's simulator: every schedule in milliseconds and gigabytes.

For a schedule of the registry, sized for the setting (PP ranks, the setting's micro-batch count):

1. cut the model into the schedule's chunks (``utils.scale.stages``: PP chunks, 2 PP for DualPipeV);
2. price each chunk (``utils.scale.timing``) on the whole GPU and give the simulator one cost per kind: the
   mean over chunks, i.e. a perfectly balanced cut (the report does not give its cut;
   ``SizedPipeline.imbalance`` says how much slower the costliest chunk of our cut is). The cost model's
   ``comm_share`` is the hardware's SMs for communication over all SMs (20 of 132 on H800, report Sec. 3.2.2
   and 3.5.1): an overlapped F&B pair (1F1B with overlapped pairs, DualPipe, DualPipeV) computes on the SMs
   the all-to-all leaves, a lone chunk that waits for its all-to-all on all of them, exactly as in the
   time-unit notebooks. An F&B pair costs F + B of compute: overlapping hides communication, it saves no FLOPs;
3. simulate (``utils.pipeline``'s rules: a plain chunk waits for its dispatch and combine, a pair hides
   each chunk's all-to-all behind its partner's compute) and read the step time, the worst idle time, the
   step time the all-to-all adds, and, per rank, the activation bytes held at the peak, each chunk's
   activations weighted by its size (Table 2's PP / PP+1 counts when chunks are equal);
4. add each rank's weights, gradients and optimizer shards (``utils.scale.memory``); report the worst rank.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from utils import inputs as arg
from utils.pipeline.costs import CostModel
from utils.pipeline.registry import COMPARED_SCHEDULES, make_schedule
from utils.pipeline.schedule import OverlappedAction, Schedule, action_parts
from utils.pipeline.simulate import simulate
from utils.pipeline.timeline import Timeline
from utils.scale.config import ModelConfig
from utils.scale.hardware import Hardware
from utils.scale.memory import MemoryBreakdown, chunk_activation_bytes, rank_memory
from utils.scale.setting import Layout, TrainingSetting
from utils.scale.stages import Chunk, equal_layer_cut, plan_chunks
from utils.scale.timing import ChunkTimes, chunk_times, compute_ms, unit_flops

#: The schedules compared at full scale: the registry's fair comparison (1F1B, 1F1B with overlapped pairs,
#: ZB1P, DualPipe, DualPipeV). Tables, figures and the widget iterate over this one tuple.
SCHEDULES = COMPARED_SCHEDULES


@lru_cache(maxsize=32)
def _schedule(name: str, pp: int, microbatches: int) -> Schedule:
    """The registry's schedule, built once per shape: schedules are immutable and the simulator keeps its
    dependency plan on them, so what-if tables and widget moves re-simulate without rebuilding either."""
    return make_schedule(name, pp, microbatches)


def overlaps_communication(schedule: Schedule) -> bool:
    """Whether the schedule runs overlapped F&B pairs, whose all-to-all runs on reserved SMs."""
    return any(type(a) is OverlappedAction for row in schedule.actions for a in row)


@dataclass(frozen=True)
class SizedPipeline:
    """A schedule sized for a setting: its chunks, their times, and the simulator's uniform costs (ms)."""

    schedule: Schedule
    chunks: tuple[Chunk, ...]
    chunk_times: tuple[ChunkTimes, ...]
    costs: CostModel
    overlap: bool

    @property
    def imbalance(self) -> float:
        """Compute time of the costliest chunk over the mean (1.0: a perfectly balanced cut)."""
        return max(chunk_scale(self.chunk_times))


def size_pipeline(
    model: ModelConfig, hardware: Hardware, setting: TrainingSetting, layout: Layout, name: str
) -> SizedPipeline:
    """Build schedule `name` for the setting, cut the model into its chunks and price them (steps 1-2)."""
    schedule = _schedule(name, setting.pp, layout.microbatches)
    overlap = overlaps_communication(schedule)

    def unit_cost(kind: str) -> float:
        passes = compute_ms(unit_flops(model, kind, setting), 1, hardware, setting, False)
        return passes.F + passes.B

    chunks = plan_chunks(model, schedule.n_chunks, unit_cost)
    # priced on every SM: the cost model slows a pair, and only a pair, by the SMs its communication takes
    times = tuple(chunk_times(model, hardware, setting, layout, c, False) for c in chunks)
    F, B, W, dispatch, combine = (
        sum(getattr(t, k) for t in times) / len(times) for k in ("F", "B", "W", "dispatch", "combine")
    )
    costs = CostModel(F=F, B=B, W=W, FB=F + B, p2p=times[0].p2p, dispatch=dispatch, combine=combine,
                      comm_share=hardware.comm_sms / hardware.n_sms)
    return SizedPipeline(schedule, chunks, times, costs, overlap)


def activation_peaks(timeline: Timeline, chunk_bytes: list[float]) -> list[float]:
    """Per rank, the most activation bytes held at once, each held stage weighted by its chunk's bytes.

    Same rule as ``Timeline.activation_events``: a stage's activation for a micro-batch is taken at the
    start of its F and freed at the end of its W or full B; at equal times frees come first.
    """
    to_chunk = timeline.schedule.stage_to_chunk
    peaks = []
    for row in timeline.intervals:
        events = []
        for iv in row:
            for part in action_parts(iv.action):
                size = chunk_bytes[to_chunk[part.stage]]
                if part.kind == "F":
                    events.append((iv.start, 1, size))
                elif part.kind in ("B", "W"):
                    events.append((iv.end, 0, -size))
        held = peak = 0.0
        for _, _, delta in sorted(events):
            held += delta
            peak = max(peak, held)
        peaks.append(peak)
    return peaks


@dataclass(frozen=True)
class ScheduleResult:
    """One schedule at full scale: times in ms, memory of the worst rank in bytes (``memory.gb()`` for GB).

    The step splits, on the rank that computes least (``Timeline.worst_budget``, the course's one time
    budget), into ``compute_ms``, ``comm_waited_ms`` (all-to-all its compute did not hide, and pipeline
    messages still in flight) and ``idle_ms`` (the bubble): step = compute + comm_waited + idle.
    ``a2a_added_ms`` is another question: how much longer the step is than the same schedule without the
    all-to-all (what the all-to-all costs the step, whichever rank waits).
    """

    name: str
    step_ms: float
    worst_idle_ms: float
    bubble_ratio: float
    compute_ms: float
    comm_waited_ms: float
    idle_ms: float
    budget_rank: int
    a2a_added_ms: float
    peak_activations: int
    param_copies: int
    worst_rank: int
    memory: MemoryBreakdown
    memory_by_rank: tuple[MemoryBreakdown, ...]
    pipeline: SizedPipeline
    timeline: Timeline

    def row(self) -> dict:
        """The numbers of a comparison table (GB, ms)."""
        gb = self.memory.gb()
        return {
            "schedule": self.name,
            "step_ms": self.step_ms,
            "worst_idle_ms": self.worst_idle_ms,
            "compute_ms": self.compute_ms,
            "comm_waited_ms": self.comm_waited_ms,
            "idle_ms": self.idle_ms,
            "budget_rank": self.budget_rank,
            "a2a_added_ms": self.a2a_added_ms,
            "bubble_ratio": self.bubble_ratio,
            "peak_activations": self.peak_activations,
            "param_copies": self.param_copies,
            "memory_gb": gb["total"],
            "activations_gb": gb["activations"],
            "model_states_gb": gb["total"] - gb["activations"],
        }


def run_schedule(
    model: ModelConfig, hardware: Hardware, setting: TrainingSetting, layout: Layout, name: str
) -> ScheduleResult:
    """Size, simulate and measure schedule `name` on the setting (steps 1-4 of the module docstring)."""
    sized = size_pipeline(model, hardware, setting, layout, name)
    timeline = simulate(sized.schedule, sized.costs)
    quiet = simulate(sized.schedule, replace(sized.costs, dispatch=0.0, combine=0.0), check=False)
    sizes = [chunk_activation_bytes(model, setting, c) for c in sized.chunks]
    peaks = activation_peaks(timeline, sizes)
    schedule = sized.schedule
    by_rank = tuple(
        rank_memory(
            model,
            setting,
            layout,
            [sized.chunks[schedule.stage_to_chunk[s]] for s in schedule.stages_on(rank)],
            peaks[rank],
        )
        for rank in range(schedule.n_ranks)
    )
    worst = max(range(schedule.n_ranks), key=lambda r: by_rank[r].total)
    ranks = range(timeline.n_ranks)
    budget = timeline.worst_budget()
    return ScheduleResult(
        name=name,
        step_ms=timeline.makespan,
        worst_idle_ms=timeline.worst_idle,
        bubble_ratio=timeline.bubble_ratio,
        compute_ms=budget.compute,
        comm_waited_ms=budget.comm_exposed,
        idle_ms=budget.idle,
        budget_rank=budget.rank,
        a2a_added_ms=timeline.makespan - quiet.makespan,
        peak_activations=max(timeline.peak_activations(r) for r in ranks),
        param_copies=max(timeline.param_copies(r) for r in ranks),
        worst_rank=worst,
        memory=by_rank[worst],
        memory_by_rank=by_rank,
        pipeline=sized,
        timeline=timeline,
    )


#: The cuts `uneven_stages` compares, in its rows' order.
CUTS = ("uniform", "equal layers", "balanced")


def chunk_scale(times: tuple[ChunkTimes, ...]) -> tuple[float, ...]:
    """One factor per chunk for ``CostModel.chunk_scale``: each chunk's compute (F + B) over the mean chunk's.
    The factor multiplies the mean F, B and W alike, so a chunk keeps the mean chunk's F : B : W."""
    work = [t.F + t.B for t in times]
    mean = sum(work) / len(work)
    return tuple(w / mean for w in work)


def uneven_stages(
    model: ModelConfig, hardware: Hardware, setting: TrainingSetting, layout: Layout,
    names: tuple[str, ...] = ("1f1b", "dualpipe"), rank: int = 0,
) -> list[dict]:
    """What unequal chunks cost the step, per schedule and cut (report Sec. 3.2.3: the first chunk holds the
    embedding and the dense layers, the last the output head and the MTP module).

    For each schedule in `names`, three simulations of the same step, one row each (``CUTS``): ``uniform``
    (every chunk the mean chunk: what ``run_schedule`` simulates), ``equal layers`` (``equal_layer_cut``: the
    same number of layers per chunk, the tail on the last) and ``balanced`` (``plan_chunks``: the cut whose
    costliest chunk is cheapest), the last two through ``CostModel.chunk_scale`` with `chunk_scale` of the
    chunks' own times. The total compute is the same in all three, so any longer step is the imbalance's cost.
    Each row: the step (ms), the step over the uniform one, the costliest chunk over the mean, and on `rank`
    its chunks' mean factor (its load), compute and idle time (``Timeline.budget``).
    """
    rows = []
    for name in names:
        sized = size_pipeline(model, hardware, setting, layout, name)
        schedule = sized.schedule
        rank = arg.whole(rank, "rank", low=0, high=schedule.n_ranks - 1, where="uneven_stages",
                         why="a rank of the pipeline")
        naive = tuple(chunk_times(model, hardware, setting, layout, c, False)
                      for c in equal_layer_cut(model, schedule.n_chunks))
        uniform_ms = None
        for cut, scale in zip(CUTS, (None, chunk_scale(naive), chunk_scale(sized.chunk_times)), strict=True):
            timeline = simulate(schedule, replace(sized.costs, chunk_scale=scale))
            uniform_ms = timeline.makespan if uniform_ms is None else uniform_ms
            factors = scale or (1.0,) * schedule.n_chunks
            held = [factors[schedule.stage_to_chunk[s]] for s in schedule.stages_on(rank)]
            budget = timeline.budget(rank)
            rows.append({"schedule": name, "cut": cut, "step_ms": timeline.makespan,
                         "over_uniform": timeline.makespan / uniform_ms, "costliest_chunk": max(factors),
                         "rank": rank, "rank_load": sum(held) / len(held), "rank_compute_ms": budget.compute,
                         "rank_idle_ms": budget.idle})
    return rows
