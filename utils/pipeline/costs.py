"""The cost model of a pipeline step: how long each action takes, in the notation of the DeepSeek-V3 report.

One place for the durations both producers of a ``Timeline`` use: the simulator (``utils.pipeline.simulate``)
places actions by ``CostModel.length`` (compute, ``CostModel.duration``, plus the all-to-all not hidden), and
the executor's pacing (``utils.pipeline.executor.pacing``) sleeps it. Imports only the schedule types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from utils import inputs as arg
from utils.pipeline.schedule import ActionLike, OverlappedAction, action_kind

#: What ``CostModel.duration`` prices: the plain kinds and the two overlapped pairs (``action_kind``).
DURATION_KINDS = ("F", "B", "I", "W", "FB", "FI")

#: The share of a GPU's compute an overlapped pair gives up to the communication it hides: DeepSeek-V3 runs
#: its all-to-all on 20 of the H800's 132 SMs (report Sec. 3.2.2 and, "20 out of the 132 SMs", Sec. 3.5.1),
#: so while a pair hides it, the pair's two chunks compute on the other 112.
COMM_SHARE = 20 / 132


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

    Hiding is not free: ``comm_share`` is the share of the GPU's compute the hidden communication takes
    (default ``COMM_SHARE``, DeepSeek-V3's 20 of 132 SMs; 0 as a what-if). While a pair hides an all-to-all
    (``dispatch + combine > 0``), its computation runs on the rest, so it lasts ``1 / (1 - comm_share)``
    times as long (``pair_slowdown``). A plain F, B, I or W, which waits for its all-to-all instead, computes
    on the whole GPU.

    ``chunk_scale``: one factor per model chunk (``Schedule.n_chunks``; the stages of DualPipe's two
    directions that run the same chunk share it), multiplying that chunk's F, B and W, for a model cut into
    chunks of unequal cost (e.g. an embedding in the first chunk, the output head in the last). ``None``, or
    all ones, is the uniform model every closed form assumes. Communication is not scaled.
    """

    F: float
    B: float
    W: float
    FB: float | None = None
    p2p: float = 0.0
    dispatch: float = 0.0
    combine: float = 0.0
    comm_share: float = COMM_SHARE
    chunk_scale: tuple[float, ...] | None = None

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
        why = ("it is the share of the GPU's compute given to communication while a pair hides it "
               "(DeepSeek-V3: 20 of 132 SMs), below 1 so that something is left to compute")
        share = arg.real(self.comm_share, "comm_share", low=0, high=1, where="CostModel", why=why)
        if share >= 1:
            arg.fail("comm_share", "a number from 0 up to (not including) 1", self.comm_share,
                     where="CostModel", why=why)
        if type(self.comm_share) is not float:
            object.__setattr__(self, "comm_share", share)
        if self.chunk_scale is not None:
            scale = arg.sequence(self.chunk_scale, "chunk_scale", where="CostModel",
                                 why="one factor per model chunk, multiplying that chunk's F, B and W")
            object.__setattr__(self, "chunk_scale", tuple(
                arg.real(v, f"chunk_scale[{i}]", low=0, low_open=True, high=arg.MAX_COST, where="CostModel",
                         why="a chunk's costs times this factor: a chunk always computes something")
                for i, v in enumerate(scale)))
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
    def all_to_all(self) -> float:
        """a = dispatch + combine: the expert-parallel all-to-all of one chunk (0: none)."""
        return self.dispatch + self.combine

    @property
    def pair_slowdown(self) -> float:
        """How many times longer a pair computes while it hides an all-to-all: 1 / (1 - comm_share), or 1
        when there is no all-to-all to hide (then no SM is given up)."""
        return 1.0 / (1.0 - self.comm_share) if self.all_to_all > 0 else 1.0

    @property
    def uniform(self) -> bool:
        """Whether every model chunk costs the same (``chunk_scale`` None or all ones)."""
        return self.chunk_scale is None or all(v == 1.0 for v in self.chunk_scale)

    def chunk_factor(self, chunk: int) -> float:
        """``chunk_scale[chunk]`` (1 for a uniform model)."""
        if self.chunk_scale is None:
            return 1.0
        if not 0 <= chunk < len(self.chunk_scale):
            raise arg.InputError(
                f"CostModel: chunk_scale has {len(self.chunk_scale)} factors (one per model chunk) but the "
                f"schedule runs model chunk {chunk}: give one factor for each chunk the schedule cuts the model "
                f"into (Schedule.n_chunks).")
        return self.chunk_scale[chunk]

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

    def duration(self, action: ActionLike | str, stage_to_chunk: Sequence[int] | None = None) -> float:
        """Compute time of ``action`` (all-to-all not included): the one duration rule of the course.

        ``action``: an Action or an OverlappedAction, or its ``action_kind`` (F, B, I, W, FB, FI). F, B and
        W are the model's; I = B - W; an F&B pair lasts FB, a pair of F and I ``FI``, each times
        ``pair_slowdown`` (the SMs its hidden all-to-all takes).

        With ``chunk_scale``, an action's costs are its model chunk's: ``stage_to_chunk[stage]`` (the
        schedule's ``stage_to_chunk``; without it the stage is the chunk). A pair computes F&B times the
        share its two chunks' F + B bring (``(s_f F + s_b B) / (F + B)``). A kind alone is priced uniform.
        """
        if self.chunk_scale is not None and not isinstance(action, str):
            return self._scaled_duration(action, stage_to_chunk)
        return self._kind_duration(action if isinstance(action, str) else action_kind(action))

    def length(self, action: ActionLike | str, stage_to_chunk: Sequence[int] | None = None) -> float:
        """How long ``action`` holds its rank: its compute (``duration``) plus the all-to-all it does not hide.

        A plain F, B or I waits for its whole all-to-all a = dispatch + combine; W has none; in a pair each
        chunk's all-to-all hides behind the partner chunk's compute (``part_computes``, on the SMs the
        communication leaves) and only the excess shows. ``action`` as for ``duration``."""
        a = self.all_to_all
        if isinstance(action, str):
            if action not in ("FB", "FI"):
                return self.duration(action) + (a if action != "W" else 0.0)
            k = self.pair_slowdown
            partner = (k * self.F, k * self._kind_duration(action[1]))
        elif isinstance(action, OverlappedAction):
            partner = self.part_computes(action, stage_to_chunk)
        else:
            return self.duration(action, stage_to_chunk) + (a if action.kind != "W" else 0.0)
        return self.duration(action, stage_to_chunk) + sum(max(0.0, a - c) for c in partner)

    def part_computes(self, action: ActionLike, stage_to_chunk: Sequence[int] | None = None) -> tuple[float, ...]:
        """Each part's own compute inside ``action``, chunk scale and (for a pair) ``pair_slowdown`` included:
        what a partner's all-to-all can hide behind."""
        parts = action.parts if isinstance(action, OverlappedAction) else (action,)
        k = self.pair_slowdown if isinstance(action, OverlappedAction) else 1.0
        return tuple(k * self._factor(p.stage, stage_to_chunk) * self._kind_duration(p.kind) for p in parts)

    def _factor(self, stage: int, stage_to_chunk: Sequence[int] | None) -> float:
        if self.chunk_scale is None:
            return 1.0
        return self.chunk_factor(stage if stage_to_chunk is None else stage_to_chunk[stage])

    def _scaled_duration(self, action: ActionLike, stage_to_chunk: Sequence[int] | None) -> float:
        if not isinstance(action, OverlappedAction):
            return self._factor(action.stage, stage_to_chunk) * self._kind_duration(action.kind)
        sf = self._factor(action.forward.stage, stage_to_chunk)
        sb = self._factor(action.backward.stage, stage_to_chunk)
        # the pair's F&B times the share its two chunks bring (exactly sf * F&B when they cost alike)
        fb = sf * self.FB if sf == sb else self.FB * (sf * self.F + sb * self.B) / (self.F + self.B)
        if action.backward.kind == "B":
            return self.pair_slowdown * fb
        w = sb * self.W
        return self.pair_slowdown * max(sf * self.F, sb * self.B - w, fb - w)

    def _kind_duration(self, kind: str) -> float:
        if kind == "F":
            return self.F
        if kind == "B":
            return self.B
        if kind == "I":
            return self.B - self.W
        if kind == "W":
            return self.W
        if kind == "FB":
            return self.FB * self.pair_slowdown
        if kind == "FI":
            return self.FI * self.pair_slowdown
        raise arg.InputError(f"CostModel.duration prices the kinds {', '.join(DURATION_KINDS)} (or an action); "
                             f"got {kind!r}.")
