"""Overlap hooks: how an overlapped forward-and-backward pair, ``(F;B)OVERLAP_F_B``, runs its two chunks.

A hook receives two generators, the steps of the forward chunk and of the backward chunk, and runs both to
the end; where it switches between them decides what computation hides which communication (DeepSeek-V3
report, Sec. 3.2.1, Figure 4; DualPipe's ``overlapped_forward_backward``).
"""

from __future__ import annotations


def interleave(forward_steps, backward_steps) -> None:
    """Default F&B hook: advance the forward and the backward chunk in turn, one step each.

    A step ends where a chunk has issued communication (its all-to-all is then in flight while the other
    chunk computes) or at a layer boundary. The order is fixed, so every rank of an expert-parallel group
    issues its collectives in the same order.
    """
    active = [forward_steps, backward_steps]
    while active:
        for steps in list(active):
            try:
                next(steps)
            except StopIteration:
                active.remove(steps)


def sequential(forward_steps, backward_steps) -> None:
    """The simplest hook (the example in DeepSeek's DualPipe code): the forward chunk, then the backward."""
    for _ in forward_steps:
        pass
    for _ in backward_steps:
        pass


OVERLAP_HOOKS = {"interleave": interleave, "sequential": sequential}


def drain(steps) -> None:
    """Run a chunk's steps to the end (a plain action: nothing to overlap with)."""
    for _ in steps:
        pass
