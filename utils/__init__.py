"""The course's library: every function a notebook relies on lives in this package.

Layers (arrows point down only; see CONTRIBUTING.md):

    widgets, checks                     what the learner touches
    plots, execute, expert_parallel     built on the ground layer
    simulate, timeline, moe             the models of the course
    schedules, cluster, fp8, data       ground: no imports of the kit
"""
