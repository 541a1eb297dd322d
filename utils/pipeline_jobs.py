"""What each rank runs to execute a pipeline schedule: its stages, its actions, its messages.

The driver (``utils.execute.execute``) sends every rank the same plan; each rank builds its own stages from
the model spec (same seed, same weights as the single-process reference), then executes its action list in
order (DeepSeek-V3 report, Sec. 3.2.1; "Zero Bubble Pipeline Parallelism", Qi et al., Sec. 2):

* ``F``  forward one micro-batch through one stage; send the output to the next stage's rank.
* ``B``  full backward: gradient w.r.t. the stage input (sent to the previous stage) and the weights.
* ``I``  backward for the input only; what ``W`` will need is kept (each layer's output gradient).
* ``W``  backward for the weights, from what ``I`` kept: dW of a layer needs only its input and the
  gradient at its output, so it can run later, in a bubble.
* ``(F;B)OVERLAP_F_B``  a forward chunk and a backward chunk run together through an overlap hook (like
  DualPipe's ``overlapped_forward_backward``); the default ``interleave`` alternates them at every point
  where one of them waits for communication (an expert all-to-all issued with ``async_op=True``) or, in a
  dense model, at every layer.

Messages: activations and gradients travel with non-blocking ``isend``/``irecv``, tagged by (kind,
destination stage, micro-batch) so messages never mix. Receives for the next few actions are posted before
a rank blocks on the current one, and a rank waits for its sends only at the end of the step. A rank
therefore blocks only on an input the schedule says it needs now; the validator guarantees that input is
eventually produced, so no schedule it accepts can deadlock.

Expert parallelism (``ep`` > 1): global rank ``pp_rank * ep + ep_rank``; the ``ep`` ranks of a pipeline
rank run the same action list on different sequences of each micro-batch, and every MoE layer sends tokens
to the rank holding their experts with ``all_to_all_single(async_op=True)``. All of them issue their
collectives in the same order because the overlap hook is deterministic (it never looks at the clock).

Gradients at the end of the step, as a training step needs them before its optimizer update: mirrored
stages (DualPipe's two copies of a chunk, on ranks r and PP-1-r) exchange and sum their gradients, and
parameters replicated over an expert-parallel group (attention, router, shared experts) are all-reduced.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from utils.schedules import Action, OverlappedAction, Schedule
from utils.stage_models import expert_owner, shard_microbatch

#: Receives posted ahead of the action being run (the current one plus this many).
LOOKAHEAD = 2


class StageError(RuntimeError):
    """A stage failed while a rank ran one of its actions; the message names the rank and the action."""


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


# ------------------------------------------------------------------------------------ the overlap hooks

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


def _drain(steps) -> None:
    for _ in steps:
        pass


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


class _Clock:
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
        work.wait()
        comms.append((label, issued, clock.ms(), clock.steps - steps > 1))
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
                      split_layers: bool, clock: _Clock, comms: list, loss_fn=None, n_microbatches: int = 1):
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
    def backward_steps(self, mb: int, grad: torch.Tensor | None, split: bool, clock: _Clock, comms: list):
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
                    work.wait()
                    kind = "I" if split else "B"
                    comms.append((f"{label.split()[0]} grad {self.stage}{kind}{mb}", issued, clock.ms(),
                                  clock.steps - steps > 1))
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


# ------------------------------------------------------------------------------ expert-parallel MoE block

class ExpertParallelBlocks:
    """Runs the toy decoder's blocks with their routed experts sharded over an expert-parallel group.

    Per block (DeepSeek-V3 Sec. 3.2.2, flat dispatch): attention and routing on this rank's sequences;
    **dispatch**: every (token, chosen expert) row goes to the rank holding that expert
    (``all_to_all_single(async_op=True)``: the chunk yields while it is in flight); the experts run on the
    rows they received; **combine**: results come back the same way; the rows are weighted by their gates
    and added to the shared experts' output and the residual. Rank ``e`` of the group holds experts
    ``e * n_routed / ep ... (e + 1) * n_routed / ep - 1``; the others are removed from its copy.
    """

    def __init__(self, group, ep: int, ep_rank: int):
        self.group, self.ep, self.ep_rank = group, ep, ep_rank

    @staticmethod
    def handles(part: nn.Module) -> bool:
        return hasattr(part, "moe") and hasattr(part, "attn")

    def shard(self, chunk: nn.Module) -> None:
        """Keep only this rank's routed experts (the others become parameter-free placeholders)."""
        for part in chunk.parts:
            if self.handles(part):
                moe = part.moe
                per_rank = moe.n_routed // self.ep
                for e in range(moe.n_routed):
                    if e // per_rank != self.ep_rank:
                        moe.experts[e] = nn.Identity()

    def block_steps(self, block, x, tape: Tape, clock: _Clock, comms: list, label: str):
        moe = block.moe
        per_rank = moe.n_routed // self.ep
        h = x + block.attn(block.attn_norm(x))
        tokens = block.ffn_norm(h).reshape(-1, x.shape[-1])
        affinity = moe.affinity(tokens)
        expert_idx, gates = moe.route(affinity)
        shared = moe.shared_output(tokens)
        # One row per (token, chosen expert), sorted by expert: the rows for each rank are contiguous.
        flat_expert = expert_idx.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        token_of_row = order // expert_idx.shape[1]
        per_expert = torch.bincount(flat_expert, minlength=moe.n_routed)
        got = torch.empty_like(per_expert)
        dist.all_to_all_single(got, per_expert, group=self.group)  # how many rows of each expert will come
        send_splits = per_expert.view(self.ep, per_rank).sum(1).tolist()
        recv_counts = got.view(self.ep, per_rank)
        recv_splits = recv_counts.sum(1).tolist()
        # The combine segment needs these three; cutting them keeps the segments' graphs apart.
        h, gates, shared = tape.cut(h), tape.cut(gates), tape.cut(shared)
        rows = yield from tape.all_to_all(tokens[token_of_row], send_splits, recv_splits, self.group,
                                          f"dispatch {label}", clock, comms)
        experts_here = torch.arange(per_rank, device=rows.device).repeat(self.ep)
        local_expert = torch.repeat_interleave(experts_here, recv_counts.reshape(-1))
        out = torch.zeros_like(rows)
        for j in range(per_rank):
            idx = (local_expert == j).nonzero().squeeze(1)
            if idx.numel():
                out = out.index_add(0, idx, moe.experts[self.ep_rank * per_rank + j](rows[idx]))
        back = yield from tape.all_to_all(out, recv_splits, send_splits, self.group, f"combine {label}",
                                          clock, comms)
        gate_of_row = gates.reshape(-1)[order].unsqueeze(-1)
        routed = torch.zeros_like(shared).index_add(0, token_of_row, gate_of_row * back)
        return h + (shared + routed).reshape(x.shape)


# -------------------------------------------------------------------------------------- groups

_GROUP_CACHE: dict = {}


def expert_groups(n_ranks: int, ep: int):
    """The expert-parallel groups (ranks ``p * ep ... p * ep + ep - 1`` for each pipeline rank p).

    Creating a group is collective (every rank of the default group calls it), so every rank calls this,
    and the groups are cached for the life of the process.
    """
    if ep == 1:
        return None
    key = (id(dist.group.WORLD), n_ranks, ep)
    if key not in _GROUP_CACHE:
        groups = [dist.new_group(list(range(p * ep, (p + 1) * ep))) for p in range(n_ranks)]
        _GROUP_CACHE[key] = groups
    return _GROUP_CACHE[key]


def warm_up() -> None:
    """Pay one-time costs before the clock starts: the first backward with explicit output gradients
    imports torch's symbolic-shape machinery (sympy), about a second on a busy core."""
    t = torch.ones(2, requires_grad=True)
    torch.autograd.backward([t * 2], [torch.ones(2)])


def _device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ------------------------------------------------------------------------------------- one rank's step

class RankPipeline:
    """One rank's part of a pipeline: its stages, built once, and ``step()`` to run the schedule once."""

    def __init__(self, schedule: Schedule, model_spec, *, pacing: Pacing | None = None,
                 overlap="interleave", lookahead: int = LOOKAHEAD):
        self.schedule, self.spec, self.pacing = schedule, model_spec, pacing
        self.overlap = OVERLAP_HOOKS[overlap] if isinstance(overlap, str) else overlap
        self.lookahead = lookahead
        self.ep = getattr(model_spec, "ep", 1)
        self.rank = dist.get_rank()
        self.pp_rank, self.ep_rank = divmod(self.rank, self.ep)
        groups = expert_groups(schedule.n_ranks, self.ep)
        self.device = _device()
        warm_up()
        self.M = schedule.n_microbatches
        model = model_spec.build()
        chunks = model_spec.cut(model, schedule.n_chunks)
        self._boundary_cache: dict = {}
        self._model, self._chunks = model, chunks
        ep_context = None
        if groups is not None:
            ep_context = ExpertParallelBlocks(groups[self.pp_rank], self.ep, self.ep_rank)
        mine, used = {}, set()
        for s in schedule.stages_on(self.pp_rank):  # copies first: hooks must not be copied along
            c = schedule.stage_to_chunk[s]
            # The full CPU model stays intact for the dry run of shapes (see _boundaries).
            mine[s] = chunks[c] if c not in used and ep_context is None and self.device.type == "cpu" \
                else copy.deepcopy(chunks[c])
            used.add(c)
            if ep_context is not None:
                ep_context.shard(mine[s])
        # Which (stage, micro-batch) pairs have their backward split into I and W (their tapes keep more).
        self.split = {(p.stage, p.microbatch) for acts in schedule.actions for a in acts
                      for p in (a.parts if isinstance(a, OverlappedAction) else (a,)) if p.kind == "I"}
        self.stages: dict[int, StageRunner] = {
            s: StageRunner(s, chunk.to(self.device), ep_context, any(t == s for t, _ in self.split))
            for s, chunk in mine.items()}
        self.actions = schedule.actions[self.pp_rank]
        self.recv_plan = [self._recvs_of(a) for a in self.actions]
        self.from_peer = self._messages_by_sender()

    # -- planning
    def _global(self, pp_rank: int) -> int:
        return pp_rank * self.ep + self.ep_rank

    def _tag(self, kind: str, stage: int, mb: int) -> int:
        """Message tag: activation into / gradient of ``stage`` for ``mb`` (+2: its paced-mode time stamp)."""
        return (stage * self.M + mb) * 4 + (0 if kind == "act" else 1)

    def _recvs_of(self, action) -> list[tuple]:
        """Messages ``action`` needs from other ranks: (kind, stage, micro-batch, source pipeline rank)."""
        out = []
        for part in (action.parts if isinstance(action, OverlappedAction) else (action,)):
            s, m = part.stage, part.microbatch
            if part.kind == "F":
                prev = self.schedule.prev_stage(s, m)
                if prev is not None and self.schedule.stage_to_rank[prev] != self.pp_rank:
                    out.append(("act", s, m, self.schedule.stage_to_rank[prev]))
            elif part.kind in ("B", "I"):
                nxt = self.schedule.next_stage(s, m)
                if nxt is not None and self.schedule.stage_to_rank[nxt] != self.pp_rank:
                    out.append(("grad", s, m, self.schedule.stage_to_rank[nxt]))
        return out

    def _messages_by_sender(self) -> dict[int, list[tuple[str, int, int]]]:
        """For each pipeline rank that sends to this one, its messages (kind, stage, micro-batch) in the order
        it sends them. Receives from a peer are posted in that order: gloo matches messages by tag, but NCCL
        ignores tags and matches them in order."""
        sched, order = self.schedule, {}
        for peer, actions in enumerate(sched.actions):
            if peer == self.pp_rank:
                continue
            for action in actions:
                for part in (action.parts if isinstance(action, OverlappedAction) else (action,)):
                    s, m = part.stage, part.microbatch
                    if part.kind == "F":
                        dst, key = sched.next_stage(s, m), "act"
                    elif part.kind in ("B", "I"):
                        dst, key = sched.prev_stage(s, m), "grad"
                    else:
                        continue
                    if dst is not None and sched.stage_to_rank[dst] == self.pp_rank:
                        order.setdefault(peer, []).append((key, dst, m))
        return order

    def _boundaries(self, x: torch.Tensor) -> list[tuple[torch.Size, torch.dtype]]:
        """Shape and dtype of each chunk's output for a micro-batch input like ``x`` (a dry run, no grad).

        Every rank computes the same table from its own full copy of the model, so a receiver can allocate
        its buffer and a sender can check what it sends; a chunk that cannot take its predecessor's output
        fails here, on every rank, before any message is sent.
        """
        key = (tuple(x.shape), x.dtype)
        if key not in self._boundary_cache:
            shapes = []
            was_training = self._model.training
            self._model.eval()
            with torch.no_grad():
                h = x
                for c, chunk in enumerate(self._chunks):
                    try:
                        h = chunk(h)
                    except Exception as exc:
                        raise ValueError(
                            f"chunk {c} cannot take the output of chunk {c - 1}, of shape {tuple(h.shape)} "
                            f"({h.dtype}): {type(exc).__name__}: {exc}" if c else
                            f"chunk 0 cannot take a micro-batch of shape {tuple(h.shape)}: {exc}") from exc
                    shapes.append((h.shape, h.dtype))
            self._model.train(was_training)
            self._boundary_cache[key] = shapes
        return self._boundary_cache[key]

    def _expected(self, kind: str, stage: int, mb: int):
        """(shape, dtype) of the activation entering ``stage`` ("act") or of the gradient of its output."""
        table = self._boundaries(self._cpu_inputs[mb])
        if kind == "act":
            prev = self.schedule.prev_stage(stage, mb)
            return table[self.schedule.stage_to_chunk[prev]]
        return table[self.schedule.stage_to_chunk[stage]]

    # -- messages
    def _post(self, upto: int) -> None:
        """Post the receives of actions up to index ``upto`` (exclusive) that are not posted yet, each after
        every earlier message from the same sender."""
        while self._posted < min(upto, len(self.actions)):
            for kind, s, m, src in self.recv_plan[self._posted]:
                queue = self.from_peer[src]
                last = queue.index((kind, s, m))
                while self._peer_posted.get(src, 0) <= last:
                    self._post_one(*queue[self._peer_posted.get(src, 0)], src)
                    self._peer_posted[src] = self._peer_posted.get(src, 0) + 1
            self._posted += 1

    def _post_one(self, kind: str, s: int, m: int, src: int) -> None:
        shape, dtype = self._expected(kind, s, m)
        buf = torch.empty(shape, dtype=dtype, device=self.device)
        tag, peer = self._tag(kind, s, m), self._global(src)
        works = [dist.irecv(buf, src=peer, tag=tag)]
        stamp = None
        if self.pacing is not None:  # paced mode: when the sender's action ends on its clock
            stamp = torch.zeros(1, dtype=torch.float64, device=self.device)
            works.append(dist.irecv(stamp, src=peer, tag=tag + 2))
        self._pending[(kind, s, m)] = (works, buf, stamp)

    def _take(self, kind: str, stage: int, mb: int) -> tuple[torch.Tensor, float]:
        """The tensor ``stage`` needs (waiting for it if it comes from another rank) and, in paced mode, the
        time (ms) from which it counts as arrived."""
        key = (kind, stage, mb)
        if key in self._local:
            return self._local.pop(key)
        works, buf, stamp = self._pending.pop(key)
        for work in works:
            if not work.is_completed():
                work.wait()
                self._began = max(self._began, self._clock.ms())  # the action starts when its input arrives
        return buf, (0.0 if stamp is None else float(stamp) + self._p2p_ms)

    def _deliver(self, kind: str, stage: int, mb: int, tensor: torch.Tensor, action, ready_ms) -> None:
        """Hand ``tensor`` to ``stage`` (on this rank: directly; elsewhere: isend, waited for at the end)."""
        dst = self.schedule.stage_to_rank[stage]
        if dst == self.pp_rank:
            self._local[(kind, stage, mb)] = (tensor.detach(), ready_ms or 0.0)
            return
        shape, dtype = self._expected(kind, stage, mb)
        if tensor.shape != shape or tensor.dtype != dtype:
            what = "output" if kind == "act" else "input gradient"
            raise ValueError(
                f"shape mismatch between stages: {action} produced an {what} of shape "
                f"{tuple(tensor.shape)} ({tensor.dtype}) for stage {stage} on micro-batch {mb}, which "
                f"expects {tuple(shape)} ({dtype})")
        data = tensor.detach().contiguous()
        tag, peer = self._tag(kind, stage, mb), self._global(dst)
        self._sends.append((dist.isend(data, dst=peer, tag=tag), data))
        if self.pacing is not None:
            stamp = torch.tensor([ready_ms], dtype=torch.float64, device=self.device)
            self._sends.append((dist.isend(stamp, dst=peer, tag=tag + 2), stamp))

    # -- actions
    def _forward(self, part: Action, split_layers: bool):
        s, m = part.stage, part.microbatch
        prev = self.schedule.prev_stage(s, m)
        x, ready = (self._inputs[m], 0.0) if prev is None else self._take("act", s, m)
        last = self.schedule.next_stage(s, m) is None
        loss_fn = None
        if last:
            target, full_target = self._targets[m], self._full_targets[m]
            if self.ep > 1:
                loss_fn = lambda out: self.spec.shard_loss(out, target, full_target)  # noqa: E731
            else:
                loss_fn = lambda out: self.spec.loss(out, target)  # noqa: E731
        steps = self.stages[s].forward_steps(
            m, x, needs_input_grad=prev is not None, capture=(s, m) in self.split, split_layers=split_layers,
            clock=self._clock, comms=self._comms, loss_fn=loss_fn, n_microbatches=self.M)
        return steps, ready

    def _after_forward(self, part: Action, action, ready_ms) -> None:
        s, m = part.stage, part.microbatch
        tape = self.stages[s].tapes[m]
        nxt = self.schedule.next_stage(s, m)
        if nxt is None:
            self._losses[m] = float(tape.output)
        else:
            self._deliver("act", nxt, m, tape.output, action, ready_ms)

    def _backward(self, part: Action):
        s, m = part.stage, part.microbatch
        nxt = self.schedule.next_stage(s, m)
        grad, ready = (None, 0.0) if nxt is None else self._take("grad", s, m)
        tape = self.stages[s].tapes[m]
        steps = self.stages[s].backward_steps(m, grad, split=part.kind == "I", clock=self._clock,
                                              comms=self._comms)
        return steps, ready, tape

    def _after_backward(self, part: Action, tape: Tape, action, ready_ms) -> None:
        prev = self.schedule.prev_stage(part.stage, part.microbatch)
        if prev is not None:
            self._deliver("grad", prev, part.microbatch, tape.input_grad, action, ready_ms)

    def _counted(self, steps):
        """Count every resumption of a chunk's steps (see ``_Clock``)."""
        for item in steps:
            self._clock.steps += 1
            yield item
        self._clock.steps += 1

    def _run(self, action) -> tuple[float, float | None]:
        """Wait for the inputs of ``action``, compute it, send its results; return (start, paced end)."""
        if isinstance(action, OverlappedAction):
            f, b = action.forward, action.backward
            fwd, ready_f = self._forward(f, split_layers=True)
            bwd, ready_b, btape = self._backward(b)
            start = self._start(max(ready_f, ready_b))
            self.overlap(self._counted(fwd), self._counted(bwd))
            end = self._paced_end(start, action)
            self._after_forward(f, action, end)
            self._after_backward(b, btape, action, end)
        elif action.kind == "F":
            steps, ready = self._forward(action, split_layers=False)
            start = self._start(ready)
            _drain(self._counted(steps))
            end = self._paced_end(start, action)
            self._after_forward(action, action, end)
        elif action.kind in ("B", "I"):
            steps, ready, tape = self._backward(action)
            start = self._start(ready)
            _drain(self._counted(steps))
            end = self._paced_end(start, action)
            self._after_backward(action, tape, action, end)
        else:  # W
            start = self._start(0.0)
            self.stages[action.stage].weight_step(action.microbatch)
            end = self._paced_end(start, action)
        return start, end

    def _start(self, inputs_ready_ms: float) -> float:
        """The measured start: when the rank was free and the action's inputs had arrived (the simulator's
        rule). Paced mode: inputs count as arrived at their sender's paced end; sleep until then."""
        if self.pacing is not None:
            self._ready = max(self._free_at, inputs_ready_ms)
            left = self._ready - self._clock.ms()
            if left > 0:
                time.sleep(left / 1e3)
                return self._clock.ms()
        return self._began

    def _paced_end(self, start: float, action) -> float | None:
        """Paced mode: when the action ends, its cost-model duration after it could start (or now, if the
        computation took longer). Results are sent before the rank sleeps until then, stamped with this
        time, so the receiver counts them as arriving at the end, as the simulator does."""
        if self.pacing is None:
            return None
        return max(self._ready + self.pacing.duration_ms(action), self._clock.ms())

    # -- the step
    def step(self, microbatches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """Run this rank's action list once on ``microbatches``; return its measurements and gradients."""
        for stage in self.stages.values():
            for p in stage.chunk.parameters():
                p.grad = None
            stage.tapes.clear()
        dev = self.device
        self._cpu_inputs = [shard_microbatch(x, self.ep, self.ep_rank) for x, _ in microbatches]
        self._inputs = [x.to(dev) for x in self._cpu_inputs]
        self._targets = [shard_microbatch(y, self.ep, self.ep_rank).to(dev) for _, y in microbatches]
        self._full_targets = [y.to(dev) for _, y in microbatches]
        self._pending, self._local, self._sends = {}, {}, []
        self._posted = 0
        self._peer_posted: dict[int, int] = {}
        self._losses: dict[int, float] = {}
        self._comms: list = []
        self._free_at = self._ready = 0.0
        self._p2p_ms = 0.0 if self.pacing is None else self.pacing.p2p * self.pacing.unit_ms
        intervals = []
        for m in range(self.M):  # the dry run of shapes happens before the clock starts
            self._boundaries(self._cpu_inputs[m])
        dist.barrier()
        self._clock = _Clock(time.perf_counter())
        for i, action in enumerate(self.actions):
            self._began = self._clock.ms()
            self._post(i + 1 + self.lookahead)
            try:
                start, paced_end = self._run(action)
            except Exception as exc:
                raise StageError(
                    f"rank {self.rank} (pipeline rank {self.pp_rank}) failed in action {action} "
                    f"({_describe(action)}): {type(exc).__name__}: {exc}") from exc
            self._sends = [(w, t) for w, t in self._sends if not w.is_completed()]
            self._post(i + 2 + self.lookahead)  # before sleeping, so the next action starts sooner
            if paced_end is not None:
                left = paced_end - self._clock.ms()
                if left > 0:
                    time.sleep(left / 1e3)
                self._free_at = paced_end
            intervals.append((action, start, self._clock.ms()))
        for work, _ in self._sends:
            work.wait()
        self._sends = []
        step_ms = self._clock.ms()
        leftover = sorted(f"{s}{'F' if k == 'act' else 'B'}{m}" for k, s, m in self._pending)
        if leftover or any(st.tapes for st in self.stages.values()):
            raise StageError(f"rank {self.rank}: the schedule left work undone (unused messages {leftover}, "
                             f"tapes {[(s, sorted(st.tapes)) for s, st in self.stages.items() if st.tapes]})")
        grads = self._sync_gradients()
        return {"rank": self.rank, "pp_rank": self.pp_rank, "ep_rank": self.ep_rank, "intervals": intervals,
                "comms": self._comms, "losses": self._losses, "grads": grads, "step_ms": step_ms}

    # -- gradients at the end of the step
    def _stage_grads(self, s: int) -> list[torch.Tensor]:
        params = self.stages[s].chunk.parameters()
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]

    def _sync_gradients(self) -> dict[int, dict[str, torch.Tensor]]:
        """Sum mirrored copies' gradients (DualPipe) and all-reduce replicated ones (expert parallelism)."""
        sched = self.schedule
        base = 4 * sched.n_stages * self.M
        flat = {s: torch.cat([g.reshape(-1) for g in self._stage_grads(s)]) for s in self.stages}
        summed = {}
        works, received = [], {}
        for s in self.stages:
            copies = [t for t in range(sched.n_stages) if sched.stage_to_chunk[t] == sched.stage_to_chunk[s]]
            for t in copies:
                if t == s or sched.stage_to_rank[t] == self.pp_rank:
                    continue
                peer = self._global(sched.stage_to_rank[t])
                buf = torch.empty_like(flat[s])
                # One batch: under NCCL both sides' send and receive must progress together.
                works += dist.batch_isend_irecv([
                    dist.P2POp(dist.isend, flat[s], peer, tag=base + s * sched.n_stages + t),
                    dist.P2POp(dist.irecv, buf, peer, tag=base + t * sched.n_stages + s)])
                received[t] = buf
        for w in works:
            w.wait()
        for s in self.stages:
            copies = [t for t in range(sched.n_stages) if sched.stage_to_chunk[t] == sched.stage_to_chunk[s]]
            total = None
            for t in copies:  # the same order on every copy, so the copies stay bit-identical
                part = flat[t] if t in flat else received[t]
                total = part.clone() if total is None else total + part
            summed[s] = total
        out = {}
        for s, total in summed.items():
            chunk = self.stages[s].chunk
            named = chunk.named_full_parameters()
            pieces = torch.split(total, [p.numel() for _, p in named])
            grads = {name: piece.view_as(p).clone() for (name, p), piece in zip(named, pieces, strict=True)}
            if self.ep > 1:
                replicated = [n for n in grads if expert_owner(n, self._n_routed(), self.ep) is None]
                if replicated:
                    buf = torch.cat([grads[n].reshape(-1) for n in replicated])
                    dist.all_reduce(buf, group=self.stages[s].ep.group)
                    pieces = torch.split(buf, [grads[n].numel() for n in replicated])
                    for n, piece in zip(replicated, pieces, strict=True):
                        grads[n] = piece.view_as(grads[n])
            out[s] = {n: g.cpu() for n, g in grads.items()}
        return out

    def _n_routed(self) -> int:
        return getattr(self.spec, "n_routed", 1)


def _describe(action) -> str:
    if isinstance(action, OverlappedAction):
        f, b = action.forward, action.backward
        return (f"overlapped forward of stage {f.stage} on micro-batch {f.microbatch} "
                f"and backward of stage {b.stage} on micro-batch {b.microbatch}")
    names = {"F": "forward", "B": "full backward", "I": "backward for input", "W": "backward for weights"}
    return f"{names[action.kind]} of stage {action.stage} on micro-batch {action.microbatch}"


# --------------------------------------------------------------------------------------------- jobs

def pipeline_job(schedule: Schedule, model_spec, microbatches, pacing: Pacing | None = None,
                 overlap="interleave", steps: int = 1) -> dict | None:
    """Job run by every rank: build this rank's stages, run the schedule ``steps`` times, return the last.

    Ranks beyond ``n_ranks * ep`` only join the start barrier and return None.
    """
    ep = getattr(model_spec, "ep", 1)
    expert_groups(schedule.n_ranks, ep)  # collective: every rank takes part
    if dist.get_rank() >= schedule.n_ranks * ep:
        for _ in range(steps):
            dist.barrier()
        return None
    pipeline = RankPipeline(schedule, model_spec, pacing=pacing, overlap=overlap)
    result = None
    for _ in range(steps):
        result = pipeline.step(microbatches)
    return result


# ----------------------------------------------------------------- torch.distributed.pipelining, side by side

#: Our schedule name -> torch.distributed.pipelining's class for it (torch 2.13).
TORCH_SCHEDULES = {"gpipe": "ScheduleGPipe", "1f1b": "Schedule1F1B", "dualpipev": "ScheduleDualPipeV"}


class TorchPipeline:
    """The same model and micro-batches run by torch.distributed.pipelining on this rank (every rank of the
    default group is one pipeline rank): ``PipelineStage`` objects around our chunks and torch's schedule.

    Its loss is the mean over micro-batches, like ours: torch computes ``loss_fn`` per micro-batch and, with
    ``scale_grads=True``, divides the gradients by the number of micro-batches.
    """

    def __init__(self, name: str, model_spec, n_microbatches: int):
        from torch.distributed import pipelining

        if name not in TORCH_SCHEDULES:
            raise ValueError(f"torch.distributed.pipelining runs {sorted(TORCH_SCHEDULES)} here; "
                             f"got {name!r}")
        if getattr(model_spec, "ep", 1) != 1:
            raise ValueError("the torch side-by-side runs without expert parallelism (ep=1)")
        warm_up()
        self.spec, self.M = model_spec, n_microbatches
        rank, world = dist.get_rank(), dist.get_world_size()
        n_stages = 2 * world if name == "dualpipev" else world
        self.stage_ids = [rank, n_stages - 1 - rank] if name == "dualpipev" else [rank]
        chunks = model_spec.cut(model_spec.build(), n_stages)
        self.chunks = {s: chunks[s] for s in self.stage_ids}
        device = _device()
        stages = [pipelining.PipelineStage(self.chunks[s].to(device), s, n_stages, device)
                  for s in self.stage_ids]
        cls = getattr(pipelining, TORCH_SCHEDULES[name])
        loss_fn = _TorchLoss(model_spec)
        self.schedule = cls(stages if name == "dualpipev" else stages[0], n_microbatches=n_microbatches,
                            loss_fn=loss_fn, scale_grads=True)
        self.first, self.last = 0 in self.stage_ids, n_stages - 1 in self.stage_ids

    def step(self, microbatches) -> dict:
        """One training step; returns the losses this rank saw and its gradients by full-model name."""
        for chunk in self.chunks.values():
            for p in chunk.parameters():
                p.grad = None
        device = _device()
        x = torch.cat([mb[0] for mb in microbatches]).to(device)
        y = torch.cat([mb[1] for mb in microbatches]).to(device)
        losses: list = []
        args = (x,) if self.first else ()
        kwargs = {"target": y, "losses": losses} if self.last else {}
        self.schedule.step(*args, **kwargs)
        grads = {s: {n: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu().clone()
                     for n, p in self.chunks[s].named_full_parameters()} for s in self.stage_ids}
        return {"rank": dist.get_rank(), "losses": [float(v.detach()) for v in losses], "grads": grads}


class _TorchLoss:
    """loss_fn for torch's schedules: the model spec's loss of one micro-batch."""

    def __init__(self, model_spec):
        self.spec = model_spec

    def __call__(self, output, target):
        return self.spec.loss(output, target)


def torch_pipeline_job(name: str, model_spec, microbatches) -> dict:
    """Job: one step of torch.distributed.pipelining's ``name`` on every rank of the default group."""
    return TorchPipeline(name, model_spec, len(microbatches)).step(microbatches)


def _timed(fn) -> float:
    dist.barrier()
    start = time.perf_counter()
    fn()
    dist.barrier()
    return time.perf_counter() - start


def step_time_job(name: str, model_spec, microbatches, steps: int = 5) -> dict:
    """Job: per-step wall time of our executor and of torch's schedule on the same model, micro-batches and
    process group, measured alternately in one run (after one warm-up step each). Seconds per step."""
    from utils.schedules import make_schedule

    world = dist.get_world_size()
    ours = RankPipeline(make_schedule(name, world, len(microbatches)), model_spec)
    theirs = TorchPipeline(name, model_spec, len(microbatches))
    ours.step(microbatches)
    theirs.step(microbatches)
    times: dict[str, list[float]] = {"ours": [], "torch": []}
    for _ in range(steps):
        times["ours"].append(_timed(lambda: ours.step(microbatches)))
        times["torch"].append(_timed(lambda: theirs.step(microbatches)))
    return times
