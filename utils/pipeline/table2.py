"""Table 2 of the DeepSeek-V3 report in closed form: pipeline bubble, activation memory, parameter copies.

The report (Sec. 3.2.1, Table 2) compares, for PP pipeline stages:

=========  =========================  ==========  ==========
method     bubble                     parameter   activation
=========  =========================  ==========  ==========
1F1B       (PP-1)(F+B)                1x          PP
ZB1P       (PP-1)(F+B-2W)             1x          PP
DualPipe   (PP/2-1)(F&B+B-3W)         2x          PP+1
=========  =========================  ==========  ==========

F forward chunk, B full backward chunk, W its weight part, F&B an overlapped forward-and-backward pair.
Here "bubble" is the idle time of the worst rank in one step, "activation" the peak number of
stage-activations (one micro-batch through one stage) a rank holds, and "parameter" the stages' worth of
parameters a rank keeps. For DualPipe and DualPipeV, PP is the number of model chunks (stages of the model):
the number of ranks for DualPipe, twice the number of ranks for DualPipeV (``Schedule.n_chunks``).

These formulas are exact only under the assumptions each function states; ``assumptions_hold`` checks them
and ``simulated_table2`` puts the formula beside the simulator's answer (``utils.pipeline.simulate``).
"""

from __future__ import annotations

from utils.pipeline.costs import CostModel
from utils.pipeline.registry import TABLE2_SCHEDULES, make_schedule, schedule_key
from utils.pipeline.simulate import simulate

METHODS = TABLE2_SCHEDULES


def bubble_1f1b(pp: int, F: float, B: float) -> float:
    """1F1B bubble (PP-1)(F+B).

    Assumes: costs are the same on every stage, p2p latency 0. Then rank 0 waits (PP-1)(F+B) for the first
    backward to come back, and every rank has the same busy time. Holds for any number of micro-batches.
    """
    return (pp - 1) * (F + B)


def bubble_zb1p(pp: int, F: float, B: float, W: float) -> float:
    """ZB1P (ZB-H1) bubble (PP-1)(F+B-2W) = (PP-1)(F + B_input - W).

    Assumes: equal costs on every stage, p2p latency 0, at least PP micro-batches (so each rank has enough W
    passes to postpone), W <= F (a postponed W fits in the wait for the next forward) and W <= B - W (it fits
    in the wait between two input-backwards in the cool-down). Otherwise the simulated bubble is larger.
    """
    return (pp - 1) * (F + B - 2 * W)


def bubble_dualpipe(pp: int, FB: float, B: float, W: float) -> float:
    """DualPipe / DualPipeV bubble (PP/2-1)(F&B+B-3W), PP = number of model chunks.

    Assumes: equal costs on every stage, p2p latency 0, F = B - W (forward as long as the input-backward,
    the balance DualPipe is designed for), W <= F, max(F, B) <= F&B <= F + B, and an even number of
    micro-batches >= 2 PP for DualPipe (>= PP for DualPipeV). Otherwise the simulated bubble differs (larger
    or smaller: with F < B - W it is smaller than the formula says).
    """
    return (pp / 2 - 1) * (FB + B - 3 * W)


def peak_activations(method: str, pp: int) -> int:
    """Peak stage-activations held by the busiest rank: PP (1F1B, ZB1P), PP+1 (DualPipe, DualPipeV).

    Assumes at least PP micro-batches (2 PP for DualPipe), and that an activation is held from a stage's F
    until its W or full B ends.
    """
    return {"1f1b": pp, "zb1p": pp, "dualpipe": pp + 1, "dualpipev": pp + 1}[_method(method)]


def param_copies(method: str) -> int:
    """Stages' worth of parameters on a rank: 1 (1F1B, ZB1P), 2 (DualPipe keeps both directions' copies;
    DualPipeV two stages of half the size, so one copy of the model over all ranks)."""
    return {"1f1b": 1, "zb1p": 1, "dualpipe": 2, "dualpipev": 2}[_method(method)]


def bubble(method: str, pp: int, costs: CostModel) -> float:
    """The Table 2 bubble of ``method`` for PP stages (model chunks) under ``costs``."""
    method = _method(method)
    if method == "1f1b":
        return bubble_1f1b(pp, costs.F, costs.B)
    if method == "zb1p":
        return bubble_zb1p(pp, costs.F, costs.B, costs.W)
    return bubble_dualpipe(pp, costs.FB, costs.B, costs.W)


def assumptions_hold(method: str, costs: CostModel, pp: int, n_microbatches: int) -> tuple[bool, str]:
    """Whether the Table 2 bubble formula of ``method`` is exact for these costs; the reason if not."""
    method = _method(method)
    if costs.p2p > 0 or costs.dispatch > 0 or costs.combine > 0:
        return False, "Table 2 ignores communication time (p2p and all-to-all must be 0)"
    if method == "zb1p":
        if n_microbatches < pp:
            return False, "ZB1P needs at least PP micro-batches to have W passes to postpone"
        if costs.W > costs.F or costs.W > costs.I:
            return False, "ZB1P needs W <= F and W <= B - W so a postponed W fits in a wait"
    if method in ("dualpipe", "dualpipev"):
        if abs(costs.F - costs.I) > 1e-12:
            return False, "DualPipe's formula assumes F = B - W (forward as long as the input-backward)"
        if costs.W > costs.F:
            return False, "DualPipe's formula assumes W <= F"
    return True, "the formula is exact"


def simulated_table2(pp: int, n_microbatches: int, costs: CostModel) -> list[dict]:
    """Table 2 next to the simulator, for PP stages and ``n_microbatches``: one dict per method with
    ``method``, ``formula_bubble``, ``simulated_bubble``, ``formula_activations``, ``simulated_activations``,
    ``formula_params``, ``simulated_params`` and ``assumptions`` (why the two may differ).

    DualPipe runs PP ranks; DualPipeV runs PP/2 ranks (it has PP stages); both need PP even.
    """
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


def _method(method: str) -> str:
    key = schedule_key(method)
    if key not in METHODS:
        raise ValueError(
            f"Table 2 covers {', '.join(METHODS)}; got {method!r} (naive and GPipe are not in the "
            f"report's table)."
        )
    return key
