"""Bad input to the MoE library (routing, the layer, the decoder, data, training, expert parallelism, the
explorers): a ValueError that states the rule, before any training or communication starts."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from bad_inputs import BAD, BAD_TENSORS, assert_teaches, assert_view_error, call_with, expand
from patience import patient

from utils import inputs as arg
from utils.moe import explore as mx
from utils.moe import routing
from utils.moe.data import TaskDataset, TaskVocabulary, answer_for, head_rows, make_dataset, write_head_csv
from utils.moe.expert_parallel import (
    ExpertLayout,
    ExpertParallelMoE,
    TrafficLedger,
    cross_node_copies,
    split_over_ranks,
    traffic_from_routing,
    traffic_totals,
)
from utils.moe.layer import (
    DeepSeekMoE,
    Expert,
    balance_bias_update,
    expert_balance_loss,
    max_violation,
    waiting_share,
)
from utils.moe.toy_decoder import CausalSelfAttention, ToyDecoderConfig, build_toy_decoder, moe_layers, rotate
from utils.moe.train import evaluate, language_model_loss, train

AFF = torch.rand(6, 8, generator=torch.Generator().manual_seed(0)) + 0.01
LAYER = DeepSeekMoE(d_model=16, n_routed=8, k=2, d_expert=8)
LAYOUT = ExpertLayout(8, 4, 2)
IDX = [torch.tensor([[0, 1], [2, 7]]) for _ in range(4)]
DATA = make_dataset(64, seed=0)
TRAFFIC = traffic_from_routing(IDX, LAYOUT, 16)
BAD_AFFINITY = list(BAD_TENSORS.values())[:-2] + [torch.ones(6, 8, dtype=torch.long), -AFF, torch.zeros(6, 8)]

TABLE = [
    (routing.topk_route, dict(affinity=AFF, k=2),
     {"affinity": BAD_AFFINITY, "k": BAD["count"] + [9], "bias": [torch.zeros(3), [0.0] * 8,
                                                                  torch.full((8,), math.nan)]}),
    (routing.node_limited_route, dict(affinity=AFF, k=2, n_nodes=4, max_nodes=2),
     {"affinity": BAD_AFFINITY, "k": BAD["count"], "n_nodes": "count", "max_nodes": BAD["count"] + [5]}),
    (routing.route, dict(affinity=AFF, k=2), {"affinity": BAD_AFFINITY, "n_nodes": "count",
                                              "max_nodes": [0, 2.5, "2"]}),
    (routing.experts_per_node, dict(n_experts=8, n_nodes=4), {"n_experts": "count", "n_nodes": BAD["count"] + [3]}),
    (routing.node_of_expert, dict(expert_idx=torch.tensor([[0, 7]]), n_experts=8, n_nodes=4),
     {"expert_idx": [[[0, 7]], torch.tensor([[0.0, 7.0]]), torch.tensor([[0, 8]]), torch.tensor([[-1, 0]])],
      "n_experts": "count"}),
    (routing.nodes_per_token, dict(expert_idx=torch.tensor([[0, 7]]), n_experts=8, n_nodes=4),
     {"expert_idx": [None, torch.tensor([[0, 9]])], "n_nodes": "count"}),
    (Expert, dict(d_model=8, d_hidden=8), {"d_model": BAD["count"] + [10**6], "d_hidden": "count"}),
    (balance_bias_update, dict(bias=torch.zeros(8), load=torch.ones(8), gamma=0.01),
     {"bias": [None, [0.0] * 8, torch.zeros(3)], "load": [None, -torch.ones(8)], "gamma": "nonneg"}),
    (expert_balance_loss, dict(affinity=AFF, expert_idx=torch.tensor([[0, 1]] * 6), alpha=0.01),
     {"affinity": [None, AFF[0], torch.zeros(6, 8)], "expert_idx": [None, torch.tensor([[0, 9]] * 6)],
      "alpha": "nonneg"}),
    (max_violation, dict(load=torch.ones(8)), {"load": [None, [1.0], torch.ones(2, 2), -torch.ones(8)]}),
    (waiting_share, dict(max_vio=0.5), {"max_vio": [-0.5] + BAD["real"]}),
    (DeepSeekMoE, dict(d_model=16, n_routed=8, k=2, d_expert=8),
     {"d_model": BAD["count"] + [10**6], "n_routed": "count", "k": BAD["count"] + [9], "d_expert": "count",
      "n_shared": BAD["index"], "balancing": [None, 3, "magic"], "bias_gamma": "nonneg", "aux_alpha": "nonneg",
      "n_nodes": BAD["count"] + [3], "max_nodes": [0, 9, 2.5]}),
    (LAYER, dict(x=torch.randn(3, 16)),
     {"x": [torch.randn(3, 15), torch.randn(3, 16, dtype=torch.float64), np.ones((3, 16)), None,
            torch.ones(3, 16, dtype=torch.complex64)]}),
    (LAYER.affinity, dict(tokens=torch.randn(3, 16)), {"tokens": [torch.randn(3, 4), None]}),
    (ToyDecoderConfig, dict(), {"d_model": BAD["count"] + [66, 10**5], "n_heads": "count", "n_blocks": "count",
                                "k": BAD["count"] + [9], "n_routed": "count", "vocab_size": "count",
                                "balancing": ["magic"], "bias_gamma": "nonneg", "max_nodes": [0, 2]}),
    (ToyDecoderConfig().replace, dict(k=2), {"colour": ["blue"]}),
    (build_toy_decoder, dict(), {"config": [3, {"k": 2}], "seed": BAD["index"]}),
    (CausalSelfAttention, dict(d_model=8, n_heads=2), {"d_model": BAD["count"] + [6], "n_heads": "count"}),
    (rotate, dict(x=torch.randn(1, 2, 3, 4)), {"x": [None, torch.randn(1, 2, 3, 5), torch.randn(4)]}),
    (moe_layers, dict(model=LAYER), {"model": [None, "decoder"]}),
    (answer_for, dict(task="copy", digits=[1, 2], n_symbols=10),
     {"task": ["multiply", None], "digits": [None, "12", [1, 99], [1.5]], "n_symbols": BAD["count"] + [1]}),
    (TaskVocabulary, dict(), {"n_symbols": BAD["count"] + [1, 10**6]}),
    (TaskVocabulary().task_token, dict(task_id=0), {"task_id": BAD["index"] + [4]}),
    (make_dataset, dict(n_sequences=8),
     {"n_sequences": BAD["count"] + [arg.MAX_SEQUENCES + 1], "n_digits": "count", "n_symbols": [1, 0, 2.5],
      "seed": BAD["index"]}),
    (DATA.describe, dict(i=0), {"i": BAD["index"] + [64]}),
    (DATA.batch, dict(index=torch.tensor([0, 1])), {"index": [None, [0, 1], torch.tensor([0, 64]),
                                                           torch.tensor([0.0])]}),
    (lambda **kw: next(DATA.sample_batches(**kw)), dict(batch_size=4, steps=1, seed=0),
     {"batch_size": BAD["count"] + [65], "steps": [-1, 1.5, None], "seed": BAD["index"]}),
    (head_rows, dict(n_rows=2), {"n_rows": BAD["count"] + [5000]}),
    (write_head_csv, dict(path="/dev/null"), {"path": [3, None]}),
    (language_model_loss, dict(logits=torch.randn(2, 3, 15), targets=torch.zeros(2, 3, dtype=torch.long)),
     {"logits": [None, torch.randn(2, 3)], "targets": [torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3),
                                                       torch.full((2, 3), 99), torch.full((2, 3), -100)]}),
    (evaluate, dict(model=build_toy_decoder(), dataset=DATA), {"model": [None], "dataset": [None, [1, 2]]}),
    (train, dict(model=build_toy_decoder(), steps=1, progress=False),
     {"model": [None, "toy"], "steps": BAD["count"] + [arg.MAX_TRAIN_STEPS + 1], "lr": "positive",
      "batch_size": BAD["count"] + [10**6], "seed": BAD["index"], "progress": ["no"], "desc": [3],
      "dataset": [[1]], "eval_dataset": ["held out"]}),
    (ExpertLayout, dict(n_experts=8, world_size=4, gpus_per_node=2),
     {"n_experts": BAD["count"] + [6], "world_size": BAD["count"] + [3, arg.MAX_EXPERT_RANKS + 2],
      "gpus_per_node": BAD["count"] + [3]}),
    (LAYOUT.node_of_rank, dict(rank=0), {"rank": BAD["index"] + [4]}),
    (LAYOUT.experts_of_rank, dict(rank=0), {"rank": BAD["index"] + [4]}),
    (LAYOUT.rank_of_expert, dict(expert=0), {"expert": BAD["index"] + [8]}),
    (TrafficLedger, dict(layout=LAYOUT, rank=0), {"layout": [None, (8, 4, 2)], "rank": BAD["index"] + [4]}),
    (ExpertParallelMoE, dict(layer=LAYER, layout=LAYOUT, rank=0),
     {"layer": [None], "layout": [None], "rank": BAD["index"] + [4], "hierarchical": ["yes"]}),
    (traffic_from_routing, dict(expert_idx_per_rank=IDX, layout=LAYOUT, d_model=16),
     {"expert_idx_per_rank": [IDX[:2], None, [[[0, 1]]] * 4, [torch.tensor([[0, 8]])] * 4],
      "layout": [None], "d_model": "count", "itemsize": BAD["count"] + [9], "hierarchical": [None]}),
    (cross_node_copies, dict(experts=[0, 7], src_rank=0, layout=LAYOUT),
     {"src_rank": BAD["index"] + [4], "layout": [None], "hierarchical": ["no"]}),
    (split_over_ranks, dict(tokens=torch.ones(8, 2), world_size=4),
     {"tokens": [None, [1.0] * 8], "world_size": BAD["count"] + [3]}),
    (traffic_totals, dict(traffic=TRAFFIC), {"traffic": [None, TRAFFIC[0], [1, 2], TRAFFIC.tolist()]}),
    (mx.same_routing, dict(yours=routing.topk_route(AFF, 2), expected=routing.topk_route(AFF, 2)),
     {"yours": [None, 3, (1, 2, 3)], "expected": [None]}),
    (mx.random_routing_cases, dict(), {"n_cases": "count", "n_experts": "count", "k": BAD["count"] + [9],
                                       "tokens": "count", "seed": BAD["index"]}),
    (mx.router_walkthrough, dict(layer=LAYER, tokens=torch.randn(3, 16)),
     {"layer": [None], "tokens": [None, torch.randn(3, 4), torch.randn(16)]}),
    (mx.parameter_table, dict(layer=LAYER, dense_hidden=32), {"layer": [None], "dense_hidden": "count"}),
    (mx.moving_average, dict(values=np.ones(5)), {"values": [None, np.array([]), np.array([np.nan]), "abc"],
                                                  "window": "count"}),
    (mx.layout_table, dict(layout=LAYOUT), {"layout": [None, (8, 4, 2)]}),
    (mx.traffic_table, dict(traffic=TRAFFIC), {"traffic": [None, TRAFFIC[0]]}),
    (mx.direction_totals, dict(traffic=TRAFFIC), {"traffic": [None, [1]]}),
    (mx.moe_inputs, dict(model=build_toy_decoder(), tokens=DATA.inputs[:2]),
     {"model": [None, LAYER], "tokens": [None, DATA.inputs[:2].float(), DATA.inputs[:2] + 100]}),
]


@pytest.mark.parametrize("fn, kwargs, parameter, value", expand(TABLE))
def test_bad_input_gets_a_teaching_error(fn, kwargs, parameter, value):
    assert_teaches(call_with(fn, kwargs, parameter, value))


@pytest.mark.parametrize("fn, kwargs", [(fn, kwargs) for fn, kwargs, _ in TABLE],
                         ids=[getattr(fn, "__qualname__", type(fn).__name__) for fn, _, _ in TABLE])
def test_the_valid_calls_of_the_table_run(fn, kwargs):
    fn(**kwargs)


def test_the_examples_of_the_issue():
    assert_teaches(lambda: routing.topk_route(AFF, k=2.5), "k", "2.5")
    assert_teaches(lambda: routing.topk_route(AFF.numpy(), k=2), "torch tensor", "torch.as_tensor")
    assert_teaches(lambda: routing.topk_route(AFF.tolist(), k=2), "torch tensor")
    assert_teaches(lambda: routing.topk_route(torch.zeros(2, 8), k=2), "0/0")  # all-zero affinities: no NaN gates
    assert_teaches(lambda: routing.topk_route(torch.full((2, 8), math.nan), k=2), "NaN")
    assert_teaches(lambda: DeepSeekMoE(d_model=-4, n_routed=8, k=2, d_expert=8), "d_model")
    assert_teaches(lambda: LAYER(torch.randn(3, 15)), "last dimension", "16")
    assert_teaches(lambda: LAYER(torch.randn(3, 16, dtype=torch.float64)), "float32", "to(")
    assert_teaches(lambda: DeepSeekMoE(16, 8, 2, 8, bias_gamma=-0.1), "bias_gamma")


def test_sizes_beyond_the_limits_are_refused_before_any_work():
    start = time.perf_counter()
    assert_teaches(lambda: make_dataset(10**9), "MAX_SEQUENCES")
    assert_teaches(lambda: DeepSeekMoE(d_model=4096, n_routed=256, k=8, d_expert=4096), "MAX_PARAMETERS")
    assert_teaches(lambda: train(build_toy_decoder(), 10**6), "MAX_TRAIN_STEPS")
    assert_teaches(lambda: ExpertLayout(1024, 1024, 8), "MAX_EXPERT_RANKS")
    assert_teaches(lambda: routing.topk_route(torch.empty(1 << 24, 8), 2), "MAX_ELEMENTS")
    assert time.perf_counter() - start < patient(5.0)


# ------------------------------------------------------------------------ the widgets' pure functions

@pytest.fixture
def no_training(monkeypatch):
    """Training is the slow part: any attempt means the bad setting was not refused first."""
    def refuse(*args, **kwargs):
        raise AssertionError("trained before checking the setting")

    monkeypatch.setattr(mx, "train", refuse)
    monkeypatch.setattr(mx, "_TRAINED", {})


@pytest.mark.parametrize("kwargs", [dict(k=0), dict(k=2.5), dict(k=9), dict(n_experts=0), dict(n_experts="8"),
                                    dict(balancing="magic"), dict(balancing=None), dict(k=None)])
def test_training_widget_refuses_bad_settings_without_training(no_training, kwargs):
    assert_view_error(mx.train_and_summarise(**kwargs))


@pytest.mark.parametrize("max_nodes", [0, 5, 2.5, "2", None, True, math.nan])
def test_node_cap_widget_refuses_bad_caps_without_training(no_training, max_nodes):
    assert_view_error(mx.node_cap_summary(max_nodes), "max_nodes")


@pytest.mark.parametrize("max_nodes", [0, 5, 2.5, None])
@pytest.mark.parametrize("fn", [mx.node_cap_run, mx.held_out_routing])
def test_node_cap_runs_refuse_bad_caps_without_training(no_training, fn, max_nodes):
    assert_teaches(lambda: fn(max_nodes), "max_nodes")


def test_sweep_tables_and_histories_are_checked(no_training):
    assert_teaches(lambda: mx.link_times("sweep"), "sweep")
    assert_teaches(lambda: mx.plot_node_cap(None), "sweep")
    assert_teaches(lambda: mx.plot_expert_load({}), "histories")
    assert_teaches(lambda: mx.balancing_table([1, 2]), "histories")
    assert_teaches(lambda: mx.task_shares(None), "histories")
    assert_teaches(lambda: mx.compare_balancing(("bias", "magic")), "magic")
    assert_teaches(lambda: mx.train_toy(config={"k": 2}), "config")
    assert_teaches(lambda: mx.node_cap_sweep(cluster="cluster"), "cluster")


def test_task_dataset_rows_are_checked():
    assert isinstance(DATA, TaskDataset) and len(DATA.describe(63)["answer"]) > 0
