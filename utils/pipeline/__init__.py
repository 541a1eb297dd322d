"""Pipeline parallelism: schedules as data, and everything that reads them.

    schedule     Action, OverlappedAction, Schedule: the types, their string forms, the dependency rule
    generators   naive, GPipe, 1F1B, 1F1B-overlap, ZB1P, DualPipe, DualPipeV...: one function per schedule
    validation   the validator: is a schedule runnable? (messages name the rank, the action and the rule)
    registry     names -> generators (``make_schedule``), and ``python -m utils.schedules``
    costs        CostModel: how long F, B, I, W, F&B, F&I and the all-to-all take (``duration``: the one rule
                 the simulator and paced execution use)
    timeline     Timeline: what each rank did and when (the common result of simulator and executor), and
                 its time budget: compute + exposed communication + idle = makespan, per rank
    simulate     the event-driven simulator, and ``python -m utils.simulate``
    table2       the closed forms of the DeepSeek-V3 report's Table 2, with their assumptions, and beside
                 them 1f1b-overlap's (step time, bubble, exposed communication, activations)
    plots        Gantt charts, activation memory, idle bars
    raster       the widget canvas's fast path: Gantt blocks painted with numpy, text stamped, PNG encoded
    runtime      how the simulator adapts to its process: the garbage-collector pause, numpy only if loaded
    explore      the pure functions behind the pipeline widgets and exercises
    compare      all schedules side by side on one model (the comparison widget, the capstone)
    optimal/     the best schedule the cost model allows, found by CP-SAT (OR-Tools) from the dependency rule
                 and the simulator's durations, as a kit Schedule; ``python -m utils.optimal``
    optimal_figures  notebook 05b's tables and figures (each schedule beside its optimum, the memory cap sweep)
    executor/    what a rank runs to execute a schedule for real on a simulated cluster

May import: torch, numpy, pandas, matplotlib, ``utils.figures``, ``utils.cluster`` (the executor only),
``utils.moe`` (the executor's MoE stage models only) and ortools (``optimal`` only, when a search runs). The
executor never imports the simulator.
"""
