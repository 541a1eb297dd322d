"""`python -m utils.scale`: the JSON interface, flags that change the model and the GPU, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from utils.scale.__main__ import main
from utils.scale.config import load_model
from utils.scale.hardware import load_hardware
from utils.scale.report import evaluate
from utils.scale.setting import Layout, report_setting

ROOT = Path(__file__).resolve().parents[1]


def run_json(capsys, *flags) -> dict:
    assert main(["--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_of_the_report_preset(capsys):
    data = run_json(capsys)
    assert data["params_total"] == pytest.approx(671e9, rel=0.01)
    assert abs(data["params_activated"] - 37e9) <= 0.5e9
    assert 0.8 < data["comm_to_compute"] <= data["moe_layer_comm_to_compute"] < 1.25  # the report: about 1:1
    memory = data["memory_per_gpu_gb"]
    assert memory["total"] == pytest.approx(sum(v for k, v in memory.items() if k != "total"))
    assert {"weights", "gradients", "master_weights", "optimizer_moments", "activations"} <= set(memory)
    assert memory["total"] <= 80 and data["fits"]


def test_module_runs_as_a_command():
    out = subprocess.run(
        [sys.executable, "-m", "utils.scale", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["params_total"] == 671_026_419_200


def test_text_report(capsys):
    assert main([]) == 0
    text = capsys.readouterr().out
    assert "671.0B total" in text and "dualpipe" in text and "fits in 80 GB" in text


def test_flags_change_the_hardware_and_the_setting(capsys):
    base = run_json(capsys)
    half_ib = run_json(capsys, "--ib-gbps", "25")
    assert half_ib["comm_to_compute"] == pytest.approx(2 * base["comm_to_compute"])
    assert run_json(capsys, "--max-nodes", "8")["nodes_per_token"] > base["nodes_per_token"]
    assert run_json(capsys, "--node-cap", "2")["nodes_per_token"] == 2
    assert run_json(capsys, "--dispatch-dtype", "bf16")["layer_ms"]["dispatch"] > base["layer_ms"]["dispatch"]
    slow = run_json(capsys, "--efficiency", "0.3")
    assert slow["layer_ms"]["F"] == pytest.approx(2 * base["layer_ms"]["F"])
    one = run_json(capsys, "--schedule", "1f1b", "--pp", "8", "--dp", "256", "--ep", "32")
    assert (one["schedule"], one["gpus"]) == ("1f1b", 2048)
    assert one["setting"]["ep"] == 32
    longer = run_json(capsys, "--seq-len", "8192")  # one 8192-token sequence per micro-batch
    assert longer["flops_per_token"]["forward"] > base["flops_per_token"]["forward"]
    assert longer["setting"]["tokens_per_microbatch"] == 8192 and longer["microbatches"] == 120
    half = run_json(capsys, "--tokens-per-microbatch", "2048")
    assert half["microbatches"] == 240 and half["layer_ms"]["F"] == pytest.approx(base["layer_ms"]["F"] / 2)
    assert half["memory_per_gpu_gb"]["activations"] < base["memory_per_gpu_gb"]["activations"]
    assert run_json(capsys, "--nvlink-gbps", "80")["layer_ms"]["dispatch"] >= base["layer_ms"]["dispatch"]
    assert run_json(capsys, "--moment-dtype", "fp32")["memory_per_gpu_gb"]["optimizer_moments"] == pytest.approx(
        2 * base["memory_per_gpu_gb"]["optimizer_moments"]
    )


BAD = [
    (["--pp", "0"], {"pp": 0}),
    (["--pp", "-4"], {"pp": -4}),
    (["--pp", "abc"], {"pp": "abc"}),
    (["--efficiency", "0"], {"efficiency": 0}),
    (["--efficiency", "nan"], {"efficiency": float("nan")}),
    (["--ep", "48"], {"ep": 48}),
    (["--dp", "96"], {"dp": 96}),
    (["--max-nodes", "9"], {"max_nodes": 9}),
    (["--tokens-per-microbatch", "3000"], {"tokens_per_microbatch": 3000}),
    (["--tokens-per-microbatch", "0"], {"tokens_per_microbatch": 0}),
    (["--dispatch-dtype", "fp4"], {"dispatch_dtype": "fp4"}),
    (["--schedule", "dualpipe", "--pp", "5"], {"pp": 5}),
    (["--microbatches", "6"], {"microbatches": 6}),
    (["--schedule", "interleaved1f1b"], {"schedule": "interleaved1f1b"}),
    (["--schedule", "gpipe2"], {"schedule": "gpipe2"}),
]


@pytest.mark.parametrize(("flags", "change"), BAD, ids=[" ".join(f) for f, _ in BAD])
def test_bad_values_exit_2_with_the_librarys_rule(capsys, flags, change):
    assert main(flags) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert captured.out == ""
    with pytest.raises(ValueError) as raised:
        evaluate(load_model(), load_hardware(), report_setting().with_changes(**change))
    assert lines[0] == f"error: {raised.value}"


@pytest.mark.parametrize(
    "flags",
    [["--ib-gbps", "0"], ["--ib-gbps", "-50"], ["--nvlink-gbps", "x"], ["--memory-gb", "0"], ["--comm-sms", "200"]],
)
def test_bad_hardware_exits_2(capsys, flags):
    assert main(flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_unknown_flags_and_missing_values_are_one_line_too():
    for flags in (["--bogus", "1"], ["--pp"], ["--model", "GPT-5"]):
        out = subprocess.run(
            [sys.executable, "-m", "utils.scale", *flags], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 2
        assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error: ")


def test_layout_of_the_report():
    layout = Layout.of(load_model(), load_hardware(), report_setting())
    assert (layout.gpus, layout.ep_nodes, layout.experts_per_gpu, layout.expert_replicas) == (2048, 8, 4, 2)
