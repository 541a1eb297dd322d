"""Table 2 of the DeepSeek-V3 report in closed form: pipeline bubble, activation memory, parameter copies.

The report (Sec. 3.2.1, Table 2) compares, for PP pipeline stages:

=========  =========================  ==========  ==========
method     bubble                     parameter   activation
=========  =========================  ==========  ==========
1F1B       (PP-1)(F+B)                1x          PP
ZB1P       (PP-1)(F+B-2W)             1x          PP
DualPipe   (PP/2-1)(F&B+B-3W)         2x          PP+1
=========  =========================  ==========  ==========

F forward chunk, B full backward chunk, W its weight part, and F&B "the execution time of two mutually
overlapped forward and backward chunks" (the report's words): all four are **execution times**, how long a
chunk holds its GPU, its communication included. The course's ``CostModel`` separates the two: F, B, W and
F&B there are compute, and the expert all-to-all a = dispatch + combine is added by the simulator (a lone
chunk waits for all of it, a pair hides each chunk's behind the partner's compute, on the SMs the
communication leaves: ``CostModel.comm_share``). ``execution_times`` turns a cost model into the report's
quantities, F = F + a, B = B + a, W = W (no all-to-all) and F&B = the pair's length, and the formulas below
take those. So Table 2 holds with communication too: with a = 1 per chunk (F = 2, B = 3, W = 1 and F&B = 3
when overlap is free) the simulator gives the three rows' bubbles exactly at PP 4, 8 and 16. Without
communication execution time and compute are the same. An F&B compute below F + B says that the two chunks'
computations themselves overlap (compute overlap, ``CostModel.compute_overlap``), which needs a reason (e.g.
a memory-bound kernel of one chunk sharing the GPU with the matrix multiplications of the other); the
report claims none.
Here "bubble" is the idle time of the worst rank in one step (``Timeline.budget``), "activation" the peak
number of stage-activations (one micro-batch through one stage) a rank holds, and "parameter" the stages'
worth of parameters a rank keeps. For DualPipe and DualPipeV, PP is the number of model chunks (stages of the
model): the number of ranks for DualPipe, twice the number of ranks for DualPipeV (``Schedule.n_chunks``).
DualPipeV is not a row of the report's Table 2: its row comes from the deepseek-ai/DualPipe repository
(README, "Pipeline Bubbles and Memory Usage Comparison").

These formulas are exact only under the assumptions each function states (equal costs on every stage, no p2p
latency, and each method's own); ``assumptions_hold`` checks them and ``simulated_table2`` puts the formula
beside the simulator's answer (``utils.pipeline.simulate``).

Beside Table 2 (not one of its rows): ``1f1b-overlap``, 1F1B with its steady forward and backward run as an
overlapped pair, the baseline for DualPipe's communication hiding. Its step time, bubble, exposed
communication and activations in closed form are ``overlap_*`` below, under ``overlap_assumptions_hold``.
"""

from __future__ import annotations

from utils import inputs as arg
from utils.pipeline.costs import CostModel
from utils.pipeline.registry import TABLE2_SCHEDULES, make_schedule, schedule_key
from utils.pipeline.simulate import action_length, simulate

METHODS = TABLE2_SCHEDULES


def bubble_1f1b(pp: int, F: float, B: float) -> float:
    """1F1B bubble (PP-1)(F+B).

    Assumes: costs are the same on every stage, p2p latency 0. Then rank 0 waits (PP-1)(F+B) for the first
    backward to come back, and every rank has the same busy time. Holds for any number of micro-batches.
    """
    pp = _pp(pp, "bubble_1f1b")
    _cost(F, "F", "bubble_1f1b"), _cost(B, "B", "bubble_1f1b")  # checked, kept as given (ints stay ints)
    return (pp - 1) * (F + B)


def bubble_zb1p(pp: int, F: float, B: float, W: float) -> float:
    """ZB1P (ZB-H1) bubble (PP-1)(F+B-2W) = (PP-1)(F + B_input - W).

    Assumes: equal costs on every stage, p2p latency 0, at least PP micro-batches (so each rank has enough W
    passes to postpone), W <= F (a postponed W fits in the wait for the next forward) and W <= B - W (it fits
    in the wait between two input-backwards in the cool-down). Otherwise the simulated bubble is larger.
    """
    pp = _pp(pp, "bubble_zb1p")
    for v, n in ((F, "F"), (B, "B"), (W, "W")):
        _cost(v, n, "bubble_zb1p")
    return (pp - 1) * (F + B - 2 * W)


def bubble_dualpipe(pp: int, FB: float, B: float, W: float) -> float:
    """DualPipe / DualPipeV bubble (PP/2-1)(F&B+B-3W), PP = number of model chunks.

    Assumes: equal costs on every stage, p2p latency 0, F = B - W (forward as long as the input-backward,
    the balance DualPipe is designed for), W <= F, and an even number of micro-batches >= 2 PP for DualPipe
    (>= PP for DualPipeV). All four are execution times (``execution_times``): F&B is how long a pair holds
    its GPU, its compute on the SMs the hidden all-to-all leaves plus what it cannot hide. Otherwise the
    simulated bubble differs (larger or smaller: with F < B - W it is smaller than the formula says).
    """
    pp = _pp(pp, "bubble_dualpipe", even=True)
    for v, n in ((FB, "FB"), (B, "B"), (W, "W")):
        _cost(v, n, "bubble_dualpipe")
    return (pp / 2 - 1) * (FB + B - 3 * W)


def peak_activations(method: str, pp: int) -> int:
    """Peak stage-activations held by the busiest rank: PP (1F1B, ZB1P), PP+1 (DualPipe, DualPipeV).

    Assumes at least PP micro-batches (2 PP for DualPipe), and that an activation is held from a stage's F
    until its W or full B ends.
    """
    method = _method(method)
    pp = _pp(pp, "peak_activations", even=method.startswith("dualpipe"))
    return {"1f1b": pp, "zb1p": pp, "dualpipe": pp + 1, "dualpipev": pp + 1}[_method(method)]


def param_copies(method: str) -> int:
    """Stages' worth of parameters on a rank: 1 (1F1B, ZB1P), 2 (DualPipe keeps both directions' copies;
    DualPipeV two stages of half the size, so one copy of the model over all ranks)."""
    return {"1f1b": 1, "zb1p": 1, "dualpipe": 2, "dualpipev": 2}[_method(method)]


def execution_times(costs: CostModel) -> dict[str, float]:
    """The report's F, B, W and F&B for ``costs``: how long each chunk holds its GPU, communication included
    (``utils.pipeline.simulate.action_length``, the simulator's own rule): F + a, B + a, W, and an
    overlapped pair's compute (on the SMs its hidden all-to-all leaves) plus the all-to-all it cannot hide.
    Without all-to-all they are the cost model's F, B, W and F&B. Uniform costs only (every stage alike)."""
    arg.instance(costs, "costs", CostModel, "a CostModel (e.g. CostModel(F=1, B=2, W=1))",
                 where="execution_times")
    return {kind: action_length(costs, kind) for kind in ("F", "B", "W", "FB")}


def bubble(method: str, pp: int, costs: CostModel) -> float:
    """The Table 2 bubble of ``method`` for PP stages (model chunks) under ``costs``, with the report's
    definitions: F, B, W and F&B are the chunks' execution times (``execution_times``)."""
    method = _method(method)
    arg.instance(costs, "costs", CostModel, "a CostModel (e.g. CostModel(F=1, B=2, W=1))", where="bubble")
    x = execution_times(costs)
    if method == "1f1b":
        return bubble_1f1b(pp, x["F"], x["B"])
    if method == "zb1p":
        return bubble_zb1p(pp, x["F"], x["B"], x["W"])
    return bubble_dualpipe(pp, x["FB"], x["B"], x["W"])


def assumptions_hold(method: str, costs: CostModel, pp: int, n_microbatches: int) -> tuple[bool, str]:
    """Whether the Table 2 bubble formula of ``method`` is exact for these costs; the reason if not."""
    method = _method(method)
    arg.instance(costs, "costs", CostModel, "a CostModel (e.g. CostModel(F=1, B=2, W=1))",
                 where="assumptions_hold")
    pp = _pp(pp, "assumptions_hold")
    n_microbatches = arg.whole(n_microbatches, "n_microbatches", low=1, high=arg.MAX_MICROBATCHES,
                               where="assumptions_hold", why="a training step needs at least one micro-batch")
    if costs.p2p > 0:
        return False, "Table 2 counts no p2p latency (p2p must be 0)"
    if not costs.uniform:
        return False, "Table 2 assumes every stage costs the same (chunk_scale all ones)"
    x = execution_times(costs)  # the report's F, B, W, F&B: execution times, communication included
    f, i, w = x["F"], x["B"] - x["W"], x["W"]
    if method == "zb1p":
        if n_microbatches < pp:
            return False, "ZB1P needs at least PP micro-batches to have W passes to postpone"
        if w > f or w > i:
            return False, "ZB1P needs W <= F and W <= B - W (execution times) so a postponed W fits in a wait"
    if method in ("dualpipe", "dualpipev"):
        if abs(f - i) > 1e-12:
            return False, ("DualPipe's formula assumes F = B - W (forward as long as the input-backward, "
                           "execution times)")
        if w > f:
            return False, "DualPipe's formula assumes W <= F"
    return True, "the formula is exact"


def simulated_table2(pp: int, n_microbatches: int, costs: CostModel) -> list[dict]:
    """Table 2 next to the simulator, for PP stages and ``n_microbatches``: one dict per method with
    ``method``, ``formula_bubble``, ``simulated_bubble``, ``formula_activations``, ``simulated_activations``,
    ``formula_params``, ``simulated_params`` and ``assumptions`` (why the two may differ).

    DualPipe runs PP ranks; DualPipeV runs PP/2 ranks (it has PP stages); both need PP even.
    """
    pp = _pp(pp, "simulated_table2", even=True)
    arg.instance(costs, "costs", CostModel, "a CostModel (e.g. CostModel(F=1, B=2, W=1))",
                 where="simulated_table2")
    rows = []
    for method in METHODS:
        ranks = pp // 2 if method == "dualpipev" else pp
        timeline = simulate(make_schedule(method, ranks, n_microbatches), costs)
        ok, why = assumptions_hold(method, costs, pp, n_microbatches)
        rows.append(
            {
                "method": method,
                "formula_bubble": bubble(method, pp, costs),
                "simulated_bubble": timeline.worst_idle,
                "formula_activations": peak_activations(method, pp),
                "simulated_activations": max(timeline.peak_activations(r) for r in range(ranks)),
                "formula_params": param_copies(method),
                "simulated_params": max(timeline.param_copies(r) for r in range(ranks)),
                "assumptions": why if not ok else "hold",
            }
        )
    return rows


def _pp(pp, where: str, even: bool = False) -> int:
    """PP, the number of pipeline stages (model chunks): whole, at least 1 (2 and even for DualPipe)."""
    pp = arg.whole(pp, "pp", low=2 if even else 1, high=2 * arg.MAX_RANKS, where=where,
                   why="DualPipe's two directions meet in the middle, so PP is even" if even else
                   "a pipeline has at least one stage")
    if even and pp % 2:
        arg.fail("pp", "an even number", pp, where=where,
                 why="DualPipe's two directions meet in the middle of the pipeline")
    return pp


def _cost(value, name: str, where: str) -> float:
    return arg.real(value, name, low=0, high=arg.MAX_COST, where=where,
                    why="a duration in time units cannot be negative")


def _method(method: str) -> str:
    arg.instance(method, "method", str, f"a Table 2 method, one of {', '.join(METHODS)}", where="Table 2")
    key = schedule_key(method)
    if key not in METHODS:
        raise arg.InputError(
            f"Table 2 covers {', '.join(METHODS)}; got {method!r} (naive and GPipe are not in the "
            f"report's table)."
        )
    return key


# ------------------------------------------------------------------------------------------------------------
# Beside Table 2: 1F1B with overlapped pairs (``1f1b-overlap``, utils.pipeline.generators.overlapped)
#
# Notation: a = dispatch + combine, the all-to-all of one chunk; a lone F or B waits for all of it, so it
# occupies its rank F + a or B + a. A pair computes on the SMs its hidden all-to-all leaves, k = 1/(1 - s)
# times slower (s = comm_share, k = 1 without all-to-all): it computes k F&B, each chunk's all-to-all hides
# behind the partner's k F or k B and only e = max(0, a - k B) + max(0, a - k F) shows, so a pair occupies
# P = k F&B + e. Rank r runs w_r = min(2 (PP-1-r) + 1, M) lone forwards, M - w_r pairs and w_r lone backwards.

OVERLAP_METHOD = "1f1b-overlap"


def overlap_exposed_per_pair(costs: CostModel) -> float:
    """e = max(0, a - k B) + max(0, a - k F): the all-to-all a pair cannot hide (each chunk's hides behind the
    partner's compute, k = ``pair_slowdown``; DeepSeek-V3 report Sec. 3.2.1, Figure 4). 0 while a <= k min(F, B)."""
    a, k = costs.all_to_all, costs.pair_slowdown
    return max(0.0, a - k * costs.B) + max(0.0, a - k * costs.F)


def overlap_pair_time(costs: CostModel) -> float:
    """P = k F&B + e: how long one overlapped pair occupies its rank: its compute on the SMs the all-to-all
    leaves (k = ``pair_slowdown``) and its exposed all-to-all."""
    return costs.FB * costs.pair_slowdown + overlap_exposed_per_pair(costs)


def overlap_step_time(pp: int, n_microbatches: int, costs: CostModel) -> float:
    """1f1b-overlap's step time: PP (F + B + 2a) + (M - 1) P.

    Read it on the last rank: its first forward arrives after PP-1 lone forwards upstream, it runs one lone
    forward, M - 1 pairs back to back and one lone backward, and the last gradient climbs PP-1 lone backwards.
    Exact under ``overlap_assumptions_hold`` (any M >= 1); otherwise the simulated step is longer.
    """
    a = costs.dispatch + costs.combine
    return pp * (costs.F + costs.B + 2 * a) + (n_microbatches - 1) * overlap_pair_time(costs)


def bubble_1f1b_overlap(pp: int, F: float, B: float, a: float = 0.0) -> float:
    """1f1b-overlap's bubble (worst-rank idle): (PP-1)(F + B + 2a), the last rank's.

    The same as 1F1B's with the all-to-all in its lone chunks: the pairs hide communication, they do not
    shorten the diagonal. With a = 0 it is Table 2's 1F1B bubble (PP-1)(F+B). Assumes
    ``overlap_assumptions_hold``.
    """
    return (pp - 1) * (F + B + 2 * a)


def overlap_rank_budget(pp: int, n_microbatches: int, rank: int, costs: CostModel) -> dict[str, float]:
    """The time budget of ``rank`` in closed form: compute, comm_exposed and idle (they sum to the step).

    compute = w_r (F + B) + (M - w_r) k F&B; comm_exposed = 2a w_r + (M - w_r) e (the lone chunks wait for all
    of their all-to-all, a pair for its excess); idle = step - both = (PP - w_r)(F + B + 2a) + (w_r - 1) P.
    compute and comm_exposed only depend on the rank's list of actions; idle needs ``overlap_step_time``.
    """
    w = min(2 * (pp - 1 - rank) + 1, n_microbatches)
    pairs = n_microbatches - w
    a = costs.dispatch + costs.combine
    compute = w * (costs.F + costs.B) + pairs * costs.FB * costs.pair_slowdown
    exposed = 2 * a * w + pairs * overlap_exposed_per_pair(costs)
    return {"compute": compute, "comm_exposed": exposed,
            "idle": overlap_step_time(pp, n_microbatches, costs) - compute - exposed}


def overlap_comm_exposed(pp: int, n_microbatches: int, costs: CostModel) -> float:
    """Exposed communication of the worst-idle rank (the last): 2a + (M - 1) e. 1F1B's is 2a M on every rank;
    rank 0, with the longest warm-up, exposes the most: 2a w_0 + (M - w_0) e."""
    return overlap_rank_budget(pp, n_microbatches, pp - 1, costs)["comm_exposed"]


def overlap_peak_activations(pp: int, n_microbatches: int) -> int:
    """Peak stage-activations of 1f1b-overlap's busiest rank (rank 0): min(2 PP, M), twice 1F1B's PP.

    Rank r holds its w_r warm-up forwards, and a pair's forward starts before its backward frees one:
    w_r + 1 = 2 (PP - r). Holds whatever the costs (it depends on each rank's order of actions only).
    """
    return min(2 * pp, n_microbatches)


def one_f_one_b_step_time(pp: int, n_microbatches: int, costs: CostModel) -> float:
    """1F1B's step time with the all-to-all in every chunk: (M + PP - 1)(F + B + 2a), for comparison with
    ``overlap_step_time``. Assumes equal costs on every stage and p2p latency 0."""
    a = costs.dispatch + costs.combine
    return (n_microbatches + pp - 1) * (costs.F + costs.B + 2 * a)


def overlap_assumptions_hold(costs: CostModel) -> tuple[bool, str]:
    """Whether 1f1b-overlap's closed forms are exact for these costs; the reason if not.

    They assume equal costs on every stage, p2p latency 0 and max(F, B) + a <= P <= F + B + 2a: a pair lasts
    at least as long as a lone forward or backward with its all-to-all, so the pairs, not the lone chunks, set
    the pace; and no longer than its two chunks run alone with their all-to-all, so the last rank (most pairs)
    holds the bubble. The first always holds when F&B = F + B (the course's default, no compute overlap); the
    second holds while the slowdown of a pair's compute costs less than the all-to-all it hides.
    """
    if costs.p2p > 0:
        return False, "the closed forms assume p2p latency 0"
    if not costs.uniform:
        return False, "the closed forms assume every stage costs the same (chunk_scale all ones)"
    a = costs.dispatch + costs.combine
    if overlap_pair_time(costs) < max(costs.F, costs.B) + a - 1e-12:
        return False, ("a pair (F&B plus its exposed all-to-all) is shorter than a lone chunk with its "
                       "all-to-all: the lone chunks set the pace (only possible with compute overlap, F&B < F + B)")
    if overlap_pair_time(costs) > costs.F + costs.B + 2 * a + 1e-12:
        return False, ("a pair lasts longer than its two chunks alone with their all-to-all (P > F + B + 2a): "
                       "the lone chunks are then faster than a pair, so the rank with fewest pairs idles most")
    return True, "the formulas are exact"
