"""The torchrun path: the cluster's job functions run unchanged under torchrun (env:// rendezvous, gloo)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from utils.cluster.launch import main, parse_args

TORCHRUN = Path(sys.executable).with_name("torchrun")
REPO = Path(__file__).resolve().parent.parent


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone` (a free local port, so parallel runs never collide) on utils.cluster.launch."""
    if not TORCHRUN.exists():
        pytest.skip("torchrun is not installed next to this python")
    command = [str(TORCHRUN), "--standalone", f"--nproc-per-node={nproc}", "-m", "utils.launch", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_a_job_under_torchrun_prints_every_rank_in_order():
    done = torchrun(2, "utils.cluster.jobs:all_reduce_demo", "--backend", "gloo",
                    "--args", "[[1.5, 2.5]]", "--kwargs", '{"op": "max"}')
    assert done.returncode == 0, done.stderr
    expected = []
    for rank, mine in enumerate([1.5, 2.5]):
        expected += [f"[rank {rank}] contributed {mine:g}, all-reduce (max) gave 2.5",
                     f"[rank {rank}] result: 2.5"]
    assert done.stdout.splitlines() == expected


def test_a_failing_rank_under_torchrun_is_reported():
    failed = torchrun(2, "utils.cluster.jobs:fail_on_rank", "--args", "[1]")
    assert failed.returncode != 0
    assert "[rank 1] raised:" in failed.stderr and "simulated fault on rank 1" in failed.stderr


def test_launch_outside_torchrun_says_how_to_start_it(monkeypatch, capsys):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["utils.cluster.jobs:ring_demo"]) == 2
    assert "must be started by torchrun" in capsys.readouterr().err


def test_arguments_are_json():
    args = parse_args(["utils.cluster.jobs:echo", "--args", "[1, [2.5]]", "--kwargs", '{"x": "y"}'])
    assert (args.args, args.kwargs, args.backend) == ([1, [2.5]], {"x": "y"}, "gloo")


@pytest.mark.parametrize("argv", [
    ["utils.cluster.jobs:ring_demo", "--backend", "mpi"],
    ["utils.cluster.jobs:ring_demo", "--args", "not json"],
    ["utils.cluster.jobs:ring_demo", "--args", '{"a": 1}'],
    ["utils.cluster.jobs:ring_demo", "--timeout", "0"],
])
def test_bad_command_lines_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "error" in capsys.readouterr().err

