"""Schedule generators: naive, GPipe, 1F1B, 1F1B with overlapped pairs, ZB1P (ZB-H1), DualPipe, DualPipeV,
interleaved 1F1B, ZB-V and Chimera.

One module per family; each generator returns a ``utils.pipeline.schedule.Schedule``. They read like the
diagrams: one loop per phase, each phase's length a named formula of the rank, the number of ranks and the
number of micro-batches. Call them through ``utils.pipeline.registry.make_schedule(name, ranks, microbatches)``.

    common          count checks and the linear placement every one-stage-per-rank schedule shares
    linear          naive, gpipe, one_f_one_b, zb1p: one stage per rank
    overlapped      one_f_one_b_overlap (``1f1b-overlap``): 1F1B with its steady F and B as overlapped pairs
    bidirectional   dualpipe, dualpipev (and dualpipe_phase_steps, the eight phases' counts)
    virtual         interleaved_1f1b (v chunks per rank; interleaved1f1b: v = 2), zbv: several stages per rank
    chimera         chimera.chimera: two 1F1B pipelines in opposite directions (DualPipe's ancestor), its
                    closed forms and dualpipe_over_chimera (what DualPipe adds on top of it)

May import: ``utils.pipeline.schedule`` only.
"""

from utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    **{name: "linear" for name in ("naive", "gpipe", "one_f_one_b", "zb1p")},
    **{name: "overlapped" for name in ("one_f_one_b_overlap", "overlap_warmup")},
    **{name: "bidirectional" for name in ("dualpipe", "dualpipev", "dualpipe_phase_steps", "DUALPIPE_ACTIONS_PER_STEP")},
    **{name: "virtual" for name in ("interleaved_1f1b", "interleaved1f1b", "interleaved_rounds", "zbv",
                                    "zbv_fill_microbatches")},
    # not the function chimera: that name is its module's (generators.chimera.chimera)
    **{name: "chimera" for name in ("chimera_phase_steps", "chimera_bubble", "chimera_peak_activations",
                                    "dualpipe_over_chimera", "Difference")},
})
