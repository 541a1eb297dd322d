"""One pipeline stage on one rank: each forward kept on a tape, its backward whole (B) or split (I, then W).

Zero Bubble ("Zero Bubble Pipeline Parallelism", Qi et al., Sec. 2): the backward for the input (I)
computes the gradient at the stage input, which the previous stage is waiting for, and at the output of
every layer that owns weights; the backward for the weights (W) turns the latter into weight gradients
later, in a bubble. Forward and backward are generators that yield where a partner chunk may run (see
``utils.pipeline.executor.overlap``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

# ------------------------------------------------------------------------- one forward, kept for backward

@dataclass
class _Edge:
    """Where the autograd graph of a chunk is cut: ``leaf`` stands for ``src`` in later computation.

    ``comm`` is None for a local cut, else (send_splits, recv_splits, group, label) of the all-to-all that
    carried ``src`` to ``leaf`` (the backward sends the gradient the other way).
    """

    src: torch.Tensor
    leaf: torch.Tensor
    segment: int
    comm: tuple | None = None


class Clock:
    """Counts resumptions of chunk steps, to tell whether other work ran while a message was in flight."""

    def __init__(self, t0: float = 0.0):
        self.steps = 0
        self.t0 = t0

    def ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1e3


@dataclass
class Tape:
    """What one forward of one stage on one micro-batch leaves for its backward.

    The chunk's graph is cut into segments at every communication (and, inside an overlapped pair, at every
    layer), so the backward can run segment by segment and send gradients through the reverse all-to-all
    in between. ``owner_outputs`` are the outputs of every layer that owns parameters (kept only when the
    backward is split into I and W): I computes the gradient at each of them, W turns it into the weight
    gradient.
    """

    capture: bool
    input: torch.Tensor | None = None
    output: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    segment: int = 0
    edges: list = field(default_factory=list)
    owner_outputs: list = field(default_factory=list)
    owner_grads: dict = field(default_factory=dict)
    leaf_grads: dict = field(default_factory=dict)
    input_grad: torch.Tensor | None = None

    def cut(self, tensor: torch.Tensor, new_segment: bool = False) -> torch.Tensor:
        """A leaf standing for ``tensor`` (same values) from here on; the backward joins them again."""
        if not tensor.requires_grad:
            return tensor
        leaf = tensor.detach().requires_grad_()
        self.edges.append(_Edge(tensor, leaf, self.segment))
        if new_segment:
            self.segment += 1
        return leaf

    def all_to_all(self, src, send_splits, recv_splits, group, label, clock, comms):
        """Generator: send rows of ``src`` over ``group`` (``async_op=True``); yield while in flight.

        Returns the received rows as a leaf of the next segment.
        """
        send = src.detach().contiguous()
        recv = send.new_empty((sum(recv_splits), *send.shape[1:]))
        issued, steps = clock.ms(), clock.steps
        work = dist.all_to_all_single(recv, send, recv_splits, send_splits, group=group, async_op=True)
        yield work  # the overlap hook may run the partner chunk now
        waiting_from = clock.ms()
        work.wait()
        done = clock.ms()
        # (label, issued, done, overlapped: other work ran while in flight, waited: the exposed part)
        comms.append((label, issued, done, clock.steps - steps > 1, done - waiting_from))
        self.edges.append(_Edge(src, recv, self.segment, (send_splits, recv_splits, group, label)))
        self.segment += 1
        return recv.requires_grad_(src.requires_grad)

    def grad_of(self, leaf: torch.Tensor) -> torch.Tensor | None:
        return self.leaf_grads.get(id(leaf), leaf.grad)


# --------------------------------------------------------------------------------------- one stage

def _owners(module: nn.Module) -> list[nn.Module]:
    """Modules that hold parameters directly (Linear, Embedding, RMSNorm, ...): the units W works on."""
    return [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]


class StageRunner:
    """One stage on one rank: its chunk, and the tapes of micro-batches between their F and their B or W."""

    def __init__(self, stage: int, chunk: nn.Module, ep_context=None, split_backward: bool = True):
        self.stage = stage
        self.chunk = chunk
        self.ep = ep_context
        self.tapes: dict[int, Tape] = {}
        self.current_tape: Tape | None = None
        if split_backward:  # only stages whose backward is split into I and W need to keep layer outputs
            for owner in _owners(chunk):
                owner.register_forward_hook(self._capture)

    def _capture(self, module, inputs, output):
        tape = self.current_tape
        if tape is None or not tape.capture:
            return
        outs = [t for t in (output if isinstance(output, (tuple, list)) else (output,))
                if isinstance(t, torch.Tensor) and t.requires_grad]
        if outs:
            tape.owner_outputs.append((module, outs))

    # -- forward
    def forward_steps(self, mb: int, x: torch.Tensor, needs_input_grad: bool, capture: bool,
                      split_layers: bool, clock: Clock, comms: list, loss_fn=None, n_microbatches: int = 1):
        """Generator running the forward of micro-batch ``mb``; yields where a partner chunk may run.

        Non-last stages keep the output on the tape (returned by ``output_of``); the last stage computes
        ``loss_fn(output)`` and keeps ``loss / n_microbatches`` for the backward.
        """
        tape = Tape(capture=capture)
        self.tapes[mb] = tape
        if needs_input_grad and x.is_floating_point():
            x = x.detach().requires_grad_()
            tape.input = x
        self.current_tape = tape
        try:
            h = x
            parts = list(self.chunk.parts)
            for i, part in enumerate(parts):
                if self.ep is not None and self.ep.handles(part):
                    h = yield from self.ep.block_steps(part, h, tape, clock, comms, f"{self.stage}F{mb}")
                else:
                    h = part(h)
                if split_layers and i + 1 < len(parts):
                    h = tape.cut(h, new_segment=True)
                    yield None
            if loss_fn is not None:
                loss = loss_fn(h)
                tape.loss = loss / n_microbatches
                tape.output = loss.detach()
            else:
                tape.output = h
        finally:
            self.current_tape = None

    # -- backward
    def backward_steps(self, mb: int, grad: torch.Tensor | None, split: bool, clock: Clock, comms: list):
        """Generator running the full backward (``split=False``) or the input part I (``split=True``).

        Walks the tape's segments from last to first; between segments it yields, and gradients of
        all-to-all'd tensors travel back by the reverse all-to-all while the partner chunk may compute.
        The gradient w.r.t. the stage input ends up in ``tape.input_grad``.
        """
        tape = self.tapes[mb]
        roots: dict[int, list] = {s: [] for s in range(tape.segment + 1)}
        if tape.loss is not None:
            roots[tape.segment].append((tape.loss, None))
        else:
            roots[tape.segment].append((tape.output, grad))
        for seg in range(tape.segment, -1, -1):
            in_flight = []
            for edge in (e for e in tape.edges if e.segment == seg):
                g = tape.grad_of(edge.leaf)
                if g is None:
                    continue
                if edge.comm is None:
                    roots[seg].append((edge.src, g))
                    continue
                send_splits, recv_splits, group, label = edge.comm
                back = g.new_empty(edge.src.shape)
                issued, steps = clock.ms(), clock.steps
                work = dist.all_to_all_single(back, g.contiguous(), send_splits, recv_splits, group=group,
                                              async_op=True)
                in_flight.append((edge, back, work, issued, steps, label))
            if in_flight:
                yield in_flight[0][2]
                for edge, back, work, issued, steps, label in in_flight:
                    waiting_from = clock.ms()
                    work.wait()
                    done = clock.ms()
                    kind = "I" if split else "B"
                    comms.append((f"{label.split()[0]} grad {self.stage}{kind}{mb}", issued, done,
                                  clock.steps - steps > 1, done - waiting_from))
                    roots[seg].append((edge.src, back))
            elif seg < tape.segment:
                yield None
            self._traverse(tape, roots[seg], split)
        if tape.input is not None:
            tape.input_grad = tape.grad_of(tape.input)
        tape.leaf_grads = {}
        if not split:
            del self.tapes[mb]

    def _traverse(self, tape: Tape, roots: list, split: bool) -> None:
        tensors = [t for t, _ in roots if t.requires_grad]
        grads = [g for t, g in roots if t.requires_grad]
        if not tensors:
            return
        if not split:
            torch.autograd.backward(tensors, grads)
            return
        # I: gradients w.r.t. the segment's leaves (stage input, cut points) and every weight owner's
        # output; the graph is kept for W.
        leaves = [e.leaf for e in tape.edges if e.leaf.requires_grad]
        if tape.input is not None:
            leaves.append(tape.input)
        owner_outs = [t for _, outs in tape.owner_outputs for t in outs]
        got = torch.autograd.grad(tensors, leaves + owner_outs, grads, retain_graph=True, allow_unused=True)
        for leaf, g in zip(leaves, got[: len(leaves)], strict=True):
            if g is not None:
                old = tape.leaf_grads.get(id(leaf))
                tape.leaf_grads[id(leaf)] = g if old is None else old + g
        for i, g in enumerate(got[len(leaves):]):
            if g is not None:
                old = tape.owner_grads.get(i)
                tape.owner_grads[i] = g if old is None else old + g

    def weight_step(self, mb: int) -> None:
        """W: each weight owner turns the gradient I kept at its output into its weight gradient."""
        tape = self.tapes.pop(mb)
        index = 0
        for module, outs in tape.owner_outputs:
            grads = [tape.owner_grads.get(index + j) for j in range(len(outs))]
            index += len(outs)
            pairs = [(t, g) for t, g in zip(outs, grads, strict=True) if g is not None]
            params = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if not pairs or not params:
                continue
            dws = torch.autograd.grad([t for t, _ in pairs], params, [g for _, g in pairs], retain_graph=True,
                                      allow_unused=True)
            for p, dw in zip(params, dws, strict=True):
                if dw is not None:
                    if p.grad is None:
                        p.grad = dw
                    else:
                        p.grad += dw
