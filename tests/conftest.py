"""Shared by every test under tests/: how the tests are spread over two processes (`make test` runs the unit
tests with pytest-xdist, ``-n 2 --dist loadfile``), and time limits that hold on a busy machine.

Spreading: each test module runs on one worker, so a module-scoped fixture (a SimulatedCluster of rank
processes, a full-scale evaluation) is built once and not once per worker, and two modules' clusters never
take the cores at the same time as one module's split over both workers would. (`--dist loadgroup` with
`xdist_group` marks would keep only such modules together, but with pytest 9.2 xdist 3.8 cannot tag the
tests' ids with their group any more: the marks are silently ignored.)

Time limits: `patient(seconds)` (tests/patience.py) scales a limit that bounds a hang (never a measurement)
by how busy this machine's cores are, so a test that waits "at most 10 s" for processes to stop still passes
while both cores are taken by other work (xdist's other worker, a notebook run, another user).
"""

from __future__ import annotations

import gc

# Collection builds thousands of test items and imports every test module with torch and friends: the cyclic
# garbage collector, run again and again over that growing heap, found nothing to free and took a third of the
# collection time. It is off while collecting; afterwards the collected objects are moved out of its sight
# (gc.freeze: they live as long as the session) and it runs as usual for the tests themselves.
gc.disable()


def pytest_collection_finish(session):
    gc.freeze()
    gc.enable()
