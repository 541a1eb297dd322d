"""One rank's part of a pipeline: its stages, built once, and its action list, run once per training step.

``RankPipeline.step`` walks the rank's actions in order: post the receives ahead, wait for the inputs,
compute (F, B, I, W, or an overlapped F&B pair through an overlap hook), send the results, and record when
each action ran; in paced mode every action also lasts its cost-model duration. At the end of the step the
gradients of mirrored stages (DualPipe) are summed and those of replicated parameters (expert parallelism)
all-reduced. Its messages follow ``utils.pipeline.executor.messages.plan_messages``, a pure plan from the
schedule, carried out by a ``Mailbox``.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.distributed as dist

from utils.cluster.jobs import rank_device
from utils.cluster.rank import progress
from utils.pipeline.executor.experts import ExpertParallelBlocks, expert_groups
from utils.pipeline.executor.messages import ChunkShapes, Mailbox, plan_messages, tags_used
from utils.pipeline.executor.models import ModelSpec, expert_owner, shard_microbatch
from utils.pipeline.executor.overlap import OVERLAP_HOOKS, drain
from utils.pipeline.executor.pacing import Pacing
from utils.pipeline.executor.stage import Clock, StageRunner
from utils.pipeline.schedule import ACT, GRAD, KIND_NAMES, Action, OverlappedAction, Schedule

#: Receives posted ahead of the action being run (the current one plus this many).
LOOKAHEAD = 2


class StageError(RuntimeError):
    """A stage failed while a rank ran one of its actions; the message names the rank and the action."""


def warm_up() -> None:
    """Pay one-time costs before the clock starts: the first backward with explicit output gradients
    imports torch's symbolic-shape machinery (sympy), about a second on a busy core."""
    t = torch.ones(2, requires_grad=True)
    torch.autograd.backward([t * 2], [torch.ones(2)])


# ------------------------------------------------------------------------------------- one rank's step

class RankPipeline:
    """One rank's part of a pipeline: its stages, built once, and ``step()`` to run the schedule once."""

    def __init__(self, schedule: Schedule, model_spec: ModelSpec, *, pacing: Pacing | None = None,
                 overlap="interleave", lookahead: int = LOOKAHEAD):
        self.schedule, self.spec, self.pacing = schedule, model_spec, pacing
        self.overlap = OVERLAP_HOOKS[overlap] if isinstance(overlap, str) else overlap
        self.lookahead = lookahead
        self.ep = getattr(model_spec, "ep", 1)
        self.rank = dist.get_rank()
        self.pp_rank, self.ep_rank = divmod(self.rank, self.ep)
        groups = expert_groups(schedule.n_ranks, self.ep)
        self.device = rank_device()
        warm_up()
        self.M = schedule.n_microbatches
        model = model_spec.build()
        chunks = model_spec.cut(model, schedule.n_chunks)
        self.shapes = ChunkShapes(model, chunks, schedule)
        ep_context = None
        if groups is not None:
            ep_context = ExpertParallelBlocks(groups[self.pp_rank], self.ep, self.ep_rank)
        mine, used = {}, set()
        for s in schedule.stages_on(self.pp_rank):  # copies first: hooks must not be copied along
            c = schedule.stage_to_chunk[s]
            # The full CPU model stays intact for the dry run of shapes (see ChunkShapes).
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
        self.plan = plan_messages(schedule, self.pp_rank)
        self.mail = Mailbox(self.plan, self.M, expected=self._expected, to_global=self._global,
                            device=self.device, p2p_ms=None if pacing is None else pacing.p2p * pacing.unit_ms)

    def _global(self, pp_rank: int) -> int:
        """The process rank of pipeline rank ``pp_rank`` in this rank's expert-parallel slice."""
        return pp_rank * self.ep + self.ep_rank

    def _expected(self, kind: str, stage: int, mb: int):
        return self.shapes.expected(self.schedule, kind, stage, mb, self._cpu_inputs[mb])

    def _take(self, kind: str, stage: int, mb: int) -> tuple[torch.Tensor, float]:
        """An input of ``stage`` (waiting for it if it comes from another rank) and, in paced mode, the time
        (ms) from which it counts as arrived. The action starts when its last input arrives."""
        tensor, ready, waited = self.mail.take(kind, stage, mb, self._clock)
        if waited is not None:
            self._began = max(self._began, waited)
        return tensor, ready

    # -- actions
    def _forward(self, part: Action, split_layers: bool):
        s, m = part.stage, part.microbatch
        prev = self.schedule.prev_stage(s, m)
        x, ready = (self._inputs[m], 0.0) if prev is None else self._take(ACT, s, m)
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

    def _forward_output(self, part: Action) -> torch.Tensor:
        """What a forward made: its output (the last stage of a route records its loss instead)."""
        s, m = part.stage, part.microbatch
        tape = self.stages[s].tapes[m]
        if self.schedule.next_stage(s, m) is None:
            self._losses[m] = float(tape.output)
        return tape.output

    def _backward(self, part: Action):
        s, m = part.stage, part.microbatch
        nxt = self.schedule.next_stage(s, m)
        grad, ready = (None, 0.0) if nxt is None else self._take(GRAD, s, m)
        tape = self.stages[s].tapes[m]
        steps = self.stages[s].backward_steps(m, grad, split=part.kind == "I", clock=self._clock,
                                              comms=self._comms)
        return steps, ready, tape

    def _counted(self, steps):
        """Count every resumption of a chunk's steps (see ``Clock``)."""
        for item in steps:
            self._clock.steps += 1
            yield item
        self._clock.steps += 1

    def _run(self, i: int, action) -> tuple[float, float | None]:
        """Wait for the inputs of action ``i``, compute it, hand its results on as the message plan says;
        return (start, paced end)."""
        if isinstance(action, OverlappedAction):
            f, b = action.forward, action.backward
            fwd, ready_f = self._forward(f, split_layers=True)
            bwd, ready_b, btape = self._backward(b)
            start = self._start(max(ready_f, ready_b))
            self.overlap(self._counted(fwd), self._counted(bwd))
            made = {ACT: self._forward_output(f), GRAD: btape.input_grad}
        elif action.kind == "F":
            steps, ready = self._forward(action, split_layers=False)
            start = self._start(ready)
            drain(self._counted(steps))
            made = {ACT: self._forward_output(action)}
        elif action.kind in ("B", "I"):
            steps, ready, tape = self._backward(action)
            start = self._start(ready)
            drain(self._counted(steps))
            made = {GRAD: tape.input_grad}
        else:  # W
            start = self._start(0.0)
            self.stages[action.stage].weight_step(action.microbatch)
            made = {}
        end = self._paced_end(start, action)
        for message in self.plan.sends[i]:
            self.mail.send(message, made[message.kind], action, end)
        for message in self.plan.keeps[i]:
            self.mail.keep(message, made[message.kind], end)
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
        self.mail.start()
        self._losses: dict[int, float] = {}
        self._comms: list = []
        self._free_at = self._ready = 0.0
        intervals = []
        for m in range(self.M):  # the dry run of shapes happens before the clock starts
            self.shapes.table(self._cpu_inputs[m])
        dist.barrier()
        self._clock = Clock(time.perf_counter())
        for i, action in enumerate(self.actions):
            # What this rank is doing, for the error if the step hangs or the rank dies (a no-op under torchrun).
            self.mail.doing = f"started action {i + 1} of {len(self.actions)}, {action} ({_describe(action)})"
            progress(self.mail.doing)
            self._began = self._clock.ms()
            self.mail.post(i + 1 + self.lookahead)
            n_comms = len(self._comms)
            try:
                start, paced_end = self._run(i, action)
            except Exception as exc:
                raise StageError(
                    f"rank {self.rank} (pipeline rank {self.pp_rank}) failed in action {action} "
                    f"({_describe(action)}): {type(exc).__name__}: {exc}") from exc
            self.mail.forget_sent()
            self.mail.post(i + 2 + self.lookahead)  # before sleeping, so the next action starts sooner
            if paced_end is not None:
                left = paced_end - self._clock.ms()
                if left > 0:
                    time.sleep(left / 1e3)
                self._free_at = paced_end
            # the time budget's comm_wait: how long this action waited for its all-to-alls
            intervals.append((action, start, self._clock.ms(), sum(c[4] for c in self._comms[n_comms:])))
        progress(f"ran all {len(self.actions)} actions; waiting for its last sends, then summing gradients")
        leftover = self.mail.finish()
        step_ms = self._clock.ms()
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
        base = tags_used(sched)  # the tags above the pipeline's messages
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
    return f"{KIND_NAMES[action.kind]} of stage {action.stage} on micro-batch {action.microbatch}"
