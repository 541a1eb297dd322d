"""What a `SimulatedCluster` accepts, checked: jobs named `module:qualname`, world sizes, timeouts, backends.

Bad input raises ValueError stating the rule and why it exists. Each rank imports this module too (it finds
its job with `resolve_job`), so it imports nothing heavy. Public names are re-exported by `utils.cluster.cluster`.
"""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Callable
from typing import Any

from utils import inputs as arg

#: Each rank is a process with its own copy of torch (a few hundred MB of memory and about a second of
#: start-up), so a laptop runs out long before a real cluster would (one of the course's limits).
MAX_WORLD_SIZE = arg.MAX_WORLD_SIZE
#: gloo runs on CPUs (every machine); nccl needs one CUDA GPU per rank.
BACKENDS = ("gloo", "nccl")


# --------------------------------------------------------------------------------------------- jobs by name

def resolve_job(spec: str) -> Callable:
    """Import and return the function named by `module:qualname` (what each rank does with a job)."""
    if not isinstance(spec, str):
        raise arg.InputTypeError(f"a job is named by a string 'module:function' (e.g. 'utils.cluster.jobs:ring_demo'); "
                                 f"got {arg.describe(spec)}")
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name or not qualname:
        raise arg.InputError("a job is named 'module:function' (e.g. 'utils.cluster.jobs:ring_demo'); "
                             f"got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise arg.InputError(f"cannot import the job's module {module_name!r} ({exc}): a job is named "
                             "'module:function' with a module the ranks can import, e.g. "
                             "'utils.cluster.jobs:ring_demo'") from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise arg.InputError(f"{module_name} has no {qualname!r}: the job {spec!r} names a function that "
                                 "does not exist")
        obj = getattr(obj, part)
    if not callable(obj):
        raise arg.InputError(f"{spec!r} is not a function: a job is a function every rank calls")
    return obj


def check_job(fn: Callable) -> str:
    """Return `fn`'s `module:qualname` if rank processes can import it; else raise ValueError saying why."""
    if not callable(fn):
        raise arg.InputTypeError(f"cluster.run needs a function to run on every rank; got {arg.describe(fn)}")
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if module is None or qualname is None:
        raise ValueError(
            f"cluster.run needs a plain module-level function, got {fn!r}, which has no importable name "
            "(functools.partial and callable objects have none). Pass extra arguments through "
            "cluster.run(fn, *args, **kwargs) instead.")
    why = None
    if module in ("__main__", "__mp_main__"):
        why = "it is defined in a notebook cell or a script (module __main__)"
    elif "<lambda>" in qualname:
        why = "it is a lambda, which has no name to import"
    elif "<locals>" in qualname:
        why = "it is defined inside another function, so it has no name to import"
    if why is None:
        try:
            found = resolve_job(f"{module}:{qualname}")
        except Exception as exc:  # noqa: BLE001 - any import failure means the ranks cannot import it either
            why = f"importing it by name failed ({type(exc).__name__}: {exc})"
        else:
            if found is not fn:
                why = f"the name {module}:{qualname} refers to a different object"
    if why is not None:
        raise ValueError(
            f"cluster.run cannot send {qualname} to the ranks: {why}. Each rank is a separate Python process "
            "that imports the job function by name (module:function); it cannot see code defined in a "
            "notebook cell. Put the function in a module under utils/ (for example utils/cluster/jobs.py) "
            "and import it from there.")
    return f"{module}:{qualname}"


# ------------------------------------------------------------------------------------------ input checking

def check_world_size(world_size: Any) -> int:
    if isinstance(world_size, bool) or not isinstance(world_size, numbers.Integral):
        raise ValueError(f"world_size is the number of ranks, a whole number from 1 to {MAX_WORLD_SIZE}; "
                         f"got {world_size!r}")
    world_size = int(world_size)
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1 (a cluster needs a rank to run on); "
                         f"got {world_size}")
    if world_size > MAX_WORLD_SIZE:
        raise ValueError(f"world_size must be at most {MAX_WORLD_SIZE} (MAX_WORLD_SIZE): each simulated rank is a real "
                         "process with its own copy of torch (a few hundred MB, about a second to start), "
                         f"so {world_size} would swamp this machine; got {world_size}")
    return world_size


def check_timeout(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} is a number of seconds greater than 0; got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds greater than 0 (it bounds how long "
                         f"we wait for the ranks before reporting them stuck); got {value!r}")
    return value


def check_backend(backend: Any, world_size: int) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (gloo runs on CPUs, nccl on CUDA "
                         f"GPUs); got {backend!r}")
    if backend == "nccl":
        import torch
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < world_size:
            raise ValueError(f"backend='nccl' needs one CUDA GPU per rank: world_size={world_size} but this "
                             f"machine has {count}. Use backend='gloo' to simulate GPUs with CPU processes.")
    return backend
