"""Bad input to the full-scale model (utils.scale, issue #14): the same teaching errors as the rest of the
library, and the widget's pure function returns the rule as its view's error."""

from __future__ import annotations

import math

import pytest
from bad_inputs import BAD, assert_teaches, assert_view_error, call_with, expand

from utils.scale import explore as sx
from utils.scale.config import load_model
from utils.scale.hardware import load_hardware
from utils.scale.params import layer_flops, model_flops, param_counts
from utils.scale.report import evaluate
from utils.scale.setting import report_setting

MODEL = load_model()
RESULT = sx.run()  # one full-scale evaluation (about a second) serves the three rows that take a result

TABLE = [
    (load_model, dict(name="DeepSeek-V3"), {"name": [3, None, "GPT"]}),
    (load_hardware, dict(name="H800"), {"name": [3, None, "TPU"]}),
    (param_counts, dict(cfg=MODEL), {"cfg": [None, 3, "GPT"]}),
    (model_flops, dict(cfg=MODEL, seq_len=4096), {"cfg": [None], "seq_len": "count"}),
    (layer_flops, dict(cfg=MODEL, moe=True, seq_len=4096), {"cfg": [None], "seq_len": "count"}),
    (report_setting().with_changes, dict(pp=16), {"pp": BAD["count"], "colour": ["blue"]}),
    (load_hardware().with_changes, dict(ib_gbps=25), {"ib_gbps": "positive", "warp_speed": [9]}),
    (evaluate, dict(), {"model": [None, 3, "GPT"], "hardware": [None, 3, "TPU"], "setting": [3, {"pp": 16}]}),
    (sx.run, dict(), {"changes": [5, "pp=16", {"colour": 1}, {"pp": 3}]}),
    (sx.params_table, dict(), {"model": [3, None, "GPT"]}),
    (sx.flops_table, dict(), {"seq_len": "count"}),
    (sx.hardware_table, dict(), {"name": [3, "TPU"]}),
    (sx.setting_table, dict(), {"kind": ["x", 3]}),
    (sx.dispatch_ib_ms, dict(tokens=4096, max_nodes=4, ib_gbps=50),
     {"tokens": BAD["count"], "max_nodes": [0, 2.5, 99], "ib_gbps": "positive", "dispatch_dtype": ["fp4", 3]}),
    (sx.model_states_gb, dict(replicated=1e9, routed=1e9, dp=128, ep=64),
     {"replicated": "nonneg", "routed": "nonneg", "dp": BAD["count"], "ep": BAD["count"]}),
    (sx.activation_table, dict(), {"changes": [5, {"colour": 1}]}),
    (sx.schedule_table, dict(result=RESULT), {"result": [None, 3]}),
    (sx.memory_table, dict(result=RESULT), {"result": [None]}),
    (sx.summary_row, dict(result=RESULT), {"result": [None]}),
    (sx.what_if_table, dict(what_ifs={"x": {}}), {"what_ifs": [5, {}, {"x": {"pp": 3}}]}),
    (sx.sweep_table, dict(name="pp", values=[16]), {"name": [3, None, "colour"], "values": [5, [], [3]]}),
    (sx.implied_efficiency, dict(), {"gpu_hours": "positive"}),
]


@pytest.mark.parametrize("fn, kwargs, parameter, value", expand(TABLE))
def test_bad_input_gets_a_teaching_error(fn, kwargs, parameter, value):
    assert_teaches(call_with(fn, kwargs, parameter, value))


@pytest.mark.parametrize("kwargs", [dict(pp=0), dict(pp=3), dict(pp=2.5), dict(pp=None), dict(ib_gbps=math.nan),
                                    dict(ib_gbps=-1), dict(max_nodes=0), dict(dispatch_dtype=3),
                                    dict(efficiency=2), dict(tokens_per_microbatch=0), dict(plot="yes"),
                                    dict(pp=100_000)])
def test_the_widget_function_shows_the_rule(kwargs):
    assert_view_error(sx.explore_scale(**{"plot": False, **kwargs}))
