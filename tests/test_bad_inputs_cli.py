"""Every command line answers bad input the same way: exit status 2 and exactly one line ``error: <the rule>``
on stderr, nothing on stdout, checked before any process starts (issue #16). Most cases call each entry's
``main`` in this process (fast); a few run ``python -m ...`` for real to check the wiring and the exit status."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from utils.cluster import cluster as cluster_module
from utils.cluster import launch
from utils.moe import data
from utils.pipeline import registry, simulate
from utils.pipeline.executor import execute
from utils.scale import __main__ as scale_main

ROOT = Path(__file__).resolve().parents[1]

MAINS = {"utils.schedules": registry.main, "utils.simulate": simulate.main, "utils.execute": execute.main,
         "utils.launch": launch.main, "utils.moe.data": data.main, "utils.scale": scale_main.main}

CASES = [
    ("utils.schedules", ["1f1b", "--ranks", "1000000", "--microbatches", "8"], "MAX_RANKS"),
    ("utils.schedules", ["gpipe", "--ranks", "100000", "--microbatches", "100000"], "MAX_RANKS"),
    ("utils.schedules", ["dualpipe", "--ranks", "4", "--microbatches", "1000000"], "MAX_MICROBATCHES"),
    ("utils.schedules", ["dualpipe", "--ranks", "3", "--microbatches", "8"], "even"),
    ("utils.schedules", ["pipedream", "--ranks", "4", "--microbatches", "8"], "Unknown schedule"),
    ("utils.schedules", ["1f1b", "--ranks", "1e5", "--microbatches", "8"], "invalid int"),
    ("utils.schedules", ["1f1b", "--ranks", "0", "--microbatches", "8"], "at least 1"),
    ("utils.schedules", ["1f1b", "--ranks", "4"], "required"),
    ("utils.schedules", ["1f1b", "--ranks", "4", "--microbatches", "8", "--colour", "red"], "unrecognized"),
    ("utils.simulate", ["zb1p", "--ranks", "1000000", "--microbatches", "1000000"], "MAX_RANKS"),
    ("utils.simulate", ["1f1b", "--ranks", "4", "--microbatches", "8", "--F", "nan"], "finite"),
    ("utils.simulate", ["1f1b", "--ranks", "4", "--microbatches", "8", "--F", "1e308"], "MAX_COST"),
    ("utils.simulate", ["1f1b", "--ranks", "4", "--microbatches", "8", "--W", "-1"], "negative"),
    ("utils.simulate", ["1f1b", "--ranks", "4", "--microbatches", "8", "--B", "x"], "invalid float"),
    ("utils.execute", ["--ranks", "17"], "cannot cut 16 layers into 17 chunks"),
    ("utils.execute", ["--ranks", "40"], "MAX_WORLD_SIZE"),
    ("utils.execute", ["--ranks", "0"], "at least 1"),
    ("utils.execute", ["--schedule", "dualpipe", "--ranks", "3"], "even"),
    ("utils.execute", ["--schedule", "pipedream"], "Unknown schedule"),
    ("utils.execute", ["--microbatches", "0"], "at least 1"),
    ("utils.execute", ["--ep", "2"], "--ep"),
    ("utils.execute", ["--model", "decoder", "--ep", "3"], "divide"),
    ("utils.execute", ["--backend", "nccl"], "nccl"),
    ("utils.execute", ["--model", "transformer"], "invalid choice"),
    ("utils.launch", ["utils.cluster.jobs:no_such_job"], "no_such_job"),
    ("utils.launch", ["no.such.module:job"], "cannot import"),
    ("utils.launch", ["ring_demo"], "module:function"),
    ("utils.launch", ["utils.cluster.jobs:ring_demo", "--args", "[1,"], "JSON"),
    ("utils.launch", ["utils.cluster.jobs:ring_demo", "--timeout", "-1"], "timeout"),
    ("utils.launch", ["utils.cluster.jobs:ring_demo"], "torchrun"),
    ("utils.moe.data", ["/no/such/folder"], "not a folder"),
    ("utils.scale", ["--pp", "3"], "even"),
    ("utils.scale", ["--pp", "100000"], "MAX_RANKS"),
    ("utils.scale", ["--microbatches", "100000000"], "MAX_MICROBATCHES"),
    ("utils.scale", ["--ib-gbps", "nan"], "finite"),
    ("utils.scale", ["--schedule", "pipedream"], "Unknown schedule"),
    ("utils.scale", ["--efficiency", "2"], "efficiency"),
    ("utils.scale", ["--model", "GPT"], "Unknown model"),
    ("utils.scale", ["--colour", "red"], "unrecognized"),
]


@pytest.fixture
def no_processes(monkeypatch):
    """Any attempt to start a cluster means a command line did not check its input first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a cluster was started for bad input")

    monkeypatch.setattr(cluster_module.SimulatedCluster, "__init__", refuse)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


def run_main(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's usage errors
        return stop.code


@pytest.mark.parametrize("entry, argv, rule", CASES, ids=[f"{e} {' '.join(a)}"[:80] for e, a, _ in CASES])
def test_bad_input_is_one_line_and_status_2(no_processes, capsys, entry, argv, rule):
    if entry == "utils.execute" and argv == ["--backend", "nccl"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has GPUs")
    assert run_main(MAINS[entry], argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert rule.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize("entry, argv", [
    ("utils.schedules", ["1f1b", "--ranks", "1000000", "--microbatches", "8"]),
    ("utils.simulate", ["1f1b", "--ranks", "4"]),
    ("utils.moe.data", ["/no/such/folder"]),
    ("utils.launch", ["utils.cluster.jobs:ring_demo"]),
    ("utils.scale", ["--pp", "3"]),
    ("benchmarks", ["no-such-benchmark"]),
])
def test_the_real_command_lines_say_it_the_same_way(entry, argv):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run([sys.executable, "-m", entry, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr


def test_execute_refuses_17_ranks_for_16_layers_before_any_process_starts():
    """The issue: it started 17 processes before refusing. Now no child process ever appears, and the
    refusal takes the time of an import, not of starting ranks."""
    psutil = pytest.importorskip("psutil")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "utils.execute", "--ranks", "17"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = set()
    me = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            children |= {c.pid for c in me.children(recursive=True)}
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == ""
    assert err.splitlines() == [err.strip()] and "cannot cut 16 layers into 17 chunks" in err
    assert children == set(), f"processes started before the refusal: {children}"
    print(f"refused in {time.monotonic() - start:.1f} s")
