"""How the model is trained: parallel sizes, batch, precisions, and the assumptions the report leaves open.

`TrainingSetting` is the DeepSeek-V3 report's setting by default (Sec. 3.1-3.3, 4.2; every value and its
source in ``data/scale_setting.csv``, where the ``kind`` column tells report facts from assumptions).
`Layout.of(model, hardware, setting)` checks that the parallel sizes fit together and derives the rest:
GPUs, nodes an EP group spans, experts per GPU, the ZeRO shard sizes and the micro-batch count.

Parallelism follows the report: no tensor parallelism; PP pipeline stages, each replicated over DP
data-parallel GPUs (2048 = 16 x 128); inside a stage, the routed experts are sharded over EP GPUs (an EP
group is a slice of the DP ranks: attention and shared experts are replicated DP ways, each routed expert
DP/EP ways). ZeRO stage 1 shards the FP32 master weights and the optimizer moments over those replicas.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, fields, replace
from functools import cache

from utils.scale.config import DATA, ModelConfig, check_count, check_counts, check_number, known_changes
from utils.scale.hardware import DTYPES, Hardware

SETTING_CSV = DATA / "scale_setting.csv"
MOMENT_DTYPES = {"bf16": 2, "fp32": 4}


@dataclass(frozen=True)
class TrainingSetting:
    """One training configuration; ``report_setting()`` is the report's (values and sources in data/).

    ``tokens_per_microbatch`` tokens enter each pipeline per micro-batch: one packed sequence of ``seq_len``
    in the report's setting (an assumption), several, or part of one (then the sequence is pipelined in
    pieces and its attention still spans ``seq_len``). ``global_batch`` sequences per step over all DP ranks
    fix the micro-batch count unless ``microbatches`` is given. ``efficiency`` is the achieved fraction of peak FLOP/s (an assumption).
    ``max_nodes`` is the node cap M of node-limited routing. Byte sizes are per value.
    """

    pp: int
    dp: int
    ep: int
    max_nodes: int
    schedule: str
    seq_len: int
    global_batch: int
    tokens_per_microbatch: int
    efficiency: float
    gemm_dtype: str
    dispatch_dtype: str
    combine_dtype: str
    moment_dtype: str
    weight_bytes: int
    grad_bytes: int
    master_bytes: int
    zero_stage: int
    recompute: bool
    fp8_cache: bool
    microbatches: int | None = None

    def __post_init__(self):
        check_counts(self, {
            "pp": ("the number of pipeline stages (PP)", 1),
            "dp": ("the number of data-parallel GPUs per pipeline stage (DP)", 1),
            "ep": ("the number of GPUs the routed experts are sharded over (EP)", 1),
            "max_nodes": ("the node cap M: the most nodes one token's experts may live on", 1),
            "seq_len": ("the sequence length in tokens", 1),
            "global_batch": ("the number of sequences per training step", 1),
            "tokens_per_microbatch": ("the number of tokens in one micro-batch", 1),
            "weight_bytes": ("bytes per stored weight", 1),
            "grad_bytes": ("bytes per stored gradient", 1),
            "master_bytes": ("bytes per master weight", 1),
            "zero_stage": ("the ZeRO stage (0: nothing sharded ... 3: weights sharded too)", 0),
        })
        if self.microbatches is not None:
            object.__setattr__(
                self,
                "microbatches",
                check_count("microbatches", self.microbatches, 1, "the number of micro-batches per step"),
            )
        if self.zero_stage > 3:
            raise ValueError(f"zero_stage is 0, 1, 2 or 3 (ZeRO has three stages); got {self.zero_stage}.")
        object.__setattr__(
            self,
            "efficiency",
            check_number("efficiency", self.efficiency, "the achieved fraction of peak throughput", at_most=1.0),
        )
        for name in ("gemm_dtype", "dispatch_dtype", "combine_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(
                    f"{name} is the precision of that work: one of {', '.join(DTYPES)}; got {getattr(self, name)!r}."
                )
        if self.moment_dtype not in MOMENT_DTYPES:
            raise ValueError(
                f"moment_dtype stores Adam's two moments: one of {', '.join(MOMENT_DTYPES)}; got {self.moment_dtype!r}."
            )
        for name in ("recompute", "fp8_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} is a yes/no choice (True or False); got {getattr(self, name)!r}.")
        if not isinstance(self.schedule, str) or not self.schedule:
            raise ValueError(f"schedule is the name of a pipeline schedule; got {self.schedule!r}.")

    @property
    def moment_bytes(self) -> int:
        """Bytes of each of Adam's two moments (BF16 in DeepSeek-V3, Sec. 3.3.3; FP32 in the Playbook)."""
        return MOMENT_DTYPES[self.moment_dtype]

    def with_changes(self, **changes) -> TrainingSetting:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **known_changes(self, changes, "TrainingSetting"))


@dataclass(frozen=True)
class Layout:
    """The parallel layout a setting implies on a model and a cluster (derived by `Layout.of`)."""

    gpus: int
    ep_nodes: int
    gpus_per_ep_node: int
    experts_per_gpu: int
    expert_replicas: int
    microbatches: int
    tokens_per_step: int

    @classmethod
    def of(cls, model: ModelConfig, hardware: Hardware, setting: TrainingSetting) -> Layout:
        """Check the parallel sizes fit together (rules below, each error says why) and derive the layout."""
        pp, dp, ep, node = setting.pp, setting.dp, setting.ep, hardware.gpus_per_node
        has_moe = model.n_moe_layers + model.n_mtp > 0
        if has_moe and model.n_routed_experts % ep:
            raise ValueError(
                f"{model.n_routed_experts} routed experts cannot be split evenly over EP = {ep} GPUs: every "
                f"EP rank holds the same number of experts, so EP must divide the expert count."
            )
        if dp % ep:
            raise ValueError(
                f"EP = {ep} must divide DP = {dp}: DP counts the data-parallel GPUs of one pipeline stage "
                f"(2048 / 16 = 128 in the report) and an expert-parallel group is a slice of them (attention "
                f"is replicated DP ways, each expert DP/EP ways); for 2 replicas of a 64-GPU EP group, DP = 128."
            )
        if ep > node and ep % node:
            raise ValueError(
                f"EP = {ep} GPUs do not fill whole nodes of {node} GPUs: an EP group larger than a node must "
                f"span whole nodes so every node holds the same share of experts."
            )
        if ep < node and node % ep:
            raise ValueError(
                f"EP = {ep} must divide the {node} GPUs of a node: EP groups smaller than a node tile it."
            )
        ep_nodes = max(1, ep // node)
        if setting.max_nodes > ep_nodes:
            raise ValueError(
                f"node cap M = {setting.max_nodes} exceeds the {ep_nodes} node(s) an EP group of {ep} GPUs "
                f"spans: a token cannot use more nodes than hold experts (M = {ep_nodes} lifts the cap)."
            )
        if has_moe:
            per_node = model.n_routed_experts // ep_nodes
            if model.top_k > setting.max_nodes * per_node:
                raise ValueError(
                    f"with at most M = {setting.max_nodes} node(s) of {per_node} experts each, a token can reach "
                    f"{setting.max_nodes * per_node} experts, fewer than its top_k = {model.top_k}."
                )
        microbatches = setting.microbatches
        if microbatches is None:
            batch_tokens, per_step = setting.global_batch * setting.seq_len, dp * setting.tokens_per_microbatch
            if batch_tokens % per_step:
                raise ValueError(
                    f"a global batch of {setting.global_batch} sequences x {setting.seq_len} tokens does not "
                    f"split into whole micro-batches of {setting.tokens_per_microbatch} tokens on each of "
                    f"DP = {dp} ranks: every rank runs the same number of micro-batches per step; choose "
                    f"sizes that divide it or give the micro-batch count."
                )
            microbatches = batch_tokens // per_step
        return cls(
            gpus=pp * dp,
            ep_nodes=ep_nodes,
            gpus_per_ep_node=min(ep, node),
            experts_per_gpu=model.n_routed_experts // ep if has_moe else 0,
            expert_replicas=dp // ep,
            microbatches=microbatches,
            tokens_per_step=microbatches * setting.tokens_per_microbatch * dp,
        )


@cache
def setting_rows() -> tuple[dict, ...]:
    """The rows of ``data/scale_setting.csv``: name, value, kind (report / assumption / playbook), source."""
    with open(SETTING_CSV, newline="") as f:
        return tuple(csv.DictReader(f))


def report_setting() -> TrainingSetting:
    """The DeepSeek-V3 report's setting, read from ``data/scale_setting.csv``."""
    rows = {row["name"]: row["value"] for row in setting_rows()}
    values = {}
    for f in fields(TrainingSetting):
        if f.name not in rows:
            continue
        text = rows[f.name]
        if text in ("true", "false"):
            values[f.name] = text == "true"
        elif text.lstrip("-").isdigit():
            values[f.name] = int(text)
        else:
            try:
                values[f.name] = float(text)
            except ValueError:
                values[f.name] = text
    return TrainingSetting(**values)


def assumptions() -> list[dict]:
    """The settings the report does not state, with the reasoning behind each value (kind 'assumption')."""
    return [dict(row) for row in setting_rows() if row["kind"] == "assumption"]
