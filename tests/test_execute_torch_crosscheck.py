"""Our executor side by side with torch.distributed.pipelining (torch 2.13) on the same model and data.

Torch's schedules run inside a job on the same SimulatedCluster, with ``PipelineStage`` objects around the
same chunks our ranks build. Our 1F1B must give the gradients of ``Schedule1F1B``, our DualPipeV those of
``ScheduleDualPipeV``, our interleaved 1F1B and ZB-V those of ``ScheduleInterleaved1F1B`` and
``ScheduleZBVZeroBubble`` (two stages per rank): they accumulate in the same order here, so we require
bit-for-bit equality (the micro-batch counts are powers of two, so torch's division of the gradients by M
equals our division of the loss by M).
"""

from __future__ import annotations

import pytest

from utils.cluster.cluster import SimulatedCluster
from utils.pipeline.executor.execute import execute
from utils.pipeline.executor.jobs import torch_pipeline_job
from utils.pipeline.executor.models import decoder_spec, mlp_spec
from utils.pipeline.executor.reference import gradient_gap
from utils.pipeline.registry import make_schedule


@pytest.fixture(scope="module")
def cluster4():
    with SimulatedCluster(world_size=4, timeout=120) as cluster:
        yield cluster


def torch_result(cluster, name, spec, microbatches):
    returns = cluster.run(torch_pipeline_job, name, spec, microbatches)
    grads = {name: g for r in returns for per_stage in r["grads"].values() for name, g in per_stage.items()}
    losses = [v for r in returns for v in r["losses"]]
    return grads, losses


CASES = [
    ("1f1b", 4, 8, mlp_spec()),
    ("1f1b", 4, 4, decoder_spec(n_blocks=4)),
    ("dualpipev", 4, 8, mlp_spec()),
    ("dualpipev", 4, 8, decoder_spec(n_blocks=8)),
    ("interleaved1f1b", 4, 8, mlp_spec()),
    ("interleaved1f1b", 4, 4, decoder_spec(n_blocks=8)),
    ("zbv", 4, 8, mlp_spec()),
    ("zbv", 4, 8, decoder_spec(n_blocks=8)),
]


@pytest.mark.parametrize("name,ranks,m,spec", CASES, ids=[f"{c[0]}-{c[3].name}" for c in CASES])
def test_same_gradients_as_torch_pipelining(cluster4, name, ranks, m, spec):
    microbatches = spec.make_microbatches(m)
    ours = execute(cluster4, make_schedule(name, ranks, m), spec, microbatches)
    grads, losses = torch_result(cluster4, name, spec, microbatches)
    gap = gradient_gap(grads, ours.grads)
    print(f"{name} on {spec.name}: max abs diff to torch {gap['max_abs']:.3g}, bit-exact {gap['bit_exact']}")
    assert gap["bit_exact"], gap
    assert tuple(losses) == ours.losses


def test_torchs_shape_inference_pass_with_uninitialised_values_gets_a_loss():
    """torch's schedule runs the loss once on outputs of inputs it allocated without values (to learn gradient
    shapes); NaN there must not stop the step, while a finite output keeps the spec's own loss."""
    import torch

    from utils.pipeline.executor.torch_side import _TorchLoss

    spec = decoder_spec(n_blocks=4)
    loss = _TorchLoss(spec)
    logits = torch.randn(4, 9, 15, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 15, (4, 9), generator=torch.Generator().manual_seed(1))
    assert float(loss(logits, target)) == float(spec.loss(logits, target))
    garbage = logits.clone()
    garbage[0, 0, 0], garbage[1, 2, 3] = float("nan"), float("inf")
    assert torch.isfinite(loss(garbage, target))
    with pytest.raises(ValueError, match="finite"):
        spec.loss(garbage, target)  # the spec itself still refuses it: only the torch side zeroes it
