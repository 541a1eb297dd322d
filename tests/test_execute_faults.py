"""Faults of the executor, named (issue #16): a model that raises in the dry run of shapes is reported as the
model's own error (with its message, chunk and stage), not as a shape mismatch; a stuck or dead rank is
reported with the last action each unfinished rank started. The model specs live here, at module level, so
the rank processes can import them (as tests/test_execute.py's FaultySpec)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest
import torch
from patience import patient
from torch import nn

from utils.cluster.cluster import RankError, RankTimeoutError, SimulatedCluster
from utils.pipeline.executor.execute import execute
from utils.pipeline.executor.models import MLPSpec
from utils.pipeline.registry import make_schedule


class TrapLayer(nn.Module):
    """tanh(Linear(x)) that, when armed, raises ("boom"), sleeps ("hang") or ends its process ("exit") in a
    forward with gradients (the executor's dry run of shapes runs without them) or in every forward
    ("boom-always")."""

    def __init__(self, width: int, trap: str | None):
        super().__init__()
        self.linear, self.trap = nn.Linear(width, width), trap

    def forward(self, x):
        if self.trap == "boom-always" or (self.trap and torch.is_grad_enabled()):
            if self.trap.startswith("boom"):
                raise RuntimeError("forward boom")
            if self.trap == "hang":
                time.sleep(600)
            if self.trap == "exit":
                print("layer 5 gives up", flush=True)
                os._exit(9)
        return torch.tanh(self.linear(x))


class TrapStack(nn.Module):
    def __init__(self, width: int, n_layers: int, trap_at: int, trap: str):
        super().__init__()
        self.layers = nn.ModuleList(TrapLayer(width, trap if i == trap_at else None) for i in range(n_layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


@dataclass(frozen=True)
class TrapSpec(MLPSpec):
    """An MLP of 8 layers on 2 stages (layers 0-3, 4-7) with a trap in layer ``trap_at`` (5: stage 1)."""

    trap: str = "boom-always"
    trap_at: int = 5

    def build(self):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return TrapStack(self.width, self.n_layers, self.trap_at, self.trap)


@pytest.fixture(scope="module")
def cluster():
    with SimulatedCluster(world_size=2, timeout=60) as c:
        yield c


def test_a_model_that_raises_in_the_dry_run_is_reported_as_the_models_own_error(cluster):
    spec = TrapSpec(width=8, n_layers=8, trap="boom-always")
    with pytest.raises(RankError) as info:
        execute(cluster, make_schedule("1f1b", 2, 4), spec)
    text = str(info.value)
    first = text.splitlines()[0]
    assert "forward boom" in first and "RuntimeError" in first, first
    assert "chunk 1" in first and "stage 1 on rank 1" in first and "model's own error" in first
    assert "cannot take" not in text and "shape mismatch" not in text


def test_a_stuck_rank_is_named_with_the_last_action_each_unfinished_rank_started(cluster):
    spec = TrapSpec(width=8, n_layers=8, trap="hang")
    timeout = patient(2.5)  # both ranks reach their first action within it (well under a second when idle)
    with pytest.raises(RankTimeoutError) as info:
        execute(cluster, make_schedule("1f1b", 2, 4), spec, timeout=timeout)
    text = str(info.value)
    assert f"ranks 0, 1 did not finish within {timeout:g} s (no rank finished)" in text.splitlines()[0]
    rank1 = next(line for line in text.splitlines() if line.strip().startswith("rank 1:"))
    rank0 = next(line for line in text.splitlines() if line.strip().startswith("rank 0:"))
    # rank 1 is computing its first forward (stage 1, micro-batch 0) and stuck inside the model ...
    assert "started action 1 of 8, 1F0 (forward of stage 1 on micro-batch 0)" in rank1, rank1
    assert "waiting" not in rank1
    assert "TrapLayer" in rank1 or "forward" in rank1
    # ... while rank 0 waits for the gradient rank 1 will never send
    assert "waiting for the output gradient of stage 0" in rank0 and "from rank 1" in rank0, rank0


def test_a_rank_that_dies_mid_step_is_named_with_its_last_action_and_what_it_printed(cluster):
    spec = TrapSpec(width=8, n_layers=8, trap="exit")
    with pytest.raises(RankError) as info:
        execute(cluster, make_schedule("gpipe", 2, 4), spec)
    text = str(info.value)
    assert text.splitlines()[0].startswith("utils.pipeline.executor.jobs:pipeline_job failed: rank 1 exited "
                                           "with code 9")
    assert "layer 5 gives up" in text and "layer 5 gives up" in info.value.tracebacks[1]
    assert "started action 1 of 8, 1F0" in info.value.tracebacks[1]


def test_the_cluster_runs_again_after_the_faults(cluster):
    result = execute(cluster, make_schedule("1f1b", 2, 4), MLPSpec(width=8, n_layers=8))
    assert result.loss > 0
