"""Faults of a simulated cluster that issue #16 found unnamed: a rank or the rank factory killed between jobs,
output lost with a rank that calls os._exit, processes a job starts outliving their rank, timeouts that name
every rank. Each test is a few seconds; the timings allow for a busy shared CPU and assert only what the
error must say, not how fast it says it (beyond "not a collective's timeout")."""

from __future__ import annotations

import os
import signal
import time

import pytest
from patience import patient

from utils.cluster import jobs
from utils.cluster.cluster import RankError, RankTimeoutError, SimulatedCluster

psutil = pytest.importorskip("psutil")

WORLD = 3


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition, seconds: float = 15.0) -> bool:
    """Wait until `condition()` holds (True) or `seconds` (scaled by the machine's load) have passed."""
    deadline = time.monotonic() + patient(seconds)
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture(scope="module")
def cluster():
    with SimulatedCluster(world_size=WORLD, timeout=30) as c:
        yield c


def up(cluster: SimulatedCluster) -> SimulatedCluster:
    if not cluster.running:
        cluster.restart()
    return cluster


# ------------------------------------------------------------------------------- deaths between jobs

@pytest.mark.parametrize("notice_first", [True, False], ids=["after running turns False", "at once"])
def test_a_rank_killed_between_jobs_is_named_by_the_next_run_which_then_recovers(cluster, notice_first):
    victim = up(cluster).pids[1]
    os.kill(victim, signal.SIGKILL)
    if notice_first:
        assert wait_until(lambda: not cluster.running), "cluster.running stayed True with a dead rank"
        assert cluster.pids == []
    with pytest.raises(RankError) as info:  # never a raw BrokenPipeError
        cluster.run(jobs.whoami)
    first = str(info.value).splitlines()[0]
    assert "rank 1" in first and "SIGKILL" in first, first
    assert info.value.ranks == (1,)
    assert "rank 1" in info.value.tracebacks[1]
    assert not cluster.running
    assert cluster.run(jobs.whoami) == [(r, WORLD) for r in range(WORLD)]  # the following run recovers
    assert cluster.running


def test_the_rank_factory_killed_between_jobs_is_named_and_the_cluster_recovers(cluster):
    up(cluster)
    factory = cluster._factory.proc.pid
    old = cluster.pids
    os.kill(factory, signal.SIGKILL)
    assert wait_until(lambda: not cluster.running)
    with pytest.raises(RankError) as info:
        cluster.run(jobs.whoami)
    text = str(info.value)
    assert "rank factory" in text and "between jobs" in text and "SIGKILL" in text, text
    assert info.value.ranks == tuple(range(WORLD))
    assert wait_until(lambda: all(gone(pid) for pid in old))  # its ranks ended with it
    assert cluster.run(jobs.ring_demo) == [jobs.ring_prev(r, WORLD) for r in range(WORLD)]


def test_the_factory_killing_job_refuses_to_kill_any_other_parent():
    """Run here, its parent is pytest's (a shell, xdist): the fault job must not kill it. (Under torchrun
    the parent would be the launcher's agent.)"""
    with pytest.raises(RuntimeError, match="only on a simulated cluster"):
        jobs.kill_factory(0)


# ----------------------------------------------------------------------------- what a dead rank said

def test_what_a_rank_printed_before_os_exit_is_in_the_error_and_its_traceback(cluster):
    up(cluster)
    with pytest.raises(RankError) as info:
        cluster.run(jobs.exit_on_rank, 2, 7)
    error = info.value
    assert str(error).splitlines()[0].startswith("utils.cluster.jobs:exit_on_rank failed: rank 2 exited with code 7")
    for text in (str(error), error.tracebacks[2]):
        assert "rank 2 is about to exit" in text and "rank 2 exits with code 7" in text
    assert 2 in error.ranks


# --------------------------------------------------------------------------- processes a job started

def test_processes_a_job_starts_end_with_their_rank_at_close():
    with SimulatedCluster(world_size=2) as c:
        children = c.run(jobs.start_child, 600)
        assert all(not gone(pid) for pid in children)
        ranks = c.pids
    assert wait_until(lambda: all(gone(pid) for pid in children + ranks), 10), \
        "a process started by a job outlived close()"


def test_processes_a_job_starts_end_when_their_rank_is_stopped_after_a_fault(cluster):
    children = up(cluster).run(jobs.start_child, 600)
    with pytest.raises(RankError):
        cluster.run(jobs.kill_rank, 0)
    assert wait_until(lambda: all(gone(pid) for pid in children), 10), \
        [psutil.Process(p).ppid() for p in children if not gone(p)]


# ----------------------------------------------------------------------------------------- timeouts

def test_a_timeout_says_which_ranks_finished_and_where_the_others_are(cluster):
    up(cluster)
    timeout = patient(2)  # ranks 0 and 2 finish within it, even with the cores busy
    with pytest.raises(RankTimeoutError) as info:
        cluster.run(jobs.hang_on_rank, 1, timeout=timeout)
    text = str(info.value)
    assert text.splitlines()[0] == (f"utils.cluster.jobs:hang_on_rank: rank 1 did not finish within {timeout:g} s "
                                    "(ranks 0, 2 finished)")
    assert "rank 1: now in hang_on_rank" in text
    assert info.value.ranks == (1,)


def test_a_timeout_with_every_rank_waiting_tells_the_stuck_one_from_the_waiting_ones(cluster):
    """Rank 1 is stuck; ranks 0 and 2 wait for it in a barrier: none finished, but the error says which is
    where, so the learner can see the cause rather than three names."""
    up(cluster)
    timeout = patient(3)  # every rank reaches its stall or its barrier within it, even with the cores busy
    with pytest.raises(RankTimeoutError) as info:
        cluster.run(jobs.stall_on_rank, 1, timeout=timeout)
    text = str(info.value)
    assert f"ranks 0, 1, 2 did not finish within {timeout:g} s (no rank finished)" in text.splitlines()[0]
    assert "rank 1: now in stall_on_rank" in text, text
    for rank in (0, 2):
        line = next(line for line in text.splitlines() if line.strip().startswith(f"rank {rank}:"))
        assert "barrier" in line and "called from stall_on_rank" in line, line
