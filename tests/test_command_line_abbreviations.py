"""Command lines take whole option names only: argparse's abbreviations would read `--gpus 0` as
`--gpus-per-node 0` and answer for a setting nobody asked for (utils.inputs.ArgumentParser)."""

from __future__ import annotations

import pytest

from utils.inputs import ArgumentParser
from utils.scale.__main__ import main as scale_main


def test_an_abbreviated_option_is_refused_with_one_error_line(capsys):
    with pytest.raises(SystemExit) as stop:
        scale_main(["--gpus", "0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--gpus" in err[0]


def test_the_whole_name_still_works(capsys):
    assert scale_main(["--gpus-per-node", "8", "--json"]) == 0
    assert '"gpus": 2048' in capsys.readouterr().out     # 256 nodes of 8: the report's 2048 GPUs


def test_the_course_parser_turns_abbreviations_off():
    parser = ArgumentParser(prog="x")
    parser.add_argument("--microbatches", type=int)
    with pytest.raises(SystemExit):
        parser.parse_args(["--micro", "4"])
    assert parser.parse_args(["--microbatches", "4"]).microbatches == 4
