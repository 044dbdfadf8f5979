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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..files import atomic_write
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
        fig.savefig(path, dpi=120)
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


def hover_text(df: pd.DataFrame, *, front: bool = False, knee_number: int | None = None) -> list[str]:
    """Per row: trial, state, architecture (with channels) and its figures, formatted for people;
    ``front``: the rows are on the Pareto front, ``knee_number`` the one that is its knee."""
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
            lines.append(f"never trained: over {row.get('reason') or 'a limit'}")
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


def axis_settings(name: str, values: pd.Series) -> dict[str, Any]:
    """A plotly axis for ``name``: its label, ticks formatted like everywhere else, log for wide counts."""
    settings: dict[str, Any] = {"title": {"text": display.label(name) if name != "number" else "trial"}}
    if display.tick_format(name):
        settings["tickformat"] = display.tick_format(name)
    if log_scale(name, values):
        settings["type"] = "log"
    return settings


def _floor(searches: Sequence[Search], objectives: Sequence[str]) -> float | None:
    """Where infeasible trials are drawn on the accuracy axis: the lowest trained accuracy."""
    if "accuracy" not in objectives:
        return None
    values = [s.df.loc[s.df["state"] != INFEASIBLE, "accuracy"].dropna() for s in searches]
    values = [v for v in values if len(v)]
    return float(min(v.min() for v in values)) if values else 0.0


def _y_values(frame: pd.DataFrame, y: str, floor: float | None) -> list[float]:
    if y == "accuracy" and floor is not None:
        return [floor if s == INFEASIBLE else float(v) for s, v in zip(frame["state"], frame[y])]
    return [float(v) for v in frame[y]]


def staircase(front: pd.DataFrame, x: str, y: str) -> tuple[list[float], list[float]]:
    """The 2-D front as the boundary of what it dominates: sorted by x, drawn with ``line_shape='hv'``
    (cost on x, so each step holds its y until the next point's x)."""
    ordered = front.sort_values([x, y])
    return [float(v) for v in ordered[x]], [float(v) for v in ordered[y]]


def front_figure(searches: Sequence[Search], objectives: Sequence[str], *, title: str = "", single: bool = True) -> Any:
    """Every search's trials and front in one figure (one panel per objective pair), the knee of
    each front marked and labelled. Trial points carry ``meta.role`` ``trials`` or ``front`` and
    ``customdata`` = the trial number; with one search, states are told apart by colour, with
    several, searches by colour and states by marker."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    objectives = list(objectives)
    pairs = objective_pairs(objectives)
    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.09, vertical_spacing=0.14)
    floor = _floor(searches, objectives)
    for s in searches:
        front = pareto(s.df, objectives)
        knee_number = int(knee(s.df, objectives)["number"]) if not front.empty else None
        shown = plotted(s.df, objectives)
        others = shown[~shown["number"].isin(front["number"])]
        prefix = "" if single else f"{s.label}: "
        groups = [
            ("trained", others[others["state"] == COMPLETE], "circle", TRAINED_COLOR if single else s.color, 0.8),
            (
                "stopped",
                others[others["state"] == STOPPED],
                "triangle-up-open",
                STOPPED_COLOR if single else s.color,
                1,
            ),
            (
                "infeasible",
                others[others["state"] == INFEASIBLE],
                "x-thin-open",
                INFEASIBLE_COLOR if single else s.color,
                1,
            ),
        ]
        names = {
            "trained": "other trained trials",
            "stopped": "stopped early (partial accuracy)",
            "infeasible": "infeasible, never trained" + (" (at the lowest accuracy)" if floor is not None else ""),
        }
        for index, (x, y) in enumerate(pairs):
            row, col = index // cols + 1, index % cols + 1
            first = index == 0
            for key, frame, symbol, color, opacity in groups:
                if frame.empty:
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=frame[x],
                        y=_y_values(frame, y, floor),
                        mode="markers",
                        name=f"{prefix}{names[key]} ({len(frame)})",
                        legendgroup=f"{s.label}-{key}",
                        showlegend=first,
                        marker={
                            "symbol": symbol,
                            "color": color,
                            "size": 7,
                            "opacity": opacity if single else 0.45,
                            "line": {"width": 1.5, "color": color},
                        },
                        text=hover_text(frame),
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
            if len(objectives) == 2:
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
            is_knee = [int(n) == knee_number for n in front["number"]]
            fig.add_trace(
                go.Scatter(
                    x=front[x],
                    y=front[y],
                    mode="markers",
                    name=f"{prefix}Pareto front ({len(front)})",
                    legendgroup=f"{s.label}-front",
                    showlegend=first,
                    marker={
                        "color": [KNEE_COLOR if k else color for k in is_knee],
                        "symbol": ["star" if k else "circle" for k in is_knee],
                        "size": [17 if k else 9 for k in is_knee],
                        "line": {"width": 1, "color": "#fff"},
                    },
                    text=hover_text(front, front=True, knee_number=knee_number),
                    customdata=front["number"],
                    hovertemplate="%{text}<extra></extra>",
                    meta={"role": "front", "search": s.label},
                ),
                row=row,
                col=col,
            )
            if knee_number is not None:
                point = front[front["number"] == knee_number].iloc[0]
                ref = "" if index == 0 else str(index + 1)
                log_x = log_scale(x, pd.concat([plotted(p.df, objectives)[x] for p in searches]))
                fig.add_annotation(
                    x=_log10(point[x]) if log_x else point[x],
                    y=point[y],
                    xref=f"x{ref}",
                    yref=f"y{ref}",
                    text=f"knee{'' if single else ' ' + s.label}: trial {knee_number}",
                    showarrow=True,
                    arrowhead=2,
                    ax=40,
                    ay=40 if y == "accuracy" else -40,
                    font={"size": 12, "color": KNEE_COLOR},
                    bgcolor="rgba(255,255,255,0.85)",
                    bordercolor=color,
                    name="knee",
                )
    for index, (x, y) in enumerate(pairs):
        row, col = index // cols + 1, index % cols + 1
        every = pd.concat([plotted(s.df, objectives) for s in searches])
        fig.update_xaxes(**axis_settings(x, every[x]), row=row, col=col)
        fig.update_yaxes(**axis_settings(y, every[y]), row=row, col=col)
    fig.update_layout(
        title={"text": title} if title else None,
        template="plotly_white",
        height=max(430, 360 * rows),
        hoverlabel={"align": "left"},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        margin={"t": 80 if title else 50},
    )
    return fig


def _log10(value: float) -> float:
    import math

    return math.log10(value) if value > 0 else value


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


def format_axis(axis: Any, name: str) -> None:
    """Ticks on a matplotlib axis formatted like everywhere else (292k, 95%)."""
    from matplotlib.ticker import FuncFormatter

    if name == "accuracy":
        axis.set_major_formatter(FuncFormatter(lambda v, _: display.percent(v, 0)))
    elif name in ("macs", "flops", "params"):
        axis.set_major_formatter(FuncFormatter(lambda v, _: display.count(v)))


def draw_panel(ax: Any, searches: Sequence[Search], objectives: Sequence[str], x: str, y: str, single: bool) -> None:
    """One (x, y) panel of the PNG front: trials, stopped, infeasible, the front and its knee."""
    floor = _floor(searches, objectives)
    for s in searches:
        front = pareto(s.df, objectives)
        shown = plotted(s.df, objectives)
        others = shown[~shown["number"].isin(front["number"])]
        prefix = "" if single else f"{s.label}: "
        trained = others[others["state"] == COMPLETE]
        ax.scatter(
            trained[x],
            trained[y],
            s=16,
            c=TRAINED_COLOR if single else s.color,
            alpha=1 if single else 0.35,
            label=f"{prefix}other trained",
        )
        stopped = others[others["state"] == STOPPED]
        if not stopped.empty:
            ax.scatter(
                stopped[x],
                stopped[y],
                s=22,
                marker="^",
                facecolors="none",
                edgecolors=STOPPED_COLOR if single else s.color,
                label=f"{prefix}stopped early",
            )
        infeasible = others[others["state"] == INFEASIBLE]
        if not infeasible.empty:
            ax.scatter(
                infeasible[x],
                _y_values(infeasible, y, floor),
                s=20,
                marker="x",
                c=INFEASIBLE_COLOR if single else s.color,
                label=f"{prefix}infeasible",
            )
        if front.empty:
            continue
        color = FRONT_COLOR if single else s.color
        if len(objectives) == 2:
            sx, sy = staircase(front, x, y)
            ax.plot(sx, sy, "-", c=color, drawstyle="steps-post", lw=1.6)
        ax.scatter(front[x], front[y], s=30, c=color, zorder=3, label=f"{prefix}Pareto front")
        point = knee(s.df, objectives)
        ax.scatter([point[x]], [point[y]], s=170, marker="*", c=KNEE_COLOR, zorder=4)
        ax.annotate(
            f"knee{'' if single else ' ' + s.label}: trial {int(point['number'])}",
            (point[x], point[y]),
            xytext=(14, -18 if y == "accuracy" else 12),
            textcoords="offset points",
            fontsize=9,
            arrowprops={"arrowstyle": "-", "color": "0.4"},
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": color, "alpha": 0.9},
        )
    every = pd.concat([plotted(s.df, objectives) for s in searches])
    ax.set_xlabel(display.label(x) if x != "number" else "trial")
    ax.set_ylabel(display.label(y))
    if log_scale(x, every[x]):
        ax.set_xscale("log")
    format_axis(ax.xaxis, x)
    format_axis(ax.yaxis, y)
    ax.grid(alpha=0.3)


def plot_fronts_png(
    searches: Sequence[Search], objectives: Sequence[str], path: Path, title: str = "", *, single: bool = True
) -> Path:
    pairs = objective_pairs(objectives)
    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    with png_figure(path, rows, cols, (5.5, 4.3)) as (fig, axes):
        for ax, (x, y) in zip(axes.flat, pairs):
            draw_panel(ax, searches, objectives, x, y, single)
        for ax in list(axes.flat)[len(pairs) :]:
            ax.axis("off")
        axes.flat[0].legend(loc="best", fontsize=8)
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
    "Search",
    "axis_settings",
    "format_axis",
    "log_scale",
    "front_figure",
    "hover_text",
    "objective_pairs",
    "pareto_figure",
    "plot_fronts_png",
    "plot_pareto_html",
    "plot_pareto_png",
    "plotted",
    "png_figure",
    "staircase",
    "write_plotly_js",
]
