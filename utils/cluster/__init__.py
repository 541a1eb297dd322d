"""The simulated cluster: every simulated GPU is a real OS process in a real torch.distributed process group.

    cluster     SimulatedCluster: start ranks once, ``run(fn, *args)`` on all of them, faults named by rank
    processes   the helper process that forks ranks, and how a rank's exit is described
    rank        what runs inside a rank process (rendezvous, the job loop)
    inputs      checks of what a learner passes in (world size, backend, timeouts, jobs)
    jobs        small demonstration jobs (ring, all-to-all, ...)
    launch      the same jobs under torchrun (``python -m utils.launch``)

May import: torch, psutil, and of the kit only ``utils.inputs`` (the shared checks; ground layer).
``from utils.cluster import SimulatedCluster`` works as it always did.
"""

from utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "RankError": "cluster", "RankTimeoutError": "cluster", "SimulatedCluster": "cluster",
    "BACKENDS": "inputs", "MAX_WORLD_SIZE": "inputs", "check_job": "inputs", "resolve_job": "inputs",
})
