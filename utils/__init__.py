"""The course's library: every function a notebook relies on lives in this package.

Subpackages by concept (each ``__init__`` says what lives there and what it may import):

    cluster/    the simulated cluster: each simulated GPU a real process in a torch.distributed group
    moe/        routing, the DeepSeekMoE layer, the toy decoder and its data and training, expert parallelism
    pipeline/   schedules as data, their validator, cost model, simulator, Table 2 and plots;
                executor/ runs a schedule for real on the cluster
    fp8/        FP8 formats, fine-grained scaling, GEMMs, accumulation, the FP8 linear layer
    scale/      DeepSeek-V3 at full scale: parameters, FLOPs, ms per chunk and GB per GPU, fed to the simulator
    widgets/    controls wired to the pure functions above (only wiring)

Course level: ``checks`` (exercise self-checks), ``capstone`` (the recipe dashboard and the claims map) with
``capstone_figure`` (its four panels) and ``recipe`` (its configuration). Ground: ``figures`` (the palette),
``view`` (``View``: what a widget shows, returned by the pure functions behind the widgets). Below all:
``inputs`` (the argument checks and size limits every module shares).
Command lines: ``python -m utils.schedules``, ``utils.simulate``, ``utils.execute``, ``utils.launch``, ``utils.scale``.
Layers (arrows point down only; enforced by import-linter, ``make lint``):

    widgets                       what the learner touches
    checks, capstone, scale       course level (scale reads the simulator)
    pipeline.executor             runs schedules on the cluster (never imports the simulator)
    pipeline, moe, fp8            the models of the course
    cluster, figures, view        ground: no imports of the kit but ``inputs``
    inputs                        below all: the argument checks and size limits every module shares

Pipelines: a ``Schedule`` (pipeline.schedule) is what each rank will do; a ``Timeline`` (pipeline.timeline)
is what each rank did and when. The simulator and the executor both turn the first into the second.
"""

from utils import _legacy

_legacy.install()  # old flat names such as utils.routing keep working (see utils/_legacy.py)
