"""The messages of one rank's pipeline: what each action needs from other ranks, receives posted ahead, sends.

Activations and gradients travel with non-blocking ``isend``/``irecv``, tagged by (kind, destination stage,
micro-batch) so messages never mix. Receives for the next few actions are posted before a rank blocks on
the current one, each after every earlier message from the same sender (gloo matches messages by tag, NCCL
by order). In paced mode each message is followed by its sender's time stamp.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from utils.pipeline.schedule import OverlappedAction


class RankMessages:
    """The message half of ``utils.pipeline.executor.rank.RankPipeline`` (its base class): plan, post, take, deliver.

    It works on the state ``RankPipeline`` sets up: ``schedule``, ``M``, ``pp_rank``, ``ep``, ``ep_rank``,
    ``device``, ``pacing``, ``actions``, ``recv_plan``, ``from_peer``, the model for the dry run of shapes
    (``_model``, ``_chunks``, ``_boundary_cache``) and, during a step, its queues (``_pending``, ``_local``,
    ``_sends``), their counters and its clock.
    """

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
