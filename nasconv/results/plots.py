"""The front as pictures: a PNG for documents and interactive plotly figures for the pages.

Every front plot draws the same things the same way: the Pareto front of the full-budget trials
(a staircase in 2-D), the knee marked and labelled, the other trained trials, and early-stopped
and infeasible trials in their own markers (never on the front). Hover text shows the
architecture and its figures formatted for people (:mod:`nasconv.results.display`).

Pages reference one shared ``plotly.min.js`` next to them (:func:`write_plotly_js`), so a results
folder holds plotly.js once and opens offline.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..files import atomic_write
from ..search.multi_objective import CONSTRAINTS, OBJECTIVES
from ..search.record import COMPLETE, INFEASIBLE, STOPPED
from . import display
from .architecture import describe
from .front import knee, pareto

PLOTLY_JS = "plotly.min.js"
"""The one copy of plotly.js a results folder holds, referenced by every page in it."""

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
FRONT_COLOR, TRAINED_COLOR, STOPPED_COLOR, INFEASIBLE_COLOR, KNEE_COLOR = (
    "#1f77b4",
    "#a8a8a8",
    "#ff7f0e",
    "#d62728",
    "#111111",
)
SEARCH_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
PNG_PANEL = (5.5, 4.3)
"""Inches per panel of a PNG front."""
PLOTTED_STATES = (COMPLETE, STOPPED, INFEASIBLE)
"""The states a front plot draws: a repeat shares its original's point, a failed trial has none."""


def write_plotly_js(folder: Path) -> Path:
    """``folder/plotly.min.js`` from the installed plotly package, written once (rewritten only if
    another plotly version wrote it)."""
    from plotly.offline import get_plotlyjs

    path = Path(folder) / PLOTLY_JS
    source = get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(source.encode()) or path.read_text() != source:
        with atomic_write(path) as f:
            f.write(source)
    return path


@contextlib.contextmanager
def png_figure(path: Path, rows: int, cols: int, panel: tuple[float, float]) -> Iterator[tuple[Any, Any]]:
    """A (figure, axes grid) on the headless backend, laid out and saved to ``path`` on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), squeeze=False)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=120, bbox_inches="tight")  # legends placed beside the axes are kept
    finally:
        plt.close(fig)


def objective_pairs(objectives: Sequence[str]) -> list[tuple[str, str]]:
    """The (x, y) panels a front is drawn in: cost on x and accuracy on y; every pair with 3+
    objectives; trial number against the objective with one."""
    objectives = list(objectives)
    if len(objectives) == 1:
        return [("number", objectives[0])]
    pairs = [(a, b) for i, a in enumerate(objectives) for b in objectives[i + 1 :]]
    return [(b, a) if a == "accuracy" else (a, b) for a, b in pairs]


def limits(df: pd.DataFrame) -> dict[str, float]:
    """The search's constraints by the column they limit (``{'macs': 300000.0}``), as recorded in
    ``df.attrs['constraints']`` by :func:`nasconv.results.folder.trials_frame`."""
    return {str(k): float(v) for k, v in (df.attrs.get("constraints") or {}).items() if v is not None}


def over_limits(row: pd.Series, limits: dict[str, float] | None = None) -> str:
    """Why an infeasible trial was never trained, with the limit and its value: ``over max_macs 300k: 412k``."""
    reasons = [r.strip() for r in str(row.get("reason") or "").split(",") if r.strip()]
    if not reasons:
        return "over a limit"
    parts = []
    for reason in reasons:
        column = CONSTRAINTS.get(reason, reason.removeprefix("max_"))
        limit = (limits or {}).get(column)
        value = row.get(column)
        if limit is not None and value is not None and value == value:
            parts.append(f"over {reason} {display.value(column, limit)}: {display.value(column, value)}")
        else:
            parts.append(f"over {reason}")
    return ", ".join(parts)


def hover_text(
    df: pd.DataFrame,
    *,
    front: bool = False,
    knee_number: int | None = None,
    limits: dict[str, float] | None = None,
) -> list[str]:
    """Per row: trial, state, architecture (with channels) and its figures, formatted for people;
    ``front``: the rows are on the Pareto front, ``knee_number`` the one that is its knee; an
    infeasible trial says which limit it broke (``limits``: the constraints by column)."""
    texts = []
    for _, row in df.iterrows():
        state = str(row.get("state", ""))
        head = f"<b>trial {int(row['number'])}</b> · {display.state_label(state)}"
        if knee_number is not None and int(row["number"]) == knee_number:
            head += " · <b>the knee</b>"
        elif front:
            head += " · on the front"
        figures = []
        if state != INFEASIBLE and "accuracy" in row and row["accuracy"] == row["accuracy"]:
            figures.append(f"accuracy {display.percent(row['accuracy'])}")
        for name in ("macs", "params", "latency_ms"):
            if name in row and row[name] is not None and row[name] == row[name]:
                figures.append(f"{display.label(name).replace(' (ms)', '')} {display.value(name, row[name])}")
        lines = [head, str(row.get("short") or ""), describe(row.get("arch")), " · ".join(figures)]
        if state == STOPPED and row.get("epochs") == row.get("epochs") and row.get("epochs") is not None:
            lines.append(f"stopped after {int(row['epochs'])} epoch(s): accuracy is partial")
        if state == INFEASIBLE:
            lines.append(f"never trained: {over_limits(row, limits)}")
        texts.append("<br>".join(line for line in lines if line))
    return texts


@dataclass(frozen=True)
class Search:
    """One search's trials as a front plot draws them."""

    label: str
    df: pd.DataFrame
    color: str


def plotted(df: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    """The trials a front plot draws: complete, early-stopped and infeasible ones with every cost
    objective known (an infeasible trial was never trained: its accuracy is not a measurement)."""
    costs = [o for o in objectives if o != "accuracy"]
    shown = df[df["state"].isin(PLOTTED_STATES)].dropna(subset=costs)
    trained = shown["state"] != INFEASIBLE
    if "accuracy" in objectives:
        shown = shown[~trained | shown["accuracy"].notna()]
    return shown


def log_scale(name: str, values: pd.Series) -> bool:
    """Counts spanning more than 20x are drawn on a log axis."""
    known = pd.to_numeric(values, errors="coerce").dropna()
    return name in ("macs", "flops", "params") and len(known) > 0 and known.max() > 20 * max(known.min(), 1)


# --- axes ---------------------------------------------------------------------------------------


def linear_ticks(low: float, high: float, most: int = 7) -> list[float]:
    """Round tick values from ``low`` to ``high`` (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    span = high - low
    if not span > 0:
        return [low]
    for exponent in range(math.floor(math.log10(span / most)) - 1, math.floor(math.log10(span)) + 2):
        for mantissa in (1, 2, 2.5, 5):
            step = mantissa * 10.0**exponent
            first = math.ceil(low / step - 1e-9)
            count = math.floor(high / step + 1e-9) - first + 1
            if count <= most:
                return [round((first + i) * step, 12) for i in range(count)]
    return [low, high]


@dataclass(frozen=True)
class AccuracyView:
    """The accuracy axis of a front plot: its range is that of the full-budget trials (with a margin),
    so that early-stopped trials (a partial accuracy, often far lower) do not flatten the front. Points
    with no accuracy on that scale (infeasible trials, never trained, and stopped ones below the range)
    are drawn in a shaded band at the foot of the axis, ``foot``, labelled ``off scale``."""

    low: float
    high: float
    scale_low: float
    """The lowest accuracy drawn to scale (the band lies below it)."""
    foot: float | None = None

    def y(self, state: str, value: Any) -> float:
        """Where a trial of ``state`` and accuracy ``value`` is drawn."""
        if self.foot is not None and (state == INFEASIBLE or pd.isna(value) or float(value) < self.scale_low):
            return self.foot
        return float(value)

    def off_scale(self, frame: pd.DataFrame) -> int:
        """How many trained trials of ``frame`` are drawn at the foot."""
        if self.foot is None:
            return 0
        trained = frame[frame["state"] != INFEASIBLE]["accuracy"].astype(float)
        return int((trained < self.scale_low).sum())

    def ticks(self) -> list[tuple[float, str]]:
        values = linear_ticks(self.scale_low, self.high)
        step = values[1] - values[0] if len(values) > 1 else 0.01
        digits = 0 if step >= 0.00999 else 1 if step >= 0.000999 else 2
        ticks = [(v, f"{100 * v:.{digits}f}%") for v in values]
        return ([(self.foot, "off scale")] if self.foot is not None else []) + ticks


def accuracy_view(frames: Sequence[pd.DataFrame]) -> AccuracyView:
    """The accuracy axis for the trials of ``frames`` (:func:`plotted` trials of one or more searches)."""
    every = pd.concat(frames) if frames else pd.DataFrame(columns=["state", "accuracy"])
    trained = every[every["state"] != INFEASIBLE]
    full = pd.to_numeric(trained[trained["state"] == COMPLETE]["accuracy"], errors="coerce").dropna()
    partial = pd.to_numeric(trained[trained["state"] != COMPLETE]["accuracy"], errors="coerce").dropna()
    base = full if len(full) else partial
    if base.empty:
        if (every["state"] == INFEASIBLE).any():  # nothing trained yet: only the foot holds points
            return AccuracyView(-0.15, 1.0, 0.0, -0.075)
        return AccuracyView(0.0, 1.0, 0.0)
    low, high = float(base.min()), float(base.max())
    pad = max(0.06 * (high - low), 0.005)
    top = max(high, float(partial.max()) if len(partial) else high) + pad
    scale_low = low - pad
    if (every["state"] == INFEASIBLE).any() or (partial < scale_low).any():
        return AccuracyView(low - 3 * pad, top, scale_low, low - 2 * pad)
    return AccuracyView(scale_low, top, scale_low)


@dataclass(frozen=True)
class AxisView:
    """One axis of a plot: the column, its range in data units, log or linear, and its ticks; the same
    for the interactive figure (:meth:`plotly`) and the PNG (:meth:`apply`)."""

    name: str
    low: float
    high: float
    log: bool = False
    ticks: tuple[tuple[float, str], ...] = ()
    """Explicit (value, label) ticks; empty: the plotting library chooses, formatted like everywhere else."""

    @property
    def title(self) -> str:
        return display.label(self.name) if self.name != "number" else "trial"

    def coordinate(self, value: float) -> float:
        """``value`` in plotly's axis coordinates: annotations on a log axis are placed by log10(value)
        (shapes and traces take the value itself)."""
        return math.log10(value) if self.log and value > 0 else float(value)

    def fraction(self, value: float) -> float:
        """Where ``value`` lies along the axis, 0 at ``low`` and 1 at ``high``."""
        low, high = self.coordinate(self.low), self.coordinate(self.high)
        return (self.coordinate(value) - low) / (high - low) if high > low else 0.5

    def at(self, fraction: float) -> float:
        """The axis coordinate (log10 on a log axis) at ``fraction`` of its length."""
        low, high = self.coordinate(self.low), self.coordinate(self.high)
        return low + fraction * (high - low)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def plotly(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "title": {"text": self.title},
            "range": [self.coordinate(self.low), self.coordinate(self.high)],
        }
        if self.log:
            settings["type"] = "log"
        if self.ticks:
            settings.update(tickmode="array", tickvals=[v for v, _ in self.ticks], ticktext=[t for _, t in self.ticks])
        elif display.tick_format(self.name):
            settings["tickformat"] = display.tick_format(self.name)
        elif self.name == "number":
            settings["tickformat"] = "d"
        return settings

    def apply(self, ax: Any, which: str) -> None:
        """The same axis on a matplotlib ``ax`` (``which``: ``x`` or ``y``): no minor tick labels."""
        from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

        axis = ax.xaxis if which == "x" else ax.yaxis
        getattr(ax, f"set_{which}label")(self.title)
        if self.log:
            getattr(ax, f"set_{which}scale")("log")
        getattr(ax, f"set_{which}lim")(self.low, self.high)
        axis.set_minor_formatter(NullFormatter())
        if self.ticks:
            labels = dict(self.ticks)
            axis.set_major_locator(FixedLocator([v for v, _ in self.ticks]))
            axis.set_major_formatter(FuncFormatter(lambda v, _: labels.get(v, "")))
        elif self.name == "accuracy":
            axis.set_major_formatter(FuncFormatter(lambda v, _: display.percent(v, 0)))
        elif self.name in ("macs", "flops", "params"):
            axis.set_major_formatter(FuncFormatter(lambda v, _: display.count(v)))
        elif self.name == "number":
            axis.set_major_locator(MaxNLocator(integer=True))


def axis_view(name: str, values: pd.Series, accuracy: AccuracyView | None = None) -> AxisView:
    """The axis for ``name`` over ``values``: the accuracy view where given, log with 1-2-5 ticks for
    counts spanning more than 20x, else linear, each with a small margin."""
    if name == "accuracy" and accuracy is not None:
        return AxisView(name, accuracy.low, accuracy.high, ticks=tuple(accuracy.ticks()))
    known = pd.to_numeric(values, errors="coerce").dropna()
    known = known[known.map(math.isfinite)]
    if known.empty:
        return AxisView(name, 0.0, 1.0)
    low, high = float(known.min()), float(known.max())
    if log_scale(name, known) and low > 0:
        a, b = math.log10(low), math.log10(high)
        pad = max(0.04 * (b - a), 0.03)
        low, high = 10 ** (a - pad), 10 ** (b + pad)
        return AxisView(name, low, high, True, tuple((t, display.count(t)) for t in display.log_ticks(low, high)))
    span = high - low
    pad = 0.06 * span if span > 0 else max(0.05 * abs(high), 0.5 if name == "number" else 0.005)
    floor = low - pad
    if low >= 0 and floor < 0 and name != "number":
        floor = 0.0
    return AxisView(name, floor, high + pad)


def label_spots(
    points: Sequence[tuple[float, float]], *, below: bool, gap: float = 0.16, step: float = 0.12
) -> list[tuple[float, float, str]]:
    """Where to put the labels of ``points`` (fractions of a panel's axes) so that none overlaps
    another: one row per label, ``step`` apart, starting ``gap`` below the lowest point (``below``)
    or above the highest, on the other side if they do not fit, spread over the panel if neither
    does. Returns (x, y, horizontal anchor) per point, in axes fractions."""
    n = len(points)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: -points[i][1])  # highest point first: arrows do not cross
    ys = [p[1] for p in points]

    def rows(side_below: bool) -> list[float] | None:
        if side_below:
            out = [min(ys) - gap - k * step for k in range(n)]
            return out if out[-1] >= 0.05 else None
        out = [max(ys) + gap + k * step for k in range(n)][::-1]
        return out if out[0] <= 0.95 else None

    found = rows(below) or rows(not below)
    if found is None:
        found = [0.92 - k * (0.84 / max(n - 1, 1)) for k in range(n)]
    spots: list[tuple[float, float, str]] = [(0.0, 0.0, "left")] * n
    for row, index in zip(found, order):
        x = points[index][0]
        spots[index] = (x + 0.05, row, "left") if x <= 0.6 else (x - 0.05, row, "right")
    return spots


def staircase(front: pd.DataFrame, x: str, y: str) -> tuple[list[float], list[float]]:
    """The 2-D front as the boundary of what it dominates: sorted by x, drawn with ``line_shape='hv'``
    (cost on x, so each step holds its y until the next point's x)."""
    ordered = front.sort_values([x, y])
    return [float(v) for v in ordered[x]], [float(v) for v in ordered[y]]


@dataclass(frozen=True)
class _Layout:
    """What every panel of a front plot shares: the objective pairs, the axes, and each search's
    front, knee, drawn trials and constraints."""

    objectives: list[str]
    pairs: list[tuple[str, str]]
    views: dict[str, AxisView]
    accuracy: AccuracyView | None
    fronts: dict[str, pd.DataFrame]
    knees: dict[str, pd.Series | None]
    shown: dict[str, pd.DataFrame]
    limit_lines: list[tuple[str, float, str]]
    """(column, limit, label) of each constraint line: ``('macs', 300000.0, 'max_macs 300k')``; a limit
    that only some searches of a comparison set names them."""

    def limits_on(self, name: str) -> list[tuple[float, str]]:
        """The lines to draw on an axis of ``name`` (limits inside its range), each with its label."""
        view = self.views[name]
        return [(value, text) for column, value, text in self.limit_lines if column == name and view.contains(value)]

    def y_values(self, frame: pd.DataFrame, y: str) -> list[float]:
        if y == "accuracy" and self.accuracy is not None:
            return [self.accuracy.y(s, v) for s, v in zip(frame["state"], frame[y])]
        return [float(v) for v in frame[y]]

    def knee_label(self, search: Search, single: bool) -> str:
        row = self.knees[search.label]
        assert row is not None
        return f"knee{'' if single else ' ' + search.label}: trial {int(row['number'])}"

    def knee_spots(self, searches: Sequence[Search], x: str, y: str) -> dict[str, tuple[float, float, str]]:
        """Per search with a knee, where its label goes in the (x, y) panel (axes fractions)."""
        with_knee = [s for s in searches if self.knees[s.label] is not None]
        points = []
        for s in with_knee:
            row = self.knees[s.label]
            assert row is not None
            points.append((self.views[x].fraction(float(row[x])), self.views[y].fraction(float(row[y]))))
        below = y == "accuracy" or OBJECTIVES.get(y) == "maximize"
        return dict(zip([s.label for s in with_knee], label_spots(points, below=below)))


def _layout(searches: Sequence[Search], objectives: Sequence[str]) -> _Layout:
    objectives = list(objectives)
    pairs = objective_pairs(objectives)
    shown = {s.label: plotted(s.df, objectives) for s in searches}
    every = pd.concat(list(shown.values()))
    acc = accuracy_view(list(shown.values())) if "accuracy" in objectives else None
    names = {n for pair in pairs for n in pair}
    fronts = {s.label: pareto(s.df, objectives) for s in searches}
    knees = {s.label: knee(s.df, objectives) if not fronts[s.label].empty else None for s in searches}
    setters: dict[tuple[str, float], list[str]] = {}
    for s in searches:
        for column, value in limits(s.df).items():
            setters.setdefault((column, value), []).append(s.label)
    lines = []
    for (column, value), labels in setters.items():
        text = f"max_{column} {display.value(column, value)}"
        if len(labels) < len(searches) or len(searches) > 1 and len(setters) > 1:
            text = f"{', '.join(labels)}: {text}"
        lines.append((column, value, text))
    return _Layout(
        objectives=objectives,
        pairs=pairs,
        views={n: axis_view(n, every[n], acc) for n in names},
        accuracy=acc,
        fronts=fronts,
        knees=knees,
        shown=shown,
        limit_lines=lines,
    )


def _trial_groups(layout: _Layout, s: Search, single: bool) -> list[tuple[str, pd.DataFrame, str, str, float, str]]:
    """(key, trials, marker, colour, opacity, legend name) for the trials of ``s`` not on its front."""
    shown, front = layout.shown[s.label], layout.fronts[s.label]
    others = shown[~shown["number"].isin(front["number"])]
    stopped = others[others["state"] == STOPPED]
    infeasible = others[others["state"] == INFEASIBLE]
    prefix = "" if single else f"{s.label}: "
    at_foot = layout.accuracy.off_scale(stopped) if layout.accuracy is not None else 0
    stopped_name = f"stopped early, partial accuracy ({len(stopped)}"
    stopped_name += f"; {at_foot} off scale)" if at_foot else ")"
    infeasible_name = f"infeasible, never trained ({len(infeasible)}"
    infeasible_name += "; off scale)" if layout.accuracy is not None else ")"
    return [
        (
            "trained",
            others[others["state"] == COMPLETE],
            "circle",
            TRAINED_COLOR if single else s.color,
            0.8,
            f"{prefix}other full-budget trials ({int((others['state'] == COMPLETE).sum())})",
        ),
        ("stopped", stopped, "triangle-up-open", STOPPED_COLOR if single else s.color, 1, prefix + stopped_name),
        ("infeasible", infeasible, "x-thin-open", INFEASIBLE_COLOR if single else s.color, 1, prefix + infeasible_name),
    ]


def front_figure(searches: Sequence[Search], objectives: Sequence[str], *, title: str = "", single: bool = True) -> Any:
    """Every search's trials and front in one figure (one panel per objective pair), the knee of
    each front marked (a star in the search's colour) and labelled, the labels in rows that do not
    overlap. Trial points carry ``meta.role`` ``trials`` or ``front`` and ``customdata`` = the trial
    number; with one search, states are told apart by colour, with several, searches by colour and
    states by marker. A constraint on a plotted objective is drawn as a dashed line at its limit."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    layout = _layout(searches, objectives)
    pairs = layout.pairs
    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.09, vertical_spacing=0.14)
    for index, (x, y) in enumerate(pairs):
        row, col = index // cols + 1, index % cols + 1
        ref = "" if index == 0 else str(index + 1)
        first = index == 0
        for s in searches:
            front, knee_row = layout.fronts[s.label], layout.knees[s.label]
            knee_number = int(knee_row["number"]) if knee_row is not None else None
            for key, frame, symbol, color, opacity, name in _trial_groups(layout, s, single):
                if frame.empty:
                    continue
                ys = layout.y_values(frame, y)
                texts = hover_text(frame, limits=limits(s.df))
                if y == "accuracy" and layout.accuracy is not None and key == "stopped":
                    texts = [
                        t
                        + ("<br>drawn off scale: below the full-budget accuracies" if v == layout.accuracy.foot else "")
                        for t, v in zip(texts, ys)
                    ]
                fig.add_trace(
                    go.Scatter(
                        x=frame[x],
                        y=ys,
                        mode="markers",
                        name=name,
                        legendgroup=f"{s.label}-{key}",
                        showlegend=first,
                        marker={
                            "symbol": symbol,
                            "color": color,
                            "size": 7,
                            "opacity": opacity if single else 0.45,
                            "line": {"width": 1.5, "color": color},
                        },
                        text=texts,
                        customdata=frame["number"],
                        hovertemplate="%{text}<extra></extra>",
                        meta={"role": "trials", "search": s.label, "state": key},
                    ),
                    row=row,
                    col=col,
                )
            if front.empty:
                continue
            color = FRONT_COLOR if single else s.color
            prefix = "" if single else f"{s.label}: "
            if len(layout.objectives) == 2:
                sx, sy = staircase(front, x, y)
                fig.add_trace(
                    go.Scatter(
                        x=sx,
                        y=sy,
                        mode="lines",
                        line={"shape": "hv", "color": color, "width": 2},
                        name=f"{prefix}front (staircase)",
                        legendgroup=f"{s.label}-front",
                        showlegend=False,
                        hoverinfo="skip",
                        meta={"role": "staircase", "search": s.label},
                    ),
                    row=row,
                    col=col,
                )
            # the knee last: drawn on top, and the legend (which shows the first point's marker) a circle
            front = front.iloc[sorted(range(len(front)), key=lambda i: int(front["number"].iloc[i]) == knee_number)]
            is_knee = [int(n) == knee_number for n in front["number"]]
            fig.add_trace(
                go.Scatter(
                    x=front[x],
                    y=front[y],
                    mode="markers",
                    name=f"{prefix}Pareto front ({len(front)}), ★ its knee",
                    legendgroup=f"{s.label}-front",
                    showlegend=first,
                    marker={
                        "color": [(KNEE_COLOR if single else color) if k else color for k in is_knee],
                        "symbol": ["star" if k else "circle" for k in is_knee],
                        "size": [18 if k else 9 for k in is_knee],
                        "line": {
                            "width": [1.5 if k else 1 for k in is_knee],
                            "color": ["#111" if k else "#fff" for k in is_knee],
                        },
                    },
                    text=hover_text(front, front=True, knee_number=knee_number),
                    customdata=front["number"],
                    hovertemplate="%{text}<extra></extra>",
                    meta={"role": "front", "search": s.label},
                ),
                row=row,
                col=col,
            )
        _draw_limits(fig, layout, x, y, ref)
        for s in searches:
            spot = layout.knee_spots(searches, x, y).get(s.label)
            knee_row = layout.knees[s.label]
            if spot is None or knee_row is None:
                continue
            tx, ty, anchor = spot
            fig.add_annotation(
                x=layout.views[x].coordinate(float(knee_row[x])),
                y=layout.views[y].coordinate(float(knee_row[y])),
                xref=f"x{ref}",
                yref=f"y{ref}",
                ax=layout.views[x].at(tx),
                ay=layout.views[y].at(ty),
                axref=f"x{ref}",
                ayref=f"y{ref}",
                xanchor=anchor,
                text=layout.knee_label(s, single),
                showarrow=True,
                arrowhead=0,
                arrowwidth=1,
                arrowcolor="#666",
                font={"size": 12, "color": KNEE_COLOR},
                bgcolor="rgba(255,255,255,0.9)",
                bordercolor=FRONT_COLOR if single else s.color,
                borderpad=2,
                name="knee",
            )
    for index, (x, y) in enumerate(pairs):
        row, col = index // cols + 1, index % cols + 1
        fig.update_xaxes(**layout.views[x].plotly(), row=row, col=col)
        fig.update_yaxes(**layout.views[y].plotly(), row=row, col=col)
    fig.update_layout(
        title={"text": title} if title else None,
        template="plotly_white",
        height=max(430, 360 * rows),
        hoverlabel={"align": "left"},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        margin={"t": 80 if title else 50},
    )
    return fig


def _draw_limits(fig: Any, layout: _Layout, x: str, y: str, ref: str) -> None:
    """The off-scale band at the foot of the accuracy axis, and a dashed line at each constraint's
    limit on an axis of the (x, y) panel, labelled ``max_macs 300k``."""
    acc = layout.accuracy
    if y == "accuracy" and acc is not None and acc.foot is not None:
        fig.add_shape(
            type="rect",
            xref=f"x{ref} domain",
            yref=f"y{ref}",
            x0=0,
            x1=1,
            y0=acc.low,
            y1=acc.scale_low,
            fillcolor="rgba(0,0,0,0.05)",
            line={"width": 0},
            layer="below",
            name="off scale",
        )
    line = {"color": INFEASIBLE_COLOR, "width": 1, "dash": "dash"}
    font = {"size": 10, "color": INFEASIBLE_COLOR}
    for index, (limit, text) in enumerate(layout.limits_on(x)):
        fig.add_shape(
            type="line", xref=f"x{ref}", yref=f"y{ref} domain", x0=limit, x1=limit, y0=0, y1=1, line=line, name="limit"
        )
        fig.add_annotation(
            x=layout.views[x].coordinate(limit),
            y=1 - 0.07 * index,
            xref=f"x{ref}",
            yref=f"y{ref} domain",
            text=text,
            showarrow=False,
            xanchor="left",
            yanchor="top",
            xshift=3,
            font=font,
            name="limit",
        )
    for index, (limit, text) in enumerate(layout.limits_on(y)):
        fig.add_shape(
            type="line", xref=f"x{ref} domain", yref=f"y{ref}", x0=0, x1=1, y0=limit, y1=limit, line=line, name="limit"
        )
        fig.add_annotation(
            x=1 - 0.3 * index,
            y=layout.views[y].coordinate(limit),
            xref=f"x{ref} domain",
            yref=f"y{ref}",
            text=text,
            showarrow=False,
            xanchor="right",
            yanchor="bottom",
            font=font,
            name="limit",
        )


def pareto_figure(df: pd.DataFrame, objectives: Sequence[str], title: str = "") -> Any:
    """The interactive front of one search."""
    return front_figure([Search("", df, FRONT_COLOR)], objectives, title=title)


def plot_pareto_html(df: pd.DataFrame, objectives: Sequence[str], path: Path, title: str = "") -> Path:
    """A page with the interactive front, using the folder's shared plotly.min.js."""
    write_plotly_js(path.parent)
    pareto_figure(df, objectives, title).write_html(
        path, include_plotlyjs=PLOTLY_JS, full_html=True, config=PLOT_CONFIG, div_id="front-plot"
    )
    return path


# --- PNG --------------------------------------------------------------------------------------


def draw_panel(ax: Any, searches: Sequence[Search], layout: _Layout, x: str, y: str, single: bool) -> None:
    """One (x, y) panel of the PNG front: trials, stopped, infeasible, the front, its knee labelled,
    the constraints' limits, on the same axes as the interactive figure."""
    xv, yv = layout.views[x], layout.views[y]
    xv.apply(ax, "x")
    yv.apply(ax, "y")
    acc = layout.accuracy
    if y == "accuracy" and acc is not None and acc.foot is not None:
        ax.axhspan(acc.low, acc.scale_low, color="0.93", zorder=0, lw=0)
    for index, (limit, text) in enumerate(layout.limits_on(x)):
        ax.axvline(limit, color=INFEASIBLE_COLOR, lw=1, ls="--")
        ax.annotate(
            text,
            (limit, 1 - 0.07 * index),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            va="top",
            fontsize=8,
            color=INFEASIBLE_COLOR,
        )
    for index, (limit, text) in enumerate(layout.limits_on(y)):
        ax.axhline(limit, color=INFEASIBLE_COLOR, lw=1, ls="--")
        ax.annotate(
            text,
            (1 - 0.3 * index, limit),
            xycoords=("axes fraction", "data"),
            xytext=(-3, 3),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            color=INFEASIBLE_COLOR,
        )
    for s in searches:
        front = layout.fronts[s.label]
        prefix = "" if single else f"{s.label}: "
        for key, frame, _, color, _, _ in _trial_groups(layout, s, single):
            if frame.empty:
                continue
            ys = layout.y_values(frame, y)
            if key == "trained":
                ax.scatter(frame[x], ys, s=16, c=color, alpha=1 if single else 0.35, label=f"{prefix}other full budget")
            elif key == "stopped":
                ax.scatter(
                    frame[x], ys, s=22, marker="^", facecolors="none", edgecolors=color, label=f"{prefix}stopped early"
                )
            else:
                ax.scatter(frame[x], ys, s=20, marker="x", c=color, label=f"{prefix}infeasible")
        if front.empty:
            continue
        color = FRONT_COLOR if single else s.color
        if len(layout.objectives) == 2:
            sx, sy = staircase(front, x, y)
            ax.plot(sx, sy, "-", c=color, drawstyle="steps-post", lw=1.6)
        ax.scatter(front[x], front[y], s=30, c=color, zorder=3, label=f"{prefix}Pareto front")
        point = layout.knees[s.label]
        assert point is not None
        ax.scatter(
            [point[x]],
            [point[y]],
            s=190,
            marker="*",
            c=KNEE_COLOR if single else color,
            edgecolors="#111",
            linewidths=0.8,
            zorder=4,
        )
    spots = layout.knee_spots(searches, x, y)
    for s in searches:
        point = layout.knees[s.label]
        if point is None or s.label not in spots:
            continue
        tx, ty, anchor = spots[s.label]
        ax.annotate(
            layout.knee_label(s, single),
            (point[x], point[y]),
            xytext=(tx, ty),
            textcoords="axes fraction",
            ha=anchor,
            va="center",
            fontsize=9,
            arrowprops={"arrowstyle": "-", "color": "0.4"},
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": FRONT_COLOR if single else s.color, "alpha": 0.9},
            zorder=5,
        )
    ax.grid(alpha=0.3)


def draw_fronts(fig: Any, axes: Any, searches: Sequence[Search], objectives: Sequence[str], *, single: bool) -> None:
    """Every panel of the PNG front on a matplotlib (figure, axes grid) of at least as many axes as
    objective pairs; the legend beside the last panel."""
    layout = _layout(searches, objectives)
    for ax, (x, y) in zip(axes.flat, layout.pairs):
        draw_panel(ax, searches, layout, x, y, single)
    for ax in list(axes.flat)[len(layout.pairs) :]:
        ax.axis("off")
    # beside the last panel, not over the points and labels
    axes.flat[len(layout.pairs) - 1].legend(
        *axes.flat[0].get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8
    )


def plot_fronts_png(
    searches: Sequence[Search], objectives: Sequence[str], path: Path, title: str = "", *, single: bool = True
) -> Path:
    pairs = objective_pairs(objectives)
    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    with png_figure(path, rows, cols, PNG_PANEL) as (fig, axes):
        draw_fronts(fig, axes, searches, objectives, single=single)
        if title:
            fig.suptitle(title)
    return path


def plot_pareto_png(df: pd.DataFrame, objectives: Sequence[str], path: Path, title: str = "") -> Path:
    front = pareto(df, objectives)
    trained = int((df["state"] == COMPLETE).sum())
    return plot_fronts_png(
        [Search("", df, FRONT_COLOR)], objectives, path, title or f"{len(front)} Pareto-optimal of {trained} trained"
    )


__all__ = [
    "PLOTLY_JS",
    "PLOT_CONFIG",
    "AccuracyView",
    "AxisView",
    "Search",
    "accuracy_view",
    "axis_view",
    "draw_fronts",
    "front_figure",
    "hover_text",
    "label_spots",
    "limits",
    "linear_ticks",
    "log_scale",
    "objective_pairs",
    "over_limits",
    "pareto_figure",
    "plot_fronts_png",
    "plot_pareto_html",
    "plot_pareto_png",
    "plotted",
    "png_figure",
    "staircase",
    "write_plotly_js",
]
