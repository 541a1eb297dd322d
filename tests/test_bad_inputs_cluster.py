"""Bad input to the cluster and the executor: jobs by name, the demonstration jobs' pure functions, the
executor's arguments and model specs. All refused before any process starts (no cluster is started here: the
executor gets a stand-in whose run() would fail the test)."""

from __future__ import annotations

import math

import pytest
import torch
from bad_inputs import BAD, assert_teaches, call_with, expand
from torch import nn

from utils import inputs as arg
from utils.cluster import jobs
from utils.cluster.cluster import SimulatedCluster
from utils.cluster.inputs import check_job, resolve_job
from utils.pipeline.costs import CostModel
from utils.pipeline.executor.execute import execute, pacing_from_costs
from utils.pipeline.executor.models import (
    Chunk,
    decoder_spec,
    expert_owner,
    mlp_spec,
    shard_microbatch,
    split_evenly,
)
from utils.pipeline.executor.reference import gradient_gap, reference_run
from utils.pipeline.registry import make_schedule


class NoCluster:
    """A stand-in cluster: any call to run() means a process would have done work for bad input."""

    world_size = 4

    def run(self, *args, **kwargs):
        raise AssertionError("execute() started a job for bad input")


SPEC = mlp_spec(width=8, n_layers=8, batch=2)
GOOD = dict(cluster=NoCluster(), schedule=make_schedule("1f1b", 4, 4), model_spec=SPEC)
G = {"w": torch.ones(2)}

TABLE = [
    (SimulatedCluster, dict(world_size=2),
     {"world_size": BAD["count"] + [arg.MAX_WORLD_SIZE + 1], "timeout": "positive", "start_timeout": "positive",
      "backend": ["mpi", None, 3]}),
    (resolve_job, dict(spec="utils.cluster.jobs:whoami"),
     {"spec": [None, 3, "whoami", "utils.cluster.jobs:", "no.such.module:f", "utils.cluster.jobs:nothing",
               "utils.cluster.jobs:REDUCE_OPS"]}),
    (check_job, dict(fn=jobs.whoami), {"fn": [None, 42, "utils.cluster.jobs:whoami", lambda: 1]}),
    (jobs.ring_next, dict(rank=0, world_size=4), {"rank": BAD["index"] + [4], "world_size": "count"}),
    (jobs.ring_prev, dict(rank=0, world_size=4), {"rank": BAD["index"] + [4], "world_size": "count"}),
    (jobs.all_to_all_expected, dict(rank=0, world_size=4), {"rank": BAD["index"] + [4], "world_size": "count"}),
    (jobs.all_reduce_reference, dict(values=[1.0, 2.0]),
     {"values": [[], None, 3, ["a"], [math.nan]], "op": ["mean", None, 3]}),
    (jobs.ring_all_reduce_bytes_sent, dict(num_bytes=1024, world_size=4),
     {"num_bytes": "nonneg", "world_size": "count"}),
    (execute, GOOD,
     {"cluster": [None, "cluster", 4], "schedule": [None, "1f1b"], "model_spec": [None, "mlp", nn.Linear(2, 2)],
      "microbatches": [[], 3, [(torch.ones(2, 8),)], [(torch.ones(2, 8), None)], SPEC.make_microbatches(3)],
      "overlap": ["sideways", None, 3], "unit_ms": [0, -1, math.nan, 1e9], "paced": [3.0, "fast"],
      "timeout": [0, -1, math.nan, "10"]}),
    (pacing_from_costs, dict(costs=CostModel(F=1, B=2, W=1)),
     {"costs": [None, 3.0], "unit_ms": [0, -1, math.nan, math.inf, "20", 1e9]}),
    (mlp_spec, dict(), {"width": BAD["count"] + [10**6], "n_layers": "count", "batch": BAD["count"] + [10**8],
                        "seed": BAD["index"], "data_seed": BAD["index"]}),
    (decoder_spec, dict(), {"n_blocks": "count", "ep": BAD["count"] + [3, 1000], "d_model": BAD["count"] + [30],
                            "n_routed": "count", "k": BAD["count"] + [5], "batch": BAD["count"] + [10**9],
                            "seed": BAD["index"]}),
    (SPEC.make_microbatches, dict(n=2), {"n": BAD["count"] + [arg.MAX_MICROBATCHES + 1], "seed": [-1, 1.5]}),
    (SPEC.cut, dict(model=SPEC.build(), n_chunks=2), {"n_chunks": BAD["count"] + [9]}),
    (split_evenly, dict(n_items=8, n_groups=2), {"n_items": [-1, 1.5, None, 1], "n_groups": "count"}),
    (shard_microbatch, dict(x=torch.ones(4, 2), ep=2, ep_rank=0),
     {"x": [None, [1, 2], torch.ones(3, 2)], "ep": "count", "ep_rank": BAD["index"] + [2]}),
    (expert_owner, dict(name="blocks.0.moe.experts.3.up_proj.weight", n_routed=4, ep=2),
     {"name": [None, 3, ""], "n_routed": "count", "ep": BAD["count"] + [5]}),
    (Chunk, dict(parts=[("layers.0", nn.Linear(2, 2))]), {"parts": [[], None, [nn.Linear(2, 2)], [("a", 3)]]}),
    (reference_run, dict(model_spec=SPEC, microbatches=SPEC.make_microbatches(2)),
     {"model_spec": [None, "mlp"], "microbatches": [[], None, [(1, 2)]]}),
    (gradient_gap, dict(grads=G, reference=G), {"grads": [None, {"w": 1.0}, {"v": torch.ones(2)}],
                                                "reference": [[1], {"w": torch.ones(3)}]}),
]


@pytest.mark.parametrize("fn, kwargs, parameter, value", expand(TABLE))
def test_bad_input_gets_a_teaching_error(fn, kwargs, parameter, value):
    assert_teaches(call_with(fn, kwargs, parameter, value))


def test_the_examples_of_the_issue():
    assert_teaches(lambda: mlp_spec(width=2.5), "width", "2.5")
    assert_teaches(lambda: mlp_spec(n_layers=10**7), "MAX_PARAMETERS")
    assert_teaches(lambda: execute(NoCluster(), make_schedule("1f1b", 4, 4), mlp_spec(n_layers=3)),
                   "at least 4 layers")
    assert_teaches(lambda: execute(NoCluster(), make_schedule("1f1b", 8, 4), SPEC), "needs 8 processes")
