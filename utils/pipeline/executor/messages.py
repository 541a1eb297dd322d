"""The messages of one rank's pipeline: a pure plan from the schedule, then a mailbox that carries it out.

``plan_messages(schedule, rank)`` is a pure function of the schedule (like torch.distributed.pipelining's
``_add_send_recv``, a pass from compute lists to messages): for every action of the rank, which activations
and gradients it receives from other ranks before it runs, and which results it sends (or keeps for another
of its own stages) after it. It asks the one dependency rule, ``Schedule.inputs_of``; nothing here restates
it. ``Mailbox`` carries the plan out during a step with non-blocking ``isend``/``irecv``, tagged by (kind,
receiving stage, micro-batch) so messages never mix. Receives for the next few actions are posted before a
rank blocks on the current one, each after every earlier message from the same sender (gloo matches
messages by tag, NCCL by order). In paced mode each message is followed by its sender's time stamp.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist

from utils.cluster.rank import progress
from utils.pipeline.schedule import ACT, MAKES, Schedule, action_parts

#: Words of torch's errors about tensor shapes ("mat1 and mat2 shapes cannot be multiplied", "size of tensor
#: a (9) must match", "expected input ... dimension").
_SHAPE_ERROR = re.compile(r"shape|size|dimension|mat1|mat2", re.IGNORECASE)


class ModelError(RuntimeError):
    """The model itself raised while the executor ran it (not a schedule or a message problem)."""


class Message(NamedTuple):
    """An activation (``kind`` ACT, "act": a forward output entering ``stage``) or a gradient (GRAD,
    "grad": the gradient of ``stage``'s output) for ``microbatch``; ``peer`` is the pipeline rank at the
    other end (the sender of a receive, the receiver of a send, this rank itself for a kept result)."""

    kind: str
    stage: int
    microbatch: int
    peer: int


@dataclass(frozen=True)
class MessagePlan:
    """What one pipeline rank receives, sends and keeps, per action of its list (same indices).

    ``receives[i]``: messages from other ranks that action i needs before it runs; ``sends[i]``: results of
    action i that go to another rank after it; ``keeps[i]``: results of action i that another stage of this
    rank takes (no message); ``from_peer[p]``: every message rank p sends here, in the order p sends them.
    """

    rank: int
    receives: tuple[tuple[Message, ...], ...]
    sends: tuple[tuple[Message, ...], ...]
    keeps: tuple[tuple[Message, ...], ...]
    from_peer: dict[int, tuple[Message, ...]]


def plan_messages(schedule: Schedule, rank: int) -> MessagePlan:
    """The message plan of pipeline rank ``rank`` (a pure function of ``schedule``).

    Every input an action needs from another stage (``Schedule.inputs_of``) is a hand-off from the action
    that makes it to the action that takes it: a message when the two stages live on different ranks.
    """
    # where each result is made: (stage, kind, microbatch) -> (rank, action index, part index)
    made_at = {}
    for r, acts in enumerate(schedule.actions):
        for i, action in enumerate(acts):
            for j, part in enumerate(action_parts(action)):
                if MAKES[part.kind] is not None:
                    made_at[(part.stage, MAKES[part.kind], part.microbatch)] = (r, i, j)
    n_mine = len(schedule.actions[rank])
    receives: list[list[Message]] = [[] for _ in range(n_mine)]
    outgoing: list[list[tuple[int, Message]]] = [[] for _ in range(n_mine)]  # (part index, message)
    incoming: dict[int, list[tuple[int, int, Message]]] = {}  # sender -> (its action, its part, message)
    for r, acts in enumerate(schedule.actions):
        for i, action in enumerate(acts):
            for part in action_parts(action):
                for dep in schedule.inputs_of(part):
                    if dep.stage == part.stage:
                        continue  # the stage's own earlier result (its tape), not a hand-off
                    src, src_i, src_j = made_at[(dep.stage, dep.kind, dep.microbatch)]
                    if rank not in (src, r):
                        continue
                    if src == rank:
                        outgoing[src_i].append((src_j, Message(dep.kind, part.stage, dep.microbatch, r)))
                    if r == rank and src != rank:
                        message = Message(dep.kind, part.stage, dep.microbatch, src)
                        receives[i].append(message)
                        incoming.setdefault(src, []).append((src_i, src_j, message))
    sends = [tuple(m for _, m in sorted(out, key=lambda o: o[0]) if m.peer != rank) for out in outgoing]
    keeps = [tuple(m for _, m in sorted(out, key=lambda o: o[0]) if m.peer == rank) for out in outgoing]
    from_peer = {src: tuple(m for _, _, m in sorted(msgs, key=lambda x: x[:2])) for src, msgs in incoming.items()}
    return MessagePlan(rank=rank, receives=tuple(map(tuple, receives)), sends=tuple(sends), keeps=tuple(keeps),
                       from_peer=dict(sorted(from_peer.items())))


def message_tag(kind: str, stage: int, microbatch: int, n_microbatches: int) -> int:
    """Tag of a message: ``(stage * M + microbatch) * 4`` + 0 for an activation, 1 for a gradient (+2: its
    paced-mode time stamp). Tags from ``tags_used(schedule)`` on are free for other exchanges."""
    return (stage * n_microbatches + microbatch) * 4 + (0 if kind == ACT else 1)


def tags_used(schedule: Schedule) -> int:
    """How many tags the pipeline's messages may use (``message_tag`` stays below this)."""
    return 4 * schedule.n_stages * schedule.n_microbatches


class ChunkShapes:
    """Shape and dtype of each chunk's output for a micro-batch input, from a dry run (no grad).

    Every rank computes the same table from its own full copy of the model, so a receiver can allocate its
    buffer and a sender can check what it sends; a chunk that cannot take its predecessor's output fails
    here, on every rank, before any message is sent.
    """

    def __init__(self, model: torch.nn.Module, chunks: list, schedule: Schedule | None = None):
        self.model, self.chunks, self.schedule = model, chunks, schedule
        self._tables: dict[tuple, list[tuple[torch.Size, torch.dtype]]] = {}

    def table(self, x: torch.Tensor) -> list[tuple[torch.Size, torch.dtype]]:
        """(shape, dtype) of every chunk's output for an input like ``x`` (remembered per shape and dtype)."""
        key = (tuple(x.shape), x.dtype)
        if key not in self._tables:
            shapes = []
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad():
                h = x
                for c, chunk in enumerate(self.chunks):
                    try:
                        h = chunk(h)
                    except Exception as exc:
                        raise self._error(c, h, exc) from exc
                    shapes.append((h.shape, h.dtype))
            self.model.train(was_training)
            self._tables[key] = shapes
        return self._tables[key]

    def _error(self, c: int, h: torch.Tensor, exc: Exception) -> Exception:
        """A chunk raised in the dry run: a shape mismatch when its error says so (it cannot take its
        predecessor's output), else the model's own error, named as such, with the chunk and its stages."""
        got = f"{tuple(h.shape)} ({h.dtype})"
        if _SHAPE_ERROR.search(str(exc)):
            return ValueError(
                f"chunk {c} cannot take the output of chunk {c - 1}, of shape {got}: {type(exc).__name__}: "
                f"{exc}" if c else f"chunk 0 cannot take a micro-batch of shape {got}: {exc}")
        where = ""
        if self.schedule is not None:
            stages = [s for s, chunk in enumerate(self.schedule.stage_to_chunk) if chunk == c]
            where = " (" + ", ".join(f"stage {s} on rank {self.schedule.stage_to_rank[s]}" for s in stages) + ")"
        return ModelError(
            f"the model raised {type(exc).__name__}: {exc} -- in chunk {c}{where}, during the executor's dry "
            f"run (one forward pass without gradients, before any message is sent, to learn the shape of every "
            f"chunk's output), on {'a micro-batch' if c == 0 else f'the output of chunk {c - 1}'} of shape "
            f"{got}. This is the model's own error, not a problem of the schedule.")

    def expected(self, schedule: Schedule, kind: str, stage: int, mb: int, x: torch.Tensor):
        """(shape, dtype) of the activation entering ``stage`` (ACT) or of the gradient of its output, for
        micro-batch ``mb`` whose input is ``x``."""
        table = self.table(x)
        if kind == ACT:
            return table[schedule.stage_to_chunk[schedule.prev_stage(stage, mb)]]
        return table[schedule.stage_to_chunk[stage]]


class Mailbox:
    """One rank's messages during a step: receives posted ahead in each sender's order, inputs taken when
    an action needs them, results sent (or kept for another stage of this rank).

    ``expected(kind, stage, mb)`` gives the (shape, dtype) of a message; ``to_global(pp_rank)`` the process
    rank of a pipeline rank in this rank's expert-parallel slice; ``p2p_ms`` (paced mode, else None) the
    latency added to a sender's time stamp.
    """

    def __init__(self, plan: MessagePlan, n_microbatches: int, *, expected: Callable, to_global: Callable,
                 device: torch.device, p2p_ms: float | None = None):
        self.plan, self.M = plan, n_microbatches
        self.expected, self.to_global, self.device, self.p2p_ms = expected, to_global, device, p2p_ms
        self.doing = "a step"  # what the rank is doing (set by its step loop), for the progress notes
        self.start()

    def start(self) -> None:
        """Empty the queues for a new step."""
        self._pending: dict[tuple, tuple] = {}
        self._local: dict[tuple, tuple] = {}
        self._sends: list[tuple] = []
        self._posted = 0
        self._peer_posted: dict[int, int] = {}

    def post(self, upto: int) -> None:
        """Post the receives of actions up to index ``upto`` (exclusive) that are not posted yet, each after
        every earlier message from the same sender."""
        receives = self.plan.receives
        while self._posted < min(upto, len(receives)):
            for message in receives[self._posted]:
                queue, src = self.plan.from_peer[message.peer], message.peer
                last = queue.index(message)
                while self._peer_posted.get(src, 0) <= last:
                    self._post_one(queue[self._peer_posted.get(src, 0)])
                    self._peer_posted[src] = self._peer_posted.get(src, 0) + 1
            self._posted += 1

    def _post_one(self, message: Message) -> None:
        kind, s, m, src = message
        shape, dtype = self.expected(kind, s, m)
        buf = torch.empty(shape, dtype=dtype, device=self.device)
        tag, peer = message_tag(kind, s, m, self.M), self.to_global(src)
        works = [dist.irecv(buf, src=peer, tag=tag)]
        stamp = None
        if self.p2p_ms is not None:  # paced mode: when the sender's action ends on its clock
            stamp = torch.zeros(1, dtype=torch.float64, device=self.device)
            works.append(dist.irecv(stamp, src=peer, tag=tag + 2))
        self._pending[(kind, s, m)] = (works, buf, stamp, src)

    def take(self, kind: str, stage: int, mb: int, clock) -> tuple[torch.Tensor, float, float | None]:
        """The tensor ``stage`` needs, waiting for it if it comes from another rank: (tensor, the time (ms)
        from which it counts as arrived in paced mode, the clock time its wait ended or None if it did not
        wait)."""
        key = (kind, stage, mb)
        if key in self._local:
            tensor, ready = self._local.pop(key)
            return tensor, ready, None
        works, buf, stamp, src = self._pending.pop(key)
        waited = None
        if not all(work.is_completed() for work in works):
            what = "activation" if kind == ACT else "output gradient"
            progress(f"{self.doing}; waiting for the {what} of stage {stage} on micro-batch {mb} from rank {src}")
        for work in works:
            if not work.is_completed():
                work.wait()
                waited = clock.ms()
        if waited is not None:
            progress(f"{self.doing}; its input arrived")
        return buf, (0.0 if stamp is None else float(stamp) + self.p2p_ms), waited

    def keep(self, message: Message, tensor: torch.Tensor, ready_ms: float | None) -> None:
        """Hand ``tensor`` to another stage of this rank."""
        self._local[(message.kind, message.stage, message.microbatch)] = (tensor.detach(), ready_ms or 0.0)

    def send(self, message: Message, tensor: torch.Tensor, action, ready_ms: float | None) -> None:
        """Send ``tensor`` to ``message.peer`` (``isend``; waited for at the end of the step)."""
        kind, stage, mb, dst = message
        shape, dtype = self.expected(kind, stage, mb)
        if tensor.shape != shape or tensor.dtype != dtype:
            what = "output" if kind == ACT else "input gradient"
            raise ValueError(
                f"shape mismatch between stages: {action} produced an {what} of shape "
                f"{tuple(tensor.shape)} ({tensor.dtype}) for stage {stage} on micro-batch {mb}, which "
                f"expects {tuple(shape)} ({dtype})")
        data = tensor.detach().contiguous()
        tag, peer = message_tag(kind, stage, mb, self.M), self.to_global(dst)
        self._sends.append((dist.isend(data, dst=peer, tag=tag), data))
        if self.p2p_ms is not None:
            stamp = torch.tensor([ready_ms], dtype=torch.float64, device=self.device)
            self._sends.append((dist.isend(stamp, dst=peer, tag=tag + 2), stamp))

    def forget_sent(self) -> None:
        """Drop the sends that completed (their buffers may be freed)."""
        self._sends = [(w, t) for w, t in self._sends if not w.is_completed()]

    def finish(self) -> list[str]:
        """Wait for every send; return the messages received but never taken (a schedule left work undone)."""
        for work, _ in self._sends:
            work.wait()
        self._sends = []
        return sorted(f"{s}{'F' if k == ACT else 'B'}{m}" for k, s, m in self._pending)
