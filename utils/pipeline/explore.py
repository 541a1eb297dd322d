"""The computations behind the pipeline widgets: pure functions from settings to (figure, table).

`utils.widgets.pipeline` only wires sliders to these functions, so everything a learner sees in a widget is computed
here and unit-tested: the Gantt chart and Table 2 quantities of one schedule (`explore_schedule`), DualPipe's
phases, the exercise judges. All schedules side by side (`compare_schedules`) live in `utils.pipeline.compare`.
Invalid settings (odd ranks for DualPipe, too few micro-batches, W > B...) do not raise: the view carries
the library's teaching message instead, so a widget shows the rule rather than a traceback.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import replace

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from utils import inputs as arg
from utils.pipeline import plots, table2, virtual_stages
from utils.pipeline.costs import COMM_SHARE, CostModel
from utils.pipeline.generators.bidirectional import DUALPIPE_ACTIONS_PER_STEP, dualpipe_phase_steps
from utils.pipeline.registry import SCHEDULE_NAMES, make_schedule, schedule_key
from utils.pipeline.schedule import Action, OverlappedAction, Schedule, parse_action
from utils.pipeline.simulate import simulate
from utils.pipeline.timeline import Timeline
from utils.view import View

_TOLERANCE = 1e-9


def _schedule(schedule, where: str) -> Schedule:
    return arg.instance(schedule, "schedule", Schedule, "a Schedule (e.g. make_schedule('1f1b', 4, 8))",
                        where=where)


def _timeline(timeline, where: str) -> Timeline:
    return arg.instance(timeline, "timeline", Timeline, "a Timeline (from simulate or execute)", where=where)


def _costs(costs, where: str) -> CostModel:
    return arg.instance(costs, "costs", CostModel, "a CostModel (e.g. CostModel(F=1, B=2, W=1))", where=where)


def _rank(rank, n_ranks: int, where: str) -> int:
    return arg.whole(rank, "rank", low=0, high=n_ranks - 1, where=where,
                     why=f"the schedule has ranks 0..{n_ranks - 1}")



# Table 2's formulas as the report prints them (PP = number of model chunks, Schedule.n_chunks); DualPipeV's
# row is the deepseek-ai/DualPipe repository's, 1f1b-overlap's the course's (utils.pipeline.table2).
_BUBBLE_TEXT = {"1f1b": "(PP-1)(F+B)", "zb1p": "(PP-1)(F+B-2W)", "dualpipe": "(PP/2-1)(F&B+B-3W)",
                "dualpipev": "(PP/2-1)(F&B+B-3W)", "1f1b-overlap": "(PP-1)(F+B+2a)"}
_ACTIVATIONS_TEXT = {"1f1b": "PP", "zb1p": "PP", "dualpipe": "PP+1", "dualpipev": "PP+1",
                     "1f1b-overlap": "min(2PP, M)"}


def closed_form(schedule: Schedule, costs: CostModel) -> dict | None:
    """Table 2's closed-form values for ``schedule`` under ``costs`` (``utils.pipeline.table2``), with PP = its number
    of model chunks; for interleaved 1F1B and ZB-V the closed forms of their papers
    (``utils.pipeline.virtual_stages``, PP = ranks, costs of one chunk); 1f1b-overlap's closed forms (beside
    Table 2, ``utils.pipeline.table2``); None for schedules without one (naive, GPipe).

    Keys: ``pp``, ``bubble``, ``activations``, ``parameters``, their formulas as text (``*_formula``) and
    ``assumptions`` ("hold" or the assumption these costs break).
    """
    _schedule(schedule, "closed_form")
    _costs(costs, "closed_form")
    name = schedule.name
    if name in virtual_stages.VIRTUAL_SCHEDULES:
        return _virtual_closed_form(schedule, costs)
    if name == table2.OVERLAP_METHOD:
        return _overlap_closed_form(schedule, costs)
    if name not in table2.METHODS:
        return None
    pp = schedule.n_chunks
    ok, why = table2.assumptions_hold(name, costs, pp, schedule.n_microbatches)
    return {
        "pp": pp,
        "bubble": table2.bubble(name, pp, costs),
        "activations": table2.peak_activations(name, pp),
        "parameters": table2.param_copies(name),
        "bubble_formula": f"{_BUBBLE_TEXT[name]}, PP={pp}",
        "activations_formula": f"{_ACTIVATIONS_TEXT[name]}, PP={pp}",
        "parameters_formula": _PARAMS_TEXT[name],
        "assumptions": "hold" if ok else why,
    }


_PARAMS_TEXT = {"1f1b": "1x", "zb1p": "1x", "dualpipe": "2x: two copies of a 1/PP stage (both directions)",
                "dualpipev": "2 stages of 1/PP, PP = 2 x ranks: one copy of the model over all ranks"}


def _virtual_closed_form(schedule: Schedule, costs: CostModel) -> dict:
    """Interleaved 1F1B (Narayanan et al. 2021, Sec. 2.2.2) and ZB-V (Qi et al. 2024, Sec. 6) in chunk costs."""
    pp, v = schedule.n_ranks, virtual_stages.chunks_per_rank(schedule)
    ok, why = virtual_stages.assumptions_hold(schedule, costs)
    if schedule.name == "interleaved1f1b":
        bubble_text = f"(PP-1)(F+B) per chunk = (PP-1)(F+B)/v per rank's share, PP={pp}, v={v}"
        act_text = f"(v-1)P+2PP-1, P={virtual_stages.interleaved_rounds(pp, schedule.n_microbatches)[1]}"
    else:
        bubble_text = f"(PP-1)F per chunk (F = B-W = W), PP={pp}"
        act_text = f"2PP (M >= 2PP-1), PP={pp}"
    return {
        "pp": pp,
        "bubble": virtual_stages.bubble(schedule, costs),
        "activations": max(virtual_stages.peak_activations(schedule, r) for r in range(pp)),
        "parameters": v,
        "bubble_formula": bubble_text,
        "activations_formula": act_text,
        "parameters_formula": f"{v} stages of 1/(v PP): one rank's 1/PP share, one copy",
        "assumptions": "hold" if ok else why,
    }


def _overlap_closed_form(schedule: Schedule, costs: CostModel) -> dict:
    pp, m = schedule.n_ranks, schedule.n_microbatches
    ok, why = table2.overlap_assumptions_hold(costs)
    a = costs.dispatch + costs.combine
    return {
        "pp": pp,
        "bubble": table2.bubble_1f1b_overlap(pp, costs.F, costs.B, a),
        "activations": table2.overlap_peak_activations(pp, m),
        "parameters": 1,
        "bubble_formula": f"{_BUBBLE_TEXT['1f1b-overlap']}, PP={pp}, a={a:g}",
        "activations_formula": f"{_ACTIVATIONS_TEXT['1f1b-overlap']}, PP={pp}, M={m}",
        "parameters_formula": "1x",
        "assumptions": "hold" if ok else why,
    }


#: Rows of the explorer's table whose names say what they hold: the largest activation peak of any rank (Table
#: 2's quantity, not the worst rank's), and the stages a rank holds (Table 2's parameters: DualPipe's two are
#: copies of a 1/PP share, ZB-V's and DualPipeV's two are halves of a rank's share).
PEAK_ROW = "peak activations (largest of any rank)"
STAGES_ROW = "stages held per rank (parameters)"


def simulated_quantities(timeline: Timeline) -> dict:
    """The quantities the explorer reports, read off a timeline: the step; the bubble (the largest idle of any
    rank, Table 2's quantity) and the rank it is on; then the time budget (``Timeline.budget``) of one named
    rank, the worst rank (the one that computes least, ``Timeline.worst_budget``): its idle, exposed
    communication and time not computing, so every budget number is that one rank's; and the per-rank maxima
    of activations and parameter copies (Table 2's quantities)."""
    _timeline(timeline, "simulated_quantities")
    ranks = range(timeline.n_ranks)
    worst = timeline.worst_budget()
    # the lowest rank among those idling most, ties counted to float rounding (sums in another order)
    top, tol = timeline.worst_idle, _TOLERANCE * max(1.0, timeline.makespan)
    idlest = min(r for r in ranks if timeline.idle(r) >= top - tol)
    return {
        "step time (makespan)": timeline.makespan,
        "bubble: largest idle of any rank": timeline.worst_idle,
        "rank of the bubble (idles most)": float(idlest),
        "bubble ratio": timeline.bubble_ratio,
        "rank computing least": float(worst.rank),
        "idle on the rank computing least": worst.idle,
        "exposed communication on the rank computing least": worst.comm_exposed,
        "time not computing on the rank computing least": worst.not_computing,
        PEAK_ROW: max(timeline.peak_activations(r) for r in ranks),
        STAGES_ROW: max(timeline.param_copies(r) for r in ranks),
    }


def summary_table(timeline: Timeline, costs: CostModel) -> pd.DataFrame:
    """One row per quantity: simulated value, the closed form (Table 2's, or the paper's of a schedule Table 2
    does not list) where there is one, and whether they agree."""
    _timeline(timeline, "summary_table")
    _costs(costs, "summary_table")
    sim = simulated_quantities(timeline)
    formula = closed_form(timeline.schedule, costs) or {}
    table2_of = {
        "bubble: largest idle of any rank": "bubble",
        PEAK_ROW: "activations",
        STAGES_ROW: "parameters",
    }
    rows = []
    for quantity, value in sim.items():
        key = table2_of.get(quantity)
        expected = float(formula[key]) if key and formula else math.nan
        agrees = None if math.isnan(expected) else \
            bool(abs(value - expected) <= _TOLERANCE * max(1.0, abs(value)))
        rows.append({"quantity": quantity, "simulated": float(value), "closed form": expected,
                     "formula": formula.get(f"{key}_formula", "") if key else "", "agrees": agrees})
    return pd.DataFrame(rows).set_index("quantity")


def _note(timeline: Timeline, costs: CostModel) -> str:
    formula = closed_form(timeline.schedule, costs)
    if formula is None:
        return f"Table 2 does not list {timeline.schedule.name}."
    if timeline.schedule.name in virtual_stages.VIRTUAL_SCHEDULES:
        source = {"interleaved1f1b": "Narayanan et al. 2021, Sec. 2.2.2", "zbv": "Qi et al. 2024, Sec. 6"}
        where = f"Not a row of Table 2: closed forms of {source[timeline.schedule.name]}, in costs of one chunk"
        if formula["assumptions"] == "hold":
            return f"{where}; their assumptions hold for these costs: the formulas should be exact."
        return f"{where}; an assumption does not hold: {formula['assumptions']}."
    if timeline.schedule.name == table2.OVERLAP_METHOD:
        return ("1f1b-overlap is not in Table 2; its closed forms (utils.pipeline.table2) "
                + ("hold for these costs." if formula["assumptions"] == "hold"
                   else f"do not hold: {formula['assumptions']}."))
    if formula["assumptions"] == "hold":
        return "Table 2's assumptions hold for these costs: the formulas should be exact."
    return f"Table 2's assumptions do not all hold: {formula['assumptions']}."


def explore_schedule(
    name: str, ranks: int, microbatches: int, F: float = 1.0, B: float = 2.0, W: float = 1.0,
    FB: float = 3.0, p2p: float = 0.0, dispatch: float = 0.0, combine: float = 0.0, *,
    labels: bool | None = None, plot: bool = True, comm_share: float = COMM_SHARE,
) -> View:
    """Simulate schedule ``name`` on ``ranks`` x ``microbatches`` with costs (F, B, W, F&B, p2p latency and
    the expert all-to-all of a chunk, ``dispatch`` + ``combine``).

    Returns the Gantt chart, a table of makespan, worst-rank idle, bubble ratio, the worst rank's exposed
    communication and time not computing (the time budget), peak activations and parameter copies with
    Table 2's closed-form value beside the simulated one (DeepSeek-V3 report, Sec. 3.2.1, Table 2), as a
    ``View`` whose ``result`` is the simulated Timeline; for an invalid combination, ``View(error=<the rule>)``.
    ``plot=False`` skips the chart (``figure`` is None) when only the numbers are wanted. ``comm_share`` is
    the share of SMs an overlapped pair gives to communication (``CostModel.comm_share``, default DeepSeek-V3's
    20/132: the pair computes 1/(1 - share) times longer; 0: overlap is free).
    """
    try:
        labels = None if labels is None else arg.flag(labels, "labels", where="explore_schedule")
        plot = arg.flag(plot, "plot", where="explore_schedule")
        costs = CostModel(F=F, B=B, W=W, FB=FB, p2p=p2p, dispatch=dispatch, combine=combine,
                          comm_share=comm_share)
        schedule = recent_schedule(name, ranks, microbatches)
        timeline = simulate(schedule, costs)
    except ValueError as err:
        return View(error=str(err))
    figure = plots.plot_timeline(timeline, labels=labels).figure if plot else None
    return View(figure=figure, table=summary_table(timeline, costs), note=_note(timeline, costs),
                result=timeline)


def recent_schedule(name: str, ranks: int, microbatches: int) -> Schedule:
    """``make_schedule``, remembering the last few: moving a cost slider of the explorer re-simulates the
    same (immutable) schedule, whose checked structure and dependency plan are kept on it, so only the
    simulation itself runs again. Bad arguments raise as ``make_schedule`` does (and are not remembered)."""
    try:
        return _remembered_schedule(name, ranks, microbatches)
    except TypeError as error:
        if isinstance(error, ValueError):  # the library's own message about the argument
            raise
        return make_schedule(name, ranks, microbatches)  # unhashable: make_schedule says what is wrong


@functools.lru_cache(maxsize=4, typed=True)  # typed: 4.0 is not taken for a remembered 4
def _remembered_schedule(name: str, ranks: int, microbatches: int) -> Schedule:
    return make_schedule(name, ranks, microbatches)


# --- DualPipe's eight phases, for drawing the schedule phase by phase -------------------------------------

#: DualPipe's phases in order (DeepSeek-V3 report, Sec. 3.2.1, Figure 5; deepseek-ai/DualPipe ``step()``).
DUALPIPE_PHASES = (
    "1 warm-up forwards (F0)",
    "2 forwards of both directions (F0 F1)",
    "3 zero-bubble backwards (I1 W1 F1)",
    "4 main: overlapped pairs (F0&B1, F1&B0)",
    "5 cool-down (B1, F1&B0)",
    "6 backwards of both directions (B1 B0, second half I only)",
    "7 deferred weights (W, I0)",
    "8 remaining weights (W)",
)


def dualpipe_phase_lengths(schedule: Schedule, rank: int) -> tuple[int, ...]:
    """How many entries of ``schedule.actions[rank]`` each of DualPipe's eight phases holds.

    The counts are the generator's own (``utils.pipeline.generators.bidirectional.dualpipe_phase_steps``), in terms of
    h = half the pipeline (PP/2 for DualPipe, N for DualPipeV), the rank's distance ``hr`` to the nearer end,
    and c = micro-batches per direction (M/2 for DualPipe, M for DualPipeV). A test checks they add up.
    """
    _schedule(schedule, "dualpipe_phase_lengths")
    rank = _rank(rank, schedule.n_ranks, "dualpipe_phase_lengths")
    if schedule.name == "dualpipe":
        h, hr, c = schedule.n_ranks // 2, min(rank, schedule.n_ranks - 1 - rank), schedule.n_microbatches // 2
        middle = rank in (h - 1, h)
    elif schedule.name == "dualpipev":
        h, hr, c = schedule.n_ranks, rank, schedule.n_microbatches
        middle = rank == schedule.n_ranks - 1
    else:
        raise ValueError(f"only dualpipe and dualpipev have DualPipe's eight phases; got {schedule.name!r}.")
    steps = dualpipe_phase_steps(h, hr, c)
    lengths = [n * per_step for n, per_step in zip(steps, DUALPIPE_ACTIONS_PER_STEP, strict=True)]
    lengths[3] += 1 if middle and steps[3] > 0 else 0  # the middle ranks split their first pair
    return tuple(lengths)


def dualpipe_phase_of(schedule: Schedule) -> dict[tuple[int, int], int]:
    """Phase (0..7) of every entry of a DualPipe/DualPipeV schedule, keyed by (rank, position in its list)."""
    _schedule(schedule, "dualpipe_phase_of")
    phase: dict[tuple[int, int], int] = {}
    for rank in range(schedule.n_ranks):
        position = 0
        for p, length in enumerate(dualpipe_phase_lengths(schedule, rank)):
            for _ in range(length):
                phase[(rank, position)] = p
                position += 1
    return phase


def dualpipe_phase_idle(timeline: Timeline) -> pd.DataFrame:
    """Idle time of every rank inside each of DualPipe's eight phases (rank x phase), from a simulated or
    measured timeline: the wait before an action counts in that action's phase (an action waiting for its
    input), the wait after a rank's last action in the column ``after``. Rows sum to the budget's idle plus
    exposed communication between actions (``Timeline.budget``)."""
    of = dualpipe_phase_of(timeline.schedule)
    rows = []
    for rank, row in enumerate(timeline.intervals):
        idle = [0.0] * 9
        was_free = timeline.start
        for i, iv in enumerate(row):
            idle[of[(rank, i)]] += iv.start - was_free
            was_free = iv.end
        idle[8] = timeline.end - was_free
        rows.append(idle)
    return pd.DataFrame(rows, columns=[f"phase {p}" for p in range(1, 9)] + ["after"]).rename_axis("rank")


def plot_dualpipe_phases(timeline: Timeline, phases: Sequence[int] = range(8)) -> Figure:
    """DualPipe's Gantt chart built up phase by phase: panel k shows phases 1..k, the rest faded."""
    _timeline(timeline, "plot_dualpipe_phases")
    phases = [arg.whole(p, "every phase", low=0, high=len(DUALPIPE_PHASES) - 1, where="plot_dualpipe_phases",
                        why="DualPipe's phases are numbered 0..7") for p in arg.sequence(list(phases), "phases",
                                                                                        where="plot_dualpipe_phases")]
    of = dualpipe_phase_of(timeline.schedule)
    position = {id(iv): (iv.rank, i) for row in timeline.intervals for i, iv in enumerate(row)}
    phases = list(phases)
    n = timeline.n_ranks
    fig, axes = plt.subplots(len(phases), 1, figsize=(12, len(phases) * (0.9 + 0.3 * n)),
                             layout="constrained", squeeze=False)
    for ax, upto in zip(axes[:, 0], phases, strict=True):
        plots.plot_timeline(timeline, ax=ax, legend=ax is axes[0, 0],
                            highlight=lambda iv, upto=upto: of[position[id(iv)]] <= upto,
                            title=f"up to phase {DUALPIPE_PHASES[upto]}")
        ax.set_xlabel("")
    axes[-1, 0].set_xlabel(f"time ({timeline.time_unit})")
    fig.suptitle(f"{timeline.schedule.name}: {n} ranks, {timeline.schedule.n_microbatches} micro-batches, "
                 f"phase by phase")
    return fig


# --- exercise support: a learner's action list for one rank, checked by validating and simulating ----------

def with_rank_actions(schedule: Schedule, rank: int, actions: Sequence) -> Schedule:
    """``schedule`` with rank ``rank``'s list replaced by ``actions`` (Actions or strings like "0F1")."""
    where = "with_rank_actions"
    rank = _rank(rank, _schedule(schedule, where).n_ranks, where)
    actions = arg.sequence(actions, "actions", where=where, nonempty=False,
                           why="one rank's list of actions, as strings like '0F1' or Action objects")
    parsed = tuple(parse_action(a) if isinstance(a, str) else
                   arg.instance(a, "every action", (Action, OverlappedAction), "an Action or a string like '0F1'",
                                where=where) for a in actions)
    rows = list(schedule.actions)
    rows[rank] = parsed
    return replace(schedule, actions=tuple(rows))


def rank_action_strings(name: str, rank: int, n_ranks: int, n_microbatches: int) -> list[str]:
    """The library's action list of ``rank`` as strings: the reference of "write rank r's list" exercises."""
    schedule = make_schedule(name, n_ranks, n_microbatches)
    return [str(a) for a in schedule.actions[_rank(rank, schedule.n_ranks, "rank_action_strings")]]


def rank_answer_report(name: str, rank: int, n_ranks: int, n_microbatches: int, answer: Sequence,
                       costs: CostModel | None = None) -> tuple[str, Figure | None]:
    """Judge a learner's list for one rank: validate the schedule it makes, simulate it, compare with the
    library's. Returns the verdict (the validator's message if the list cannot run) and, when it runs, a
    figure with the two timelines (yours above, expected below)."""
    where = "rank_answer_report"
    costs = CostModel(F=1.0, B=2.0, W=1.0) if costs is None else _costs(costs, where)
    expected = simulate(make_schedule(name, n_ranks, n_microbatches), costs)
    rank = _rank(rank, n_ranks, where)
    arg.sequence(answer, "answer", where=where, nonempty=False,
                 why=f"your list of rank {rank}'s actions, as strings like '0F1'")
    try:
        yours_schedule = with_rank_actions(expected.schedule, rank, answer)
        yours = simulate(yours_schedule, costs)
    except ValueError as err:
        return f"your list for rank {rank} cannot run: {err}", None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 2 * (1.2 + 0.35 * n_ranks)), layout="constrained")
    plots.plot_timeline(yours, ax=top, title=f"yours (rank {rank} replaced): step {yours.makespan:.4g}, "
                                              f"worst idle {yours.worst_idle:.4g}")
    plots.plot_timeline(expected, ax=bottom, legend=False, title=f"expected {name}: step "
                        f"{expected.makespan:.4g}, worst idle {expected.worst_idle:.4g}")
    verdict = (f"your list runs: step {yours.makespan:.4g} vs {expected.makespan:.4g} expected; peak "
               f"activations on rank {rank}: {yours.peak_activations(rank)} vs "
               f"{expected.peak_activations(rank)}")
    return verdict, fig


class RankListJudge:
    """Reference and picture for ``utils.checks.check`` in "write rank r's action list" exercises.

        judge = RankListJudge("1f1b")
        check(my_rank_list, judge.reference, inputs=[(0, 4, 8), (3, 4, 8)], show=judge.show)

    ``reference(rank, n_ranks, n_microbatches)`` is the library's list (as strings) and remembers the case;
    ``show(yours, expected)`` (called by check on a mismatch) validates and simulates your list in that case,
    prints the verdict and draws your timeline above the expected one.
    """

    def __init__(self, name: str, costs: CostModel | None = None):
        arg.choice(schedule_key(name), "name", SCHEDULE_NAMES, where="RankListJudge")
        if costs is not None:
            _costs(costs, "RankListJudge")
        self.name = name
        self.costs = costs
        self.case: tuple[int, int, int] | None = None

    def reference(self, rank: int, n_ranks: int, n_microbatches: int) -> list[str]:
        self.case = (rank, n_ranks, n_microbatches)
        return rank_action_strings(self.name, rank, n_ranks, n_microbatches)

    def show(self, yours, expected) -> None:
        if self.case is None:
            return
        try:
            verdict, fig = rank_answer_report(self.name, *self.case, answer=yours, costs=self.costs)
        except ValueError as error:  # e.g. the answer is not a list: say so rather than stop the check
            verdict, fig = str(error), None
        print("   " + verdict)
        if fig is not None:
            plt.show()


def dualpipe_as_dualpipev(schedule: Schedule) -> tuple[tuple, ...]:
    """The first half of a DualPipe schedule (2N ranks, 2K micro-batches) in DualPipeV's ids: ranks 0..N-1.

    DualPipe's stage id s becomes s (direction 0) or s - 2N (direction 1, ids 2N..4N-1); micro-batch m
    becomes m mod K (direction 1's micro-batches K..2K-1 are DualPipeV's 0..K-1). The result equals
    ``make_schedule("dualpipev", N, K).actions``: DualPipeV is DualPipe cut in half.
    """
    _schedule(schedule, "dualpipe_as_dualpipev")
    if schedule.name != "dualpipe":
        raise ValueError(f"dualpipe_as_dualpipev cuts a dualpipe schedule in half; got {schedule.name!r}.")
    pp, k = schedule.n_ranks, schedule.n_microbatches // 2

    def to_v(a):
        if isinstance(a, OverlappedAction):
            return OverlappedAction(to_v(a.forward), to_v(a.backward))
        return Action(a.stage if a.stage < pp else a.stage - pp, a.kind, a.microbatch % k)

    return tuple(tuple(to_v(a) for a in schedule.actions[r]) for r in range(pp // 2))
