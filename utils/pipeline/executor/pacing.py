"""Paced mode of the pipeline executor: every action lasts at least its cost-model duration.

``utils.pipeline.executor.execute.execute`` passes a `Pacing` to every rank and
``utils.pipeline.executor.rank.RankPipeline`` follows it, so a real run's idle time can be compared with the
simulator's prediction. The durations are the simulator's: ``utils.pipeline.costs.CostModel.duration``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from utils.pipeline.costs import COMM_SHARE, CostModel
from utils.pipeline.schedule import ActionLike


@dataclass(frozen=True)
class Pacing:
    """Paced mode: every action also lasts at least its cost-model duration, ``unit_ms`` per time unit.

    ``F``, ``B``, ``W``, ``FB``, ``p2p``, ``dispatch``, ``combine``, ``comm_share`` and ``chunk_scale`` are a
    ``CostModel``'s (``pacing_from_costs`` builds one from any cost model), so an action lasts what the
    simulator holds its rank for (``CostModel.length``: the all-to-all it waits for and, for a pair that hides
    it, the SMs it gives up); ``stage_to_chunk`` is the schedule's, for ``chunk_scale``. An action may start when its rank is free
    and its inputs count as arrived; it ends its duration later (or when its computation ends, if that
    takes longer). Results are sent as soon as they are computed, stamped with the end time, and the
    receiver does not use them before that time, so the transport's own latency hides under the paced
    duration. Ranks sleep rather than spin, which leaves the CPU cores to the ranks that compute. A real
    run's idle time becomes comparable with the simulator's prediction; what remains is the executor's own
    overhead between actions.
    """

    F: float
    B: float
    W: float
    FB: float
    unit_ms: float = 20.0
    p2p: float = 0.0
    dispatch: float = 0.0
    combine: float = 0.0
    comm_share: float = COMM_SHARE
    chunk_scale: tuple[float, ...] | None = None
    stage_to_chunk: tuple[int, ...] | None = None

    @cached_property
    def costs(self) -> CostModel:
        """The cost model these durations are (its rules check them: W <= B, max(F, B) <= FB <= F + B)."""
        return CostModel(F=self.F, B=self.B, W=self.W, FB=self.FB, p2p=self.p2p, dispatch=self.dispatch,
                         combine=self.combine, comm_share=self.comm_share, chunk_scale=self.chunk_scale)

    def duration_ms(self, action: ActionLike) -> float:
        """How long ``action`` lasts at least, in ms: ``CostModel.length`` times ``unit_ms``."""
        return self.costs.length(action, self.stage_to_chunk) * self.unit_ms
