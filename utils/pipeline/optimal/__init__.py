"""The best schedule the kit's cost model allows, found by a solver (CP-SAT, from Google's OR-Tools).

    problem      what the search may choose from: placements, the parts to place, their lengths (read from
                 the simulator) and inputs (``Schedule.inputs_of``), the checks of a search's settings
    model        the CP-SAT model: intervals per rank, the dependency rule as precedences, the activation cap
    solve        ``optimal_schedule`` and ``optimal_for``: search, read back a kit Schedule, check it with the
                 validator and the simulator (``OptimalSchedule``)
    precomputed  the notebook's searches too long to run live, stored in data/optimal_schedules.json
    cli          ``python -m utils.optimal`` (``--precompute`` refreshes the stored searches)

May import: ortools, ``utils.inputs``, and ``utils.pipeline`` below ``optimal`` (schedule, costs, generators,
registry, validation, simulate, timeline). OR-Tools is imported only when a search runs.
"""

from utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    **{name: "problem" for name in ("PLACEMENTS", "MAX_STAGE_PASSES", "placement", "placement_of", "own_rules",
                                    "min_activations", "action_lengths")},
    **{name: "solve" for name in ("OptimalSchedule", "optimal_schedule", "optimal_for", "best_known")},
    **{name: "precomputed" for name in ("PRECOMPUTED_PATH", "load_precomputed", "precompute")},
    "main": "cli",
})
