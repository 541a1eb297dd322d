"""The course's library: every function a notebook relies on lives in this package.

Layers (arrows point down only; see CONTRIBUTING.md). Each line lists modules of one layer:

    widgets, widgets_moe, widgets_fp8, widgets_capstone, checks        what the learner touches
    capstone, pipeline_explore, moe_explore, fp8_explore               pure functions behind the widgets
    plots, execute, pipeline_jobs, pipeline_rank, pipeline_messages,   built on the ground layer
    pipeline_stage, pipeline_experts, pipeline_overlap, pipeline_pacing,
    pipeline_torch, stage_models, pipeline_reference, expert_parallel,
    moe_train, fp8_linear, fp8_gemm, accumulation
    simulate, timeline, table2, moe, toy_decoder                       the models of the course
    schedules, schedule_generators, schedule_validation, cluster,      ground: no imports of the kit
    cluster_inputs, cluster_processes, cluster_rank, cluster_jobs,
    launch, routing, fp8, data, notebooks

Pipelines: a `Schedule` (schedules) is what each rank will do; a `Timeline` (timeline) is what each rank did
and when. The simulator (simulate) and the executor (execute) both turn the first into the second.
"""
