"""The pure functions behind notebook 08 and its widget: tables, what-ifs, sweeps, and one view.

Everything here reads ``utils.scale.report.evaluate``; the widget (``utils.widgets.scale``) only wires
controls to `explore_scale`. An impossible setting returns a view whose ``error`` states the rule.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from utils import inputs as arg
from utils.scale.config import ModelConfig, check_model, load_model, published_counts
from utils.scale.hardware import hardware_sources, load_hardware
from utils.scale.memory import ChunkParams, activation_items, model_state_bytes
from utils.scale.params import layer_flops, param_counts
from utils.scale.plots import scale_figure
from utils.scale.report import REPORT_PRETRAINING_GPU_HOURS, ScaleResult, evaluate
from utils.scale.schedules import SCHEDULES, uneven_stages
from utils.scale.setting import Layout, report_setting, setting_rows
from utils.scale.timing import all_to_all_ms
from utils.view import View

#: The learner's what-ifs (issue #14): each changes the hardware ("hw") or the setting, nothing else.
WHAT_IFS: dict[str, dict] = {
    "the report's setting": {},
    "InfiniBand halved (25 GB/s)": {"hw": {"ib_gbps": 25.0}},
    "node cap lifted (M = 8)": {"max_nodes": 8},
    "dispatch in BF16": {"dispatch_dtype": "bf16"},
    "efficiency 0.3 (assumption halved)": {"efficiency": 0.3},
    "efficiency 0.9": {"efficiency": 0.9},
    "2 sequences per micro-batch": {"tokens_per_microbatch": 8192},
    "activations cached in BF16": {"fp8_cache": False},
    "no recomputation": {"recompute": False},
    "FP32 Adam moments (Playbook)": {"moment_dtype": "fp32"},
}


def run(changes: dict | None = None, schedules: tuple[str, ...] = SCHEDULES) -> ScaleResult:
    """Evaluate DeepSeek-V3 on H800 with the report's setting changed by `changes` ({"hw": {...}} for the GPU)."""
    if changes is not None and not isinstance(changes, dict):
        arg.fail("changes", 'a dict of setting fields (and "hw": {GPU fields}), or None', changes, where="run",
                 error=arg.InputTypeError)
    changes = dict(changes or {})
    hardware = load_hardware().with_changes(**changes.pop("hw", {}))
    return evaluate(load_model(), hardware, report_setting().with_changes(**changes), schedules)


def params_table(model: ModelConfig | str = "DeepSeek-V3") -> pd.DataFrame:
    """Our counts beside the authors' published ones, in billions, with the relative gap."""
    model = check_model(model, "params_table")
    counts = param_counts(model).as_dict()
    rows = []
    for key, (value, source) in published_counts(model.name).items():
        ours = {"params_total": "total", "params_activated": "activated",
                "params_activated_readme": "activated", "params_mtp": "mtp"}[key]
        rows.append({"quantity": key, "ours_B": counts[ours] / 1e9, "published_B": value / 1e9,
                     "gap": counts[ours] / value - 1, "source": source})
    return pd.DataFrame(rows).set_index("quantity")


#: DeepSeek-V2-Lite (config.json of deepseek-ai/DeepSeek-V2-Lite; no query compression), published in the
#: DeepSeek-V2 report (Sec. 4 and Appendix B) as 15.7B total, 2.4B activated: a small model whose activated
#: count tells the two conventions apart (the embedding is 0.21B of it).
V2_LITE = ModelConfig(name="DeepSeek-V2-Lite", n_layers=27, n_dense_layers=1, hidden=2048, dense_ffn=10944,
                      vocab=102400, n_heads=16, q_lora_rank=0, kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64,
                      v_head_dim=128, n_routed_experts=64, n_shared_experts=2, top_k=6, expert_ffn=1408)
_PUBLISHED_ACTIVATED = {"DeepSeek-V3": (671e9, 37e9), "DeepSeek-V2": (236e9, 21e9), "DeepSeek-V2-Lite": (15.7e9, 2.4e9)}


def activated_table() -> pd.DataFrame:
    """Which convention the published activated counts use: for DeepSeek-V3, V2 and V2-Lite, the published
    total and activated parameters (billions) beside ours without and with the input embedding table."""
    rows = {}
    for model in (load_model("DeepSeek-V3"), load_model("DeepSeek-V2"), V2_LITE):
        p, (total, activated) = param_counts(model), _PUBLISHED_ACTIVATED[model.name]
        rows[model.name] = {"total_B": p.total / 1e9, "published_total_B": total / 1e9,
                            "activated_B": p.activated / 1e9, "with_embedding_B": p.activated_with_embedding / 1e9,
                            "published_activated_B": activated / 1e9}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def flops_table(seq_len: int = 4096) -> pd.DataFrame:
    """GFLOPs per token of one MoE layer and one dense layer, per pass, beside 6 x the layer's activated weights."""
    model, p = load_model(), param_counts(load_model())
    rows = {}
    for name, moe, weights in (("MoE layer", True, p.moe_layer_activated), ("dense layer", False, p.dense_layer)):
        f = layer_flops(model, moe, seq_len, recompute=True)
        rows[name] = {"forward": f.forward / 1e9, "backward_input": f.backward_input / 1e9,
                      "backward_weight": f.backward_weight / 1e9, "total": f.total / 1e9,
                      "6N": 6 * weights / 1e9}
    return pd.DataFrame.from_dict(rows, orient="index")


def hardware_table(name: str = "H800") -> pd.DataFrame:
    """The GPU's numbers with the source of each (data/scale_hardware.csv)."""
    hardware = load_hardware(name)
    return pd.DataFrame({"value": {k: getattr(hardware, k) for k in hardware_sources(name)},
                         "source": hardware_sources(name)})


def setting_table(kind: str | None = None) -> pd.DataFrame:
    """The training setting's rows (data/scale_setting.csv), optionally only one `kind` ('assumption'...)."""
    if kind is not None:
        arg.choice(kind, "kind", sorted({row["kind"] for row in setting_rows()}), where="setting_table")
    rows = [row for row in setting_rows() if kind is None or row["kind"] == kind]
    return pd.DataFrame(rows).set_index("name")


def dispatch_ib_ms(tokens: int, max_nodes: int, ib_gbps: float, dispatch_dtype: str = "fp8") -> float:
    """The InfiniBand hop of one DeepSeek-V3 dispatch (ms) for `tokens` tokens, cap M and IB GB/s: the
    library's answer to exercise 2 of notebook 08 (one sequence of `tokens` tokens per micro-batch)."""
    model, hardware = load_model(), load_hardware().with_changes(ib_gbps=ib_gbps)
    setting = report_setting().with_changes(max_nodes=max_nodes, dispatch_dtype=dispatch_dtype,
                                            seq_len=tokens, tokens_per_microbatch=tokens, microbatches=1)
    return all_to_all_ms(model, hardware, setting, Layout.of(model, hardware, setting)).dispatch_ib


def model_states_gb(replicated: float, routed: float, dp: int, ep: int, moment_dtype: str = "bf16") -> float:
    """GB of weights, gradients, master weights and moments under ZeRO-1 for `replicated` parameters
    (sharded DP ways) and `routed` expert parameters (DP/EP ways): exercise 3 of notebook 08."""
    for name, value in (("replicated", replicated), ("routed", routed)):
        arg.real(value, name, low=0, high=1e15, where="model_states_gb", why="a number of parameters")
    setting = report_setting().with_changes(dp=dp, ep=ep, moment_dtype=moment_dtype)
    layout = Layout(gpus=0, ep_nodes=1, gpus_per_ep_node=1, experts_per_gpu=0, expert_replicas=dp // ep,
                    microbatches=1, tokens_per_step=0)
    return model_state_bytes(ChunkParams(int(replicated), int(routed)), setting, layout).total / 1e9


def activation_table(changes: dict | None = None) -> pd.DataFrame:
    """Bytes per token one MoE layer keeps for its backward, item by item (with FP8 caching and recomputation
    as in the report unless `changes` says otherwise)."""
    if changes is not None and not isinstance(changes, dict):
        arg.fail("changes", "a dict of setting fields, or None", changes, where="activation_table",
                 error=arg.InputTypeError)
    setting = report_setting().with_changes(**(changes or {}))
    items = activation_items(load_model(), setting, "moe")
    table = pd.DataFrame({"bytes_per_token": items}).rename_axis("kept for the backward")
    table.loc["total"] = table["bytes_per_token"].sum()
    return table


def schedule_table(result: ScaleResult) -> pd.DataFrame:
    """Per schedule: the step split into compute, communication waited for and idle on the rank that computes
    least (the course's time budget; they sum to the step; column ``rank`` names it), the step time the all-to-all adds over the same
    schedule without it (s), and the fullest GPU (GB).
    Schedules that cannot run the setting are left out (``result.unavailable`` says why)."""
    _result(result, "schedule_table")
    rows = []
    for name, r in result.schedules.items():
        gb = r.memory.gb()
        rows.append({
            "schedule": name,
            "step_s": r.step_ms / 1e3,
            "compute_s": r.compute_ms / 1e3,
            "comm_waited_s": r.comm_waited_ms / 1e3,
            "idle_s": r.idle_ms / 1e3,
            "rank": r.budget_rank,
            "a2a_adds_s": r.a2a_added_ms / 1e3,
            "memory_gb": gb["total"],
            "fits": gb["total"] <= result.hardware.memory_gb,
        })
    return pd.DataFrame(rows).set_index("schedule")


def memory_table(result: ScaleResult) -> pd.DataFrame:
    """Per schedule, the fullest GPU's gigabytes by kind, its total and which rank it is."""
    _result(result, "memory_table")
    rows = {name: {**r.memory.gb(), "rank": r.worst_rank} for name, r in result.schedules.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("schedule")


def summary_row(result: ScaleResult) -> dict:
    """The few numbers a what-if changes: one MoE layer's all-to-all : forward compute (on every SM, and on
    the SMs an F&B pair leaves to compute), the step times of 1F1B and DualPipe, DualPipe's fullest GPU in GB."""
    _result(result, "summary_row")
    one, dual = result.schedules["1f1b"], result.schedules["dualpipe"]
    hw = result.hardware
    return {
        "moe_layer_comm_to_compute": result.moe_layer_comm_to_compute,
        "comm_to_compute_paired": result.moe_layer_comm_to_compute * hw.compute_sms(overlap=True) / hw.n_sms,
        "step_1f1b_s": one.step_ms / 1e3,
        "step_dualpipe_s": dual.step_ms / 1e3,
        "dualpipe_over_1f1b": dual.step_ms / one.step_ms,
        "dualpipe_gb": dual.memory.gb()["total"],
        "dualpipe_fits": dual.memory.total <= result.hardware.memory_gb * 1e9,
    }


def what_if_table(what_ifs: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per what-if (default `WHAT_IFS`): the ratio, 1F1B's and DualPipe's steps, DualPipe's GB."""
    what_ifs = WHAT_IFS if what_ifs is None else what_ifs
    if not isinstance(what_ifs, dict) or not what_ifs:
        arg.fail("what_ifs", "a non-empty dict {name: changes}", what_ifs, where="what_if_table",
                 error=arg.InputTypeError)
    rows = {name: summary_row(run(changes, ("1f1b", "dualpipe"))) for name, changes in what_ifs.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("what if")


def sweep_table(name: str, values: Iterable, changes: dict | None = None) -> pd.DataFrame:
    """The `summary_row` as one setting field (``efficiency``...) or GPU field (``hw.ib_gbps``) takes `values`."""
    arg.text(name, "name", where="sweep_table", why='a setting field, or "hw.<field>" for the GPU')
    rows = []
    for value in arg.sequence(list(values) if isinstance(values, (range, set, frozenset)) else values, "values",
                              where="sweep_table", why="the values the field takes"):
        change = dict(changes or {})
        if name.startswith("hw."):
            change["hw"] = {**change.get("hw", {}), name[3:]: value}
        else:
            change[name] = value
        rows.append({name.removeprefix("hw."): value, **summary_row(run(change, ("1f1b", "dualpipe")))})
    return pd.DataFrame(rows)


def implied_efficiency(gpu_hours: float = REPORT_PRETRAINING_GPU_HOURS, tolerance: float = 2e-3) -> float:
    """The efficiency at which the model's DualPipe step reproduces `gpu_hours` for 14.8T tokens (bisection;
    the report's Table 1 gives 2664K H800 GPU hours). Raises ValueError if no efficiency in (0, 1] does."""
    arg.real(gpu_hours, "gpu_hours", low=0, low_open=True, where="implied_efficiency", why="GPU hours of a run")
    def hours(e: float) -> float:
        return run({"efficiency": e}, ("dualpipe",)).gpu_hours()

    low, high = 0.01, 1.0
    if not hours(high) <= gpu_hours <= hours(low):
        raise ValueError(f"no efficiency in [{low}, {high}] gives {gpu_hours:.4g} GPU hours under this model.")
    while high - low > tolerance:
        mid = (low + high) / 2
        low, high = (mid, high) if hours(mid) > gpu_hours else (low, mid)
    return (low + high) / 2


def comm_ratio_table(result: ScaleResult) -> pd.DataFrame:
    """One MoE layer's all-to-all over its compute, for a forward, a backward and an F&B pair (whose two
    chunks each dispatch and combine), with the compute on every SM and on the SMs a pair leaves to compute
    (20 of 132 run the all-to-all, report Sec. 3.2.2). The report's "approximately 1:1" (Sec. 3.2.1) is one
    of these numbers. Tokens per micro-batch cancel out: compute and all-to-all both scale with them."""
    _result(result, "comm_ratio_table")
    ms, hw = result.layer_ms, result.hardware
    a2a = ms["dispatch"] + ms["combine"]
    slow = hw.n_sms / hw.compute_sms(overlap=True)
    rows = {"forward": (a2a, ms["F"]), "backward": (a2a, ms["B"]), "F&B pair": (2 * a2a, ms["F"] + ms["B"])}
    return pd.DataFrame.from_dict(
        {name: {"all_to_all_ms": comm, f"compute_ms_{hw.n_sms:g}_sms": work, f"ratio_{hw.n_sms:g}_sms": comm / work,
                f"ratio_{hw.compute_sms(overlap=True):g}_sms": comm / (work * slow)} for name, (comm, work) in rows.items()},
        orient="index").rename_axis("one MoE layer")


def uneven_table(schedules: tuple[str, ...] = ("1f1b", "dualpipe", "dualpipev"), rank: int = 0) -> pd.DataFrame:
    """The report's setting simulated with each chunk's own cost (``utils.scale.schedules.uneven_stages``):
    per schedule and cut (uniform, equal layers, the kit's balanced cut), the step (s), the step over the
    uniform one, the costliest chunk over the mean, and on `rank` its load, compute and idle time (s)."""
    model, hardware, setting = load_model(), load_hardware(), report_setting()
    rows = uneven_stages(model, hardware, setting, Layout.of(model, hardware, setting), tuple(schedules), rank)
    table = pd.DataFrame(rows).set_index(["schedule", "cut"])
    for column in ("step_ms", "rank_compute_ms", "rank_idle_ms"):
        table[column] /= 1e3
    return table.rename(columns=lambda c: c.replace("_ms", "_s"))


class ScaleView(View):
    """The course's ``View`` of the full-scale model: the figure (seconds and gigabytes per schedule), the
    schedule table, and as its note the summary sentences (live numbers) followed by the assumptions line."""

    @property
    def summary(self) -> list[str]:
        """The summary sentences (the note without its last line, which states the assumptions)."""
        return list(self.notes[:-1])

    @property
    def assumptions(self) -> str:
        return self.notes[-1] if self.notes else ""


def setting_text(result: ScaleResult) -> str:
    """One line naming what the learner set: parallel sizes, node cap, IB bandwidth, dispatch precision, efficiency."""
    _result(result, "setting_text")
    s, h = result.setting, result.hardware
    return (f"PP {s.pp} x DP {s.dp}, EP {s.ep}, M = {s.max_nodes}, IB {h.ib_gbps:g} GB/s, "
            f"{s.dispatch_dtype.upper()} dispatch, efficiency {s.efficiency:g}")


def summary_lines(result: ScaleResult) -> list[str]:
    """Sentences with the live numbers: the ratio, what DualPipe saves, what it costs, whether it fits."""
    _result(result, "summary_lines")
    one, dual = result.schedules["1f1b"], result.schedules["dualpipe"]
    gb, cap = dual.memory.gb(), result.hardware.memory_gb
    biggest = max((k for k in gb if k != "total"), key=gb.get)
    hw = result.hardware
    paired = hw.compute_sms(overlap=True)
    if gb["total"] > cap:
        verdict = "does not fit"
    elif gb["total"] > 0.9 * cap:  # the model leaves out buffers, context and fragmentation (notebook 08, sec. 5)
        verdict = "at capacity: what the model leaves out needs the rest"
    else:
        verdict = "fits"
    return [
        f"One MoE layer: all-to-all {result.layer_ms['dispatch'] + result.layer_ms['combine']:.2f} ms against "
        f"{result.layer_ms['F']:.2f} ms of forward compute on all {hw.n_sms:g} SMs, "
        f"{result.moe_layer_comm_to_compute:.2f} : 1 ({result.moe_layer_comm_to_compute * paired / hw.n_sms:.2f} "
        f": 1 on the {paired:g} a pair leaves; {result.comm_to_compute:.2f} : 1 over a mean chunk, dense layers "
        "and heads included).",
        f"1F1B's step takes {one.step_ms / 1e3:.2f} s, {one.a2a_added_ms / 1e3:.2f} s more than without the "
        f"all-to-all; DualPipe's takes {dual.step_ms / 1e3:.2f} s, {dual.a2a_added_ms / 1e3:.2f} s more.",
        f"DualPipe's fullest GPU (rank {dual.worst_rank}) holds {gb['total']:.1f} GB of {cap:g} "
        f"({verdict}); the largest part is {biggest.replace('_', ' ')}, "
        f"{gb[biggest]:.1f} GB.",
    ]


def explore_scale(pp: int = 16, ib_gbps: float = 50.0, max_nodes: int = 4, dispatch_dtype: str = "fp8",
                  efficiency: float = 0.6, tokens_per_microbatch: int = 4096, plot: bool = True) -> ScaleView:
    """The report's setting with the widget's controls applied (PP keeps 2048 GPUs: DP = 2048 / PP).

    Returns the figure (seconds and gigabytes per schedule), the schedule table and summary sentences, or
    a view whose ``error`` says which rule the setting breaks.
    """
    try:
        gpus = report_setting().pp * report_setting().dp
        arg.whole(pp, "pp", low=1, where="explore_scale", why="pipeline stages")
        arg.flag(plot, "plot", where="explore_scale")
        if gpus % pp:
            raise ValueError(f"PP = {pp} does not divide the {gpus} GPUs into equal pipeline stages.")
        result = run({"hw": {"ib_gbps": ib_gbps}, "pp": pp, "dp": gpus // pp, "max_nodes": max_nodes,
                      "dispatch_dtype": dispatch_dtype, "efficiency": efficiency,
                      "tokens_per_microbatch": tokens_per_microbatch})
    except ValueError as error:
        return ScaleView(figure=None, error=str(error))
    table = schedule_table(result)
    figure = None
    if plot:
        memory = memory_table(result)
        figure = scale_figure(table, memory, result.hardware.memory_gb, setting_text(result))
    note = "Efficiency and tokens per micro-batch are assumptions (the report does not state them)."
    for name, why in result.unavailable.items():
        note += f" {name} cannot run this setting: {why}"
    return ScaleView(figure=figure, table=table, note=(*summary_lines(result), note))


def _result(result, where: str) -> ScaleResult:
    return arg.instance(result, "result", ScaleResult, "a ScaleResult (from evaluate or run)", where=where)
