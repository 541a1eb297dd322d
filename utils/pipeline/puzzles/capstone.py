"""The capstone's design puzzles (notebook 07): pick a schedule under a memory cap, and size the batch so
that a rank computes most of its step. Both are graded by the simulator on the report's costs (an all-to-all
in every chunk, pairs computing on 112 of 132 SMs: ``CostModel.comm_share``); each target is computed from
the puzzle's reference answer, never written down here."""

from __future__ import annotations

from functools import cache

from utils import inputs as arg
from utils.pipeline import virtual_stages
from utils.pipeline.costs import CostModel
from utils.pipeline.puzzles.base import TOL, Puzzle, Verdict
from utils.pipeline.registry import CHUNKS_PER_RANK, COMPARED_SCHEDULES, make_schedule, schedule_name
from utils.pipeline.simulate import simulate
from utils.pipeline.timeline import Timeline

#: The report's preset of the capstone, per 1/PP of the model: F=1, B=2, W=1, an all-to-all of one unit
#: per chunk (dispatch + combine), pairs on 112 of 132 SMs (the default comm_share).
REPORT_COSTS = CostModel(F=1.0, B=2.0, W=1.0, dispatch=0.5, combine=0.5)


def run_schedule(name: str, n_ranks: int, n_microbatches: int, costs: CostModel) -> Timeline:
    """Simulate schedule ``name`` on ``n_ranks`` devices holding the same model: schedules that cut it into
    v PP stages (``CHUNKS_PER_RANK``) get stages of 1/v the cost (``virtual_stages.costs_per_stage``)."""
    return simulate(make_schedule(name, n_ranks, n_microbatches), virtual_stages.costs_per_stage(name, costs))


def device_memory(timeline: Timeline, name: str) -> tuple[float, float]:
    """(parameters, peak activations) per device in model terms: parameters in units of 1/PP of the model,
    activations in units of one such stage's activations for one micro-batch (the worst rank)."""
    size = 1.0 / CHUNKS_PER_RANK.get(name, 1)
    ranks = range(timeline.n_ranks)
    params = max(timeline.param_copies(r) for r in ranks) * size
    return params, max(timeline.peak_activations(r) for r in ranks) * size


def memory_cap_choice_puzzle(n_ranks: int = 8, n_microbatches: int = 32, comm_ratio: float = 1.5,
                             max_activations: float = 12.0, key: str = "capstone-schedule-under-a-cap") -> Puzzle:
    """Name the schedule of the fair comparison with the shortest simulated step among those that hold one
    copy of the parameters and at most ``max_activations`` stage-activations per device."""
    where = "memory_cap_choice_puzzle"
    arg.whole(n_ranks, "n_ranks", low=2, high=16, where=where)
    arg.whole(n_microbatches, "n_microbatches", low=1, high=64, where=where)
    arg.real(comm_ratio, "comm_ratio", low=0, high=10, where=where)
    arg.real(max_activations, "max_activations", low=1, high=1000, where=where)
    costs = CostModel(F=1.0, B=2.0, W=1.0, dispatch=comm_ratio / 2, combine=comm_ratio / 2)

    @cache
    def results() -> dict[str, tuple[float, float, float]]:
        out = {}
        for name in COMPARED_SCHEDULES:
            try:
                timeline = run_schedule(name, n_ranks, n_microbatches, costs)
            except ValueError:
                continue
            out[name] = (timeline.makespan, *device_memory(timeline, name))
        return out

    def fits(name: str) -> bool:
        _, params, acts = results()[name]
        return params <= 1 + TOL and acts <= max_activations + TOL

    def reference() -> str:
        return min((n for n in results() if fits(n)), key=lambda n: results()[n][0])

    def judge(answer) -> Verdict:
        try:
            name = schedule_name(str(answer))
        except ValueError as err:
            return Verdict(False, f"{err}")
        if name not in results():
            return Verdict(False, f"{name} is not one of the schedules compared here ({', '.join(results())}).")
        step, params, acts = results()[name]
        if params > 1 + TOL:
            return Verdict(False, f"{name} holds {params:g} copies of its share of the parameters per device: "
                                  f"over the cap of one copy.")
        if acts > max_activations + TOL:
            return Verdict(False, f"{name} holds {acts:g} stage-activations at its peak: over the cap of "
                                  f"{max_activations:g}.")
        best = results()[reference()][0]
        if step > best + TOL:
            return Verdict(False, f"{name} fits, with a step of {step:.4g} time units, but another schedule that "
                                  f"fits is faster: which ones hide the all-to-all?")
        return Verdict(True, f"{name}: {step:.4g} time units, {params:g}x parameters, {acts:g} "
                             f"stage-activations. What did it give up to fit?")

    statement = (
        f"{n_ranks} devices, {n_microbatches} micro-batches, an all-to-all of {comm_ratio:g} times a forward's "
        f"compute in every chunk, and pairs computing on 112 of 132 SMs. Each device has room for **one copy** "
        f"of its share of the parameters and at most **{max_activations:g} stage-activations** (a stage being "
        f"1/{n_ranks} of the model, as in `pipeline_table`'s `activation_memory`). Return the name of the schedule "
        f"with the shortest step that fits, one of {', '.join(COMPARED_SCHEDULES)}. The grader simulates it, "
        f"measures its memory and compares its step with every schedule that fits."
    )
    stub = ("def my_choice():\n"
            "    \"\"\"The name of one schedule, e.g. \"zb1p\".\"\"\"\n"
            "    raise NotImplementedError  # your choice here")
    hints = (
        "Only schedules with overlapped F&B pairs hide the all-to-all; every other one waits for all of it "
        "(the `comm_exposed` column of section 2). Which schedules have pairs?",
        "Of those, 1F1B-overlap holds 2 PP activations (its deeper warm-up) and DualPipe two copies of the "
        "parameters: compare both with the cap.",
        "DualPipeV cuts the model into 2 PP half-size stages and holds two of them per device: one copy of "
        "the parameters in all. Check its activations with `pipeline_table(replace(setting, pp="
        f"{n_ranks}, microbatches={n_microbatches}, comm_ratio={comm_ratio:g}))`.",
    )
    return Puzzle(key=key, title="Puzzle: the fastest schedule under a memory cap", statement=statement,
                  stub=stub, hints=hints, goal="the fastest schedule that fits the cap", reference=reference,
                  judge=judge)


def compute_share_puzzle(n_ranks: int = 16, share: float = 0.8, rank: int = 0,
                         key: str = "capstone-compute-share") -> Puzzle:
    """Find the fewest micro-batches for which DualPipe's rank ``rank`` computes at least ``share`` of its
    step on the report's costs (``REPORT_COSTS``)."""
    where = "compute_share_puzzle"
    arg.whole(n_ranks, "n_ranks", low=2, high=16, where=where)
    arg.real(share, "share", low=0.01, high=0.95, where=where, why="a share of the step that can be reached")
    arg.whole(rank, "rank", low=0, high=n_ranks - 1, where=where)
    limit = 256

    @cache
    def computed(m: int) -> float | None:
        try:
            timeline = run_schedule("dualpipe", n_ranks, m, REPORT_COSTS)
        except ValueError:
            return None  # a count DualPipe does not allow
        budget = timeline.budget(rank)
        return budget.compute / budget.makespan

    def allowed(m: int) -> bool:
        return computed(m) is not None

    def reference() -> int:
        return next(m for m in range(1, limit + 1) if allowed(m) and computed(m) >= share - TOL)

    def judge(answer) -> Verdict:
        m = arg.whole(answer, "your number of micro-batches", low=1, high=limit, where="the grader")
        if not allowed(m):
            return Verdict(False, f"DualPipe cannot run {m} micro-batches on {n_ranks} devices: it needs an even "
                                  f"number, at least {2 * n_ranks}.")
        if computed(m) < share - TOL:
            return Verdict(False, f"with {m} micro-batches rank {rank} computes {computed(m):.1%} of its step, "
                                  f"under {share:.0%}: more micro-batches.")
        fewer = [k for k in range(1, m) if allowed(k) and computed(k) >= share - TOL]
        if fewer:
            return Verdict(False, f"{m} micro-batches reach {computed(m):.1%}, but fewer do too: find the fewest.")
        return Verdict(True, f"{m} micro-batches: rank {rank} computes {computed(m):.1%} of its step. What does a "
                             f"larger batch cost DualPipe in activations?")

    statement = (
        f"DualPipe on {n_ranks} devices with the report's costs (F = 1, B = 2, W = 1, an all-to-all of 1 per "
        f"chunk, pairs on 112 of 132 SMs). Its bubble does not grow with the number of micro-batches (report "
        f"Sec. 3.2.1), so more of them amortise it. What is the **fewest** micro-batches for which rank {rank} "
        f"computes at least **{share:.0%}** of the step (`Timeline.budget({rank})`: compute / makespan)? The "
        f"grader simulates your number and the ones below it."
    )
    stub = ("def my_microbatches():\n"
            "    \"\"\"A whole number of micro-batches.\"\"\"\n"
            "    raise NotImplementedError  # your number here")
    hints = (
        f"Simulate one count, e.g. `simulate(make_schedule('dualpipe', {n_ranks}, 32), setting.costs).budget"
        f"({rank})`, with `setting` the report's preset. Which parts grow with the micro-batches, which stay?",
        f"Rank {rank}'s exposed communication plus idle stays the same as the micro-batches grow, and its compute "
        f"grows by the same amount with each extra micro-batch: simulate two counts (32 and 64) to get that "
        f"amount, then solve compute / (compute + not computing) >= {share:g} for the count.",
        f"DualPipe needs an even count of at least {2 * n_ranks}: round your solution up to an even count, "
        f"simulate it and the even count below it, and keep the fewest that reaches {share:.0%}.",
    )
    return Puzzle(key=key, title="Puzzle: how many micro-batches amortise DualPipe's bubble", statement=statement,
                  stub=stub, hints=hints, goal=f"the fewest micro-batches with rank {rank} computing {share:.0%}",
                  reference=reference, judge=judge)


#: The puzzles of notebook 07, by key.
CAPSTONE_PUZZLES = {p.key: p for p in (memory_cap_choice_puzzle(), compute_share_puzzle())}
