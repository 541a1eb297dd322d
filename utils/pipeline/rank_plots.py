"""Per-rank figures beside the Gantt chart: activation memory over time, idle time per rank.

``plots`` draws the timelines themselves and re-exports these (``plots.plot_memory`` ...). Colours come from
the course palette (``utils.figures``). Imports the timeline types and the palette only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from utils import inputs as arg
from utils.figures import EDGE_COLOR, OKABE_ITO, SCHEDULE_COLORS
from utils.pipeline.timeline import Timeline, check_timeline


def _check_title(where: str, title) -> None:
    """The plots' title option: a string, or None for the default title (as ``plots`` checks it)."""
    if title is not None:
        arg.instance(title, "title", str, "a string (or None for the default title)", where=where)


def activations_over_time(timeline: Timeline, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Step function of stage-activations held by ``rank``: (times, held after each time).

    Same rule as ``Timeline.peak_activations``: held from the start of a stage's F of a micro-batch until the
    end of that stage's W or full B for it; at equal times releases come first.
    """
    events = check_timeline(timeline, "activations_over_time").activation_events(rank)
    times = [timeline.start]
    held = [0]
    count = 0
    for t, delta in events:
        count += delta
        if t == times[-1]:
            held[-1] = count
        else:
            times.append(t)
            held.append(count)
    times.append(timeline.end)
    held.append(count)
    return np.asarray(times, dtype=float), np.asarray(held, dtype=int)


def held_spans(timeline: Timeline, rank: int, at_least: int) -> list[tuple[float, float]]:
    """The time spans during which ``rank`` holds at least ``at_least`` stage-activations (merged, in order):
    where ``activations_over_time`` is at or above that level."""
    times, held = activations_over_time(timeline, rank)
    spans: list[tuple[float, float]] = []
    for t0, t1, h in zip(times[:-1], times[1:], held[:-1], strict=True):
        if h >= at_least and t1 > t0:
            if spans and spans[-1][1] == t0:
                spans[-1] = (spans[-1][0], float(t1))
            else:
                spans.append((float(t0), float(t1)))
    return spans


_MEMORY_STYLES = ("-", "--", "-.", ":")


def plot_memory(timeline: Timeline, ax: Axes | None = None, *, ranks: Sequence[int] | None = None,
                title: str | None = None) -> Axes:
    """Activations held over time, one step line per rank (unit: one micro-batch through one stage; with v
    chunks per rank a stage is 1/v of a 1F1B stage, and the y label says so).

    Ranks often hold exactly the same curve (DualPipe's rank r and PP-1-r mirror each other), which would
    hide one line under another: each rank is drawn slightly shifted up or down (at most +-0.2 in all, said
    in the legend's title) and with its own dash pattern, so every rank's line stays visible.
    """
    check_timeline(timeline, "plot_memory")
    _check_title("plot_memory", title)
    if ranks is not None:
        ranks = list(ranks) if isinstance(ranks, range) else ranks
        ranks = [timeline.check_rank(r, "plot_memory") for r in arg.sequence(ranks, "ranks", where="plot_memory")]
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4), layout="constrained")
    ranks = list(range(timeline.n_ranks)) if ranks is None else list(ranks)
    cmap = plt.get_cmap("viridis")
    shift = min(0.1, 0.4 / max(len(ranks) - 1, 1))
    for i, r in enumerate(ranks):
        times, held = activations_over_time(timeline, r)
        colour = cmap(i / max(len(ranks) - 1, 1) * 0.9)
        offset = shift * (i - (len(ranks) - 1) / 2)
        ax.step(times, held + offset, where="post", color=colour, lw=1.6,
                linestyle=_MEMORY_STYLES[i % len(_MEMORY_STYLES)], label=f"rank {r} (peak {int(held.max())})")
    s = timeline.schedule
    ax.set_title(title if title is not None else
                 f"{s.name}: activations held per rank ({s.n_ranks} ranks, {s.n_microbatches} micro-batch{'es' if s.n_microbatches != 1 else ''})")
    ax.set_xlabel(f"time ({timeline.time_unit})")
    # A stage of a v-chunk schedule (ZB-V, interleaved 1F1B, DualPipeV) holds 1/v of a 1F1B stage's layers:
    # its count is not comparable with 1F1B's without that factor, so the axis says it.
    v = max(1, s.n_chunks // s.n_ranks)
    ax.set_ylabel("activations held (stage-activations)" if v == 1 else
                  f"activations held (stage-activations;\na stage here is 1/{v} of a 1F1B stage)")
    ax.yaxis.get_major_locator().set_params(integer=True)
    legend_title = f"rank (lines {shift:.2g} apart\nso equal ones show)" if len(ranks) > 1 else "rank"
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False, title=legend_title,
              title_fontsize=8, ncol=1 if len(ranks) <= 16 else 2)
    return ax


def idle_frame(timelines_by_schedule: Mapping[str, Timeline]):
    """Long-form pandas DataFrame (schedule, rank, idle, time_unit) behind ``plot_idle_bars``."""
    import pandas as pd

    if not isinstance(timelines_by_schedule, Mapping) or not timelines_by_schedule:
        arg.fail("timelines_by_schedule", "a non-empty dict {name: Timeline}", timelines_by_schedule,
                 where="idle_frame", error=arg.InputTypeError)
    for name, timeline in timelines_by_schedule.items():
        check_timeline(timeline, "idle_frame", f"timelines_by_schedule[{arg.text(name, 'every name')!r}]")
    rows = [{"schedule": name, "rank": r, "idle": tl.idle(r), "time_unit": tl.time_unit}
            for name, tl in timelines_by_schedule.items() for r in range(tl.n_ranks)]
    return pd.DataFrame(rows, columns=["schedule", "rank", "idle", "time_unit"])


def plot_idle_bars(timelines_by_schedule: Mapping[str, Timeline], ax: Axes | None = None, *,
                   title: str | None = None) -> Axes:
    """Idle time per rank, one bar colour per schedule (seaborn grouped bars)."""
    import seaborn as sns

    frame = idle_frame(timelines_by_schedule)
    _check_title("plot_idle_bars", title)
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4), layout="constrained")
    names = list(timelines_by_schedule)
    palette = {n: SCHEDULE_COLORS.get(n.split()[0].lower(), OKABE_ITO["sky blue"]) for n in names}
    sns.barplot(data=frame, x="rank", y="idle", hue="schedule", hue_order=names, palette=palette, ax=ax,
                edgecolor=EDGE_COLOR, linewidth=0.5, saturation=1.0)
    units = sorted(set(frame["time_unit"])) or ["time units"]
    ax.set_xlabel("rank")
    ax.set_ylabel(f"idle time ({', '.join(units)})")
    ax.set_title(title if title is not None else "Idle time (pipeline bubble) per rank")
    ax.legend(title="schedule", loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    return ax
