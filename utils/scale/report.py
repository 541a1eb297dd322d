"""The whole model in one call: a configuration, a GPU and a setting in; counts, times and gigabytes out.

`evaluate()` is what ``python -m utils.scale --json`` prints and what the notebook and widget read:
parameter counts (DeepSeek-V3 report Sec. 4.2), FLOPs per token, one micro-batch's F, B, W and all-to-all
through a chunk (``utils.scale.timing``), the all-to-all : compute ratio (the report's 1:1, Sec. 3.2.1),
every schedule of ``utils.scale.schedules.SCHEDULES`` simulated in milliseconds, and the worst GPU's memory
for the chosen schedule. Bad input raises ValueError with the rule it breaks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from utils import inputs as arg
from utils.pipeline.registry import schedule_name
from utils.scale.config import ModelConfig, check_model
from utils.scale.hardware import Hardware, load_hardware
from utils.scale.params import ParamCounts, layer_flops, model_flops, param_counts
from utils.scale.schedules import SCHEDULES, ScheduleResult, run_schedule
from utils.scale.setting import Layout, TrainingSetting, assumptions, report_setting
from utils.scale.stages import Chunk
from utils.scale.timing import all_to_all_ms, compute_ms, nodes_per_token

#: The report's Table 1: pre-training took 2664K H800 GPU hours for 14.8T tokens (Sec. 4.1).
REPORT_PRETRAINING_GPU_HOURS = 2.664e6
REPORT_PRETRAINING_TOKENS = 14.8e12


@dataclass
class ScaleResult:
    """Everything `evaluate` computes. `as_json()` gives the command line's JSON."""

    model: ModelConfig
    hardware: Hardware
    setting: TrainingSetting
    layout: Layout
    params: ParamCounts
    flops_per_token: dict[str, float]
    layer_ms: dict[str, float]
    comm_to_compute: float
    moe_layer_comm_to_compute: float
    nodes_per_token: float
    schedules: dict[str, ScheduleResult]
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def chosen(self) -> ScheduleResult:
        """The result of the setting's own schedule."""
        return self.schedules[self.setting.schedule]

    @property
    def fits(self) -> bool:
        """Whether the worst GPU of the chosen schedule fits in the GPU's memory."""
        return self.chosen.memory.total <= self.hardware.memory_gb * 1e9

    def gpu_hours(self, tokens: float = REPORT_PRETRAINING_TOKENS) -> float:
        """GPU hours to train on `tokens` at this step time (every step as simulated; nothing else counted)."""
        steps = tokens / self.layout.tokens_per_step
        return steps * self.chosen.step_ms / 1e3 * self.layout.gpus / 3600

    def chunk_plan(self) -> list[Chunk]:
        """The chunks of the chosen schedule, in pipeline order."""
        return list(self.chosen.pipeline.chunks)

    def as_json(self) -> dict:
        """JSON-ready numbers: counts, FLOPs, per-chunk ms, comm : compute, memory (GB), every schedule."""
        chosen = self.chosen
        costs = chosen.pipeline.costs
        return {
            "model": self.model.name,
            "hardware": self.hardware.name,
            "schedule": self.setting.schedule,
            "gpus": self.layout.gpus,
            "microbatches": self.layout.microbatches,
            "tokens_per_step": self.layout.tokens_per_step,
            "params_total": self.params.total,
            "params_activated": self.params.activated,
            "params_activated_with_embedding": self.params.activated_with_embedding,
            "params_mtp": self.params.mtp,
            "params_mtp_activated": self.params.mtp_activated,
            "flops_per_token": self.flops_per_token,
            "layer_ms": self.layer_ms,
            "chunk_ms": {
                "F": costs.F,
                "B": costs.B,
                "W": costs.W,
                "I": costs.I,
                "dispatch": costs.dispatch,
                "combine": costs.combine,
                "p2p": costs.p2p,
            },
            "chunk_imbalance": chosen.pipeline.imbalance,
            "comm_to_compute": self.comm_to_compute,
            "moe_layer_comm_to_compute": self.moe_layer_comm_to_compute,
            "nodes_per_token": self.nodes_per_token,
            "step_ms": chosen.step_ms,
            "memory_per_gpu_gb": chosen.memory.gb(),
            "memory_worst_rank": chosen.worst_rank,
            "memory_capacity_gb": self.hardware.memory_gb,
            "fits": self.fits,
            "gpu_hours_14.8T_tokens": self.gpu_hours(),
            "schedules": {name: result.row() for name, result in self.schedules.items()},
            "schedules_unavailable": self.unavailable,
            "setting": asdict(self.setting),
            "hardware_used": asdict(self.hardware),
            "assumptions": {row["name"]: row["value"] for row in assumptions()},
        }


def evaluate(
    model: ModelConfig | str = "DeepSeek-V3",
    hardware: Hardware | str = "H800",
    setting: TrainingSetting | None = None,
    schedules: tuple[str, ...] = SCHEDULES,
) -> ScaleResult:
    """Counts, times and memory of `model` trained on `hardware` with `setting` (default: the report's).

    ``comm_to_compute`` is the all-to-all (dispatch + combine) of the chunk the simulator runs over its forward
    compute, for the chosen schedule (``as_json()['chunk_ms']``: the mean chunk, which also holds the dense
    layers and the output heads); ``moe_layer_comm_to_compute`` the same for one MoE layer (any chunk made of
    MoE layers only). Every schedule in `schedules` (plus the setting's own) is simulated on the same model,
    GPUs and micro-batches; one that cannot run them (interleaved 1F1B needs the micro-batches in equal
    rounds...) lands in ``unavailable`` with its rule, while a bad setting for the chosen schedule raises.
    """
    model = check_model(model, "evaluate")
    hardware = load_hardware(hardware) if isinstance(hardware, str) else hardware
    arg.instance(hardware, "hardware", Hardware, "a Hardware or a GPU name (load_hardware)", where="evaluate")
    setting = report_setting() if setting is None else arg.instance(
        setting, "setting", TrainingSetting, "a TrainingSetting (report_setting())", where="evaluate")
    setting = setting.with_changes(schedule=schedule_name(setting.schedule))  # "DualPipe" -> "dualpipe"
    layout = Layout.of(model, hardware, setting)
    results = {setting.schedule: run_schedule(model, hardware, setting, layout, setting.schedule)}
    unavailable = {}
    for name in dict.fromkeys(map(schedule_name, schedules)):
        if name in results:
            continue
        try:  # a compared schedule that cannot run this setting is reported with its rule, not fatal
            results[name] = run_schedule(model, hardware, setting, layout, name)
        except ValueError as error:
            unavailable[name] = str(error)
    order = [n for n in dict.fromkeys((*map(schedule_name, schedules), setting.schedule)) if n in results]
    results = {name: results[name] for name in order}
    chunk = results[setting.schedule].pipeline.costs
    layer = compute_ms(layer_flops(model, True, setting.seq_len, setting.recompute),  # on every SM, as the chunks
                       setting.tokens_per_microbatch, hardware, setting, False)
    a2a = all_to_all_ms(model, hardware, setting, layout)
    flops = model_flops(model, setting.seq_len, setting.recompute)
    return ScaleResult(
        model=model,
        hardware=hardware,
        setting=setting,
        layout=layout,
        params=param_counts(model),
        flops_per_token={
            "forward": flops.forward,
            "backward_input": flops.backward_input,
            "backward_weight": flops.backward_weight,
            "total": flops.total,
        },
        layer_ms={"F": layer.F, "B": layer.B, "W": layer.W, "dispatch": a2a.dispatch, "combine": a2a.combine},
        comm_to_compute=(chunk.dispatch + chunk.combine) / chunk.F,
        moe_layer_comm_to_compute=a2a.total / layer.F,
        nodes_per_token=nodes_per_token(model, setting, layout),
        schedules=results,
        unavailable=unavailable,
    )
