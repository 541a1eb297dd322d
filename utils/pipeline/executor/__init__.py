"""The real executor: every rank of a simulated (or torchrun) cluster runs its action list of a Schedule.

    execute      ``execute(cluster, schedule, model_spec)`` -> ExecutionResult (a measured Timeline, gradients)
                 and ``python -m utils.execute``
    jobs         the functions a rank runs (the executor's, torch.distributed.pipelining's, the step timer)
    rank         RankPipeline: one rank's loop over its actions
    messages     plan_messages: a pure plan of what each rank receives and sends (from Schedule.inputs_of),
                 and the Mailbox that carries it out
    stage        StageRunner: forward, backward for input (I) and for weights (W) of one stage
    experts      expert-parallel blocks of a stage (the all-to-all inside a pipeline stage)
    overlap      how an overlapped F&B pair interleaves its two chunks
    pacing       paced mode: every action lasts at least its cost-model duration
    models       the ModelSpec Protocol and the specs a schedule runs (an MLP, the toy MoE decoder)
    reference    the single-process run every schedule's loss and gradients are compared with
    torch_side   running the same model under torch.distributed.pipelining, for cross-checks

May import: torch, ``utils.pipeline`` (schedule, costs, timeline, registry, validation), ``utils.cluster``,
``utils.moe``. Never the simulator, the plots or the widgets.
"""
