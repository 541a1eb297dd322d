"""Shared by every test under tests/: how the tests are spread over two processes (`make test` runs the unit
tests with pytest-xdist, ``-n 2 --dist loadfile``), and time limits that hold on a busy machine.

Spreading: each test module runs on one worker, so a module-scoped fixture (a SimulatedCluster of rank
processes, a full-scale evaluation) is built once and not once per worker: a module split over both workers
would start a cluster in each, and its two clusters would compete for the cores. (`--dist loadgroup` with
`xdist_group` marks would keep only such modules together, but with pytest 9.2 xdist 3.8 cannot tag the
tests' ids with their group any more: the marks are silently ignored.) Workers take modules in the order
collected (`--no-loadscope-reorder`; xdist would otherwise start with the modules of most tests, the cheap
tables of bad inputs), and the modules with a module-scoped fixture, whose tests take seconds each, are
collected first: the run ends on short modules, and neither worker waits long for the other.

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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # Modules with a module-scoped fixture first (stable: otherwise in collection order). Both workers collect
    # the same items in the same order, as xdist requires.
    def shares_a_fixture(item) -> bool:
        info = getattr(item, "_fixtureinfo", None)
        return info is not None and any(defs and defs[-1].scope in ("module", "package")
                                        for defs in info.name2fixturedefs.values())

    heavy = {item.path for item in items if shares_a_fixture(item)}
    items.sort(key=lambda item: item.path not in heavy)


@pytest.fixture
def every_rank_answers(monkeypatch):
    """For a test that needs every rank's answer to a failed job: once one rank has failed, the owner waits a
    second for the others (a fault reaches the notebook fast), and on a busy machine a slower rank may need
    longer to get there. Here it may take a few seconds; the job still ends as soon as every rank answered."""
    from patience import patient

    from utils.cluster import cluster

    monkeypatch.setattr(cluster, "_FAULT_GRACE_S", patient(5))
