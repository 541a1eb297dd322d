"""The widgets learners touch: controls wired to one pure, unit-tested function each. Only wiring here.

    base       WiredWidget: the one wiring (controls -> pure function -> its utils.view.View: figure,
               table(s), note or the message of a bad setting) and the one _repr_mimebundle_
    pipeline   the schedule explorer and the schedule comparison (notebooks 03-05)
    moe        MoE training and node-cap widgets (notebooks 01-02)
    fp8        the FP8 error explorer (notebook 06)
    capstone   the recipe dashboard (notebook 07)
    scale      DeepSeek-V3 at full scale: seconds and gigabytes per schedule (notebook 08)

May import: ipywidgets, matplotlib, ``utils.view``, ``utils.figures``, the pure ``explore`` functions of ``utils.pipeline``, ``utils.moe``,
``utils.fp8``, ``utils.capstone`` and ``utils.scale.explore``. Never ``utils.cluster`` (widgets know nothing of processes).
``from utils.widgets import schedule_explorer`` works as it always did.
"""

from utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    name: "pipeline" for name in ("ScheduleExplorer", "ScheduleComparison", "schedule_explorer", "schedule_comparison")
})
