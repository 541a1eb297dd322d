"""The claims map quotes numbers; every number in its measurement column is one the library computes now."""

import re
from pathlib import Path

import pytest

from utils.capstone import CLAIMS, claims_table

CLAIMS_MD = Path(__file__).resolve().parents[1] / "lessons" / "claims.md"
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def claim_rows() -> list[list[str]]:
    rows = [line.split(" | ") for line in CLAIMS_MD.read_text().splitlines() if re.match(r"\| \d \|", line)]
    return [[cell.strip(" |") for cell in row] for row in rows]


@pytest.fixture(scope="module")
def live():
    return claims_table()


def test_every_claim_has_a_row_with_a_verdict():
    rows = claim_rows()
    assert [int(row[0]) for row in rows] == list(range(1, len(CLAIMS) + 1))
    for row in rows:
        assert re.search(r"\*\*(holds|misattributed)", row[4]), row[4]


def test_quoted_measurements_are_computed(live):
    for row, measured in zip(claim_rows(), live["measurement (computed now)"], strict=True):
        quoted = set(NUMBER.findall(row[3]))
        computed = set(NUMBER.findall(measured))
        assert quoted <= computed, f"claim {row[0]}: {sorted(quoted - computed)} not in '{measured}'"


def test_live_verdicts_name_the_misattributions(live):
    assert "misattributed" in live.loc[2, "verdict"] and "routing" in live.loc[2, "verdict"]
    assert "misattributed" in live.loc[3, "verdict"] and "separate technique" in live.loc[3, "verdict"]
