"""Expert parallelism on a real SimulatedCluster: equal to the single-process layer, traffic as predicted."""

import numpy as np
import pytest
import torch

from utils.cluster.cluster import SimulatedCluster
from utils.moe.expert_parallel import (
    PHASES,
    SCOPES,
    ExpertLayout,
    ExpertParallelMoE,
    cross_node_copies,
    ep_step_time_job,
    max_differences,
    measure_traffic,
    run_expert_parallel,
    split_over_ranks,
    traffic_from_routing,
    traffic_totals,
)
from utils.moe.layer import DeepSeekMoE

WORLD = 4
D_MODEL = 16


@pytest.fixture(scope="module")
def cluster():
    with SimulatedCluster(world_size=WORLD) as c:
        yield c


def make_layer(n_experts=8, k=3, n_nodes=1, max_nodes=None, seed=0):
    torch.manual_seed(seed)
    layer = DeepSeekMoE(D_MODEL, n_experts, k, d_expert=12, n_nodes=n_nodes, max_nodes=max_nodes)
    layer.expert_bias.copy_(0.1 * torch.randn(n_experts))  # a non-trivial balancing state
    return layer


def rank_tokens(sizes=(6, 0, 9, 4), seed=1):
    """Uneven token counts per rank, one rank with none: the all-to-all splits must cope."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, D_MODEL, generator=generator) for n in sizes]


def routing_of(layer, tokens_per_rank):
    return [layer.route(layer.affinity(t))[0] for t in tokens_per_rank]


# (gpus_per_node, layer n_nodes, M): 4 nodes of 1 GPU, 2 nodes of 2, 1 node of 4; plain and node-limited.
LAYOUTS = [(1, 1, None), (2, 1, None), (2, 2, 1), (1, 4, 2), (4, 1, None)]


@pytest.mark.parametrize("hierarchical", [True, False], ids=["two-hop", "direct"])
@pytest.mark.parametrize(("gpus_per_node", "n_nodes", "max_nodes"), LAYOUTS)
def test_expert_parallel_equals_single_process(cluster, hierarchical, gpus_per_node, n_nodes, max_nodes):
    layer = make_layer(n_nodes=n_nodes, max_nodes=max_nodes)
    tokens = rank_tokens()
    results, reference = run_expert_parallel(cluster, layer, tokens, gpus_per_node, hierarchical)
    differences = max_differences(results, reference)
    assert max(differences.values()) < 1e-5, differences
    # Every routed expert's gradient came back from exactly one rank, and some are non-zero.
    owned = sorted(e for r in results for e in r["expert_grads"])
    assert owned == list(range(8))
    assert any(float(g.abs().sum()) > 0 for r in results for grads in r["expert_grads"].values()
               for g in grads.values())
    # The measured bytes are exactly what the routing decisions predict.
    layout = ExpertLayout(8, WORLD, gpus_per_node)
    measured = np.stack([r["traffic"] for r in results])
    predicted = traffic_from_routing(routing_of(layer, tokens), layout, D_MODEL, hierarchical)
    np.testing.assert_array_equal(measured, predicted)


def test_two_experts_per_rank_and_forward_only_traffic(cluster):
    layer = make_layer(n_experts=8, k=2)
    tokens = rank_tokens((5, 5, 5, 5), seed=3)
    measured = measure_traffic(cluster, layer, tokens, gpus_per_node=2)
    layout = ExpertLayout(8, WORLD, 2)
    np.testing.assert_array_equal(measured, traffic_from_routing(routing_of(layer, tokens), layout, D_MODEL))
    # Backward moves exactly as many bytes as forward, the other way round.
    assert measured[:, :, 0].sum() == measured[:, :, 1].sum()


def test_step_time_job_reports_a_time_per_rank(cluster):
    layer = make_layer()
    times = cluster.run(ep_step_time_job, layer.init_kwargs, layer.state_dict(), rank_tokens(), 2, True, 2)
    assert len(times) == WORLD and all(t > 0 for t in times)


def test_one_node_sends_nothing_across_nodes():
    layer = make_layer()
    tokens = rank_tokens()
    traffic = traffic_from_routing(routing_of(layer, tokens), ExpertLayout(8, 4, 4), D_MODEL)
    assert traffic_totals(traffic)["cross-node"] == 0 and traffic_totals(traffic)["intra-node"] > 0


def test_node_limit_bounds_cross_node_copies_per_token():
    """Two-hop dispatch sends a token across once per *other* node it uses, so at most M times."""
    tokens = split_over_ranks(torch.randn(64, D_MODEL, generator=torch.Generator().manual_seed(4)), 8)
    layout = ExpertLayout(16, 8, 2)  # 4 nodes x 2 GPUs x 2 experts
    row_bytes = (D_MODEL + 2 * layout.experts_per_node) * 4
    dispatch, forward, inter = PHASES.index("dispatch"), 0, SCOPES.index("inter")
    copies = []
    for m in (1, 2, 3, 4):
        layer = make_layer(n_experts=16, k=4, n_nodes=4, max_nodes=m, seed=5)
        routing = routing_of(layer, tokens)
        traffic = traffic_from_routing(routing, layout, D_MODEL)
        rows = traffic[:, dispatch, forward, inter].sum() / row_bytes
        # Count by hand: nodes each token uses, other than its own rank's node.
        other_nodes = [len(set((idx // 4).tolist()) - {layout.node_of_rank(rank)})
                       for rank, chosen in enumerate(routing) for idx in chosen]
        assert rows == sum(other_nodes)
        assert max(other_nodes) <= m
        copies.append(rows / 64)
    assert copies == sorted(copies) and copies[0] < copies[-1]


def test_layout_places_experts_contiguously():
    layout = ExpertLayout(16, 8, 2)
    assert (layout.n_nodes, layout.experts_per_rank, layout.experts_per_node) == (4, 2, 4)
    assert list(layout.experts_of_rank(3)) == [6, 7]
    assert layout.rank_of_expert(7) == 3 and layout.node_of_rank(3) == 1 and layout.local_index(3) == 1
    assert layout.scope(2, 3) == 0 and layout.scope(1, 2) == 1


@pytest.mark.parametrize(
    ("args", "rule"),
    [
        ((6, 4, 2), "not divisible by 4 ranks"),
        ((8, 6, 4), "multiple of gpus_per_node"),
        ((0, 4, 2), "at least one expert"),
    ],
)
def test_bad_layouts_name_the_rule(args, rule):
    with pytest.raises(ValueError, match=rule):
        ExpertLayout(*args)


def test_node_limited_layer_must_count_the_real_nodes():
    layer = make_layer(k=2, n_nodes=2, max_nodes=1)
    with pytest.raises(ValueError, match="nodes the experts actually live on"):
        ExpertParallelMoE(layer, ExpertLayout(8, 4, 1), rank=0)
    with pytest.raises(ValueError, match="has 8"):
        ExpertParallelMoE(make_layer(), ExpertLayout(16, 4, 1), rank=0)


def test_split_over_ranks():
    assert [t.shape[0] for t in split_over_ranks(torch.zeros(12, 3), 4)] == [3, 3, 3, 3]
    with pytest.raises(ValueError, match="evenly"):
        split_over_ranks(torch.zeros(10, 3), 4)


@pytest.mark.parametrize("hierarchical", [True, False])
def test_cross_node_copies_of_one_token_add_up_to_the_traffic(hierarchical):
    layout = ExpertLayout(16, 8, 2)
    generator = torch.Generator().manual_seed(7)
    routing = [torch.stack([torch.randperm(16, generator=generator)[:4] for _ in range(3)]) for _ in range(8)]
    traffic = traffic_from_routing(routing, layout, D_MODEL, hierarchical)
    width = layout.experts_per_node if hierarchical else layout.experts_per_rank
    rows = traffic[:, PHASES.index("dispatch"), 0, SCOPES.index("inter")].sum() / ((D_MODEL + 2 * width) * 4)
    # Two-hop: the second hop stays inside the node, so every cross-node row is a first-hop copy.
    assert rows == sum(cross_node_copies(t.tolist(), r, layout, hierarchical)
                       for r, idx in enumerate(routing) for t in idx)
    # Worked example: rank 0 (node 0) sends to experts 1 (rank 0), 5 (rank 2, node 1), 6, 7 (rank 3, node 1).
    assert cross_node_copies([1, 5, 6, 7], 0, layout) == 1
    assert cross_node_copies([1, 5, 6, 7], 0, layout, hierarchical=False) == 2
