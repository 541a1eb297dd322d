"""What every puzzle shares: the ``Puzzle`` and ``Verdict`` types, reading a learner's rank lists, running and
drawing a design."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from utils.pipeline.costs import CostModel
from utils.pipeline.schedule import Action, OverlappedAction, Schedule, parse_action
from utils.pipeline.simulate import simulate
from utils.pipeline.timeline import Timeline
from utils.pipeline.validation import validate

UNIT_COSTS = CostModel(F=1.0, B=2.0, W=1.0)
# An expert all-to-all (dispatch + combine) of one unit per chunk: an overlapped F&B pair hides each chunk's
# behind its partner's compute (the pair itself costs F + B).
PAIR_COSTS = CostModel(F=1.0, B=2.0, W=1.0, dispatch=0.5, combine=0.5)
TOL = 1e-9


@dataclass(frozen=True)
class Verdict:
    """What the grader found: ``passed`` and one kind, specific paragraph saying why."""

    passed: bool
    message: str


@dataclass(frozen=True, eq=False)
class Puzzle:
    """One design puzzle: ``statement`` (markdown), ``stub`` (the code a learner starts from), ``hints`` (a
    ladder: each says more), ``goal`` (what a right answer achieves, in words: shown instead of a solution),
    ``reference`` (returns an answer that passes: the solution the target is computed from) and ``judge``
    (answer -> Verdict). ``draw(answer)`` returns a figure of the learner's design, or None."""

    key: str
    title: str
    statement: str
    stub: str
    hints: tuple[str, ...]
    goal: str
    reference: Callable[[], Any]
    judge: Callable[[Any], Verdict]
    draw: Callable[[Any], Any] | None = None

    def grade(self, answer: Any) -> Verdict:
        """Judge ``answer`` (what the learner's function returned); never raises."""
        try:
            return self.judge(answer)
        except Exception as error:  # a learner's odd value gets words, not a traceback
            return Verdict(False, f"could not read your answer ({type(error).__name__}: {error}).")

    def show(self, answer: Any, _goal: Any = None) -> None:
        """Draw the learner's design (called by ``utils.checks.check_puzzle`` on a wrong answer)."""
        if self.draw is None:
            return
        try:
            figure = self.draw(answer)
        except Exception:
            return  # the verdict already says why it cannot be drawn
        if figure is not None:
            import matplotlib.pyplot as plt

            plt.show()

    def __repr__(self) -> str:
        return f"{self.title}\n\n{self.statement}"

    def _repr_markdown_(self) -> str:
        return f"**{self.title}**\n\n{self.statement}"


# ------------------------------------------------------------------------------ reading an answer

def rank_lists(answer: Any, n_ranks: int) -> list[tuple]:
    """The learner's rank lists as actions: a list (or dict by rank) of lists of strings or actions.

    Raises ValueError saying what is wrong (how many lists, which item cannot be read)."""
    if isinstance(answer, Mapping):
        answer = [answer.get(r, answer.get(str(r), [])) for r in range(n_ranks)]
    if isinstance(answer, (str, bytes)) or not hasattr(answer, "__len__"):
        raise ValueError(f"return one list of action strings per rank ({n_ranks} lists); got "
                         f"{type(answer).__name__}")
    if len(answer) != n_ranks:
        raise ValueError(f"return one list per rank: {n_ranks} lists, got {len(answer)}")
    lists = []
    for r, items in enumerate(answer):
        if isinstance(items, str):
            items = items.split()
        row = []
        for i, item in enumerate(items):
            if isinstance(item, (Action, OverlappedAction)):
                row.append(item)
                continue
            try:
                row.append(parse_action(str(item)))
            except ValueError as err:
                raise ValueError(f"rank {r}, item {i}: {err}") from None
        lists.append(tuple(row))
    return lists


def lines_of(schedule: Schedule) -> list[list[str]]:
    return [[str(a) for a in acts] for acts in schedule.actions]


def run_design(schedule: Schedule, costs: CostModel) -> tuple[Timeline | None, str]:
    """(timeline, "") if ``schedule`` runs, else (None, the validator's words)."""
    try:
        validate(schedule)
    except ValueError as err:
        return None, f"your schedule cannot run. The validator says: {err}"
    return simulate(schedule, costs), ""


def draw_schedule(schedule_of: Callable[[Any], Schedule], costs: CostModel, memory: bool = False):
    """A ``Puzzle.draw``: the learner's timeline (and, with ``memory``, activations held per rank)."""

    def draw(answer):
        import matplotlib.pyplot as plt

        from utils.pipeline.plots import plot_memory, plot_timeline

        timeline = simulate(schedule_of(answer), costs)
        if not memory:
            return plot_timeline(timeline, title="your schedule").figure
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), layout="constrained")
        plot_timeline(timeline, ax=top, title="your schedule")
        plot_memory(timeline, ax=bottom, title="activations held per rank")
        return fig

    return draw
