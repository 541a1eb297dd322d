"""Every constant of the full-scale model lives in data/ with its source, and the code reads it from there."""

import csv
import json
from dataclasses import fields
from pathlib import Path

import pytest

from utils.scale.config import CONFIG_FIELDS, MODEL_NAMES, load_model, model_sources, published_counts
from utils.scale.hardware import HARDWARE_NAMES, Hardware, hardware_sources, load_hardware
from utils.scale.setting import TrainingSetting, assumptions, report_setting, setting_rows

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_field_has_a_source(name):
    sources = model_sources(name)
    assert set(sources) == set(CONFIG_FIELDS)
    assert all(len(text) > 10 for text in sources.values())
    raw = json.loads((DATA / "scale_models.json").read_text())[name]
    assert raw["citation"] and load_model(name).n_layers == raw["config"]["n_layers"]
    assert all(source for _, source in published_counts(name).values())


@pytest.mark.parametrize("name", HARDWARE_NAMES)
def test_every_hardware_field_has_a_source(name):
    expected = {f.name for f in fields(Hardware)} - {"name"}
    assert set(hardware_sources(name)) == expected
    assert all(len(text) > 10 for text in hardware_sources(name).values())
    load_hardware(name)


def test_the_report_setting_is_read_from_data_with_sources():
    rows = {row["name"]: row for row in setting_rows()}
    assert all(row["source"] and row["kind"] in ("report", "assumption", "playbook") for row in rows.values())
    setting = report_setting()
    for f in fields(TrainingSetting):
        if f.name != "microbatches":
            assert f.name in rows, f"{f.name} has no row (and source) in data/scale_setting.csv"
            assert str(getattr(setting, f.name)).lower() == rows[f.name]["value"].lower()
    assert setting.pp * setting.dp == int(rows["gpus"]["value"])  # 16 x 128 = 2048 H800 GPUs (Sec. 3.1)
    # what the report does not say is marked as an assumption, with the reasoning
    assert {"tokens_per_microbatch", "efficiency"} <= {row["name"] for row in assumptions()}


def test_data_readme_describes_the_scale_files():
    readme = (DATA / "README.md").read_text()
    for name in ("scale_models.json", "scale_hardware.csv", "scale_setting.csv"):
        assert name in readme
    with open(DATA / "scale_hardware.csv", newline="") as f:
        assert list(csv.DictReader(f))[0].keys() == {"hardware", "field", "value", "unit", "source"}
