"""Paced mode of the pipeline executor: every action lasts at least its cost-model duration.

``utils.pipeline.executor.execute.execute`` passes a `Pacing` to every rank and
``utils.pipeline.executor.rank.RankPipeline`` follows it, so a real run's idle time can be compared with the
simulator's prediction. The durations are the simulator's: ``utils.pipeline.costs.CostModel.duration``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from utils.pipeline.costs import CostModel
from utils.pipeline.schedule import ActionLike


@dataclass(frozen=True)
class Pacing:
    """Paced mode: every action also lasts at least its cost-model duration, ``unit_ms`` per time unit.

    ``F``, ``B``, ``W``, ``FB`` and ``p2p`` are a ``CostModel``'s (``pacing_from_costs`` builds one from any
    cost model), so an action lasts what the simulator gives it. An action may start when its rank is free
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

    @cached_property
    def costs(self) -> CostModel:
        """The cost model these durations are (its rules check them: W <= B, max(F, B) <= FB <= F + B)."""
        return CostModel(F=self.F, B=self.B, W=self.W, FB=self.FB, p2p=self.p2p)

    def duration_ms(self, action: ActionLike) -> float:
        """How long ``action`` lasts at least, in ms: ``CostModel.duration`` times ``unit_ms``."""
        return self.costs.duration(action) * self.unit_ms
