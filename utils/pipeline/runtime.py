"""How the simulator adapts to the Python process it runs in: a notebook's kernel or a command line.

* ``cyclic_gc_paused``: building a schedule (``registry.make_schedule``) and simulating it
  (``simulate.simulate``) allocate hundreds of thousands of small objects (Actions, tuples, floats) and
  make no reference cycles, so Python's cyclic collector finds nothing to free. Yet every collection those
  allocations trigger scans the objects alive: in a notebook, the kernel's whole heap (torch, pandas and
  matplotlib hold about 250,000 tracked objects). Measured with a notebook's imports (``python -m
  benchmarks simulate``), that was about half of building DualPipeV with 64 ranks x 1024 micro-batches
  and up to 1.5x a large simulation's own time. Pausing the collector inside these calls, rather than
  ``gc.freeze()`` at import, leaves the learner's kernel exactly as it was: memory is still freed by
  reference counting, and the collector resumes when the call returns or raises.
* ``loaded_numpy``: the checks and plans done for all actions at once use numpy where the process has
  already imported it (every notebook, the widgets), and plain lists otherwise: importing numpy costs
  about 0.1 s, more than it saves on the schedules a command line (``python -m utils.simulate``) runs,
  which would otherwise start that much slower.

Ground layer: imports nothing from the kit.
"""

from __future__ import annotations

import contextlib
import gc
import sys


@contextlib.contextmanager
def cyclic_gc_paused():
    """Pause Python's cyclic garbage collector (if it runs) for the duration of the block.

    Nests: an inner pause finds the collector already off and leaves it to the outer one to resume.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def loaded_numpy():
    """numpy if this process has already imported it, else None (see the module's docstring)."""
    return sys.modules.get("numpy")
