"""MoE figures, each with a reference measured in the same run (wall-clock on this machine, not GPU time).

- routing: tokens per second of node-limited top-K against plain top-K, at DeepSeek-V3's shape
  (256 routed experts, K = 8, M = 4 of 8 nodes);
- expert parallelism: one forward + backward of an MoE layer over a 4-rank SimulatedCluster (two-hop and
  direct dispatch) against the same layer in one process on all the tokens;
- training: one step of the toy decoders of notebooks 01 and 02 against the 8-expert K = 2 decoder.
"""

import time

import numpy as np
import pandas as pd
import torch

from utils.cluster.cluster import SimulatedCluster
from utils.moe.data import make_dataset
from utils.moe.expert_parallel import ep_step_time_job, split_over_ranks
from utils.moe.explore import NODE_CAP_CONFIG
from utils.moe.layer import DeepSeekMoE
from utils.moe.routing import node_limited_route, topk_route
from utils.moe.toy_decoder import ToyDecoderConfig, build_toy_decoder
from utils.moe.train import single_thread, train


def _median_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _routing_rows() -> list[dict]:
    affinity = torch.rand(16384, 256, generator=torch.Generator().manual_seed(0))
    bias = 0.01 * torch.randn(256, generator=torch.Generator().manual_seed(1))
    with single_thread():
        plain = _median_seconds(lambda: topk_route(affinity, 8, bias))
        limited = _median_seconds(lambda: node_limited_route(affinity, 8, n_nodes=8, max_nodes=4, bias=bias))
    tokens = affinity.shape[0]
    return [
        {"measurement": "top-K routing, 256 experts, K=8", "value": tokens / plain, "unit": "tokens/s",
         "reference": "itself", "ratio": 1.0},
        {"measurement": "node-limited routing, M=4 of 8 nodes", "value": tokens / limited, "unit": "tokens/s",
         "reference": "top-K routing", "ratio": plain / limited},
    ]


def _expert_parallel_rows() -> list[dict]:
    torch.manual_seed(0)
    layer = DeepSeekMoE(d_model=64, n_routed=16, k=4, d_expert=32, n_nodes=2)
    tokens = torch.randn(4 * 512, 64, generator=torch.Generator().manual_seed(1))

    def single():
        layer.zero_grad()
        layer(tokens).sum().backward()

    with single_thread():
        reference = _median_seconds(single)
    rows = [{"measurement": "MoE fwd+bwd, 1 process, 2048 tokens", "value": reference * 1e3, "unit": "ms",
             "reference": "itself", "ratio": 1.0}]
    with SimulatedCluster(world_size=4) as cluster:
        for hierarchical, name in ((True, "two-hop"), (False, "direct")):
            per_rank = cluster.run(ep_step_time_job, layer.init_kwargs, layer.state_dict(),
                                   split_over_ranks(tokens, 4), 2, hierarchical)
            seconds = max(per_rank)
            rows.append({"measurement": f"expert-parallel fwd+bwd, 4 ranks x 512 tokens, {name}",
                         "value": seconds * 1e3, "unit": "ms", "reference": "1 process",
                         "ratio": seconds / reference})
    return rows


def _training_rows() -> list[dict]:
    data, held_out = make_dataset(512, seed=0), make_dataset(8, seed=1)
    configs = {"toy decoder step, 8 experts K=2 (notebook 01)": ToyDecoderConfig(),
               "toy decoder step, 16 experts K=4 M=2 (notebook 02)": NODE_CAP_CONFIG.replace(max_nodes=2)}
    rows, reference = [], None
    for name, config in configs.items():
        model = build_toy_decoder(config, seed=0)
        train(model, 3, dataset=data, eval_dataset=held_out, progress=False)  # warm up
        start = time.perf_counter()
        train(model, 30, dataset=data, eval_dataset=held_out, progress=False)
        seconds = (time.perf_counter() - start) / 30
        reference = reference or seconds
        rows.append({"measurement": name, "value": seconds * 1e3, "unit": "ms",
                     "reference": "8-expert step" if rows else "itself", "ratio": seconds / reference})
    return rows


def main() -> None:
    rows = _routing_rows() + _expert_parallel_rows() + _training_rows()
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
