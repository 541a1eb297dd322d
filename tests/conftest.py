"""Shared by every test under tests/: how the tests are spread over two processes (`make test` runs the unit
tests with pytest-xdist, ``-n 2 --dist loadgroup``), and time limits that hold on a busy machine.

Spreading: a module whose tests share a module-scoped fixture (a SimulatedCluster of rank processes, a
full-scale evaluation) runs on one worker, so the fixture is built once and not once per worker; every
other test goes to whichever worker is free. Without xdist the marks below change nothing.

Time limits: `patient(seconds)` (tests/patience.py) scales a limit that bounds a hang (never a measurement)
by how busy this machine's cores are, so a test that waits "at most 10 s" for processes to stop still passes
while both cores are taken by other work (xdist's other worker, a notebook run, another user).
"""

from __future__ import annotations

import gc

import pytest

# Collection builds thousands of test items and imports every test module with torch and friends: the cyclic
# garbage collector, run again and again over that growing heap, found nothing to free and took a third of the
# collection time. It is off while collecting; afterwards the collected objects are moved out of its sight
# (gc.freeze: they live as long as the session) and it runs as usual for the tests themselves.
gc.disable()


def pytest_collection_finish(session):
    gc.freeze()
    gc.enable()


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        fixturedefs = getattr(item, "_fixtureinfo", None)
        if fixturedefs is None:
            continue
        shared = any(defs and defs[-1].scope in ("module", "package")
                     for defs in fixturedefs.name2fixturedefs.values())
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))

