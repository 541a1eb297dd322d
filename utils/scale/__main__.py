"""Command line: DeepSeek-V3 at full scale in seconds and gigabytes.

    python -m utils.scale                      # the report's setting, as text
    python -m utils.scale --json               # the same as JSON (params_total, comm_to_compute, ...)
    python -m utils.scale --ib-gbps 25 --max-nodes 8 --dispatch-dtype bf16 --schedule 1f1b

Every flag changes one field of the configuration, the GPU or the training setting (``--help`` lists
them). A bad value prints one line, ``error: <the rule and why>``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from utils.inputs import ArgumentParser, one_line
from utils.scale.config import MODEL_NAMES, load_model
from utils.scale.hardware import HARDWARE_NAMES, load_hardware
from utils.scale.report import ScaleResult, evaluate
from utils.scale.setting import report_setting

# flag -> (the field it changes, help)
HARDWARE_FLAGS = {
    "--ib-gbps": ("ib_gbps", "InfiniBand GB/s per GPU (report: 50)"),
    "--nvlink-gbps": ("nvlink_gbps", "NVLink GB/s per GPU (report: 160)"),
    "--memory-gb": ("memory_gb", "GPU memory in GB (H800: 80)"),
    "--comm-sms": ("comm_sms", "SMs reserved for the overlapped all-to-all (report: 20 of 132)"),
    "--gpus-per-node": ("gpus_per_node", "GPUs per node (report: 8)"),
}
SETTING_FLAGS = {
    "--pp": ("pp", "pipeline stages (report: 16)"),
    "--dp": ("dp", "data-parallel GPUs per stage (report: 2048 / 16 = 128)"),
    "--ep": ("ep", "GPUs the routed experts are sharded over (report: 64)"),
    "--max-nodes": ("max_nodes", "node cap M of node-limited routing (report: 4; 8 lifts it)"),
    "--schedule": ("schedule", "pipeline schedule (report: dualpipe)"),
    "--seq-len": ("seq_len", "sequence length (report: 4096); also the micro-batch size unless given"),
    "--global-batch": ("global_batch", "sequences per step (report: 15360)"),
    "--tokens-per-microbatch": ("tokens_per_microbatch", "tokens per micro-batch (assumed: one sequence, 4096)"),
    "--microbatches": ("microbatches", "micro-batches per step (default: from the global batch)"),
    "--efficiency": ("efficiency", "achieved fraction of peak FLOP/s (assumed: 0.6)"),
    "--dispatch-dtype": ("dispatch_dtype", "fp8 (report) or bf16"),
    "--gemm-dtype": ("gemm_dtype", "precision of linear layers: fp8 (report) or bf16"),
    "--moment-dtype": ("moment_dtype", "Adam moments: bf16 (report) or fp32 (Playbook default)"),
    "--zero-stage": ("zero_stage", "ZeRO stage 0-3 (report: 1)"),
}

ALIASES = {"--max-nodes": ("--node-cap",)}


def _value(text: str):
    """A flag's text as an int or float when it reads as one; otherwise the text, which the library rejects
    with its own rule (so the command line and the library say the same thing)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parser() -> argparse.ArgumentParser:
    """The command line's flags."""
    p = ArgumentParser(prog="python -m utils.scale", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--model", default="DeepSeek-V3", help=f"published configuration: {', '.join(MODEL_NAMES)}")
    p.add_argument("--hardware", default="H800", help=f"GPU: {', '.join(HARDWARE_NAMES)}")
    for flag, (field, text) in {**HARDWARE_FLAGS, **SETTING_FLAGS}.items():
        p.add_argument(flag, *ALIASES.get(flag, ()), dest=field, help=text)
    p.add_argument("--no-recompute", action="store_true", help="store norms and up-projections instead")
    p.add_argument("--no-fp8-cache", action="store_true", help="cache activations in BF16 instead of FP8")
    return p


def run(args: argparse.Namespace) -> ScaleResult:
    """Evaluate the parsed flags; ValueError carries the library's rule for a bad value."""
    model = load_model(args.model)
    hw_changes = {f: _value(getattr(args, f)) for _, (f, _) in HARDWARE_FLAGS.items() if getattr(args, f) is not None}
    hardware = load_hardware(args.hardware).with_changes(**hw_changes)
    changes = {}
    for _, (field, _) in SETTING_FLAGS.items():
        text = getattr(args, field)
        if text is not None:
            changes[field] = text if field.endswith(("dtype", "schedule")) else _value(text)
    if "seq_len" in changes and "tokens_per_microbatch" not in changes:
        changes["tokens_per_microbatch"] = changes["seq_len"]  # the assumption: one sequence per micro-batch
    if args.no_recompute:
        changes["recompute"] = False
    if args.no_fp8_cache:
        changes["fp8_cache"] = False
    return evaluate(model, hardware, report_setting().with_changes(**changes))


def text_report(result: ScaleResult) -> str:
    """The result as a short text report."""
    p, s, c = result.params, result.setting, result.chosen
    mem = c.memory.gb()
    lines = [
        f"{result.model.name} on {result.layout.gpus} x {result.hardware.name}: PP={s.pp}, DP={s.dp}, EP={s.ep} "
        f"({result.layout.ep_nodes} nodes), node cap M={s.max_nodes}, {result.layout.microbatches} micro-batches "
        f"of {s.tokens_per_microbatch} tokens, efficiency {s.efficiency:g} (assumed)",
        f"parameters: {p.total / 1e9:.1f}B total, {p.activated / 1e9:.2f}B activated per token "
        f"(+{p.mtp / 1e9:.2f}B in the MTP module)",
        f"one MoE layer, one micro-batch: F {result.layer_ms['F']:.2f} ms, dispatch "
        f"{result.layer_ms['dispatch']:.2f} ms, combine {result.layer_ms['combine']:.2f} ms -> "
        f"all-to-all : compute = {result.moe_layer_comm_to_compute:.2f} : 1 "
        f"({result.comm_to_compute:.2f} : 1 for the mean chunk, which holds dense layers and heads too)",
        f"{'schedule':<13} {'step s':>8} {'idle s':>8} {'a2a adds s':>10} {'GB/GPU':>7}",
    ]
    for name, r in result.schedules.items():
        lines.append(
            f"{name:<13} {r.step_ms / 1e3:>8.2f} {r.worst_idle_ms / 1e3:>8.2f} {r.a2a_added_ms / 1e3:>10.2f} "
            f"{r.memory.gb()['total']:>7.1f}"
        )
    for name, why in result.unavailable.items():
        lines.append(f"{name:<13} not run here: {why.split(': ')[0]}")
    parts = ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in mem.items() if k != "total")
    verdict = "fits" if result.fits else "does NOT fit"
    lines.append(
        f"{s.schedule}, worst GPU (rank {c.worst_rank}): {mem['total']:.1f} GB = {parts}; "
        f"{verdict} in {result.hardware.memory_gb:g} GB"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; 0 on success, 2 with one ``error:`` line for a bad value."""
    args = parser().parse_args(argv)
    try:
        result = run(args)
    except ValueError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_json(), indent=1) if args.json else text_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
