"""Notebook 08's design puzzles, graded by the full-scale model (``utils.pipeline.puzzles``' ``Puzzle`` type).

    cut_puzzle      cut DeepSeek-V3 into DualPipe's 16 chunks: the simulator, fed each chunk's own cost
                    (``CostModel.chunk_scale``), grades the step against a rank-balanced reference cut's
    memory_puzzle   change the report's setting so DualPipe's fullest GPU holds at most 65 GB without a longer
                    step, on the report's 2048 GPUs (PP x DP kept): the scale model grades both

Each target comes from the model at grading time (the reference answer run through the same code), never
from a number written here; the solutions are in lessons/08_full_scale.md.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from utils.pipeline.puzzles.base import Puzzle, Verdict
from utils.pipeline.simulate import simulate
from utils.scale.config import load_model
from utils.scale.hardware import load_hardware
from utils.scale.report import evaluate
from utils.scale.schedules import chunk_scale, size_pipeline
from utils.scale.setting import Layout, report_setting
from utils.scale.stages import Chunk, chunks_from_sizes, model_units
from utils.scale.timing import chunk_times

#: How close to the reference cut's DualPipe step a learner's cut must come.
CUT_TOLERANCE = 0.02
#: The memory puzzle's cap (GB) and the setting fields it lets a learner change (precisions stay the report's).
MEMORY_CAP_GB = 65.0
MEMORY_FIELDS = ("zero_stage", "tokens_per_microbatch", "pp", "dp", "recompute", "fp8_cache")


def _report():
    model, hardware, setting = load_model(), load_hardware(), report_setting()
    return model, hardware, setting, Layout.of(model, hardware, setting)


def chunks_of(layer_counts) -> tuple[Chunk, ...]:
    """DeepSeek-V3's chunks from their layer counts, in pipeline order: the embedding rides with the first
    chunk, the tail (final norm, output head, MTP module) with the last (it may hold no layer)."""
    model = load_model()
    counts = [int(c) for c in layer_counts]
    if any(c < 0 for c in counts) or sum(counts) != model.n_layers:
        raise ValueError(f"layer counts must be whole numbers >= 0 that sum to {model.n_layers}; got {counts}.")
    if any(c == 0 for c in counts[:-1]):
        raise ValueError("only the last chunk may hold no layer (it still holds the tail).")
    return chunks_from_sizes(model_units(model), counts[:-1] + [counts[-1] + 1])   # the tail: the last unit


def dualpipe_step_ms(layer_counts) -> float:
    """DualPipe's step (ms) in the report's setting with DeepSeek-V3 cut as `layer_counts` (16 chunks): each
    chunk priced on its own and fed to the simulator as ``CostModel.chunk_scale``."""
    model, hardware, setting, layout = _report()
    sized = size_pipeline(model, hardware, setting, layout, "dualpipe")
    chunks = chunks_of(layer_counts)
    if len(chunks) != sized.schedule.n_chunks:
        raise ValueError(f"DualPipe at PP {setting.pp} runs {sized.schedule.n_chunks} chunks; got {len(chunks)}.")
    times = tuple(chunk_times(model, hardware, setting, layout, c, False) for c in chunks)
    return simulate(sized.schedule, replace(sized.costs, chunk_scale=chunk_scale(times))).makespan


def balanced_layer_counts() -> list[int]:
    """The layer counts of the kit's balanced cut (``plan_chunks``) for DualPipe in the report's setting."""
    model, hardware, setting, layout = _report()
    return [c.n_layers for c in size_pipeline(model, hardware, setting, layout, "dualpipe").chunks]


def rank_balanced_layer_counts() -> list[int]:
    """A cut for DualPipe that balances ranks, not chunks: rank r runs chunks r and 15 - r, so the pair
    (0, 15) holds the tail (about six layers' cost) and 2 layers, every other pair 8 or 9 layers (found by
    moving one layer at a time while DualPipe's simulated step shrank). The cut puzzle's reference."""
    return [2, 5, 4, 4, 5, 4, 5, 4, 4, 4, 4, 4, 4, 4, 4, 0]


@lru_cache(maxsize=1)
def _best_cut_ms() -> float:
    return dualpipe_step_ms(rank_balanced_layer_counts())


def _judge_cut(answer) -> Verdict:
    counts = list(answer)
    if len(counts) != 16:
        return Verdict(False, f"DualPipe at PP 16 runs 16 chunks: return 16 layer counts, not {len(counts)}.")
    try:
        step = dualpipe_step_ms(counts)
    except ValueError as error:
        return Verdict(False, str(error))
    best = _best_cut_ms()
    if step <= best * (1 + CUT_TOLERANCE):
        return Verdict(True, f"DualPipe's step with your cut: {step / 1e3:.2f} s, within "
                             f"{CUT_TOLERANCE:.0%} of the reference cut's.")
    return Verdict(False, f"DualPipe's step with your cut is {step / 1e3:.2f} s, {step / best - 1:.0%} longer "
                          "than a better cut gives: some rank still computes more than it must.")


def cut_puzzle() -> Puzzle:
    """Exercise 2 of notebook 08: cut DeepSeek-V3 into DualPipe's 16 chunks with the shortest step."""
    return Puzzle(
        key="scale-cut",
        title="cut DeepSeek-V3 into 16 chunks",
        statement=("Return 16 layer counts (summing to 61) for DualPipe's chunks; the first chunk also holds the "
                   "embedding, the last the output head and MTP module (it may hold no layer). Goal: a shorter "
                   "step than the kit's balanced cut, within "
                   f"{CUT_TOLERANCE:.0%} of the reference cut's."),
        stub="def my_cut():\n    return [4] * 13 + [3] * 3  # the equal-layer cut",
        hints=(
            "The tail (head + MTP module) costs about six layers and cannot be split: give it a chunk of its own "
            "(last count 0). That is the kit's balanced cut, and it is not yet enough.",
            "DualPipe's rank r runs chunks r and 15 - r, so the busiest *rank*, not the costliest chunk, paces "
            "the step: balance the eight pairs (r, 15 - r), and count the tail as six layers in pair (0, 15).",
            "Put 2 layers in chunk 0 (pair (0, 15): 2 layers + the tail, about 8) and spread the other 59 over "
            "chunks 1-14 so that no pair (r, 15 - r) holds more than 9 layers.",
        ),
        goal=f"a DualPipe step within {CUT_TOLERANCE:.0%} of the reference cut's",
        reference=rank_balanced_layer_counts,
        judge=_judge_cut,
    )


def dualpipe_at(changes: dict) -> tuple[float, float]:
    """DualPipe's step (ms) and fullest GPU (GB) with the report's setting changed by `changes`."""
    result = evaluate(load_model(), load_hardware(), report_setting().with_changes(**changes), ("dualpipe",))
    dual = result.schedules["dualpipe"]
    return dual.step_ms, dual.memory.gb()["total"]


def _judge_memory(answer) -> Verdict:
    if not isinstance(answer, dict) or not answer:
        return Verdict(False, "return a dict of setting changes, e.g. {'zero_stage': 1}.")
    other = sorted(set(answer) - set(MEMORY_FIELDS))
    if other:
        return Verdict(False, f"change only {', '.join(MEMORY_FIELDS)} (precisions and the batch stay the "
                              f"report's); you changed {', '.join(other)}.")
    setting = report_setting()
    tokens = answer.get("tokens_per_microbatch", setting.tokens_per_microbatch)
    if tokens % setting.seq_len:
        return Verdict(False, f"a micro-batch holds whole {setting.seq_len}-token sequences; got {tokens} tokens.")
    gpus = answer.get("pp", setting.pp) * answer.get("dp", setting.dp)
    if gpus != setting.pp * setting.dp:
        return Verdict(False, f"PP x DP = {gpus} GPUs, not the report's {setting.pp * setting.dp} GPUs "
                              f"(PP {setting.pp} x DP {setting.dp}): the puzzle keeps the cluster, since another "
                              "GPU count changes the step by itself. Change PP and DP together.")
    try:
        step, gb = dualpipe_at(answer)
    except ValueError as error:
        return Verdict(False, str(error))
    base, _ = dualpipe_at({})
    if gb > MEMORY_CAP_GB:
        return Verdict(False, f"DualPipe's fullest GPU still holds {gb:.1f} GB, over {MEMORY_CAP_GB:g}.")
    if step > base * (1 + 1e-6):
        return Verdict(False, f"it fits ({gb:.1f} GB) but the step grows from {base / 1e3:.2f} s to "
                              f"{step / 1e3:.2f} s: find a lever that costs no time in this model.")
    return Verdict(True, f"{gb:.1f} GB on the fullest GPU, step {step / 1e3:.2f} s (the report's: {base / 1e3:.2f} s).")


def memory_puzzle() -> Puzzle:
    """Exercise 3 of notebook 08: bring DualPipe's fullest GPU to 65 GB without a longer step, on the same GPUs."""
    setting = report_setting()
    gpus = setting.pp * setting.dp
    return Puzzle(
        key="scale-memory",
        title=f"DualPipe in {MEMORY_CAP_GB:g} GB",
        statement=(f"Return a dict of changes to the report's setting (fields {', '.join(MEMORY_FIELDS)}) that "
                   f"brings DualPipe's fullest GPU to at most {MEMORY_CAP_GB:g} GB without a longer step, on the "
                   f"report's {gpus} GPUs (PP x DP unchanged)."),
        stub="def my_changes():\n    return {'recompute': True}",
        hints=(
            "Read the memory table: which two parts are largest on DualPipe's fullest GPU?",
            "Activations only shrink with fewer tokens per micro-batch (whole sequences: none fewer than one), "
            f"or a deeper pipeline on the same {gpus} GPUs (PP {2 * setting.pp} leaves DP {setting.dp // 2}), which "
            "costs step time. The FP32 gradients are not sharded under ZeRO-1.",
            "Shard the gradients as well: ZeRO stage 2 (`zero_stage`), then run `dualpipe_at` on your dict.",
        ),
        goal=f"at most {MEMORY_CAP_GB:g} GB on DualPipe's fullest GPU, step no longer than the report's setting's",
        reference=lambda: {"zero_stage": 2},
        judge=_judge_memory,
    )
