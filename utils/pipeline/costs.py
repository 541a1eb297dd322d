"""The cost model of a pipeline step: how long each action takes, in the notation of the DeepSeek-V3 report.

One place for the durations both producers of a ``Timeline`` use: the simulator (``utils.pipeline.simulate``)
places actions by ``CostModel.duration``, and the executor's pacing (``utils.pipeline.executor.pacing``)
sleeps it. Imports only the schedule types.
"""

from __future__ import annotations

from dataclasses import dataclass

from utils import inputs as arg
from utils.pipeline.schedule import ActionLike, action_kind

#: What ``CostModel.duration`` prices: the plain kinds and the two overlapped pairs (``action_kind``).
DURATION_KINDS = ("F", "B", "I", "W", "FB", "FI")


@dataclass(frozen=True)
class CostModel:
    """Durations in the notation of the DeepSeek-V3 report (Table 2), in simulated time units.

    ``F`` forward chunk, ``B`` full backward chunk, ``W`` its weight part (so the input part is
    ``B_input = B - W``), ``FB`` the **compute** time of an overlapped forward-and-backward pair (F&B),
    ``p2p`` latency of sending an activation or gradient to another rank, ``dispatch``/``combine`` the
    expert-parallel all-to-all of one chunk (0: no expert parallelism).

    F&B has one meaning in the course: the pair's compute, F + B by default. Communication is modelled
    separately (dispatch, combine, p2p); what a pair saves is the all-to-all it hides behind the partner
    chunk's compute (the simulator adds only the excess). An F&B below F + B is **compute overlap**
    (``compute_overlap``): the two chunks' kernels themselves sharing the GPU, e.g. one chunk's memory-bound
    kernels beside the other's matrix multiplications; it needs such a reason, and never goes below the longer
    chunk alone, max(F, B).
    """

    F: float
    B: float
    W: float
    FB: float | None = None
    p2p: float = 0.0
    dispatch: float = 0.0
    combine: float = 0.0

    def __post_init__(self):
        for name in ("F", "B", "W", "FB", "p2p", "dispatch", "combine"):
            value = getattr(self, name)
            if name == "FB" and value is None:
                continue
            # A duration in time units: a real number, finite, not negative, within MAX_COST.
            checked = arg.real(value, name, low=0, high=arg.MAX_COST, where="CostModel",
                               why="it is a duration, so it cannot be negative")
            if type(value) not in (int, float):  # numpy or 0-d tensor numbers become plain floats
                object.__setattr__(self, name, checked)
        if self.F <= 0 or self.B <= 0:
            raise arg.InputError(
                f"CostModel: F and B must be positive (every stage computes something); "
                f"got F={self.F}, B={self.B}."
            )
        if self.W > self.B:
            raise arg.InputError(
                f"CostModel: W (backward for weights) is part of the full backward B, so W <= B; "
                f"got W={self.W}, "
                f"B={self.B}."
            )
        if self.FB is None:
            object.__setattr__(self, "FB", self.F + self.B)
        if not max(self.F, self.B) <= self.FB <= self.F + self.B:
            raise ValueError(
                f"CostModel: F&B is the compute of an overlapped pair, a forward and a backward chunk: "
                f"F + B = {self.F + self.B} when their computations do not overlap (communication is "
                f"modelled separately), down to the longer chunk alone if they overlap perfectly: "
                f"max(F, B) = {max(self.F, self.B)} <= FB <= F + B; got FB={self.FB}."
            )

    @property
    def compute_overlap(self) -> float:
        """F + B - F&B: the compute a pair saves by running its two chunks' computations at once (0 by
        default: a pair saves communication only)."""
        return self.F + self.B - self.FB

    @property
    def I(self) -> float:  # noqa: E743 - the paper's name for the input part of the backward
        """Backward for the input (``B_input``): the full backward minus its weight part."""
        return self.B - self.W

    @property
    def FI(self) -> float:
        """An overlapped pair of a forward and a backward for input: max(F, B - W, FB - W).

        The pair overlaps like F&B but leaves the weight part W for later, so it saves W on F&B, yet it
        cannot be shorter than either of its chunks alone.
        """
        return max(self.F, self.B - self.W, self.FB - self.W)

    def duration(self, action: ActionLike | str) -> float:
        """Compute time of ``action`` (all-to-all not included): the one duration rule of the course.

        ``action``: an Action or an OverlappedAction, or its ``action_kind`` (F, B, I, W, FB, FI). F, B and
        W are the model's; I = B - W; an F&B pair lasts FB; a pair of F and I lasts ``FI``.
        """
        kind = action if isinstance(action, str) else action_kind(action)
        if kind == "F":
            return self.F
        if kind == "B":
            return self.B
        if kind == "I":
            return self.B - self.W
        if kind == "W":
            return self.W
        if kind == "FB":
            return self.FB
        if kind == "FI":
            return self.FI
        raise arg.InputError(f"CostModel.duration prices the kinds {', '.join(DURATION_KINDS)} (or an action); "
                         f"got {action!r}.")
