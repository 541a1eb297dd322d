"""What each rank did, and when: the common result of the simulator and the executor.

A ``Timeline`` holds, per rank, the start and end of every action of a ``Schedule`` (simulated from a cost
model or measured on processes), optional communication intervals, and the quantities of the DeepSeek-V3
report's Table 2: the step time (makespan), each rank's idle time (its pipeline bubble), the activations it
holds at its peak and the parameter copies it keeps.

The time budget (``Timeline.budget``) is the one place that splits a rank's step into what it spent:
**compute**, **exposed communication** (time it waited for communication: an all-to-all that compute did not
hide, inside an action, or a pipeline message still in flight, before one) and **idle** (waiting for work:
the pipeline bubble). The three add up to the makespan; every figure, table and title that quotes a bubble
or an idle share reads them from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import repeat
from operator import sub
from typing import NamedTuple

from utils import inputs as arg
from utils.pipeline.schedule import ActionLike, OverlappedAction, Schedule, action_parts


class Interval(NamedTuple):
    """One compute action ``action`` run by ``rank`` from ``start`` to ``end``.

    ``comm_wait``: the part of ``[start, end]`` the rank spent waiting for communication inside the action
    (an expert all-to-all its compute did not hide); the rest is compute. ``p2p_wait``: time just before
    ``start`` the rank spent waiting for an input message that was already sent but still in flight (the
    simulator's p2p latency; a measured run cannot tell it from idle and leaves it 0).

    Immutable, like the schedule it comes from. A named tuple rather than a frozen dataclass: the simulator
    makes one per action, and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) was
    a third of simulating 16 ranks x 64 micro-batches; ``Interval.row`` builds a rank's Intervals in C.
    """

    rank: int
    action: ActionLike
    start: float
    end: float
    comm_wait: float = 0.0
    p2p_wait: float = 0.0

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def kind(self) -> str:
        """The colour key of ``utils.figures.KIND_COLORS``: F, B, I, W, or FB for an overlapped pair."""
        return "FB" if isinstance(self.action, OverlappedAction) else self.action.kind

    @classmethod
    def row(cls, rank: int, actions: Iterable[ActionLike], starts: Iterable[float], ends: Iterable[float],
            comm_waits: Iterable[float] | None = None, p2p_waits: Iterable[float] | None = None,
            ) -> tuple[Interval, ...]:
        """The Intervals of one rank from columns (None: 0 throughout); the simulator's fast path.

        ``tuple.__new__`` makes each one from its zipped fields in C, without the named tuple's Python-level
        ``__new__`` (the same result: ``Interval(*fields)``), a third of the cost of building them.
        """
        zeros = repeat(0.0)
        fields = zip(repeat(rank), actions, starts, ends, zeros if comm_waits is None else comm_waits,
                     zeros if p2p_waits is None else p2p_waits)
        return tuple(map(tuple.__new__, repeat(cls), fields))


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


@dataclass(frozen=True)
class TimeBudget:
    """Where one rank's step went: ``compute + comm_exposed + idle == makespan``.

    ``comm_exposed`` is the time the rank waited for communication (all-to-all not hidden by compute, p2p
    messages in flight); ``idle`` the time it had nothing to run (the pipeline bubble).
    """

    rank: int
    compute: float
    comm_exposed: float
    idle: float
    makespan: float

    @property
    def not_computing(self) -> float:
        """Exposed communication plus idle: the step time this rank does not compute."""
        return self.comm_exposed + self.idle

    def as_dict(self) -> dict:
        return {"rank": self.rank, "compute": self.compute, "comm_exposed": self.comm_exposed,
                "idle": self.idle, "makespan": self.makespan}


class LazyComms(Sequence):
    """The communication intervals of a simulated timeline, made on first use: they are for the pictures, and
    building them costs more than the simulation itself when every chunk has an all-to-all, so a timeline read
    only for its numbers (a what-if table, the full-scale model) never builds them. Reads like a tuple."""

    def __init__(self, make):
        self._make, self._items = make, None

    def _all(self) -> tuple:
        if self._items is None:
            self._items, self._make = tuple(self._make()), None
        return self._items

    def __len__(self) -> int:
        return len(self._all())

    def __getitem__(self, index):
        return self._all()[index]

    def __iter__(self):
        return iter(self._all())

    def __eq__(self, other) -> bool:
        return isinstance(other, (tuple, LazyComms)) and self._all() == tuple(other)

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())

    def __reduce__(self):  # a copy or a pickle holds the plain tuple
        return (tuple, (self._all(),))


class SimulatedRows(Sequence):
    """The Interval rows of a simulated timeline, kept as the simulator's columns and made per rank on first
    read. Making one Interval per action was a fifth of simulating 16 ranks x 64 micro-batches, and a
    timeline read only for its numbers (makespan, budgets: ``Timeline.span`` and ``Timeline.budgets`` read
    the columns, with the same sums in the same order) never needs them. Reads like a tuple of tuples.

    ``starts``, ``ends``, ``comm_waits``, ``p2p_waits`` (None: 0 throughout) hold every action rank by rank;
    rank r's are entries ``offsets[r]`` to ``offsets[r + 1] - 1``.
    """

    def __init__(self, actions, offsets, starts, ends, comm_waits=None, p2p_waits=None):
        self.actions, self.offsets, self.starts, self.ends = actions, offsets, starts, ends
        self.comm_waits, self.p2p_waits = comm_waits, p2p_waits
        self._rows: list[tuple[Interval, ...] | None] = [None] * len(actions)

    def _row(self, rank: int) -> tuple[Interval, ...]:
        row = self._rows[rank]
        if row is None:
            a, b = self.offsets[rank], self.offsets[rank + 1]
            row = self._rows[rank] = Interval.row(rank, self.actions[rank], self.starts[a:b], self.ends[a:b],
                                                  _part(self.comm_waits, a, b), _part(self.p2p_waits, a, b))
        return row

    def span(self) -> tuple[float, float]:
        """``Timeline.span`` from the columns."""
        return (min(self.starts), max(self.ends)) if self.starts else (0.0, 0.0)

    def sums(self, rank: int) -> tuple[float, float, float]:
        """Rank ``rank``'s summed durations, comm_waits and p2p_waits, added in the order ``Timeline`` adds
        them over Intervals (the same bits)."""
        a, b = self.offsets[rank], self.offsets[rank + 1]
        return (sum(map(sub, self.ends[a:b], self.starts[a:b])),
                sum(repeat(0.0, b - a) if self.comm_waits is None else self.comm_waits[a:b]),
                sum(repeat(0.0, b - a) if self.p2p_waits is None else self.p2p_waits[a:b]))

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(map(self._row, range(len(self._rows))[index]))
        return self._row(range(len(self._rows))[index])  # a negative index counts from the end

    def __iter__(self):
        return map(self._row, range(len(self._rows)))

    def __eq__(self, other) -> bool:
        return isinstance(other, (tuple, SimulatedRows)) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))

    def __reduce__(self):  # a copy or a pickle holds the plain tuple
        return (tuple, (tuple(self),))


def _part(values, a: int, b: int):
    """Entries ``a:b`` of a column (None: 0 throughout)."""
    return None if values is None else values[a:b]


@dataclass
class Timeline:
    """Per-rank intervals of every action of ``schedule``, in execution order (a tuple of tuples of Intervals;
    from the simulator, ``SimulatedRows``, which reads like one and makes each rank's on first read)."""

    schedule: Schedule
    intervals: tuple[tuple[Interval, ...], ...]
    comms: tuple[CommInterval, ...] | LazyComms = ()
    source: str = "simulated"
    time_unit: str = "time units"

    @property
    def n_ranks(self) -> int:
        return len(self.intervals)

    def check_rank(self, rank, where: str) -> int:
        """``rank`` if this timeline has it (the fast path is a plain int in range)."""
        if type(rank) is int and 0 <= rank < len(self.intervals):
            return rank
        return arg.whole(rank, "rank", low=0, high=len(self.intervals) - 1, where=f"Timeline.{where}",
                         why=f"this timeline has ranks 0..{len(self.intervals) - 1}")

    @cached_property
    def span(self) -> tuple[float, float]:
        """(earliest start, latest end) over all intervals, computed once (idle(r) for every rank would
        otherwise rescan every interval) and again after ``intervals`` is replaced."""
        if type(self.intervals) is SimulatedRows:
            return self.intervals.span()
        starts = [iv.start for row in self.intervals for iv in row]
        return (min(starts), max(iv.end for row in self.intervals for iv in row)) if starts else (0.0, 0.0)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "intervals":  # a replaced list of intervals has its own span and budgets
            self.__dict__.pop("span", None)
            self.__dict__.pop("budgets", None)

    @property
    def start(self) -> float:
        return self.span[0]

    @property
    def end(self) -> float:
        return self.span[1]

    @property
    def makespan(self) -> float:
        """Latest end minus earliest start across ranks: the time of one training step."""
        return self.end - self.start

    def busy(self, rank: int) -> float:
        """Time ``rank`` spends inside its actions (sum of their durations): compute plus the communication
        it waited for inside them."""
        return self._sums(self.check_rank(rank, "busy"))[0]

    def _sums(self, rank: int) -> tuple[float, float, float]:
        """Rank ``rank``'s summed durations, comm_waits and p2p_waits (read from the simulator's columns when
        it kept them, ``SimulatedRows.sums``: the same sums in the same order)."""
        if type(self.intervals) is SimulatedRows:
            return self.intervals.sums(rank)
        row = self.intervals[rank]
        return (sum(iv.end - iv.start for iv in row), sum(iv.comm_wait for iv in row),
                sum(iv.p2p_wait for iv in row))

    def budget(self, rank: int) -> TimeBudget:
        """Split ``rank``'s step into compute, exposed communication and idle time (they sum to the makespan).

        compute = sum of action durations minus the communication waited for inside them (``comm_wait``);
        comm_exposed = those waits plus the waits for messages in flight before actions (``p2p_wait``);
        idle = the rest of the makespan. Exact for a simulated timeline; for a measured one each part is
        measured to the clock's resolution and idle is what remains.
        """
        return self.budgets[self.check_rank(rank, "budget")]

    @cached_property
    def budgets(self) -> tuple[TimeBudget, ...]:
        """Every rank's ``budget``, computed once (worst rank, worst idle and shares all read them) and again
        after ``intervals`` is replaced."""
        return tuple(map(self._budget, range(len(self.intervals))))

    def _budget(self, rank: int) -> TimeBudget:
        busy, inside, before = self._sums(rank)
        span = self.makespan
        idle = span - busy - before
        if -1e-9 * max(span, 1.0) < idle < 0:
            idle = 0.0  # floating-point rounding of a rank that never idles, not negative time
        return TimeBudget(rank, busy - inside, inside + before, idle, span)

    def budget_table(self):
        """The budget of every rank as a pandas DataFrame indexed by rank: compute, comm_exposed, idle,
        makespan, and ``not_computing`` (= comm_exposed + idle)."""
        import pandas as pd

        rows = [{**b.as_dict(), "not_computing": b.not_computing} for b in map(self.budget, range(self.n_ranks))]
        columns = ["rank", "compute", "comm_exposed", "idle", "not_computing", "makespan"]
        return pd.DataFrame(rows, columns=columns).set_index("rank")

    def budget_shares(self) -> dict[str, float]:
        """Fractions of all rank-time (ranks x makespan) spent computing, waiting for communication and idle;
        they sum to 1 (0 each for an empty timeline)."""
        total = self.n_ranks * self.makespan
        if total <= 0:
            return {"compute": 0.0, "comm_exposed": 0.0, "idle": 0.0}
        budgets = [self.budget(r) for r in range(self.n_ranks)]
        return {key: sum(getattr(b, key) for b in budgets) / total for key in ("compute", "comm_exposed", "idle")}

    def worst_budget(self) -> TimeBudget:
        """The budget of the rank that computes least, i.e. spends the most step time not computing."""
        return min((self.budget(r) for r in range(self.n_ranks)), key=lambda b: (b.compute, b.rank))

    def idle(self, rank: int) -> float:
        """Time ``rank`` has nothing to run during the step: its pipeline bubble (``budget(rank).idle``)."""
        return self.budget(rank).idle

    def comm_exposed(self, rank: int) -> float:
        """Time ``rank`` waits for communication during the step (``budget(rank).comm_exposed``)."""
        return self.budget(rank).comm_exposed

    def compute(self, rank: int) -> float:
        """Time ``rank`` computes during the step (``budget(rank).compute``)."""
        return self.budget(rank).compute

    @property
    def worst_idle(self) -> float:
        """The largest idle time over ranks (what Table 2 calls the bubble)."""
        return max((self.idle(r) for r in range(self.n_ranks)), default=0.0)

    @property
    def bubble_ratio(self) -> float:
        """Fraction of all rank-time spent idle: sum of idle / (ranks x makespan) (``budget_shares``)."""
        return self.budget_shares()["idle"]

    def activation_events(self, rank: int) -> list[tuple[float, int]]:
        """(time, +1 or -1) as ``rank`` acquires or releases a stage-activation, in time order.

        Acquired at the start of a stage's F of a micro-batch, released at the end of that stage's W or full B
        for it; at equal times releases (-1) sort before acquisitions (+1).
        """
        rank = self.check_rank(rank, "activation_events")
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
        rank = self.check_rank(rank, "peak_activations")
        events = self.activation_events(rank)
        held = peak = 0
        for _, delta in events:
            held += delta
            peak = max(peak, held)
        return peak

    def param_copies(self, rank: int) -> int:
        """Stages whose parameters ``rank`` keeps, in units of one stage (1/PP of the model)."""
        rank = self.check_rank(rank, "param_copies")
        return len(self.schedule.stages_on(rank))

    def summary(self) -> list[dict]:
        """One dict per rank: rank, busy, idle, peak_activations, param_copies, and the budget's compute and
        comm_exposed (compute + comm_exposed + idle = the makespan)."""
        rows = []
        for r in range(self.n_ranks):
            b = self.budget(r)
            rows.append({
                "rank": r,
                "busy": self.busy(r),
                "idle": b.idle,
                "peak_activations": self.peak_activations(r),
                "param_copies": self.param_copies(r),
                "compute": b.compute,
                "comm_exposed": b.comm_exposed,
            })
        return rows

    def to_chrome_trace(self, us_per_unit: float = 1.0) -> dict:
        """Chrome/Perfetto trace JSON (open in ui.perfetto.dev or chrome://tracing).

        One complete ("X") event per compute interval on pid 0, tid = rank, its args naming the stages and
        model chunks it ran; communication on pid 1.
        ``us_per_unit`` converts this timeline's time unit to the trace's microseconds.
        """
        us_per_unit = arg.real(us_per_unit, "us_per_unit", low=0, low_open=True, high=1e9,
                               where="Timeline.to_chrome_trace", why="microseconds per time unit")
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


def check_timeline(timeline, where: str, name: str = "timeline") -> Timeline:
    """``timeline`` if it is a Timeline (what the simulator and the executor return)."""
    return arg.instance(timeline, name, Timeline, "a Timeline (from simulate or execute)", where=where)
