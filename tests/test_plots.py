"""Figures: shared colours, Gantt timelines, activation memory and idle bars draw what the Timeline holds."""

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from matplotlib.colors import is_color_like, to_hex, to_rgb  # noqa: E402

from utils import figures  # noqa: E402
from utils.pipeline import plots  # noqa: E402
from utils.pipeline.schedule import Action, OverlappedAction, Schedule  # noqa: E402
from utils.pipeline.timeline import CommInterval, Interval, Timeline  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def two_rank_timeline() -> Timeline:
    """Naive split, two micro-batches: F, F then B, B on each of two ranks (times by hand)."""
    a = {(s, k, m): Action(s, k, m) for s in (0, 1) for k in "FB" for m in (0, 1)}
    schedule = Schedule("naive", 2, 2, (0, 1), (0, 1), ((0, 1), (0, 1)),
                        ((a[0, "F", 0], a[0, "B", 0], a[0, "F", 1], a[0, "B", 1]),
                         (a[1, "F", 0], a[1, "B", 0], a[1, "F", 1], a[1, "B", 1])))
    rank0 = (Interval(0, a[0, "F", 0], 0, 1), Interval(0, a[0, "B", 0], 4, 6),
             Interval(0, a[0, "F", 1], 6, 7), Interval(0, a[0, "B", 1], 10, 12))
    rank1 = (Interval(1, a[1, "F", 0], 1, 2), Interval(1, a[1, "B", 0], 2, 4),
             Interval(1, a[1, "F", 1], 7, 8), Interval(1, a[1, "B", 1], 8, 10))
    return Timeline(schedule, (rank0, rank1), comms=(CommInterval(0, "p2p", 1, 1.5, False),
                                                     CommInterval(1, "all-to-all", 2.5, 3.0, True)))


def bidirectional_timeline() -> Timeline:
    """One rank holding stage 0 (direction 0) and stage 1 (id >= n_ranks: direction 1), with an F&B pair."""
    f0, f1 = Action(0, "F", 0), Action(1, "F", 1)
    pair = OverlappedAction(Action(0, "F", 2), Action(1, "I", 1))
    tail = [Action(1, "W", 1), Action(0, "B", 0), Action(0, "B", 2)]
    schedule = Schedule("dualpipe", 1, 3, (0, 0), (0, 0), ((0,), (1,), (0,)), ((f0, f1, pair, *tail),))
    times = [(0, 1), (1, 2), (2, 5), (5, 6), (6, 8), (8, 10)]
    acts = [f0, f1, pair, *tail]
    return Timeline(schedule, (tuple(Interval(0, x, s, e) for x, (s, e) in zip(acts, times, strict=True)),))


def polys_of_colour(ax, colour: str) -> list[np.ndarray]:
    """Rectangles (as vertex arrays) of every PolyCollection whose face colour is ``colour``."""
    found = []
    for coll in ax.collections:
        if isinstance(coll, PolyCollection) and len(coll.get_facecolor()):
            if to_hex(coll.get_facecolor()[0], keep_alpha=False) == to_hex(colour):
                found.extend(p.vertices for p in coll.get_paths())
    return found


def test_kind_colors_cover_every_kind_and_are_distinct():
    assert set(plots.KIND_COLORS) == {"F", "I", "W", "B", "FB", "comm", "idle"}
    assert all(is_color_like(c) for c in plots.KIND_COLORS.values())
    rgbs = [np.array(to_rgb(c)) for c in plots.KIND_COLORS.values()]
    gaps = [np.abs(a - b).sum() for i, a in enumerate(rgbs) for b in rgbs[i + 1:]]
    assert min(gaps) > 0.3, "two op kinds would be hard to tell apart"
    assert set(plots.KIND_LABELS) == set(plots.KIND_COLORS)


def test_one_rectangle_per_action_in_its_kind_colour():
    tl = two_rank_timeline()
    ax = plots.plot_timeline(tl)
    forwards = polys_of_colour(ax, plots.KIND_COLORS["F"])
    backwards = polys_of_colour(ax, plots.KIND_COLORS["B"])
    assert len(forwards) == 4 and len(backwards) == 4
    spans = sorted((v[:, 0].min(), v[:, 0].max(), round(v[:, 1].mean())) for v in backwards)
    expected = sorted((iv.start, iv.end, iv.rank) for row in tl.intervals for iv in row if iv.kind == "B")
    assert spans == expected
    idle_rows = polys_of_colour(ax, plots.KIND_COLORS["idle"])
    assert len(idle_rows) == 2 and all(v[:, 0].max() - v[:, 0].min() == tl.makespan for v in idle_rows)


def test_communication_strip_exposed_and_hidden():
    ax = plots.plot_timeline(two_rank_timeline())
    comm = [c for c in ax.collections if isinstance(c, PolyCollection)
            and to_hex(c.get_facecolor()[0], keep_alpha=False) == to_hex(plots.KIND_COLORS["comm"])]
    assert sorted(round(c.get_alpha(), 2) for c in comm) == [0.35, 1.0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "communication (hidden behind compute)" in labels
    assert "communication (exposed: rank waits)" in labels


def test_title_axis_labels_and_legend():
    tl = two_rank_timeline()
    ax = plots.plot_timeline(tl)
    assert "naive" in ax.get_title() and "2 ranks" in ax.get_title()
    assert ax.get_xlabel() == "time (time units)"
    assert ax.get_ylabel() == "rank"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["rank 0", "rank 1"]
    assert ax.get_ylim()[0] > ax.get_ylim()[1], "rank 0 is drawn on top"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert plots.KIND_LABELS["F"] in legend and plots.KIND_LABELS["B"] in legend
    assert plots.KIND_LABELS["W"] not in legend, "only kinds that occur are listed"


def test_microbatch_numbers_written_when_readable():
    ax = plots.plot_timeline(two_rank_timeline())
    assert sorted(t.get_text() for t in ax.texts) == ["0", "0", "0", "0", "1", "1", "1", "1"]
    ax = plots.plot_timeline(two_rank_timeline(), labels=False)
    assert not ax.texts


def test_direction_one_is_hatched_and_pairs_are_split():
    tl = bidirectional_timeline()
    ax = plots.plot_timeline(tl)
    halves = polys_of_colour(ax, plots.KIND_COLORS["FB"])
    assert len(halves) == 2, "an F&B pair is drawn as a forward half and a backward half"
    heights = sorted(v[:, 1].max() - v[:, 1].min() for v in halves)
    assert heights == pytest.approx([0.4, 0.4])
    hatch = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(hatch) == 1
    # Every stroke lies inside a direction-1 block: stage 1's F [1,2], W [5,6] or the pair's lower half [2,5].
    for (xa, _), (xb, _) in hatch[0].get_segments():
        assert any(lo - 1e-9 <= xa <= xb <= hi + 1e-9 for lo, hi in [(1, 2), (2, 5), (5, 6)])
    assert "," in "".join(t.get_text() for t in ax.texts), "a pair is labelled fwd,bwd micro-batch"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert plots.DIRECTION_LABELS[1] in legend


def test_highlight_fades_the_rest():
    tl = two_rank_timeline()
    ax = plots.plot_timeline(tl, highlight=lambda iv: iv.action.microbatch == 0)
    alphas = sorted({c.get_alpha() for c in ax.collections if isinstance(c, PolyCollection)
                     and to_hex(c.get_facecolor()[0], keep_alpha=False) == to_hex(plots.KIND_COLORS["F"])})
    assert alphas == [0.2, 1.0]
    assert sorted(t.get_text() for t in ax.texts) == ["0", "0", "0", "0"]


def test_side_by_side_draws_both():
    tl = two_rank_timeline()
    measured = Timeline(tl.schedule, tl.intervals, source="measured", time_unit="ms")
    fig = plots.plot_timelines_side_by_side(tl, measured)
    top, bottom = fig.axes[:2]
    assert "simulated" in top.get_title() and "measured" in bottom.get_title()
    assert bottom.get_xlabel() == "time (ms)"
    assert top.get_legend() is not None


def test_activations_over_time_matches_timeline_peak():
    for tl in (two_rank_timeline(), bidirectional_timeline()):
        for r in range(tl.n_ranks):
            times, held = plots.activations_over_time(tl, r)
            assert held.max() == tl.peak_activations(r)
            assert held[-1] == 0, "every activation is released by the end of the step"
            assert np.all(np.diff(times) >= 0)


def test_plot_memory_one_line_per_rank():
    tl = two_rank_timeline()
    ax = plots.plot_memory(tl)
    assert len(ax.lines) == 2
    assert "activations" in ax.get_ylabel() and "time" in ax.get_xlabel() and ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["rank 0 (peak 1)", "rank 1 (peak 1)"]


def test_idle_bars_heights_are_idle_times():
    tl = two_rank_timeline()
    ax = plots.plot_idle_bars({"naive": tl, "again": tl})
    heights = sorted(round(p.get_height(), 9) for p in ax.patches if p.get_height() > 0)
    assert heights == sorted([tl.idle(0), tl.idle(1)] * 2)
    assert "idle" in ax.get_ylabel() and ax.get_xlabel() == "rank" and ax.get_title()
    assert ax.get_legend() is not None
    frame = plots.idle_frame({"naive": tl})
    assert list(frame["idle"]) == [tl.idle(0), tl.idle(1)]


def test_figure_png_renders():
    ax = plots.plot_timeline(two_rank_timeline())
    png = figures.figure_png(ax.figure)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    buf = io.BytesIO(png)
    assert len(buf.getvalue()) > 1000


def test_timeline_canvas_redraw_equals_a_fresh_drawing():
    """Blitting must not leave traces: A, then B, then A again gives A's pixels exactly."""
    first, second = two_rank_timeline(), bidirectional_timeline()
    canvas = plots.TimelineCanvas()
    canvas.render(first)
    canvas.render(second)
    again = canvas.render(first)
    assert again == plots.TimelineCanvas().render(first)
    assert again[:8] == b"\x89PNG\r\n\x1a\n"
    legend = [t.get_text() for t in canvas.ax.get_legend().get_texts()]
    assert plots.KIND_LABELS["F"] in legend and canvas.ax.get_xlabel() == "time (time units)"
    assert "naive" in canvas._title.get_text()
    assert [t.get_text() for t in canvas.ax.get_yticklabels()] == ["rank 0", "rank 1"]


def test_microbatch_numbers_sit_on_a_light_box_above_the_hatching():
    """Hatching would strike through the digits: each label has a light box drawn above the strokes."""
    ax = plots.plot_timeline(bidirectional_timeline())
    hatch_z = max(c.get_zorder() for c in ax.collections if isinstance(c, LineCollection))
    for text in ax.texts:
        box = text.get_bbox_patch()
        assert box is not None and text.get_zorder() > hatch_z
        assert to_hex(box.get_facecolor(), keep_alpha=False) == "#ffffff" and box.get_alpha() >= 0.5


def test_plot_memory_says_when_a_stage_is_a_fraction_of_1f1b_s():
    from utils.pipeline.costs import CostModel
    from utils.pipeline.registry import make_schedule
    from utils.pipeline.simulate import simulate

    zbv = simulate(make_schedule("zbv", 2, 4), CostModel(F=1, B=2, W=1))
    assert "1/2 of a 1F1B stage" in plots.plot_memory(zbv).get_ylabel()
    assert "1F1B stage" not in plots.plot_memory(two_rank_timeline()).get_ylabel()


def test_stacked_timelines_share_one_time_axis_to_the_longest_step():
    from utils.pipeline.costs import CostModel
    from utils.pipeline.plots import plot_timelines_stacked
    from utils.pipeline.registry import make_schedule
    from utils.pipeline.simulate import simulate

    costs = CostModel(F=1, B=2, W=1, dispatch=0.5, combine=0.5)
    tls = [simulate(make_schedule(n, 4, 8), costs) for n in ("1f1b", "dualpipe")]
    fig = plot_timelines_stacked(tls, titles=("a", "b"))
    top, bottom = fig.axes[0], fig.axes[-1]
    assert top.get_xlim() == bottom.get_xlim() and top.get_xlim()[1] == max(t.makespan for t in tls)
    assert top.get_xlabel() == "" and bottom.get_xlabel() and [top.get_title(), bottom.get_title()] == ["a", "b"]
    assert all(ax.get_legend() is not None for ax in (top, bottom))  # each schedule its own kinds
    plt.close(fig)
    with pytest.raises(ValueError, match="titles"):
        plot_timelines_stacked(tls, titles=("only one",))
