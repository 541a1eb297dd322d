"""Paced mode of the pipeline executor: every action lasts at least its cost-model duration.

``utils.pipeline.executor.execute.execute`` passes a `Pacing` to every rank and ``utils.pipeline.executor.rank.RankPipeline`` follows it,
so a real run's idle time can be compared with the simulator's prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

from utils.pipeline.schedule import OverlappedAction


@dataclass(frozen=True)
class Pacing:
    """Paced mode: every action also lasts at least its cost-model duration, ``unit_ms`` per time unit.

    Durations as in the simulator: F, B, I = B - W, W, and FB for an overlapped pair; ``p2p`` units of
    latency per message. An action may start when its rank is free and its inputs count as arrived; it ends
    its duration later (or when its computation ends, if that takes longer). Results are sent as soon as
    they are computed, stamped with the end time, and the receiver does not use them before that time, so
    the transport's own latency hides under the paced duration. Ranks sleep rather than spin, which leaves
    the CPU cores to the ranks that compute. A real run's idle time becomes comparable with the simulator's
    prediction; what remains is the executor's own overhead between actions.
    """

    F: float
    B: float
    W: float
    FB: float
    unit_ms: float = 20.0
    p2p: float = 0.0

    def duration_ms(self, action) -> float:
        if isinstance(action, OverlappedAction):
            units = self.FB if action.backward.kind == "B" else max(self.F, self.B - self.W, self.FB - self.W)
        else:
            units = {"F": self.F, "B": self.B, "I": self.B - self.W, "W": self.W}[action.kind]
        return units * self.unit_ms
