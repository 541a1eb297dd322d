"""The executor against the single-process reference: every schedule, several sizes, equal loss and gradients.

Processes cost about a second each to start on this machine, so one SimulatedCluster per world size is
reused across the tests of this module (only one is alive at a time; tests are grouped by world size).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from utils.cluster.cluster import RankError, SimulatedCluster
from utils.pipeline.costs import CostModel
from utils.pipeline.executor.execute import execute
from utils.pipeline.executor.models import MLPSpec, decoder_spec, mlp_spec
from utils.pipeline.executor.reference import gradient_gap, reference_run
from utils.pipeline.executor.stage import Clock, StageRunner
from utils.pipeline.registry import make_schedule
from utils.pipeline.schedule import OverlappedAction, Schedule
from utils.pipeline.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]


class _Clusters:
    """One live SimulatedCluster at a time, kept while consecutive tests ask for the same world size."""

    def __init__(self):
        self.cluster = None

    def get(self, world_size: int) -> SimulatedCluster:
        if self.cluster is not None and self.cluster.world_size != world_size:
            self.cluster.close()
            self.cluster = None
        if self.cluster is None:
            self.cluster = SimulatedCluster(world_size=world_size, timeout=120)
        return self.cluster

    def close(self):
        if self.cluster is not None:
            self.cluster.close()


@pytest.fixture(scope="module")
def clusters():
    pool = _Clusters()
    yield pool
    pool.close()


def same_order_as_reference(schedule: Schedule) -> bool:
    """True when every parameter's gradient is accumulated over micro-batches in order 0..M-1 by one copy
    of its chunk, as in the reference loop: then the sums are the same floating-point operations."""
    if schedule.n_chunks != schedule.n_stages:
        return False  # mirrored copies: two partial sums added at the end
    for actions in schedule.actions:
        done: dict[int, list[int]] = {}
        for a in actions:
            for p in (a.parts if isinstance(a, OverlappedAction) else (a,)):
                if p.kind in ("B", "W"):
                    done.setdefault(p.stage, []).append(p.microbatch)
        if any(mbs != sorted(mbs) for mbs in done.values()):
            return False
    return True


def check_against_reference(result, spec, microbatches, rel: float = 1e-6):
    ref = reference_run(spec, microbatches)
    gap = gradient_gap(result.grads, ref.grads)
    print(f"{result.schedule.name} PP={result.schedule.n_ranks} M={result.schedule.n_microbatches}: "
          f"max abs diff {gap['max_abs']:.3g}, max rel {gap['max_rel']:.3g}, bit-exact {gap['bit_exact']}")
    assert result.loss == pytest.approx(ref.loss, rel=1e-6, abs=0)
    assert result.losses == pytest.approx(ref.losses, rel=1e-6, abs=0)
    assert gap["max_rel"] <= rel, gap
    if getattr(spec, "ep", 1) == 1 and same_order_as_reference(result.schedule):
        assert gap["bit_exact"], gap
        assert result.losses == ref.losses
    assert result.mirror_gap == 0.0  # both copies of a mirrored chunk hold the same summed gradient
    return gap


def check_timeline(result):
    tl, sched = result.timeline, result.schedule
    assert tl.source == "measured" and tl.time_unit == "ms" and tl.schedule is sched
    assert tl.n_ranks == sched.n_ranks
    for r, row in enumerate(tl.intervals):
        assert tuple(iv.action for iv in row) == sched.actions[r]  # executed in order
        assert all(iv.rank == r and iv.end >= iv.start for iv in row)
        assert all(a.end <= b.start + 1e-6 for a, b in zip(row, row[1:], strict=False))  # one at a time
    for r in range(tl.n_ranks):  # the time budget adds up; without expert parallelism nothing is exposed
        b = tl.budget(r)
        assert b.compute + b.comm_exposed + b.idle == pytest.approx(tl.makespan, rel=1e-9)
        assert b.comm_exposed == 0 and b.compute == pytest.approx(tl.busy(r))
    # Peak activations depend only on each rank's own order of actions: measured equals simulated.
    sim = simulate(sched, CostModel(F=1, B=2, W=1))
    assert [tl.peak_activations(r) for r in range(sched.n_ranks)] == [
        sim.peak_activations(r) for r in range(sched.n_ranks)]


# --------------------------------------------------------------------------------- no processes needed

@pytest.mark.parametrize("spec", [mlp_spec(n_layers=4), decoder_spec(n_blocks=2)], ids=["mlp", "decoder"])
def test_split_backward_equals_full_backward(spec):
    """I then W gives bit for bit the weight and input gradients of a full B (one process, one chunk)."""
    (x, y), = spec.make_microbatches(1)
    grads = []
    for split in (False, True):
        chunk = spec.cut(spec.build(), 1)[0]
        runner = StageRunner(0, chunk)
        h = x if not x.is_floating_point() else x.clone()
        clock = Clock()
        for _ in runner.forward_steps(0, h, needs_input_grad=x.is_floating_point(), capture=split,
                                      split_layers=split, clock=clock, comms=[],
                                      loss_fn=lambda out: spec.loss(out, y)):
            pass
        for _ in runner.backward_steps(0, None, split=split, clock=clock, comms=[]):
            pass
        if split:
            assert all(p.grad is None for p in chunk.parameters())  # I computed no weight gradient
            runner.weight_step(0)
        grads.append({n: p.grad for n, p in chunk.named_full_parameters()})
    assert gradient_gap(grads[1], grads[0])["bit_exact"]


def test_bad_input_is_refused_before_any_rank_runs():
    class NoCluster:  # any call to run() would mean a process did work
        world_size = 4

        def run(self, *args, **kwargs):
            raise AssertionError("execute() started a job for bad input")

    good = make_schedule("1f1b", 4, 4)
    broken = Schedule(name="broken", n_ranks=good.n_ranks, n_microbatches=good.n_microbatches,
                      stage_to_rank=good.stage_to_rank, stage_to_chunk=good.stage_to_chunk,
                      routes=good.routes, actions=(tuple(reversed(good.actions[0])),) + good.actions[1:])
    with pytest.raises(ValueError, match="rank 0"):
        execute(NoCluster(), broken, mlp_spec())
    with pytest.raises(ValueError, match="needs 8 processes"):
        execute(NoCluster(), make_schedule("1f1b", 8, 8), mlp_spec())
    with pytest.raises(ValueError, match="micro-batches"):
        execute(NoCluster(), good, mlp_spec(), mlp_spec().make_microbatches(3))
    with pytest.raises(ValueError, match="at least 4 layers"):
        execute(NoCluster(), good, mlp_spec(n_layers=3))
    with pytest.raises(ValueError, match="overlap"):
        execute(NoCluster(), good, mlp_spec(), overlap="sideways")
    with pytest.raises(ValueError, match="cost model"):
        execute(NoCluster(), good, mlp_spec(), paced=3.0)


# ------------------------------------------------------------------------------------------- 2 ranks

SMALL = [(name, m) for name in ("naive", "gpipe", "1f1b", "1f1b-overlap", "zb1p") for m in (1, 3, 4, 8)] + [
    (name, m) for name in ("dualpipe", "dualpipev") for m in (4, 6, 8)] + [
    # virtual stages: two chunks per rank, odd counts and fewer micro-batches than the V needs included
    ("interleaved1f1b", m) for m in (1, 3, 4, 6)] + [("zbv", m) for m in (1, 3, 5, 8)]


@pytest.mark.parametrize("name,m", SMALL)
def test_two_ranks_match_reference(clusters, name, m):
    spec = mlp_spec(n_layers=8)
    microbatches = spec.make_microbatches(m)
    result = execute(clusters.get(2), make_schedule(name, 2, m), spec, microbatches)
    check_against_reference(result, spec, microbatches)
    check_timeline(result)


@pytest.mark.parametrize("name", ["1f1b-overlap", "zb1p", "dualpipe", "dualpipev", "interleaved1f1b", "zbv"])
def test_moe_decoder_two_ranks_match_reference(clusters, name):
    spec = decoder_spec(n_blocks=4)
    microbatches = spec.make_microbatches(4)
    result = execute(clusters.get(2), make_schedule(name, 2, 4), spec, microbatches)
    check_against_reference(result, spec, microbatches)


def test_stage_that_raises_names_rank_and_action(clusters):
    spec = FaultySpec(width=8, n_layers=4)
    microbatches = spec.make_microbatches(4)
    microbatches[2][0][0, 0] = 1e4  # the first layer refuses this micro-batch
    with pytest.raises(RankError) as err:
        execute(clusters.get(2), make_schedule("1f1b", 2, 4), spec, microbatches)
    text = str(err.value)
    assert "rank 0" in text and "0F2" in text and "forward of stage 0 on micro-batch 2" in text
    assert "Traceback" in text and "input too large" in text


def test_shape_mismatch_between_stages_shows_both_shapes(clusters):
    spec = FaultySpec(width=8, n_layers=4)
    microbatches = spec.make_microbatches(4)
    microbatches[3][0][0, 0] = -1e4  # the first layer drops a row of this micro-batch
    with pytest.raises(RankError) as err:
        execute(clusters.get(2), make_schedule("gpipe", 2, 4), spec, microbatches)
    text = str(err.value)
    assert "shape mismatch between stages" in text and "(7, 8)" in text and "(8, 8)" in text and "0F3" in text


def test_chunks_that_do_not_fit_fail_on_every_rank_before_sending(clusters, every_rank_answers):
    spec = FaultySpec(width=8, n_layers=4, widen_at=2)
    with pytest.raises(RankError) as err:
        execute(clusters.get(2), make_schedule("1f1b", 2, 2), spec)
    assert err.value.ranks == (0, 1)
    assert "chunk 1 cannot take the output of chunk 0, of shape (8, 9)" in str(err.value)


# ------------------------------------------------------------------------------------------- 4 ranks

FOUR = [(name, m) for name in ("naive", "gpipe", "1f1b", "zb1p") for m in (4, 8, 12)] + [
    (name, m) for name in ("dualpipe", "dualpipev") for m in (8, 12)] + [
    ("interleaved1f1b", m) for m in (5, 8, 10)] + [("zbv", m) for m in (7, 8)] + [
    ("1f1b-overlap", m) for m in (5, 8, 13)]


@pytest.mark.parametrize("name,m", FOUR)
def test_four_ranks_match_reference(clusters, name, m):
    spec = mlp_spec()
    microbatches = spec.make_microbatches(m)
    result = execute(clusters.get(4), make_schedule(name, 4, m), spec, microbatches)
    check_against_reference(result, spec, microbatches)
    check_timeline(result)


def test_overlap_hooks_give_the_same_gradients(clusters):
    spec = mlp_spec()
    schedule = make_schedule("dualpipe", 4, 8)
    a = execute(clusters.get(4), schedule, spec, overlap="interleave")
    b = execute(clusters.get(4), schedule, spec, overlap="sequential")
    assert gradient_gap(a.grads, b.grads)["bit_exact"]


@pytest.mark.parametrize("name,m", [("1f1b-overlap", 4), ("1f1b-overlap", 5), ("zb1p", 4), ("dualpipe", 4),
                                    ("dualpipev", 4), ("zbv", 4)])
def test_expert_parallel_decoder_matches_reference(clusters, name, m):
    """2 pipeline ranks x 2 expert-parallel ranks: tokens cross ranks by all-to-all inside each stage."""
    spec = decoder_spec(n_blocks=4, ep=2)
    microbatches = spec.make_microbatches(m)
    result = execute(clusters.get(4), make_schedule(name, 2, m), spec, microbatches)
    # Sharded tokens change the order of sums inside the experts: equal to float32 rounding, not bitwise.
    check_against_reference(result, spec, microbatches, rel=1e-5)
    comms = result.timeline.comms
    assert comms and all(c.end >= c.start for c in comms)
    overlapped = sum(c.overlapped for c in comms)
    pairs = any(isinstance(a, OverlappedAction) for acts in result.schedule.actions for a in acts)
    if pairs:  # inside F&B pairs the partner chunk runs while an all-to-all is in flight
        assert overlapped > 0
    else:
        assert overlapped == 0
    check_measured_budget(result)


def check_measured_budget(result):
    """The measured time budget: compute + exposed communication + idle = the makespan on every rank, the
    exposed part is what the all-to-alls kept the rank waiting, never more than their whole duration."""
    tl = result.timeline
    for r in range(tl.n_ranks):
        b = tl.budget(r)
        assert b.compute + b.comm_exposed + b.idle == pytest.approx(tl.makespan, rel=1e-9)
        assert b.compute > 0 and b.comm_exposed >= 0 and b.idle >= -1e-6
        comms = [c for c in tl.comms if c.rank == r]
        assert b.comm_exposed <= sum(c.duration for c in comms) + 1e-6
        if comms:
            assert b.comm_exposed > 0  # a plain action's all-to-all has nothing to hide behind


def test_expert_parallel_sequential_hook_hides_nothing(clusters):
    spec = decoder_spec(n_blocks=4, ep=2)
    result = execute(clusters.get(4), make_schedule("dualpipe", 2, 4), spec, overlap="sequential")
    assert result.timeline.comms and not any(c.overlapped for c in result.timeline.comms)


def test_extra_ranks_stay_idle(clusters):
    spec = mlp_spec()
    microbatches = spec.make_microbatches(4)
    result = execute(clusters.get(4), make_schedule("1f1b", 2, 4), spec, microbatches)
    check_against_reference(result, spec, microbatches)
    assert result.timeline.n_ranks == 2


# ------------------------------------------------------------------------------------------- 8 ranks

@pytest.mark.slow
@pytest.mark.parametrize("name,m", [("1f1b", 8), ("1f1b", 16), ("dualpipe", 16), ("dualpipev", 16),
                                    ("interleaved1f1b", 12), ("zbv", 17), ("1f1b-overlap", 17)])
def test_eight_ranks_match_reference(clusters, name, m):
    spec = mlp_spec()
    microbatches = spec.make_microbatches(m)
    result = execute(clusters.get(8), make_schedule(name, 8, m), spec, microbatches)
    check_against_reference(result, spec, microbatches)


# ------------------------------------------------------------------------------------------- torchrun

@pytest.mark.slow
def test_same_job_runs_under_torchrun_with_gloo(clusters):
    clusters.close()  # free the cores: torchrun starts its own processes
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "utils.execute", "--schedule", "zb1p", "--microbatches", "4"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "zb1p: 2 pipeline ranks" in proc.stdout and "bit-exact True" in proc.stdout


# ------------------------------------------------------------------------------------ a faulty model

class FaultyLayer(nn.Module):
    """tanh(Linear(x)) that raises on inputs above 1e3 and drops the first row when one is below -1e3."""

    def __init__(self, width_in: int, width_out: int):
        super().__init__()
        self.linear = nn.Linear(width_in, width_out)

    def forward(self, x):
        if x.max() > 1e3:
            raise RuntimeError("input too large")
        if x.min() < -1e3:
            x = x[1:].clamp(-1, 1)
        return torch.tanh(self.linear(x))


class FaultyStack(nn.Module):
    """FaultyLayers of ``width``; with ``widen_at=k`` layer k-1 outputs one feature too many for layer k."""

    def __init__(self, width: int, n_layers: int, widen_at: int | None):
        super().__init__()
        self.layers = nn.ModuleList(
            FaultyLayer(width, width + 1 if widen_at is not None and i == widen_at - 1 else width)
            for i in range(n_layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


@dataclass(frozen=True)
class FaultySpec(MLPSpec):
    """An MLP spec for the fault tests (ranks unpickle it from this module)."""

    widen_at: int | None = None

    def build(self):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return FaultyStack(self.width, self.n_layers, self.widen_at)
