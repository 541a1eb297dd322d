"""The searches notebook 05b shows, stored in data/optimal_schedules.json because some take longer than a lesson
waits: ``load_precomputed()`` reads them (each checked again with the validator and the simulator), and
``python -m utils.optimal --precompute`` (``precompute``) runs them all again and rewrites the file.

Two sets, on 4 ranks and 8 micro-batches, with one rank's share of the model costing ``SHARE`` (F = 2, B = 4,
W = 2: half-units, so the half-size chunks of the V placement cost whole units):

* ``compare``: each schedule of ``COMPARED`` against the best schedule under its own rules
  (``optimal_for``), without and with the expert all-to-all (``SHARE_A2A``), with free memory and with the
  schedule's own peak of activations as the cap;
* ``cap``: the best schedule on a linear pipeline as the activation cap tightens from 8 to 1, with a full
  backward (1F1B's rules) and with I and W (ZB1P's).
"""

from __future__ import annotations

import json
from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from utils import inputs as arg
from utils.pipeline.costs import CostModel
from utils.pipeline.optimal.problem import PLACEMENTS, placement, placement_of
from utils.pipeline.registry import make_schedule
from utils.pipeline.schedule import Schedule, parse_action
from utils.pipeline.simulate import simulate
from utils.pipeline.virtual_stages import chunk_costs

PRECOMPUTED_PATH = Path(__file__).resolve().parents[3] / "data" / "optimal_schedules.json"
#: The schedules notebook 05b holds against their optimum, in the order it shows them.
COMPARED = ("1f1b", "zb1p", "zbv", "1f1b-overlap", "dualpipe", "dualpipev")
#: One rank's share of the model (1/PP of it), without and with the expert all-to-all of notebook 05.
SHARE = CostModel(F=2, B=4, W=2)
SHARE_A2A = CostModel(F=2, B=4, W=2, dispatch=1, combine=1)
RANKS, MICROBATCHES = 4, 8
CAPS = tuple(range(MICROBATCHES, 0, -1))
#: Seconds each search may take when the file is refreshed (the longest prove in about a minute here).
TIME_LIMIT = {"compare": 300.0, "cap": 60.0}


class Case(NamedTuple):
    """One stored search: ``key``, its set (``compare`` or ``cap``) and what it searches."""

    key: str
    group: str
    schedule: str          # compare: the schedule held against its optimum; cap: the rules' name
    all_to_all: bool
    cap: int | None        # cap: the cap; compare: None (free) or 0 (the schedule's own peak)

    def costs(self) -> CostModel:
        share = SHARE_A2A if self.all_to_all else SHARE
        return chunk_costs(share, 2) if self.schedule in ("zbv", "dualpipev") else share

    def run(self, time_limit: float):
        """Search this case now (``optimal_for`` or ``optimal_schedule``)."""
        from utils.pipeline.optimal.solve import optimal_for, optimal_schedule

        if self.group == "compare":
            return optimal_for(make_schedule(self.schedule, RANKS, MICROBATCHES), self.costs(),
                               same_memory=self.cap == 0, time_limit=time_limit)
        return optimal_schedule(RANKS, MICROBATCHES, self.costs(), "linear", split_backward=self.schedule == "zb1p",
                                max_activations=self.cap, time_limit=time_limit)


def cases() -> tuple[Case, ...]:
    """Every stored search, compare set first."""
    found = [Case(f"compare/{name}/{'a2a' if a2a else 'no-a2a'}/{'own-peak' if cap == 0 else 'free'}", "compare",
                  name, a2a, cap) for name in COMPARED for a2a in (False, True) for cap in (None, 0)]
    found += [Case(f"cap/{rules}/{cap}", "cap", rules, False, cap) for rules in ("1f1b", "zb1p") for cap in CAPS]
    return tuple(found)


class StoredSearch(NamedTuple):
    """A search as stored: its ``case``, the ``schedule`` found (a kit Schedule, checked again on loading),
    its simulated ``makespan``, ``proven_optimal``, ``lower_bound``, the known schedule it started from
    (``start``, ``start_makespan``) and the simulated step of the schedule compared (``kit_makespan``)."""

    case: Case
    schedule: Schedule
    makespan: float
    proven_optimal: bool
    lower_bound: float
    start: str
    start_makespan: float
    kit_makespan: float | None
    settings: dict


def precompute(path: Path | str | None = None, time_limit: float | None = None, progress=None) -> Path:
    """Run every case (``cases``) and write the file (``PRECOMPUTED_PATH`` by default). ``time_limit``: seconds
    per search (default ``TIME_LIMIT`` of its set); ``progress``: called with one line per case."""
    path = Path(PRECOMPUTED_PATH if path is None else path)
    if time_limit is not None:
        time_limit = arg.real(time_limit, "time_limit", low=0, low_open=True, where="precompute",
                              why="seconds each search may take")
    import ortools

    from utils.pipeline.optimal.model import SEED

    entries = []
    for case in cases():
        found = case.run(TIME_LIMIT[case.group] if time_limit is None else time_limit)
        kit = simulate(make_schedule(case.schedule, RANKS, MICROBATCHES), case.costs()).makespan \
            if case.group == "compare" else None
        entries.append({"key": case.key, "makespan": found.makespan, "proven_optimal": found.proven_optimal,
                        "lower_bound": found.lower_bound, "start": found.start,
                        "start_makespan": found.start_makespan, "kit_makespan": kit,
                        "schedule": found.schedule.rank_lines(), "settings": found.settings})
        if progress is not None:
            progress(f"{case.key}: {found.makespan:g} ({found.status}, bound {found.lower_bound:g}, "
                     f"{found.wall_seconds:.1f} s)")
    data = {"about": "Best schedules found by CP-SAT for notebook 05b; refresh with "
                     "`python -m utils.optimal --precompute`.",
            "solver": f"ortools {ortools.__version__}, one worker, random seed {SEED}", "cases": entries}
    path.write_text(json.dumps(data, indent=1) + "\n")
    load_precomputed.cache_clear()
    return path


@lru_cache(maxsize=4)
def load_precomputed(path: Path | str | None = None) -> dict[str, StoredSearch]:
    """The stored searches by key (``cases``), each schedule rebuilt as a kit Schedule and simulated again:
    a stored step time the simulator no longer gives is refused (refresh with ``--precompute``)."""
    path = Path(PRECOMPUTED_PATH if path is None else path)
    if not path.is_file():
        raise arg.InputError(f"load_precomputed: no file {path}; write it with `python -m utils.optimal "
                             f"--precompute`.")
    entries = {e["key"]: e for e in json.loads(path.read_text())["cases"]}
    found = {}
    for case in cases():
        if case.key not in entries:
            raise arg.InputError(f"load_precomputed: {path.name} has no search {case.key!r}; refresh it with "
                                 f"`python -m utils.optimal --precompute`.")
        e = entries[case.key]
        s = e["settings"]
        layout = placement(s["placement"], s["ranks"], s["microbatches"]) if s["placement"] in PLACEMENTS else \
            placement_of(make_schedule(s["placement"], s["ranks"], s["microbatches"]))
        rows = tuple(tuple(parse_action(a) for a in line.split(":", 1)[1].split()) for line in e["schedule"])
        schedule = Schedule("optimal", layout.n_ranks, layout.n_microbatches, layout.stage_to_rank,
                            layout.stage_to_chunk, layout.routes, rows)
        costs = CostModel(**{f.name: s["costs"][f.name] for f in fields(CostModel) if f.name in s["costs"]})
        if costs != case.costs() or simulate(schedule, costs).makespan != e["makespan"]:
            raise arg.InputError(f"load_precomputed: the stored search {case.key!r} no longer matches the kit's "
                                 f"costs or simulator; refresh it with `python -m utils.optimal --precompute`.")
        found[case.key] = StoredSearch(case, schedule, e["makespan"], e["proven_optimal"], e["lower_bound"],
                                       e["start"], e["start_makespan"], e["kit_makespan"], s)
    return found
