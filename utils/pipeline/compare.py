"""All schedules side by side on the same model: the comparison widget's pure functions (and the capstone's).

``comparison_table`` simulates every schedule of a fair comparison (``registry.COMPARED_SCHEDULES``: 1F1B, 1F1B
with overlapped pairs, ZB1P, DualPipe, DualPipeV and the virtual-stage schedules) on one model and reads the
step time, the worst rank's time budget (idle, exposed communication: ``Timeline.budget``), peak activations
and the closed form's idle; ``compare_schedules`` draws it; ``explore_comparison`` is the widget's view
(``utils.widgets.pipeline.ScheduleComparison``). A setting a schedule does not allow gets NaN and the rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from utils import inputs as arg
from utils.figures import OKABE_ITO
from utils.pipeline import plots, table2
from utils.pipeline.costs import COMM_SHARE, CostModel
from utils.pipeline.explore import PEAK_ROW, closed_form, simulated_quantities
from utils.pipeline.registry import (
    CHUNKS_PER_RANK,
    COMPARED_SCHEDULES,
    SCHEDULE_NAMES,
    make_schedule,
    schedule_name,
)
from utils.pipeline.schedule import OverlappedAction, Schedule
from utils.pipeline.simulate import simulate
from utils.pipeline.virtual_stages import costs_per_stage
from utils.view import View

#: Pipeline sizes the comparison widget sweeps (even, so DualPipe can run).
RANK_SWEEP = (2, 4, 8, 16)
#: Micro-batch counts the comparison widget sweeps, as multiples of 2 x PP (DualPipe's minimum).
MICROBATCH_MULTIPLES = (1, 2, 4, 8)


def _known_name(name) -> str | None:
    """``registry.schedule_name(name)``, or None for a schedule the kit does not build."""
    try:
        return schedule_name(name)
    except ValueError:
        return None


def comparison_table(
    ranks: int | Sequence[int], microbatches: int | Sequence[int], costs: CostModel,
    vary: str = "ranks", schedules: Sequence[str] = COMPARED_SCHEDULES,
) -> pd.DataFrame:
    """One row per (schedule, setting): simulated step time, ``bubble`` (the largest idle of any rank, Table
    2's quantity), bubble ratio, the time budget of one named rank, ``rank_computing_least`` (the rank that
    computes least, ``Timeline.worst_budget``): its ``idle``, ``comm_exposed`` and ``not_computing``
    (their sum), peak activations and the closed form's idle (Table 2's with execution times,
    ``table2.bubble``, or 1f1b-overlap's), as ``vary`` ("ranks" or "microbatches") takes each value.
    The default schedules are the fair comparison's (``registry.COMPARED_SCHEDULES``).

    ``costs`` are those of one rank's share of the model; DualPipeV's half-size stages get half of them
    (`costs_per_stage`). A setting a schedule does not allow (odd ranks for DualPipe...) gets NaN and the
    rule in ``note``.
    """
    where = "comparison_table"
    arg.choice(vary, "vary", ("ranks", "microbatches"), where=where, why="the comparison's x axis")
    arg.instance(costs, "costs", CostModel, "a CostModel (e.g. CostModel(F=1, B=2, W=1))", where=where)
    varied, fixed = (ranks, microbatches) if vary == "ranks" else (microbatches, ranks)
    other = "microbatches" if vary == "ranks" else "ranks"
    why = f"with vary={vary!r}, pass a sequence of {vary} to sweep and one number of {other}"
    varied = arg.sequence(list(varied) if isinstance(varied, range) else varied, vary, where=where, why=why)
    arg.whole(fixed, other, low=1, where=where, why=why)
    for value in varied:
        arg.whole(value, f"every entry of {vary}", low=1, where=where, why=why)
    unknown = [s for s in arg.sequence(schedules, "schedules", where=where) if _known_name(s) is None]
    if unknown:
        raise ValueError(f"Unknown schedules {unknown}: the kit builds {', '.join(SCHEDULE_NAMES)}.")
    rows = []
    for name in map(schedule_name, schedules):
        for value in varied:
            n_ranks, n_mb = (value, fixed) if vary == "ranks" else (fixed, value)
            row = {"schedule": name, "ranks": n_ranks, "microbatches": n_mb, "makespan": math.nan,
                   "bubble": math.nan, "bubble_ratio": math.nan, "rank_computing_least": math.nan, "idle": math.nan,
                   "comm_exposed": math.nan,
                   "not_computing": math.nan, "peak_activations": math.nan, "table2_idle": math.nan,
                   "note": ""}
            stage_costs = costs_per_stage(name, costs)
            try:
                timeline = simulate(make_schedule(name, n_ranks, n_mb), stage_costs)
            except ValueError as err:
                row["note"] = str(err)
            else:
                sim = simulated_quantities(timeline)
                formula = closed_form(timeline.schedule, stage_costs) or {}
                worst = timeline.worst_budget()  # every budget column from this one rank
                row.update(makespan=sim["step time (makespan)"], bubble=sim["bubble: largest idle of any rank"],
                           bubble_ratio=sim["bubble ratio"], rank_computing_least=worst.rank, idle=worst.idle,
                           comm_exposed=worst.comm_exposed, not_computing=worst.not_computing,
                           peak_activations=sim[PEAK_ROW], table2_idle=formula.get("bubble", math.nan))
                # the same value reached by two sums: round off float noise so both display alike (12.375)
                row.update(bubble=round(row["bubble"], 9), table2_idle=round(row["table2_idle"], 9))
                if formula and formula.get("assumptions", "hold") != "hold":  # why the closed form differs
                    row["note"] = f"closed form not exact: {formula['assumptions']}"
            rows.append(row)
    return pd.DataFrame(rows)


def compare_schedules(
    ranks: int | Sequence[int], microbatches: int | Sequence[int], costs: CostModel,
    vary: str = "ranks", schedules: Sequence[str] = COMPARED_SCHEDULES,
) -> tuple[Figure, pd.DataFrame]:
    """All ``schedules`` on the same costs as PP or micro-batches vary: the time not computing of the rank that
    computes least
    (grouped bars, that one rank's idle below and its exposed communication hatched above: its time budget)
    and the step time
    (lines), plus the table behind them (`comparison_table`)."""
    from matplotlib.patches import Patch

    table = comparison_table(ranks, microbatches, costs, vary=vary, schedules=schedules)
    names = [schedule_name(s) for s in schedules]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    palette = {s: plots.SCHEDULE_COLORS.get(s, OKABE_ITO["sky blue"]) for s in names}
    shown = table.dropna(subset=["idle"])
    values = sorted(set(shown[vary]))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        part = shown[shown["schedule"] == name].set_index(vary).reindex(values)
        x = [j - 0.4 + (i + 0.5) * width for j in range(len(values))]
        idle, comm = part["idle"].fillna(0), part["comm_exposed"].fillna(0)  # one rank's two parts
        left.bar(x, idle, width, color=palette[name], edgecolor=plots.EDGE_COLOR, linewidth=0.5)
        left.bar(x, comm, width, bottom=idle, color=palette[name], edgecolor=plots.EDGE_COLOR, linewidth=0.5,
                 hatch="///", alpha=0.6)
    fixed_text = f"{microbatches} micro-batches" if vary == "ranks" else f"{ranks} ranks"
    axis_label = "pipeline ranks (devices)" if vary == "ranks" else "micro-batches"
    left.set_xticks(range(len(values)), [str(v) for v in values])
    left.set_title(f"Time not computing ({fixed_text})\non the rank that computes least")
    left.set_xlabel(axis_label)
    left.set_ylabel("idle + exposed comm (time units)")
    handles = [Patch(facecolor=palette[n], edgecolor=plots.EDGE_COLOR, label=n) for n in names]
    if (shown["comm_exposed"] > 0).any():  # the hatch is drawn only where some rank waits for communication
        handles.append(Patch(facecolor="white", edgecolor=plots.EDGE_COLOR, hatch="///",
                             label="hatched: exposed communication"))
    top = (shown["idle"] + shown["comm_exposed"]).max() if len(shown) else 0.0
    left.set_ylim(0, 1.08 * top if top > 0 else 1.0)  # headroom: the tallest bar is not clipped
    left.legend(handles=handles, title="schedule", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                frameon=False)
    markers, styles = "os^Dvx", ("-", "--", ":", "-.")
    for i, name in enumerate(names):
        part = shown[shown["schedule"] == name]
        # distinct marker, size and line style: a schedule whose steps equal another's (DualPipe and DualPipeV)
        # still shows under it
        right.plot(part[vary], part["makespan"], marker=markers[i % len(markers)], color=palette[name],
                   linestyle=styles[i % len(styles)], markersize=9 - i, markerfacecolor="none" if i % 2 else
                   palette[name], label=name)
    right.set_xticks(values, [str(v) for v in values])
    right.set_title(f"Step time ({fixed_text})")
    right.set_xlabel(axis_label)
    right.set_ylabel("step time (simulated time units)")
    right.legend(title="schedule", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    a2a = costs.dispatch + costs.combine
    pairs = any(n in ("1f1b-overlap", "dualpipe", "dualpipev") for n in names)
    halves = [n for n in names if CHUNKS_PER_RANK.get(n, 1) > 1]
    fig.suptitle(f"Schedules on the same model: F={costs.F:g}, B={costs.B:g}, W={costs.W:g}"
                 + (f", F&B compute={costs.FB:g} (execution time {table2.execution_times(costs)['FB']:.3g})"
                    if pairs and a2a > 0 else f", F&B={costs.FB:g}" if pairs else "") + (f", all-to-all={a2a:g}" if a2a > 0 else "")
                 + (f", p2p={costs.p2p:g}" if costs.p2p > 0 else "") + "\nper 1/PP of the model"
                 + (f" ({', '.join(halves)} stages: 1/v of it)" if halves else ""))
    return fig, table


def explore_comparison(
    vary: str = "ranks", ranks: int = 4, microbatches: int = 32, F: float = 1.0, B: float = 2.0,
    W: float = 1.0, FB: float = 3.0, p2p: float = 0.0, dispatch: float = 0.0, combine: float = 0.0,
    schedules: Sequence[str] = COMPARED_SCHEDULES, comm_share: float = COMM_SHARE,
) -> View:
    """The comparison widget's view: ``compare_schedules`` of ``schedules`` (default ``COMPARED_SCHEDULES``)
    over PP in ``RANK_SWEEP`` (``vary="ranks"``, at ``microbatches``) or over 2 PP x ``MICROBATCH_MULTIPLES``
    micro-batches (``vary="microbatches"``, at ``ranks``); an invalid cost model or setting gives
    ``View(error=<the rule>)``. ``comm_share`` is the share of SMs an overlapped pair gives to communication
    (``CostModel.comm_share``, default DeepSeek-V3's 20/132; 0: overlap is free)."""
    try:
        arg.choice(vary, "vary", ("ranks", "microbatches"), where="explore_comparison")
        arg.whole(ranks, "ranks", low=1, high=arg.MAX_RANKS, where="explore_comparison")
        arg.whole(microbatches, "microbatches", low=1, high=arg.MAX_MICROBATCHES, where="explore_comparison")
        costs = CostModel(F=F, B=B, W=W, FB=FB, p2p=p2p, dispatch=dispatch, combine=combine,
                          comm_share=comm_share)
        if vary == "ranks":
            figure, table = compare_schedules(RANK_SWEEP, microbatches, costs, vary="ranks", schedules=schedules)
        else:
            sweep = [2 * ranks * k for k in MICROBATCH_MULTIPLES]
            figure, table = compare_schedules(ranks, sweep, costs, vary=vary, schedules=schedules)
    except ValueError as err:
        return View(error=str(err))
    return View(figure=figure, table=table)


#: What each step of the fair comparison adds, by the schedule it arrives at (notebook 05, the capstone).
MECHANISMS = {
    "1f1b": "baseline: every chunk's all-to-all waits alone",
    "1f1b-overlap": "F&B pairs hide the all-to-all behind the partner's compute (same bubble, 2x activations)",
    "zb1p": "split backward: W fills the bubble (no pairs)",
    "dualpipe": "two directions + W split: smaller bubble (PP+1 activations, 2x parameters)",
    "dualpipev": "DualPipe cut in half: same steps on half-size stages, 1x parameters",
}


def fair_steps(ranks: int, microbatches: int, costs: CostModel,
               schedules: Sequence[str] = ("1f1b", "1f1b-overlap", "dualpipe"), rank: int | None = None,
               ) -> pd.DataFrame:
    """DualPipe's gains separated step by step on one model (GUIDE principle 7: each gain to its mechanism).

    One row per schedule, in the order given: the step time and its time budget (``compute + comm_exposed +
    idle == step``, ``Timeline.budget``) on ``rank`` (averaged over ranks when None), the bubble (largest
    idle of any rank, Table 2's quantity), peak activations, parameters per device in units of 1/PP of the
    model, the time saved against the row before, and the mechanism that saves it (``MECHANISMS``). With a
    ``rank``, ``d_compute``, ``d_comm_exposed`` and ``d_idle`` split the saving into its three parts on that
    rank (they sum to ``saved``). Costs are per 1/PP of the model (DualPipeV's half-size stages get half,
    ``costs_per_stage``).
    """
    rows, previous = [], None
    for name in map(schedule_name, schedules):
        timeline = simulate(make_schedule(name, ranks, microbatches), costs_per_stage(name, costs))
        if rank is None:
            shares = timeline.budget_shares()
            parts = {key: shares[key] * timeline.makespan for key in ("compute", "comm_exposed", "idle")}
        else:
            b = timeline.budget(rank)
            parts = {"compute": b.compute, "comm_exposed": b.comm_exposed, "idle": b.idle}
        v = CHUNKS_PER_RANK.get(name, 1)
        rows.append({
            "schedule": name,
            "step": timeline.makespan,
            **parts,
            "bubble": timeline.worst_idle,
            "peak_activations": max(timeline.peak_activations(r) for r in range(ranks)) / v,
            "params_per_device": max(timeline.param_copies(r) for r in range(ranks)) / v,
            **_saved(previous, {"step": timeline.makespan, **parts}, parts=rank is not None),
            "by": MECHANISMS.get(name, ""),
        })
        previous = {"step": timeline.makespan, **parts}
    return pd.DataFrame(rows).set_index("schedule")


def _saved(previous: dict | None, now: dict, parts: bool = True) -> dict:
    """The time ``now`` saves against the row before: ``saved`` (step time) and, with ``parts``, its split
    ``d_compute``, ``d_comm_exposed``, ``d_idle`` (they sum to ``saved``); NaN on the first row."""
    keys = ("step", "compute", "comm_exposed", "idle") if parts else ("step",)
    return {("saved" if k == "step" else f"d_{k}"): math.nan if previous is None else previous[k] - now[k]
            for k in keys}


def without_pairs(schedule: Schedule) -> Schedule:
    """``schedule`` with every overlapped F&B pair run as its forward, then its backward: the same order and
    placement, nothing hidden (the "DualPipe without pairs" step between Chimera and DualPipe)."""
    arg.instance(schedule, "schedule", Schedule, "a Schedule (e.g. make_schedule('dualpipe', 4, 8))",
                 where="without_pairs")
    actions = tuple(tuple(x for a in row for x in ((a.forward, a.backward) if isinstance(a, OverlappedAction)
                                                   else (a,))) for row in schedule.actions)
    return replace(schedule, name=f"{schedule.name} without pairs", actions=actions)


def full_backward(schedule: Schedule) -> Schedule:
    """``schedule`` with its pairs run apart (`without_pairs`) and its backward not split: every input-backward
    I turned back into a full B and every weight-backward W dropped (the order of DualPipe, the actions of
    Chimera: the step between the two in `over_chimera`)."""
    apart = without_pairs(schedule)
    actions = tuple(tuple(replace(a, kind="B") if a.kind == "I" else a
                          for a in row if a.kind != "W") for row in apart.actions)
    return replace(apart, name=f"{schedule.name} with full backward", actions=actions)


def over_chimera(ranks: int, microbatches: int, costs: CostModel, rank: int = 0) -> pd.DataFrame:
    """What DualPipe adds on top of Chimera (Li and Hoefler, SC'21), one addition per row, measured on the
    time budget of ``rank``: Chimera; DualPipe's order of the actions with its pairs run apart and a full
    backward (each I turned back into B, the W's dropped: `full_backward`); then its backward split into I and
    W (DualPipe with its pairs run apart); DualPipe with free overlap (``comm_share=0``: the pairs hide the all-to-all);
    DualPipe as costed (``costs.comm_share``: the SMs given to communication slow each pair's compute).
    Columns: step time, then ``rank <r> compute``, ``rank <r> comm_exposed``, ``rank <r> idle``, and ``saved`` with its three parts
    (``d_compute``, ``d_comm_exposed``, ``d_idle``) against the row before. Chimera needs ``microbatches``
    a multiple of ``ranks``."""
    arg.instance(costs, "costs", CostModel, "a CostModel (e.g. CostModel(F=1, B=2, W=1))", where="over_chimera")
    dualpipe = make_schedule("dualpipe", ranks, microbatches)
    free = replace(costs, comm_share=0.0)
    steps = [("chimera", make_schedule("chimera", ranks, microbatches), costs,
              "two pipelines in opposite directions, full backward, no pairs"),
             ("dualpipe's order, full backward", full_backward(dualpipe), costs,
              "DualPipe's order of the actions, pairs run apart, backward not split"),
             ("+ split backward (pairs run apart)", without_pairs(dualpipe), costs,
              "split backward: I, W fill the waits"),
             ("+ F&B pairs, comm_share 0", dualpipe, free, "F&B pairs hide the all-to-all (overlap free)"),
             (f"+ SMs to communication, comm_share {costs.comm_share:.3g}", dualpipe, costs,
              "the SMs given to communication slow each pair")]
    rows, previous = [], None
    for label, schedule, c, by in steps:
        b = simulate(schedule, c).budget(arg.whole(rank, "rank", low=0, high=ranks - 1, where="over_chimera"))
        parts = {"step": b.makespan, "compute": b.compute, "comm_exposed": b.comm_exposed, "idle": b.idle}
        rows.append({"step": label, **{(f"rank {rank} {k}" if k != "step" else "step time"): v
                                       for k, v in parts.items()}, **_saved(previous, parts), "by": by})
        previous = parts
    return pd.DataFrame(rows).set_index("step")


def bubble_sources(ranks: int, microbatches: int, costs: CostModel) -> pd.DataFrame:
    """Where DualPipe's smaller bubble comes from, each mechanism alone against 1F1B, then together: 1F1B; the
    W split alone (ZB1P, one direction, 1x parameters); the two directions alone (DualPipe's order with a full
    backward and its pairs run apart, `full_backward`); both, pairs still apart (`without_pairs`); DualPipe.
    Columns: the step time and the bubble (the largest idle of any rank, Table 2's quantity)."""
    arg.instance(costs, "costs", CostModel, "a CostModel (e.g. CostModel(F=1, B=2, W=1))", where="bubble_sources")
    dualpipe = make_schedule("dualpipe", ranks, microbatches)
    rows = []
    for label, schedule in (("1F1B", make_schedule("1f1b", ranks, microbatches)),
                            ("W split alone (ZB1P, one direction)", make_schedule("zb1p", ranks, microbatches)),
                            ("two directions alone (full backward, pairs apart)", full_backward(dualpipe)),
                            ("both, pairs apart", without_pairs(dualpipe)),
                            ("DualPipe (both, with pairs)", dualpipe)):
        timeline = simulate(schedule, costs)
        rows.append({"schedule": label, "step": timeline.makespan, "bubble": timeline.worst_idle})
    return pd.DataFrame(rows).set_index("schedule")
