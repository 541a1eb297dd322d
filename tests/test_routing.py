"""Routing: plain top-K and node-limited top-K (DeepSeek-V3 2.1.2), checked against their definitions."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.moe.routing import (
    experts_per_node,
    node_limited_route,
    node_of_expert,
    nodes_per_token,
    route,
    topk_route,
)


def test_topk_picks_highest_affinities_and_normalises_gates():
    affinity = torch.tensor([[0.9, 0.1, 0.6, 0.3], [0.2, 0.8, 0.7, 0.5]])
    idx, gates = topk_route(affinity, k=2)
    assert idx.tolist() == [[0, 2], [1, 2]]
    torch.testing.assert_close(gates, torch.tensor([[0.9 / 1.5, 0.6 / 1.5], [0.8 / 1.5, 0.7 / 1.5]]))


def test_bias_changes_selection_but_not_gate_values():
    affinity = torch.tensor([[0.9, 0.1, 0.6, 0.3]])
    bias = torch.tensor([0.0, 1.0, 0.0, 0.0])  # pushes expert 1 (affinity 0.1) into the top 2
    idx, gates = topk_route(affinity, k=2, bias=bias)
    assert idx.tolist() == [[1, 0]]
    # Gates come from the original affinities 0.1 and 0.9, not from 1.1 and 0.9.
    torch.testing.assert_close(gates, torch.tensor([[0.1, 0.9]]))


def test_gradient_flows_from_gates_into_affinity():
    affinity = torch.tensor([[0.9, 0.1, 0.6, 0.3]], requires_grad=True)
    _, gates = topk_route(affinity, k=2)
    gates[0, 0].backward()
    # d(a0 / (a0 + a2)) / d a0 = a2 / (a0 + a2)^2, and the unpicked experts get nothing.
    expected = torch.tensor([[0.6 / 1.5**2, 0.0, -0.9 / 1.5**2, 0.0]])
    torch.testing.assert_close(affinity.grad, expected)


def test_node_limited_worked_example():
    # 4 nodes of 2 experts, K = 4, M = 2: each node is scored by its top K/M = 2 affinities.
    affinity = torch.tensor([[0.95, 0.05, 0.6, 0.6, 0.7, 0.5, 0.1, 0.2]])
    idx, gates = node_limited_route(affinity, k=4, n_nodes=4, max_nodes=2)
    # node scores: 1.0, 1.2, 1.2, 0.3 -> nodes 1 and 2; top-4 inside them: experts 4, 2, 3, 5.
    assert sorted(idx[0].tolist()) == [2, 3, 4, 5]
    # Plain top-4 would have taken expert 0 (0.95), on a third node.
    assert 0 in topk_route(affinity, k=4)[0][0].tolist()
    torch.testing.assert_close(gates.sum(-1), torch.ones(1))


def test_node_limited_uses_ceil_of_k_over_m_per_node():
    # K = 3, M = 2: nodes are scored by their top ceil(3/2) = 2 experts.
    affinity = torch.tensor([[0.9, 0.0, 0.5, 0.5, 0.1, 0.1]])
    idx, _ = node_limited_route(affinity, k=3, n_nodes=3, max_nodes=2)
    assert set(node_of_expert(idx, 6, 3)[0].tolist()) == {0, 1}  # scores 0.9, 1.0, 0.2


def test_route_dispatches_to_plain_or_node_limited():
    affinity = torch.rand(10, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(route(affinity, 2)[0], topk_route(affinity, 2)[0])
    assert torch.equal(route(affinity, 2, 4, 1)[0], node_limited_route(affinity, 2, 4, 1)[0])


def test_layout_helpers():
    assert experts_per_node(16, 4) == 4
    idx = torch.tensor([[0, 3], [0, 1], [7, 4]])
    assert node_of_expert(idx, 8, 4).tolist() == [[0, 1], [0, 0], [3, 2]]
    assert nodes_per_token(idx, 8, 4).tolist() == [2, 1, 2]


@pytest.mark.parametrize(
    ("call", "rule"),
    [
        (lambda a: node_limited_route(a, k=5, n_nodes=4, max_nodes=2), "available in M = 2 node"),
        (lambda a: node_limited_route(a, k=2, n_nodes=4, max_nodes=5), "M must lie in 1..4"),
        (lambda a: node_limited_route(a, k=2, n_nodes=4, max_nodes=0), "M must lie in 1..4"),
        (lambda a: node_limited_route(a, k=2, n_nodes=3, max_nodes=1), "do not divide evenly over 3 nodes"),
        (lambda a: topk_route(a, k=9), "larger than the number of experts"),
        (lambda a: topk_route(a, k=0), "at least one expert"),
        (lambda a: topk_route(a[:, :0], k=1), "at least one expert"),
        (lambda a: topk_route(a, k=2, bias=torch.zeros(3)), "one balancing bias per expert"),
    ],
)
def test_bad_input_names_the_rule(call, rule):
    with pytest.raises(ValueError, match=rule):
        call(torch.rand(3, 8))


# ------------------------------------------------------------------------------------------------ properties

@st.composite
def routing_cases(draw):
    """Random (affinity, bias, k, n_nodes, max_nodes) with K feasible within M nodes."""
    n_nodes = draw(st.integers(1, 4))
    per_node = draw(st.integers(1, 4))
    n_experts = n_nodes * per_node
    k = draw(st.integers(1, n_experts))
    max_nodes = draw(st.integers(math.ceil(k / per_node), n_nodes))
    tokens = draw(st.integers(1, 5))
    # Affinities are sigmoid outputs: in (0, 1], never exactly 0 (gates divide by their sum).
    unit = st.floats(2.0**-20, 1.0, allow_nan=False, width=32)
    affinity = torch.tensor(draw(st.lists(st.lists(unit, min_size=n_experts, max_size=n_experts),
                                          min_size=tokens, max_size=tokens)))
    bias = None
    if draw(st.booleans()):
        values = st.floats(-1.0, 1.0, width=32)
        bias = torch.tensor(draw(st.lists(values, min_size=n_experts, max_size=n_experts)))
    return affinity, bias, k, n_nodes, max_nodes


@settings(max_examples=200, deadline=None)
@given(routing_cases())
def test_node_limited_properties(case):
    affinity, bias, k, n_nodes, max_nodes = case
    n_experts = affinity.shape[1]
    idx, gates = node_limited_route(affinity, k, n_nodes, max_nodes, bias)
    assert idx.shape == gates.shape == (affinity.shape[0], k)
    # Every token gets exactly K distinct experts ...
    assert all(len(set(row)) == k for row in idx.tolist())
    # ... all inside at most M nodes ...
    assert int(nodes_per_token(idx, n_experts, n_nodes).max()) <= max_nodes
    # ... and gate weights that are non-negative and sum to 1 (when some chosen affinity is positive).
    chosen = affinity.gather(1, idx)
    positive = chosen.sum(1) > 0
    torch.testing.assert_close(gates[positive].sum(1), torch.ones(int(positive.sum())))
    assert bool((gates[positive] >= 0).all())
    # Gates are the chosen *original* affinities, normalised: the bias never leaks into them.
    torch.testing.assert_close(gates[positive], (chosen / chosen.sum(1, keepdim=True))[positive])


@settings(max_examples=200, deadline=None)
@given(routing_cases())
def test_node_limited_follows_the_two_stage_rule(case):
    """Tie-proof check of the rule: the kept nodes carry the M best node scores, and the picked experts
    carry the K best selection scores among the kept nodes' experts."""
    affinity, bias, k, n_nodes, max_nodes = case
    per_node = affinity.shape[1] // n_nodes
    scores = affinity if bias is None else affinity + bias
    idx, _ = node_limited_route(affinity, k, n_nodes, max_nodes, bias)
    for t in range(affinity.shape[0]):
        by_node = scores[t].view(n_nodes, per_node)
        node_score = by_node.topk(math.ceil(k / max_nodes), dim=1).values.sum(1)
        used = set((idx[t] // per_node).tolist())
        # Every used node scores at least the M-th best node score.
        threshold = node_score.topk(max_nodes).values[-1]
        assert all(node_score[n] >= threshold - 1e-6 for n in used)
        # Within the used nodes, no unpicked expert beats a picked one.
        picked = set(idx[t].tolist())
        in_used = [e for n in used for e in range(n * per_node, (n + 1) * per_node)]
        worst_picked = min(float(scores[t, e]) for e in picked)
        assert all(float(scores[t, e]) <= worst_picked + 1e-6 for e in in_used if e not in picked)


@settings(max_examples=200, deadline=None)
@given(routing_cases())
def test_node_limited_with_every_node_equals_plain_topk(case):
    affinity, bias, k, n_nodes, _ = case
    idx, gates = node_limited_route(affinity, k, n_nodes, n_nodes, bias)
    ref_idx, ref_gates = topk_route(affinity, k, bias)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(gates, ref_gates, equal_nan=True)


@settings(max_examples=100, deadline=None)
@given(routing_cases())
def test_topk_properties(case):
    affinity, bias, k, _, _ = case
    idx, gates = topk_route(affinity, k, bias)
    scores = affinity if bias is None else affinity + bias
    assert all(len(set(row)) == k for row in idx.tolist())
    # The picked experts' selection scores are the K largest.
    picked = scores.gather(1, idx).sort(1).values
    torch.testing.assert_close(picked, scores.topk(k, dim=1).values.sort(1).values)
    chosen = affinity.gather(1, idx)
    positive = chosen.sum(1) > 0
    torch.testing.assert_close(gates[positive].sum(1), torch.ones(int(positive.sum())))
