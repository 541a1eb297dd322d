"""What each rank did, and when: the common result of the simulator and the executor.

A ``Timeline`` holds, per rank, the start and end of every action of a ``Schedule`` (simulated from a cost
model or measured on processes), optional communication intervals, and the quantities of the DeepSeek-V3
report's Table 2: the step time (makespan), each rank's idle time (its pipeline bubble), the activations it
holds at its peak and the parameter copies it keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

from utils.pipeline.schedule import ActionLike, OverlappedAction, Schedule, action_parts


@dataclass(frozen=True)
class Interval:
    """One compute action ``action`` run by ``rank`` from ``start`` to ``end``."""

    rank: int
    action: ActionLike
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def kind(self) -> str:
        """The colour key of ``utils.figures.KIND_COLORS``: F, B, I, W, or FB for an overlapped pair."""
        return "FB" if isinstance(self.action, OverlappedAction) else self.action.kind


@dataclass(frozen=True)
class CommInterval:
    """Communication (p2p or expert all-to-all) drawn on a rank's row.

    ``overlapped`` is True when compute on the rank hides it (it costs no step time), False when the rank
    waits for it.
    """

    rank: int
    label: str
    start: float
    end: float
    overlapped: bool

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Timeline:
    """Per-rank intervals of every action of ``schedule``, in execution order."""

    schedule: Schedule
    intervals: tuple[tuple[Interval, ...], ...]
    comms: tuple[CommInterval, ...] = ()
    source: str = "simulated"
    time_unit: str = "time units"

    @property
    def n_ranks(self) -> int:
        return len(self.intervals)

    def _span(self) -> tuple[float, float]:
        """(earliest start, latest end) over all intervals, remembered until ``intervals`` is replaced
        (idle(r) for every rank would otherwise rescan every interval)."""
        cached = self.__dict__.get("_span_cache")
        if cached is not None and cached[0] is self.intervals:
            return cached[1]
        starts = [iv.start for row in self.intervals for iv in row]
        span = (min(starts), max(iv.end for row in self.intervals for iv in row)) if starts else (0.0, 0.0)
        self.__dict__["_span_cache"] = (self.intervals, span)
        return span

    @property
    def start(self) -> float:
        return self._span()[0]

    @property
    def end(self) -> float:
        return self._span()[1]

    @property
    def makespan(self) -> float:
        """Latest end minus earliest start across ranks: the time of one training step."""
        return self.end - self.start

    def busy(self, rank: int) -> float:
        """Time ``rank`` spends computing (sum of its action durations)."""
        return sum(iv.end - iv.start for iv in self.intervals[rank])

    def idle(self, rank: int) -> float:
        """Time ``rank`` waits during the step: its pipeline bubble."""
        return self.makespan - self.busy(rank)

    @property
    def worst_idle(self) -> float:
        """The largest idle time over ranks (what Table 2 calls the bubble)."""
        return max((self.idle(r) for r in range(self.n_ranks)), default=0.0)

    @property
    def bubble_ratio(self) -> float:
        """Fraction of all rank-time spent idle: sum of idle / (ranks x makespan)."""
        span = self.makespan
        if span <= 0:
            return 0.0
        return sum(self.idle(r) for r in range(self.n_ranks)) / (self.n_ranks * span)

    def activation_events(self, rank: int) -> list[tuple[float, int]]:
        """(time, +1 or -1) as ``rank`` acquires or releases a stage-activation, in time order.

        Acquired at the start of a stage's F of a micro-batch, released at the end of that stage's W or full B
        for it; at equal times releases (-1) sort before acquisitions (+1).
        """
        events: list[tuple[float, int]] = []
        for iv in self.intervals[rank]:
            for part in action_parts(iv.action):
                if part.kind == "F":
                    events.append((iv.start, +1))
                elif part.kind in ("B", "W"):
                    events.append((iv.end, -1))
        events.sort()
        return events

    def peak_activations(self, rank: int) -> int:
        """Most stage-activations ``rank`` holds at once (one unit = one micro-batch through one stage).

        An activation is held from the start of a stage's F of a micro-batch until the end of that stage's W
        or full B for it; at equal times releases happen before acquisitions.
        """
        events = self.activation_events(rank)
        held = peak = 0
        for _, delta in events:
            held += delta
            peak = max(peak, held)
        return peak

    def param_copies(self, rank: int) -> int:
        """Stages whose parameters ``rank`` keeps, in units of one stage (1/PP of the model)."""
        return len(self.schedule.stages_on(rank))

    def summary(self) -> list[dict]:
        """One dict per rank: rank, busy, idle, peak_activations, param_copies."""
        return [
            {
                "rank": r,
                "busy": self.busy(r),
                "idle": self.idle(r),
                "peak_activations": self.peak_activations(r),
                "param_copies": self.param_copies(r),
            }
            for r in range(self.n_ranks)
        ]

    def to_chrome_trace(self, us_per_unit: float = 1.0) -> dict:
        """Chrome/Perfetto trace JSON (open in ui.perfetto.dev or chrome://tracing).

        One complete ("X") event per compute interval on pid 0, tid = rank, its args naming the stages and
        model chunks it ran; communication on pid 1.
        ``us_per_unit`` converts this timeline's time unit to the trace's microseconds.
        """
        events: list[dict] = [
            {"name": "process_name", "ph": "M", "pid": 0, "args": {"name": f"compute ({self.source})"}},
        ]
        for r in range(self.n_ranks):
            events.append(
                {"name": "thread_name", "ph": "M", "pid": 0, "tid": r, "args": {"name": f"rank {r}"}}
            )
        for row in self.intervals:
            for iv in row:
                events.append(
                    {
                        "name": str(iv.action),
                        "cat": iv.kind,
                        "ph": "X",
                        "pid": 0,
                        "tid": iv.rank,
                        "ts": iv.start * us_per_unit,
                        "dur": (iv.end - iv.start) * us_per_unit,
                        "args": {"start": iv.start, "end": iv.end, "time_unit": self.time_unit,
                                 # which of the rank's stages (and model chunks) ran: with several stages per
                                 # rank (DualPipe, interleaved 1F1B, ZB-V) the name alone needs decoding
                                 "stages": [p.stage for p in action_parts(iv.action)],
                                 "chunks": [self.schedule.stage_to_chunk[p.stage]
                                            for p in action_parts(iv.action)]},
                    }
                )
        if self.comms:
            events.append({"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "communication"}})
        for c in self.comms:
            events.append(
                {
                    "name": c.label,
                    "cat": "comm",
                    "ph": "X",
                    "pid": 1,
                    "tid": c.rank,
                    "ts": c.start * us_per_unit,
                    "dur": (c.end - c.start) * us_per_unit,
                    "args": {"overlapped": c.overlapped},
                }
            )
        return {
            "traceEvents": events,
            "displayTimeUnit": "ms",
            "otherData": {"schedule": self.schedule.name, "source": self.source, "time_unit": self.time_unit},
        }
