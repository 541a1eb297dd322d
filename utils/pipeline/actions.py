"""Actions and the one dependency rule: the words every schedule is written in.

An action is (stage, kind, micro-batch) with the kinds

* ``F`` forward, ``B`` full backward,
* ``I`` backward for the input (the part the previous stage is waiting for),
* ``W`` backward for the weights (needed only before the optimizer step, so it can be deferred),

and the overlapped pair of DualPipe (and of 1F1B with overlapped pairs): one forward chunk and one backward
chunk run as one unit (``F&B``). The string forms are those of ``torch.distributed.pipelining`` so learners
can read both: ``1F0``, ``2I3``, ``2W3``, ``(0F7;7B3)OVERLAP_F_B`` (``parse_action`` reads them back).

``dependency_rule`` says which results an action waits for; the validator, the simulator and the executor
all follow it, through ``utils.pipeline.schedule.Schedule`` (which re-exports everything here).
Ground layer: imports only ``utils.inputs``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from utils import inputs as arg

KINDS = ("F", "B", "I", "W")
#: Every ``action_kind``, numbered as ``Schedule.dependency_slots`` numbers them: the plain kinds, then pairs.
ACTION_KINDS = (*KINDS, "FB", "FI")
KIND_NAMES = {"F": "forward", "B": "full backward", "I": "backward for input", "W": "backward for weights"}

_ACTION_RE = re.compile(r"^(\d+)([FBIW])(\d+)$")
_OVERLAP_RE = re.compile(r"^\((\d+F\d+);(\d+[BI]\d+)\)OVERLAP_F_B$")


@dataclass(frozen=True)
class Action:
    """One compute action: run ``kind`` of stage ``stage`` on micro-batch ``microbatch``."""

    stage: int
    kind: str
    microbatch: int

    def __post_init__(self):
        if self.kind not in KINDS:
            raise arg.InputError(
                f"Action kind must be one of {', '.join(KINDS)} (forward, full backward, backward for input, "
                f"backward for weights); got {self.kind!r}."
            )
        if type(self.stage) is not int or type(self.microbatch) is not int:  # the fast path is a plain int
            for name in ("stage", "microbatch"):
                value = arg.whole(getattr(self, name), name, where="Action",
                                  why="stages and micro-batches are numbered 0, 1, 2, ...")
                object.__setattr__(self, name, value)
        if self.stage < 0 or self.microbatch < 0:
            raise ValueError(
                f"Action stage and micro-batch are indices, so they must be >= 0; got stage={self.stage}, "
                f"microbatch={self.microbatch}."
            )

    def __str__(self) -> str:
        return f"{self.stage}{self.kind}{self.microbatch}"


@dataclass(frozen=True)
class OverlappedAction:
    """DualPipe's F&B: a forward chunk and a backward chunk run together as one unit.

    Their computation and communication interleave (DeepSeek-V3 report, Sec. 3.2.1, Figure 4): one chunk's
    all-to-all runs while the other computes. The pair computes for ``F&B`` (F + B unless the two chunks'
    computations overlap too; see ``utils.pipeline.costs.CostModel``) and both results are ready when the
    pair ends. DualPipe pairs chunks of two directions; ``1f1b-overlap`` pairs a forward and a backward of
    different micro-batches on the same stage.
    """

    forward: Action
    backward: Action

    def __post_init__(self):
        for name in ("forward", "backward"):
            arg.instance(getattr(self, name), name, Action, "an Action (e.g. Action(0, 'F', 7))",
                         where="OverlappedAction")
        if self.forward.kind != "F":
            raise ValueError(f"An overlapped pair's first action must be a forward (F); got {self.forward}.")
        if self.backward.kind not in ("B", "I"):
            raise ValueError(
                f"An overlapped pair's second action must be a backward (B or I); got {self.backward}."
            )

    def __str__(self) -> str:
        return f"({self.forward};{self.backward})OVERLAP_F_B"

    @property
    def parts(self) -> tuple[Action, Action]:
        return (self.forward, self.backward)


ActionLike = Action | OverlappedAction


def action_parts(action: ActionLike) -> tuple[Action, ...]:
    """The plain actions inside ``action``: itself, or the forward and backward of an overlapped pair."""
    if isinstance(action, OverlappedAction):
        return action.parts
    return (arg.instance(action, "action", Action, "an Action or an OverlappedAction", where="action_parts"),)


def action_kind(action: ActionLike) -> str:
    """F, B, I or W for a plain action; FB or FI for an overlapped pair (a forward with a B or with an I)."""
    if type(action) is OverlappedAction:
        return "F" + action.backward.kind
    if type(action) is not Action:
        arg.instance(action, "action", (Action, OverlappedAction), "an Action or an OverlappedAction",
                     where="action_kind")
    return action.kind


# ------------------------------------------------------------------------------------ the dependency rule

#: The two results one action hands to another: ``ACT`` the output of a stage's forward (the activation
#: the next stage on the route takes, and which its own backward needs), ``GRAD`` the gradient at a
#: stage's input (computed by its B or its I; the previous stage on the route takes it, its W needs it).
ACT, GRAD = "act", "grad"
#: What each kind of action makes: a W makes nothing another action waits for.
MAKES = {"F": ACT, "B": GRAD, "I": GRAD, "W": None}


def dependency_rule(kind: str, stage: int, prev: int | None, nxt: int | None) -> tuple[tuple[int, str], ...]:
    """The results a plain action waits for, as (stage, ACT or GRAD): the one rule every consumer follows.

    ``kind`` and ``stage`` are the action's; ``prev`` and ``nxt`` the stages before and after ``stage`` on
    its micro-batch's route (None at an end of the route). DeepSeek-V3 report Sec. 3.2.1; "Zero Bubble
    Pipeline Parallelism" (Qi et al.), Sec. 2:

    * F needs the output of the previous stage on the route (the first stage reads the micro-batch itself);
    * B or I needs its own F's output (the activations it saved) and the gradient at the next stage's input
      (the last stage holds the loss, so it needs nothing from outside);
    * W needs its own I (the output gradients I kept).
    """
    if kind == "F":
        return () if prev is None else ((prev, ACT),)
    if kind == "W":
        return ((stage, GRAD),)
    return ((stage, ACT),) if nxt is None else ((stage, ACT), (nxt, GRAD))


class Dependency(NamedTuple):
    """A result an action waits for: ``kind`` (ACT or GRAD) of ``stage`` for ``microbatch``.

    ``remote`` is True when ``stage`` lives on another rank than the waiting action's stage, so the result
    travels as a message (point-to-point latency in the simulator, an ``irecv`` in the executor).
    """

    stage: int
    kind: str
    microbatch: int
    remote: bool


def parse_action(text: str) -> ActionLike:
    """Inverse of ``str(action)``: ``"1F0"`` -> Action(1, "F", 0); ``"(0F7;7B3)OVERLAP_F_B"`` -> pair."""
    arg.instance(text, "text", str, "a string such as '1F0' or '(0F7;7B3)OVERLAP_F_B'", where="parse_action")
    s = text.strip()
    if m := _ACTION_RE.match(s):
        return Action(int(m.group(1)), m.group(2), int(m.group(3)))
    if m := _OVERLAP_RE.match(s):
        return OverlappedAction(parse_action(m.group(1)), parse_action(m.group(2)))
    raise ValueError(
        f"Cannot read action {text!r}: expected <stage><kind><microbatch> with kind F, B, I or W "
        f"(e.g. '1F0', '2I3') or an overlapped pair '(<stage>F<mb>;<stage>B<mb>)OVERLAP_F_B' "
        f"(e.g. '(0F7;7B3)OVERLAP_F_B')."
    )
