"""DeepSeek-V3 at full scale, in seconds and gigabytes: a first-principles cost and memory model (issue #14).

    config      ModelConfig: a published configuration as data (data/scale_models.json, a source per field)
    params      parameter counts (671B / 37B) and FLOPs per token: forward, backward for inputs and weights
    hardware    Hardware: the H800 as data (data/scale_hardware.csv): peaks, SMs, memory, NVLink, InfiniBand
    setting     TrainingSetting and Layout: parallel sizes, batch, precisions, assumptions; their rules
    stages      the model cut into pipeline chunks of even compute, or of equal layer counts (the naive cut)
    timing      F, B, W and the dispatch/combine all-to-all of one micro-batch through a chunk, in ms
    memory      GB per GPU: weights, gradients, master weights, Adam moments (ZeRO), cached activations
    schedules   the costs fed to the course's simulator, for every schedule; activation peaks in bytes;
                uneven stages (each chunk's own cost through ``CostModel.chunk_scale``)
    report      evaluate(): everything in one call, and the JSON of ``python -m utils.scale --json``
    explore     the pure functions behind notebook 08 and its widget (figures and what-if tables)
    puzzles     notebook 08's design puzzles (cut the model for DualPipe; DualPipe in 65 GB), graded by the model

May import: pandas, matplotlib, ``utils.figures``, and the simulator's public parts in ``utils.pipeline``
(costs, registry, schedule, simulate, timeline, and the ``Puzzle`` type of puzzles.base). Never widgets, the cluster or the executor.
``from utils.scale import evaluate, load_model, report_setting`` gives the main entry points.
"""

from utils._lazy import lazy_exports

# ``from utils.scale import evaluate`` without importing the simulator until a name is used.
__getattr__, __dir__ = lazy_exports(__name__, {
    "ModelConfig": "config", "load_model": "config",
    "Hardware": "hardware", "load_hardware": "hardware",
    "TrainingSetting": "setting", "Layout": "setting", "report_setting": "setting",
    "param_counts": "params", "model_flops": "params",
    "evaluate": "report", "ScaleResult": "report",
    "SCHEDULES": "schedules",
})
