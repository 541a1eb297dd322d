"""Time limits that bound a hang, scaled by how busy this machine is (tests/conftest.py explains why).

A test that waits for processes to stop, or gives a job a deadline it should never reach, uses
`patient(seconds)`: `seconds` on an idle machine, up to 4x that while more work than cores is queued
(xdist's other worker, a notebook run, another user). Never for a timing that is itself under test: those
compare against what the code must beat, not against a deadline.
"""

from __future__ import annotations

import os


def load_factor() -> float:
    """How many times over this machine's cores are asked for work (1 when at most fully busy)."""
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not available on this system
        return 1.0
    return max(1.0, busy / (os.cpu_count() or 1))


def patient(seconds: float) -> float:
    """`seconds`, times the load factor (at most 4), rounded to a tenth of a second."""
    return round(seconds * min(4.0, load_factor()), 1)
