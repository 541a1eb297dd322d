"""Tables and figures of notebook 05b (the best schedule, by a solver): each schedule beside the optimum under
its own rules, and the gap to the optimum as the activation cap tightens.

The optima come from the stored searches (``utils.pipeline.optimal.precomputed``: CP-SAT took up to minutes);
the schedules and the hand-made capped designs (``utils.pipeline.puzzles.memory_cap.capped_one_f_one_b``) are
simulated here. Colours are the course's schedule colours (``utils.figures``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from utils import inputs as arg
from utils.figures import GREYS, OKABE_ITO, SCHEDULE_COLORS
from utils.pipeline.generators.common import linear_schedule
from utils.pipeline.optimal.precomputed import CAPS, COMPARED, MICROBATCHES, RANKS, SHARE, load_precomputed
from utils.pipeline.plots import plot_timelines_stacked
from utils.pipeline.puzzles.base import rank_lists
from utils.pipeline.puzzles.memory_cap import capped_one_f_one_b
from utils.pipeline.registry import CHUNKS_PER_RANK, make_schedule
from utils.pipeline.simulate import simulate

#: The rules of the cap sweep, by the schedule that follows them.
CAP_RULES = {"1f1b": "F and B (1F1B's rules)", "zb1p": "F, I and W (ZB1P's rules)"}
def comparison_table(all_to_all: bool = False) -> pd.DataFrame:
    """One row per schedule of ``COMPARED`` (4 ranks, 8 micro-batches, one rank's share costing ``SHARE``):
    its simulated step, the best step found under its own rules with free memory and with its own peak of
    activations as the cap, whether each is proven optimal (with the lower bound at the same memory), the
    peak in 1F1B stages' activations (a V chunk holds half of one) and the schedule's gap to the second."""
    arg.flag(all_to_all, "all_to_all", where="comparison_table")
    stored = load_precomputed()
    rows = []
    for name in COMPARED:
        tag = "a2a" if all_to_all else "no-a2a"
        free, same = stored[f"compare/{name}/{tag}/free"], stored[f"compare/{name}/{tag}/own-peak"]
        rows.append({"schedule": name, "schedule's step": free.kit_makespan, "best found": free.makespan,
                     "proven": free.proven_optimal, "best found, same peak memory": same.makespan,
                     "proven, same memory": same.proven_optimal, "bound, same memory": same.lower_bound,
                     "peak activations (1F1B stages)": same.settings["max_activations"] / CHUNKS_PER_RANK.get(name, 1),
                     "gap": free.kit_makespan - same.makespan,
                     "gap %": round(100 * (free.kit_makespan - same.makespan) / free.kit_makespan, 1)})
    # times to two decimals: with the all-to-all a pair lasts 132/112 of its compute (the solver counts 28ths)
    return pd.DataFrame(rows).set_index("schedule").round(2)


def cap_sweep_table() -> pd.DataFrame:
    """One row per (rules, cap) on a linear pipeline: the proven best step, the hand-made design that clips
    1F1B's (or ZB1P's) warm-up at the cap (``capped_one_f_one_b``) and its gap to the optimum."""
    stored = load_precomputed()
    rows = []
    for rules, label in CAP_RULES.items():
        for cap in CAPS:
            found = stored[f"cap/{rules}/{cap}"]
            lists = capped_one_f_one_b(RANKS, MICROBATCHES, cap, split=rules == "zb1p")
            design = simulate(linear_schedule("capped", RANKS, MICROBATCHES, rank_lists(lists, RANKS)), SHARE)
            rows.append({"rules": label, "cap": cap, "optimum": found.makespan, "proven": found.proven_optimal,
                         "capped design": design.makespan, "gap": design.makespan - found.makespan})
    return pd.DataFrame(rows)


def plot_gap_vs_cap(table: pd.DataFrame) -> Figure:
    """``cap_sweep_table``: the best step and the capped design's against the cap (left), and the gap (right),
    with 1F1B and ZB1P themselves at their own peaks."""
    arg.instance(table, "table", pd.DataFrame, "the table of cap_sweep_table()", where="plot_gap_vs_cap")
    missing = {"rules", "cap", "optimum", "capped design", "gap"} - set(table.columns)
    if missing:
        arg.fail("table", "the table of cap_sweep_table()", f"a table without {sorted(missing)}",
                 where="plot_gap_vs_cap")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 3.9), layout="constrained")
    for rules, label in CAP_RULES.items():
        rows = table[table["rules"] == label]
        colour = SCHEDULE_COLORS[rules]
        left.plot(rows["cap"], rows["optimum"], "-o", color=colour, label=f"optimum, {label}")
        left.plot(rows["cap"], rows["capped design"], "--", marker="x", color=colour,
                  label=f"warm-up clipped at the cap, {label.split(' (')[0]}")
        right.plot(rows["cap"], rows["gap"], "-o", color=colour, label=label)
        kit = simulate(make_schedule(rules, RANKS, MICROBATCHES), SHARE)
        peak = max(kit.peak_activations(r) for r in range(RANKS))
        left.scatter([peak], [kit.makespan], s=130, marker="*", color=colour, edgecolor=GREYS["dark grey"],
                     zorder=4, label=f"{rules} itself (peak {peak})")
    for ax in (left, right):
        ax.set_xlabel("cap on activations held per rank (micro-batches)")
        ax.set_xticks(list(CAPS))
        ax.invert_xaxis()  # the cap tightens to the right
        ax.grid(color=GREYS["light grey"], zorder=0)
    left.set_ylabel("step time (time units)")
    left.set_title("Best step and a hand-made design as the cap tightens", fontsize=11)
    left.legend(fontsize=8, loc="upper left")
    right.axhline(0, color=OKABE_ITO["black"], lw=0.8)
    right.set_ylabel("design - optimum (time units)")
    right.set_title("Gap of the clipped warm-up to the optimum", fontsize=11)
    right.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{RANKS} ranks, {MICROBATCHES} micro-batches, F = {SHARE.F:g}, B = {SHARE.B:g}, W = {SHARE.W:g} "
                 f"(optima proven by CP-SAT)", fontsize=11)
    return fig


def plot_schedule_and_optimum(name: str, all_to_all: bool = False, same_memory: bool = True) -> Figure:
    """The Gantt charts of schedule ``name`` (one of ``COMPARED``) and of the optimum under its rules."""
    arg.choice(name, "name", COMPARED, where="plot_schedule_and_optimum", why="the schedules stored for 05b")
    arg.flag(all_to_all, "all_to_all", where="plot_schedule_and_optimum")
    arg.flag(same_memory, "same_memory", where="plot_schedule_and_optimum")
    found = load_precomputed()[f"compare/{name}/{'a2a' if all_to_all else 'no-a2a'}/"
                               f"{'own-peak' if same_memory else 'free'}"]
    costs = found.case.costs()
    kit, best = simulate(make_schedule(name, RANKS, MICROBATCHES), costs), simulate(found.schedule, costs)
    memory = f", at most {found.settings['max_activations']} activations per rank" if same_memory else ""
    proof = "proven optimal" if found.proven_optimal else f"not proven; bound {found.lower_bound:.4g}"
    return plot_timelines_stacked([kit, best], titles=(  # one time axis: the two steps drawn to scale
        f"{name}: step {kit.makespan:.4g}",
        f"best found under {name}'s rules{memory}: step {best.makespan:.4g} ({proof})"))
