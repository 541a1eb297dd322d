"""The DeepSeekMoE layer, the toy decoder and its training loop."""

import numpy as np
import pytest
import torch
from torch import nn

from utils.moe.data import make_dataset
from utils.moe.layer import (
    DeepSeekMoE,
    balance_bias_update,
    expert_balance_loss,
    max_violation,
    waiting_share,
)
from utils.moe.routing import nodes_per_token
from utils.moe.toy_decoder import ToyDecoderConfig, build_toy_decoder, moe_layers
from utils.moe.train import evaluate, train


def make_layer(**kwargs) -> DeepSeekMoE:
    torch.manual_seed(0)
    settings = dict(d_model=16, n_routed=8, k=2, d_expert=12)
    return DeepSeekMoE(**{**settings, **kwargs})


def per_token_reference(layer: DeepSeekMoE, tokens: torch.Tensor) -> torch.Tensor:
    """DeepSeek-V3 eqs. 12-15 token by token, straight from the paper's formulas."""
    rows = []
    for u in tokens:
        s = torch.sigmoid(layer.router.weight @ u)
        selection = s + layer.expert_bias if layer.balancing == "bias" else s
        chosen = selection.topk(layer.k).indices
        h = sum(expert(u) for expert in layer.shared_experts)
        for i in chosen:
            h = h + s[i] / s[chosen].sum() * layer.experts[i](u)
        rows.append(h)
    return torch.stack(rows)


# ------------------------------------------------------------------------------------------- the layer

def test_forward_matches_the_papers_formula_token_by_token():
    layer = make_layer(n_shared=2)
    layer.expert_bias.copy_(torch.linspace(-0.2, 0.2, 8))
    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(1))
    out = layer(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out.reshape(-1, 16), per_token_reference(layer, x.reshape(-1, 16)))


def test_bias_steers_selection_only():
    layer = make_layer()
    layer.expert_bias[5] = 10.0  # expert 5 wins every selection ...
    x = torch.randn(20, 16, generator=torch.Generator().manual_seed(2))
    layer(x)
    assert bool((layer.last_expert_idx == 5).any(dim=1).all())
    # ... but counts with its own affinity, as the reference (which uses s, not s + b, in the gate) says.
    torch.testing.assert_close(layer(x), per_token_reference(layer, x))


def test_bias_update_rule():
    bias = torch.zeros(4)
    new = balance_bias_update(bias, torch.tensor([10.0, 2.0, 4.0, 4.0]), gamma=0.1)
    # mean load 5: expert 0 overloaded (-gamma), 1, 2, 3 underloaded (+gamma).
    torch.testing.assert_close(new, torch.tensor([-0.1, 0.1, 0.1, 0.1]))
    balanced = torch.full((4,), 3.0)
    torch.testing.assert_close(balance_bias_update(bias, balanced, 0.1), bias)  # balanced: no change


def test_bias_balancing_evens_out_a_skewed_router():
    layer = make_layer(bias_gamma=0.02)
    with torch.no_grad():
        layer.router.weight[0] += 0.2  # with inputs of positive mean, expert 0 is everybody's favourite
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(3)) + 0.5
    layer(x)
    before = max_violation(layer.last_load)
    for _ in range(100):
        layer(x)
        layer.update_bias()
    after = max_violation(layer.last_load)
    assert before > 1.5 and after < 0.3, (before, after)
    assert layer.expert_bias[0] < 0  # the favourite was pushed down


def test_update_bias_only_in_bias_mode_and_only_from_training_forwards():
    for balancing, moves in (("bias", True), ("aux", False), ("none", False)):
        layer = make_layer(balancing=balancing)
        with torch.no_grad():
            layer.router.weight[0] += 0.5
        layer(torch.randn(32, 16))
        layer.update_bias()
        assert bool(layer.expert_bias.abs().sum() > 0) == moves
        assert float(layer.pending_load.sum()) == 0
    layer = make_layer().eval()
    layer(torch.randn(32, 16))
    assert float(layer.pending_load.sum()) == 0  # evaluation does not move the balance


def test_balance_loss_is_alpha_when_perfectly_balanced_and_larger_when_skewed():
    affinity = torch.full((4, 4), 0.5)
    balanced = torch.tensor([[0], [1], [2], [3]])
    torch.testing.assert_close(expert_balance_loss(affinity, balanced, alpha=0.1), torch.tensor(0.1))
    skewed_affinity = torch.tensor([[0.9, 0.1, 0.1, 0.1]]).repeat(4, 1)
    assert expert_balance_loss(skewed_affinity, torch.zeros(4, 1, dtype=torch.long), alpha=0.1) > 0.1


def test_aux_loss_carries_a_gradient_to_the_router_in_aux_mode_only():
    layer = make_layer(balancing="aux")
    layer(torch.randn(32, 16))
    layer.aux_loss.backward()
    assert layer.router.weight.grad.abs().sum() > 0
    bias_layer = make_layer(balancing="bias")
    bias_layer(torch.randn(32, 16))
    assert float(bias_layer.aux_loss) == 0.0


def test_node_limited_layer_keeps_tokens_within_m_nodes():
    layer = make_layer(k=4, n_nodes=4, max_nodes=2)
    layer(torch.randn(64, 16))
    assert int(nodes_per_token(layer.last_expert_idx, 8, 4).max()) <= 2


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        (dict(n_routed=0), "at least one routed expert"),
        (dict(k=9), "must lie in 1..8"),
        (dict(balancing="magic"), "choose one of"),
        (dict(k=4, n_nodes=4, max_nodes=1), "available in M = 1 node"),
        (dict(n_nodes=2, max_nodes=3), "M must lie in 1..2"),
        (dict(n_nodes=3), "do not divide evenly over 3 nodes"),
    ],
)
def test_bad_layer_settings_name_the_rule(kwargs, rule):
    with pytest.raises(ValueError, match=rule):
        make_layer(**kwargs)


def test_max_violation():
    assert max_violation(torch.tensor([2.0, 2.0, 2.0])) == 0.0
    assert max_violation(torch.tensor([4.0, 1.0, 1.0])) == pytest.approx(1.0)


@pytest.mark.parametrize("load", [[2.0, 2.0, 2.0], [4.0, 1.0, 1.0], [10.0, 0.0, 3.0, 3.0], [5.0, 4.0, 3.0, 1.0, 2.0]])
def test_waiting_share_is_the_idle_time_of_a_gpu_with_the_mean_load(load):
    load = torch.tensor(load)
    step = float(load.max())                     # one expert per GPU: the step lasts as long as the busiest
    idle_at_mean = (step - float(load.mean())) / step
    assert waiting_share(max_violation(load)) == pytest.approx(idle_at_mean)
    assert step / float(load.mean()) == pytest.approx(1 + max_violation(load))   # MaxVio: the slowdown
    with pytest.raises(ValueError, match="MaxVio >= 0"):
        waiting_share(-0.1)


# ----------------------------------------------------------------------------------------- the decoder

def test_decoder_structure_others_rely_on():
    model = build_toy_decoder(ToyDecoderConfig(n_blocks=3), seed=0)
    assert isinstance(model.embed, nn.Embedding)
    assert isinstance(model.blocks, nn.ModuleList) and len(model.blocks) == 3
    assert isinstance(model.norm, nn.RMSNorm) and isinstance(model.head, nn.Linear)
    tokens = make_dataset(4).inputs
    h = model.embed(tokens)
    for block in model.blocks:
        out = block(h)
        assert out.shape == h.shape
        h = out
    torch.testing.assert_close(model.head(model.norm(h)), model(tokens))
    # Every matmul is an nn.Linear, and each router is one (the part that must stay in high precision).
    for layer in moe_layers(model):
        assert isinstance(layer.router, nn.Linear)
    weights = {name.rsplit(".", 1)[0] for name, p in model.named_parameters() if p.dim() == 2}
    modules = dict(model.named_modules())
    assert all(isinstance(modules[name], (nn.Linear, nn.Embedding)) for name in weights)


def test_same_seed_same_weights():
    a, b = build_toy_decoder(seed=3), build_toy_decoder(seed=3)
    c = build_toy_decoder(seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.embed.weight, c.embed.weight)


def test_attention_is_causal():
    model = build_toy_decoder(seed=0)
    tokens = make_dataset(2).inputs
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 10
    torch.testing.assert_close(model(tokens)[:, :-1], model(changed)[:, :-1])


# ---------------------------------------------------------------------------------------------- training

SMALL = ToyDecoderConfig(d_model=32, n_heads=2, n_routed=4, d_expert=32)


def test_training_is_deterministic_and_history_has_the_promised_shapes():
    runs = [train(build_toy_decoder(SMALL, seed=0), 6, batch_size=8, progress=False) for _ in range(2)]
    h = runs[0]
    np.testing.assert_array_equal(runs[0].loss, runs[1].loss)
    assert h.loss.shape == h.aux_loss.shape == (6,)
    assert h.load.shape == (6, 2, 4)
    np.testing.assert_allclose(h.load.sum(-1), 1.0, rtol=1e-6)
    assert h.expert_task_counts.shape == (2, 4, 4)
    # Every held-out token-slot is counted once per layer: 512 sequences x 13 positions x K.
    assert h.expert_task_counts[0].sum() == 512 * 13 * SMALL.k
    assert h.max_violation().shape == (6, 2)
    assert 0.0 <= h.eval_accuracy <= 1.0


def test_training_lowers_the_loss():
    h = train(build_toy_decoder(SMALL, seed=0), 40, batch_size=16, progress=False)
    assert h.loss[-5:].mean() < h.loss[:5].mean() - 0.3


class _FakeLowPrecisionLinear(nn.Linear):
    """Stands in for the FP8 notebook's linear: rounds weights to bfloat16 on the way in."""

    def forward(self, x):
        return nn.functional.linear(x, self.weight.to(torch.bfloat16).float())


def _swap_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and name != "router":
            swapped = _FakeLowPrecisionLinear(child.in_features, child.out_features, bias=False)
            swapped.weight = child.weight
            setattr(module, name, swapped)
        else:
            _swap_linears(child)


def test_train_works_on_a_model_whose_linears_were_swapped():
    model = build_toy_decoder(SMALL, seed=0)
    _swap_linears(model)
    assert isinstance(model.blocks[0].moe.experts[0].up_proj, _FakeLowPrecisionLinear)
    assert type(model.blocks[0].moe.router) is nn.Linear
    h = train(model, 3, batch_size=8, progress=False)
    assert np.isfinite(h.loss).all()


def test_evaluate_counts_tasks_per_expert():
    model = build_toy_decoder(SMALL, seed=0)
    data = make_dataset(8)
    _, _, counts = evaluate(model, data)
    per_task_tokens = np.bincount(data.task.numpy(), minlength=4) * data.inputs.shape[1] * SMALL.k
    np.testing.assert_array_equal(counts[0].sum(0), per_task_tokens)


def test_train_rejects_zero_steps():
    with pytest.raises(ValueError, match="at least one step"):
        train(build_toy_decoder(SMALL), 0, progress=False)
