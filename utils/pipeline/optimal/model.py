"""The CP-SAT model of a schedule search: every part of the work as an interval on its rank, the kit's
dependency rule as precedences, the activation cap as a reservoir, and bounds that let CP-SAT prove optimality.

The model is the simulator's semantics written as constraints (``utils.pipeline.simulate``): a rank runs one
action at a time (a no-overlap constraint per rank); an action starts after each of its inputs has arrived
(its producer's end, plus p2p from another rank); an action lasts ``action_lengths`` of its kind; an F&B (or
F&I) pair is one interval that starts and ends both of its parts. Any solution, read rank by rank in the order
of its start times, is a schedule the simulator runs in at most the solution's makespan (it starts every
action as early as its order allows); so the optimum of the model is the best simulated step of any schedule.
Activations follow ``Timeline.activation_events``: held from an F's start to the end of its B or W.

The bounds are not needed for correctness, only for proofs: each part gets a *head* (it cannot start earlier)
and a *tail* (the step cannot end sooner after it) from the dependency chains, and each rank must fit the work
of the parts after a head and before a tail between the two, counted both per part (``share``, which
propagation reads) and per interval (which CP-SAT's linear relaxation reads).
"""

from __future__ import annotations

from ortools.sat.python import cp_model

from utils.pipeline.optimal.problem import Edge, Part, SearchSpace
from utils.pipeline.schedule import ActionLike, OverlappedAction
from utils.pipeline.timeline import Timeline

#: CP-SAT's random seed: one worker and a fixed seed make the same search, and the same answer, every run.
SEED = 0


class ScheduleModel:
    """The CP-SAT model of ``space`` with every action inside ``[0, horizon]`` (a known schedule's step)."""

    def __init__(self, space: SearchSpace, horizon: int):
        self.space, self.model, self.horizon = space, cp_model.CpModel(), horizon
        m, L = self.model, space.lengths
        self.start = {p: m.new_int_var(0, horizon, f"start {p}") for p in space.parts}
        self.end = {p: m.new_int_var(0, horizon, f"end {p}") for p in space.parts}
        self.makespan = m.new_int_var(0, horizon, "makespan")
        self.intervals: list[list[tuple]] = [[] for _ in range(space.layout.n_ranks)]  # (lit, length, parts, action)
        self.hinted: dict = {}
        self.options: dict[Part, list] = {p: [] for p in space.parts}  # literals: one of them runs the part
        self.pair_of: dict[tuple[Part, Part, str], cp_model.IntVar] = {}
        self.alone: dict[Part, cp_model.IntVar] = {}
        self.weight_runs: dict[Part, cp_model.IntVar] = {}
        for part in space.parts:
            if part.role == "W":
                self.weight_runs[part] = m.new_bool_var(f"{part} runs")
                self._interval(part, L["W"], self.weight_runs[part], (part,), part.action())
            else:
                self.alone[part] = m.new_bool_var(f"{part} alone")
                kind = space.alone_kind if part.role == "back" else "F"
                self._interval(part, L[kind], self.alone[part], (part,), part.action(kind))
        self._pairs()
        full_pairs: dict[Part, list] = {}  # each backward's F&B pair literals
        for (_, b, kind), lit in self.pair_of.items():
            if kind == "B":
                full_pairs.setdefault(b, []).append(lit)
        for w in self.weight_runs:
            self._weight(w, full_pairs.get(Part(w.stage, "back", w.microbatch), []))
        for part, lits in self.options.items():
            if part.role != "W":
                m.add_exactly_one(lits)
        for r in range(space.layout.n_ranks):
            m.add_no_overlap([iv for _, _, _, _, iv in self.intervals[r]])
        self._precedences()
        self._bounds()
        self._symmetry()
        if space.max_activations is not None:
            self._cap(space.max_activations)
        m.minimize(self.makespan)

    # -------------------------------------------------------------------------------- the parts and pairs
    def _interval(self, part: Part, length: int, lit, parts: tuple[Part, ...], action: ActionLike) -> None:
        iv = self.model.new_optional_interval_var(self.start[part], length, self.end[part], lit, str(action))
        self.intervals[self.space.rank_of(part)].append((lit, length, parts, action, iv))
        for p in parts:
            self.options[p].append(lit)

    def _pairs(self) -> None:
        """One optional interval per (forward, backward) of two micro-batches on one rank, per pair kind."""
        space, m = self.space, self.model
        for r in range(space.layout.n_ranks):
            mine = [p for p in space.parts if space.rank_of(p) == r]
            forwards, backwards = [p for p in mine if p.role == "F"], [p for p in mine if p.role == "back"]
            for f in forwards:
                for b in backwards:
                    if f.microbatch == b.microbatch:  # b waits for the loss, which waits for f: never together
                        continue
                    for kind in space.pair_kinds:
                        lit = m.new_bool_var(f"{f} with {b} as {kind}")
                        self.pair_of[(f, b, kind)] = lit
                        self._interval(f, space.lengths["F" + kind], lit, (f, b),
                                       OverlappedAction(f.action(), b.action(kind)))
                        m.add(self.start[b] == self.start[f]).only_enforce_if(lit)
                        m.add(self.end[b] == self.end[f]).only_enforce_if(lit)

    def _weight(self, w: Part, full_pairs: list) -> None:
        """W runs unless its backward ran as a full B inside an F&B pair (one of ``full_pairs``)."""
        back, runs = Part(w.stage, "back", w.microbatch), self.weight_runs[w]
        self.model.add(runs + sum(full_pairs) == 1)
        # a W that does not run sits at its backward's end (no free variables)
        self.model.add(self.start[w] == self.end[back]).only_enforce_if(~runs)
        self.model.add(self.end[w] == self.end[back]).only_enforce_if(~runs)

    def runs_as(self, part: Part, kind: str):
        """True (always) or the literal under which ``part`` runs as ``kind``."""
        kinds = self.space.kinds_of(part)
        if len(kinds) == 1:
            return True
        runs_i = self.weight_runs[Part(part.stage, "W", part.microbatch)]
        return runs_i if kind == "I" else ~runs_i

    # ------------------------------------------------------------------------------------ the time rules
    def _precedences(self) -> None:
        """Each part starts after its inputs arrive (``SearchSpace.edges``: ``Schedule.inputs_of``)."""
        m = self.model
        # dicts, not sets, all the way: the model is built in the same order in every process (a set of tuples
        # holding strings iterates in an order that changes with Python's hash seed, and so would CP-SAT's search)
        by_part: dict[Part, dict[str, dict[tuple[Part, int], None]]] = {}
        for e in self.space.edges:
            by_part.setdefault(e.consumer, {}).setdefault(e.kind, {})[(e.producer, e.lag)] = None
        self.sure: dict[Part, list[tuple[Part, int]]] = {}
        for part, by_kind in by_part.items():
            every_kind = len(by_kind) == len(self.space.kinds_of(part))
            always = [need for need in next(iter(by_kind.values()))
                      if every_kind and all(need in needs for needs in by_kind.values())]
            self.sure[part] = always
            for kind, needs in by_kind.items():
                when = self.runs_as(part, kind)
                for producer, lag in needs:
                    c = m.add(self.start[part] >= self.end[producer] + lag)
                    if producer.role == "W" or part.role == "W":
                        c.only_enforce_if(self.weight_runs[part if part.role == "W" else producer])
                    if (producer, lag) not in always and when is not True:
                        c.only_enforce_if(when)
        for part in self.space.parts:
            c = m.add(self.makespan >= self.end[part])
            if part.role == "W":
                c.only_enforce_if(self.weight_runs[part])

    def _bounds(self) -> None:
        """Heads, tails and per-rank work (this module's docstring): redundant, for the proofs."""
        space, m = self.space, self.model
        shortest = {p: min(space.lengths_of(p)) for p in space.parts}
        for p in space.parts:
            c1 = m.add(self.end[p] >= self.start[p] + shortest[p])
            c2 = m.add(self.end[p] <= self.start[p] + max(space.lengths_of(p)))
            if p.role == "W":
                c1.only_enforce_if(self.weight_runs[p])
                c2.only_enforce_if(self.weight_runs[p])
        head, tail = _heads_and_tails(space.parts, self.sure, shortest)
        share = self._shares()
        for r, rank_intervals in enumerate(self.intervals):
            mine = [p for p in space.parts if space.rank_of(p) == r]
            subsets: dict[tuple[Part, ...], tuple[int, int]] = {}  # parts in rank order -> (head, tail)
            for h in sorted({head[p] for p in mine if p.role != "W"}):  # a W's head follows its backward's
                chosen = tuple(p for p in mine if head[p] >= h)
                subsets[chosen] = (h, min(tail[p] for p in chosen))
            for t in sorted({tail[p] for p in mine if p.role != "W"}):
                chosen = tuple(p for p in mine if tail[p] >= t)
                subsets.setdefault(chosen, (min(head[p] for p in chosen), t))
            for chosen, (h, t) in subsets.items():
                inside = frozenset(chosen)  # for membership only
                m.add(self.makespan >= h + t + sum(share[p] for p in chosen))
                m.add(self.makespan >= h + t + sum(length * lit for lit, length, parts, _, _ in rank_intervals
                                                   if inside.intersection(parts)))

    def _shares(self) -> dict[Part, cp_model.IntVar]:
        """Each part's share of its rank's busy time: its interval, or a pair's split between its two parts."""
        m, L = self.model, self.space.lengths
        terms: dict[Part, list[tuple[int, object]]] = {p: [] for p in self.space.parts}
        for part, lit in self.alone.items():
            terms[part].append((L[self.space.alone_kind if part.role == "back" else "F"], lit))
        for (f, b, kind), lit in self.pair_of.items():
            forward = min(L["F"], L["F" + kind])
            terms[f].append((forward, lit))
            terms[b].append((L["F" + kind] - forward, lit))
        for w, runs in self.weight_runs.items():
            terms[w] = [(L["W"], runs)]
        share = {}
        for part, pieces in terms.items():
            lengths = [n for n, _ in pieces]
            low = 0 if part.role == "W" else min(lengths)
            share[part] = m.new_int_var(low, max(lengths), f"share {part}")
            m.add(share[part] == sum(n * lit for n, lit in pieces))
        return share

    def _symmetry(self) -> None:
        """Micro-batches of one route are interchangeable: number them in the order they enter."""
        by_route: dict[tuple[int, ...], list[int]] = {}
        for mb, route in enumerate(self.space.layout.routes):
            by_route.setdefault(route, []).append(mb)
        for route, mbs in by_route.items():
            for a, b in zip(mbs, mbs[1:], strict=False):
                self.model.add(self.end[Part(route[0], "F", a)] <= self.start[Part(route[0], "F", b)])

    def _cap(self, cap: int) -> None:
        """At most ``cap`` activations held on each rank (``Timeline.activation_events``)."""
        m, space = self.model, self.space
        for r in range(space.layout.n_ranks):
            times, changes = [], []
            for part in (p for p in space.parts if space.rank_of(p) == r and p.role == "F"):
                back, w = Part(part.stage, "back", part.microbatch), Part(part.stage, "W", part.microbatch)
                if not space.split_backward:
                    release = self.end[back]
                elif "B" not in space.pair_kinds:
                    release = self.end[w]
                else:
                    release = m.new_int_var(0, self.horizon, f"release {part}")
                    m.add(release == self.end[w]).only_enforce_if(self.weight_runs[w])
                    m.add(release == self.end[back]).only_enforce_if(~self.weight_runs[w])
                times += [self.start[part], release]
                changes += [1, -1]
            m.add_reservoir_constraint(times, changes, 0, cap)

    # ----------------------------------------------------------------------------------- hint and answer
    def hint(self, timeline: Timeline) -> None:
        """Start the search from ``timeline``'s schedule (a schedule of this space, simulated)."""
        m, values = self.model, {}
        chosen = set()
        for row in timeline.intervals:
            for iv in row:
                a = iv.action
                if isinstance(a, OverlappedAction):
                    f = Part(a.forward.stage, "F", a.forward.microbatch)
                    b = Part(a.backward.stage, "back", a.backward.microbatch)
                    chosen.add(self.pair_of[(f, b, a.backward.kind)])
                    parts = (f, b)
                else:
                    part = Part(a.stage, "W" if a.kind == "W" else ("F" if a.kind == "F" else "back"), a.microbatch)
                    chosen.add(self.weight_runs[part] if a.kind == "W" else self.alone[part])
                    parts = (part,)
                for p in parts:
                    values[self.start[p]], values[self.end[p]] = self._tick(iv.start), self._tick(iv.end)
        for w, runs in self.weight_runs.items():
            if runs not in chosen:
                back_end = values[self.end[Part(w.stage, "back", w.microbatch)]]
                values[self.start[w]] = values[self.end[w]] = back_end
        for lit in [*self.alone.values(), *self.pair_of.values(), *self.weight_runs.values()]:
            m.add_hint(lit, lit in chosen)
        for var, value in values.items():
            m.add_hint(var, value)
        m.add_hint(self.makespan, self._tick(timeline.makespan))

    def _tick(self, time: float) -> int:
        """A simulated time in the solver's ticks (``SearchSpace.ticks`` per unit)."""
        return round(time * self.space.ticks)

    def solve(self, time_limit: float) -> tuple[cp_model.CpSolver, str]:
        """Run CP-SAT: one worker, a fixed seed, at most ``time_limit`` seconds. Returns the solver and its
        status' name (OPTIMAL, FEASIBLE, UNKNOWN, ...)."""
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.random_seed = SEED
        solver.parameters.linearization_level = 2  # the bounds' sums in the LP relaxation: the proofs
        solver.parameters.max_time_in_seconds = float(time_limit)
        return solver, solver.status_name(solver.solve(self.model))

    def actions(self, solver: cp_model.CpSolver) -> tuple[tuple[ActionLike, ...], ...]:
        """Each rank's actions in the order of their start times in the solution."""
        rows = []
        for rank_intervals in self.intervals:
            chosen = [(solver.value(iv.start_expr()), action) for lit, _, _, action, iv in rank_intervals
                      if solver.boolean_value(lit)]
            rows.append(tuple(action for _, action in sorted(chosen, key=lambda x: x[0])))
        return tuple(rows)


def _heads_and_tails(parts, sure: dict[Part, list[tuple[Part, int]]], shortest: dict[Part, int]):
    """For each part, the earliest it can start (head) and the least time the step lasts after its end
    (tail), along the dependencies every choice keeps, each action at its shortest."""
    head, tail = dict.fromkeys(parts, 0), dict.fromkeys(parts, 0)
    edges = [Edge(c, "", p, lag) for c, needs in sure.items() for p, lag in needs]
    for _ in range(len(head)):  # longest paths in a DAG: at most one round per part
        changed = False
        for consumer, _, producer, lag in edges:
            if head[producer] + shortest[producer] + lag > head[consumer]:
                head[consumer] = head[producer] + shortest[producer] + lag
                changed = True
            if consumer.role != "W" and tail[consumer] + shortest[consumer] + lag > tail[producer]:
                tail[producer] = tail[consumer] + shortest[consumer] + lag
                changed = True
        if not changed:
            break
    return head, tail
