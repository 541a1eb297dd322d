"""Train a model with MoE layers on the synthetic tasks and keep a history of losses and expert loads.

`train` works for any model that maps tokens (batch, seq) to logits (batch, seq, vocab) and holds
DeepSeekMoE layers anywhere inside (the toy decoder, or the same decoder with its linears swapped for
low-precision ones). Per step it adds the layers' auxiliary losses (zero unless `balancing="aux"`) to
the language-model loss and, after the optimiser step, applies the auxiliary-loss-free bias update
(DeepSeek-V3 2.1.2).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from utils import inputs as arg
from utils.moe.data import IGNORE_INDEX, TASKS, TaskDataset, make_dataset
from utils.moe.layer import DeepSeekMoE

TRAIN_SEQUENCES, EVAL_SEQUENCES = 4096, 512
TRAIN_SEED, EVAL_SEED = 0, 1


@dataclass
class TrainingHistory:
    """What happened during training, as plain numbers.

    loss            (steps,) language-model loss of each training batch
    aux_loss        (steps,) summed balance loss of each step (zeros unless balancing="aux")
    load            (steps, layers, experts) share of each expert in the step's token-slots (rows sum to 1)
    expert_bias     (layers, experts) balancing biases at the end
    eval_loss       language-model loss on the held-out set after training
    eval_accuracy   share of answer digits predicted right on the held-out set
    expert_task_counts  (layers, experts, tasks) token-slots each expert got from each task's sequences
                    in the held-out set (every position of the sequence counts for its task)
    """

    loss: np.ndarray
    aux_loss: np.ndarray
    load: np.ndarray
    expert_bias: np.ndarray
    eval_loss: float
    eval_accuracy: float
    expert_task_counts: np.ndarray

    def max_violation(self) -> np.ndarray:
        """(steps, layers) MaxVio = max load / mean load - 1 per step and layer (0 = perfectly balanced)."""
        return self.load.max(axis=-1) / self.load.mean(axis=-1) - 1


@contextmanager
def single_thread():
    """Run torch on one thread inside the block. The toy's matmuls are tiny: on a shared 2-core machine a
    second thread that waits for the first made training steps ten times slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _moe_layers(model: nn.Module) -> list[DeepSeekMoE]:
    return [m for m in model.modules() if isinstance(m, DeepSeekMoE)]


def language_model_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the scored (answer) positions."""
    where = "language_model_loss"
    arg.tensor(logits, "logits", where=where, min_dims=2, floating=True)
    arg.tensor(targets, "targets", where=where, min_dims=1, integer=True)
    if logits.shape[:-1] != targets.shape:
        arg.fail("targets", f"a tensor of shape {tuple(logits.shape[:-1])} (logits without the vocabulary "
                 "dimension)", targets, where=where, why="one target token per position")
    vocab = logits.shape[-1]
    scored = targets[targets != IGNORE_INDEX]
    if scored.numel() == 0:
        arg.fail("targets", "a tensor with at least one scored position (not IGNORE_INDEX)", targets,
                 where=where, why="the loss is a mean over scored positions")
    if int(scored.min()) < 0 or int(scored.max()) >= vocab:
        arg.fail("targets", f"token ids from 0 to {vocab - 1} (or IGNORE_INDEX)", targets, where=where)
    flat_logits = logits.reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat_logits, targets.reshape(-1), ignore_index=IGNORE_INDEX)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: TaskDataset) -> tuple[float, float, np.ndarray]:
    """(loss, answer-digit accuracy, expert-by-task counts) of `model` on the whole `dataset`."""
    arg.instance(model, "model", nn.Module, "a torch model (nn.Module), e.g. build_toy_decoder()",
                 where="evaluate")
    arg.instance(dataset, "dataset", TaskDataset, "a TaskDataset (make_dataset(...))", where="evaluate")
    was_training = model.training
    model.eval()
    inputs, targets, task = dataset.inputs, dataset.targets, dataset.task
    with single_thread():
        logits = model(inputs)
    loss = float(language_model_loss(logits, targets))
    scored = targets != IGNORE_INDEX
    accuracy = float((logits.argmax(-1) == targets)[scored].float().mean())
    layers = _moe_layers(model)
    token_task = task.repeat_interleave(inputs.shape[1])
    counts = np.zeros((len(layers), layers[0].n_routed if layers else 0, len(TASKS)))
    for i, layer in enumerate(layers):
        idx = layer.last_expert_idx
        pairs = idx * len(TASKS) + token_task[:, None]
        counts[i] = torch.bincount(pairs.reshape(-1), minlength=layer.n_routed * len(TASKS)).view(
            layer.n_routed, len(TASKS)).numpy()
    model.train(was_training)
    return loss, accuracy, counts


def train(
    model: nn.Module,
    steps: int,
    *,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    dataset: TaskDataset | None = None,
    eval_dataset: TaskDataset | None = None,
    progress: bool = True,
    desc: str = "training",
) -> TrainingHistory:
    """Train `model` for `steps` AdamW steps on the synthetic tasks; return its TrainingHistory.

    The same model weights, seed and datasets give the same history. By default the data are
    `make_dataset(4096, seed=0)` for training and `make_dataset(512, seed=1)` held out.
    """
    where = "train"
    arg.instance(model, "model", nn.Module, "a torch model (nn.Module), e.g. build_toy_decoder()",
                 where=where)
    steps = arg.whole(steps, "steps", low=1, high=arg.MAX_TRAIN_STEPS, where=where,
                      why="training needs at least one step")
    lr = arg.real(lr, "lr", low=0, low_open=True, high=10.0, where=where,
                  why="the learning rate of AdamW: a small positive number (the course uses 3e-3)")
    seed = arg.whole(seed, "seed", low=0, where=where, why="seeds are whole numbers >= 0")
    arg.flag(progress, "progress", where=where)
    arg.instance(desc, "desc", str, "a string (the progress bar's label)", where=where)
    for name, data in (("dataset", dataset), ("eval_dataset", eval_dataset)):
        if data is not None:
            arg.instance(data, name, TaskDataset, "a TaskDataset (make_dataset(...)) or None", where=where)
    dataset = dataset or make_dataset(TRAIN_SEQUENCES, seed=TRAIN_SEED)
    eval_dataset = eval_dataset or make_dataset(EVAL_SEQUENCES, seed=EVAL_SEED)
    arg.whole(batch_size, "batch_size", low=1, high=len(dataset), where=where, why="the dataset's size")
    layers = _moe_layers(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, foreach=True)
    losses, aux_losses, loads = [], [], []
    model.train()
    with single_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        batches = dataset.sample_batches(batch_size, steps, seed)
        for inputs, targets, _ in tqdm(batches, total=steps, desc=desc, disable=not progress):
            loss = language_model_loss(model(inputs), targets)
            aux = sum((layer.aux_loss for layer in layers), torch.zeros(()))
            optimizer.zero_grad(set_to_none=True)
            (loss + aux).backward()
            optimizer.step()
            for layer in layers:
                layer.update_bias()
            losses.append(loss.item())
            aux_losses.append(float(aux.detach()))
            loads.append([(layer.last_load / layer.last_load.sum()).tolist() for layer in layers])
        eval_loss, eval_accuracy, counts = evaluate(model, eval_dataset)
    model.train()
    return TrainingHistory(
        loss=np.array(losses),
        aux_loss=np.array(aux_losses),
        load=np.array(loads).reshape(steps, len(layers), -1),
        expert_bias=np.array([layer.expert_bias.tolist() for layer in layers]).reshape(len(layers), -1),
        eval_loss=eval_loss,
        eval_accuracy=eval_accuracy,
        expert_task_counts=counts,
    )
