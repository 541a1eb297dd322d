"""The configuration of the capstone dashboard (notebook 07): one recipe of DeepSeek-V3's training and its
presets, checked when built. ``utils.capstone`` computes the dashboard from it (and keeps these names)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from utils import inputs as arg
from utils.moe.expert_parallel import ExpertLayout
from utils.pipeline.costs import COMM_SHARE, CostModel


@dataclass(frozen=True)
class RecipeConfig:
    """One configuration of the recipe. Costs are per pipeline stage, in simulated time units.

    `comm_ratio` is the expert all-to-all time of one chunk (dispatch + combine) over its forward compute F.
    `comm_share` is the share of the GPU's compute given to communication while an overlapped F&B pair hides
    an all-to-all (default: DeepSeek-V3's 20 of 132 SMs, report Sec. 3.2.2; 0 is the what-if "overlap is
    free"): such a pair computes 132/112 times as long (`CostModel.pair_slowdown`).
    `ep_ranks` GPUs in `nodes` nodes hold `experts` routed experts; each token picks `top_k` of them on at
    most `node_cap` nodes. `d_model` sets the bytes per token. `outlier` multiplies a few activation channels.
    """

    pp: int = 16
    microbatches: int = 64
    F: float = 1.0
    B: float = 2.0
    W: float = 1.0
    FB: float = 3.0
    comm_ratio: float = 1.0
    comm_share: float = COMM_SHARE
    ep_ranks: int = 64
    nodes: int = 8
    experts: int = 256
    top_k: int = 8
    node_cap: int = 4
    d_model: int = 7168
    tokens_per_rank: int = 32
    outlier: float = 1000.0
    seed: int = 0

    def __post_init__(self):
        where, highs = "RecipeConfig", {"pp": arg.MAX_RANKS, "microbatches": arg.MAX_MICROBATCHES,
                                        "ep_ranks": arg.MAX_EXPERT_RANKS, "top_k": self.experts, "d_model": 1 << 16}
        for name in ("pp", "microbatches", "ep_ranks", "nodes", "experts", "top_k", "node_cap", "d_model",
                     "tokens_per_rank", "seed"):
            arg.whole(getattr(self, name), name, low=0 if name == "seed" else 1, high=highs.get(name), where=where)
        arg.real(self.comm_ratio, "comm_ratio", low=0, high=100, where=where,
                 why="communication time over compute time, so it is >= 0")
        arg.real(self.outlier, "outlier", low=1, high=1e30, where=where, why="a multiplier on a few channels")
        arg.product_limit((self.ep_ranks, self.tokens_per_rank, self.experts),
                          "ep_ranks x tokens_per_rank x experts (affinities)", arg.MAX_ELEMENTS, where=where)
        if self.ep_ranks % self.nodes:
            raise ValueError(
                f"{self.ep_ranks} expert-parallel GPUs do not fill {self.nodes} equal nodes: "
                f"ep_ranks must be a multiple of nodes."
            )
        ExpertLayout(self.experts, self.ep_ranks, self.ep_ranks // self.nodes)  # experts divide over GPUs
        _ = self.costs  # the cost model's rules (F, B, W, F&B), checked now
        if not 1 <= self.node_cap <= self.nodes:
            raise arg.InputError(
                f"node_cap M = {self.node_cap} must lie in 1..{self.nodes}: a token cannot use "
                f"more nodes than there are."
            )

    @property
    def costs(self) -> CostModel:
        """Stage costs with the all-to-all split evenly into dispatch and combine."""
        costs = CostModel(F=self.F, B=self.B, W=self.W, FB=self.FB, comm_share=self.comm_share)  # its rules first, then the all-to-all
        return replace(costs, dispatch=self.comm_ratio * costs.F / 2, combine=self.comm_ratio * costs.F / 2)

    @property
    def comm_label(self) -> str:
        """What the model charges, in words: the all-to-all of one chunk against a forward's and a backward's
        compute (a backward sends as much as a forward but computes B, not F)."""
        a2a = self.comm_ratio * self.F
        return (f"all-to-all {a2a:g} per chunk: comm:compute {a2a / self.F:.3g}:1 in a forward, "
                f"{a2a / self.B:.3g}:1 in a backward")


PRESETS: dict[str, RecipeConfig] = {
    # The report: 16-way pipeline, 64-way expert parallelism over 8 nodes, 256 routed experts, 8 per token
    # on at most 4 nodes, hidden size 7168, computation : communication about 1 : 1 (Sec. 3.2.1).
    "DeepSeek-V3 (report)": RecipeConfig(),
    # A classroom-sized version of the same recipe: the toy MoE's scale from notebooks 01-02.
    "classroom (small)": RecipeConfig(
        pp=4,
        microbatches=8,
        ep_ranks=8,
        nodes=4,
        experts=16,
        top_k=4,
        node_cap=2,
        d_model=64,
        tokens_per_rank=64,
    ),
    # Communication twice as expensive as compute: where the article says DualPipe matters most.
    "slow network (2x comm)": RecipeConfig(comm_ratio=2.0),
}
