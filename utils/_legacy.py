"""Old flat module names (``utils.routing``, ``utils.plots``, ...) as aliases of their new homes.

Before the library moved into subpackages, every module lay flat in ``utils/``. Learners' own notebooks and
scripts written then keep working: importing an old name gives the very module object of its new home (no
copy, so monkeypatching either name patches both). The course's own code, tests and notebooks use the new
names; ``tests/test_layout.py`` keeps it that way.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

# old name -> new home. The old names that became packages (moe, fp8, cluster, widgets) or command-line
# entries (schedules, simulate, execute, launch) are real modules and need no alias.
MOVED: dict[str, str] = {
    "schedule_generators": "pipeline.generators", "schedule_validation": "pipeline.validation",
    "timeline": "pipeline.timeline", "table2": "pipeline.table2", "plots": "pipeline.plots",
    "pipeline_explore": "pipeline.explore", "pipeline_jobs": "pipeline.executor.jobs",
    "pipeline_rank": "pipeline.executor.rank", "pipeline_messages": "pipeline.executor.messages",
    "pipeline_stage": "pipeline.executor.stage", "pipeline_experts": "pipeline.executor.experts",
    "pipeline_overlap": "pipeline.executor.overlap", "pipeline_pacing": "pipeline.executor.pacing",
    "stage_models": "pipeline.executor.models", "pipeline_reference": "pipeline.executor.reference",
    "pipeline_torch": "pipeline.executor.torch_side", "routing": "moe.routing", "toy_decoder": "moe.toy_decoder",
    "data": "moe.data", "moe_train": "moe.train", "expert_parallel": "moe.expert_parallel",
    "moe_explore": "moe.explore", "fp8_gemm": "fp8.gemm", "fp8_linear": "fp8.linear",
    "accumulation": "fp8.accumulation", "fp8_explore": "fp8.explore", "cluster_processes": "cluster.processes",
    "cluster_rank": "cluster.rank", "cluster_inputs": "cluster.inputs", "cluster_jobs": "cluster.jobs",
    "widgets_moe": "widgets.moe", "widgets_fp8": "widgets.fp8", "widgets_capstone": "widgets.capstone",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        pass  # the target ran its own code when it was imported


class LegacyNames(importlib.abc.MetaPathFinder):
    """Finds ``utils.<old name>`` and answers with the module at its new home."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != "utils" or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(f"utils.{MOVED[name]}"))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, LegacyNames) for f in sys.meta_path):
        sys.meta_path.append(LegacyNames())
