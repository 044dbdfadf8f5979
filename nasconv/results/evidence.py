"""Which convolution where: for each stage, the accuracy-against-cost trade of each conv kind.

For a stage and a kind, the kind's front is the non-dominated set of the full-budget trials
that used that kind in that stage (in each pair of objectives with 3+). Overlaid per stage, the
fronts show where each kind wins; the verdict table says, per stage, which kinds reach the
global front and which are dominated everywhere (none of their trials is on it), which kinds only
early-stopped (or failed) trials used there, so there is no full-budget evidence for them, and
which kinds the space allowed that no trial trained.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..ops import registered_kinds
from ..search.multi_objective import minimised, non_dominated
from ..search.record import FAIL, STOPPED
from . import display
from .front import full_budget, knee, pareto
from .plots import AxisView, axis_view, hover_text, objective_pairs, png_figure, staircase


@dataclass(frozen=True, kw_only=True)
class StageVerdict:
    """What the trials say about one stage's conv kinds."""

    stage: int
    trained: dict[str, int]
    """Full-budget trials per kind used in this stage."""
    on_front: dict[str, int]
    """Trials on the global front per kind (kinds with none are absent)."""
    stopped_only: dict[str, int] = field(default_factory=dict)
    """Kinds no full-budget trial used here, only early-stopped ones (how many): no evidence yet."""
    failed_only: dict[str, int] = field(default_factory=dict)
    """Kinds used here only by trials that failed (how many)."""
    untried: tuple[str, ...] = field(default=())
    """Kinds the space allows here that no trial trained (never proposed, or only infeasible)."""

    @property
    def dominated(self) -> tuple[str, ...]:
        """Kinds trained here whose every trial is dominated by the global front."""
        return tuple(k for k in self.trained if k not in self.on_front)


def stage_kinds(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, stage): ``number``, ``stage``, ``kind`` (trials without an arch skipped)."""
    rows = []
    for number, arch in zip(df["number"], df["arch"]):
        if not isinstance(arch, str):
            continue
        for stage, s in enumerate(json.loads(arch)["stages"]):
            rows.append({"number": int(number), "stage": stage, "kind": s["kind"]})
    return pd.DataFrame(rows, columns=["number", "stage", "kind"])


def _rank(kind: str) -> int:
    known = list(registered_kinds())
    return known.index(kind) if kind in known else len(known)


def _kind_order(kinds: Sequence[str]) -> list[str]:
    return sorted(set(kinds), key=lambda k: (_rank(k), k))


def space_kinds(space: Mapping[str, Any] | None) -> list[list[str]] | None:
    """The kinds each stage of a recorded space (``study.user_attrs['space']``) allows, or None."""
    try:
        stages = (space or {})["stages"]
        return [_kind_order([k for k, v in (s.get("conv") or {}).items() if v is not None]) for s in stages]
    except (KeyError, TypeError, AttributeError):
        return None


def verdicts(
    df: pd.DataFrame, objectives: Sequence[str], allowed: Sequence[Sequence[str]] | None = None
) -> list[StageVerdict]:
    """Per stage: full-budget trials per kind, how many of them are on the global front, the kinds
    only early-stopped or failed trials used, and the allowed kinds no trial trained."""
    done = full_budget(df, objectives)
    uses = stage_kinds(done)
    stopped_uses = stage_kinds(df[df["state"] == STOPPED])
    failed_uses = stage_kinds(df[df["state"] == FAIL])
    front_numbers = set(pareto(df, objectives)["number"])
    seen = pd.concat([uses, stopped_uses, failed_uses])
    stages = sorted(set(seen["stage"])) if not seen.empty else []
    if allowed is not None:
        stages = list(range(max(len(allowed), len(stages) and max(stages) + 1)))

    def per_kind(frame: pd.DataFrame, stage: int) -> dict[str, int]:
        here = frame[frame["stage"] == stage]
        return {k: int((here["kind"] == k).sum()) for k in _kind_order(list(here["kind"]))}

    out = []
    for stage in stages:
        here = uses[uses["stage"] == stage]
        trained = per_kind(uses, stage)
        on_front = {k: int(here[(here["kind"] == k)]["number"].isin(front_numbers).sum()) for k in trained}
        stopped = {k: n for k, n in per_kind(stopped_uses, stage).items() if k not in trained}
        failed = {k: n for k, n in per_kind(failed_uses, stage).items() if k not in trained and k not in stopped}
        permitted = list(allowed[stage]) if allowed is not None and stage < len(allowed) else []
        out.append(
            StageVerdict(
                stage=stage,
                trained=trained,
                on_front={k: n for k, n in on_front.items() if n},
                stopped_only=stopped,
                failed_only=failed,
                untried=tuple(k for k in permitted if k not in trained and k not in stopped and k not in failed),
            )
        )
    return out


def verdict_parts(items: Sequence[StageVerdict]) -> list[tuple[str, list[str]]]:
    """Per stage, its verdicts as plain-text parts: ``('stage 0', ['on the front: dsc (2 of 3)', ...])``."""
    out = []
    for v in items:
        parts = [
            "on the front: "
            + (", ".join(f"{k} ({n} of {v.trained[k]})" for k, n in v.on_front.items()) or display.MISSING)
        ]
        if v.dominated:
            parts.append("dominated everywhere: " + ", ".join(v.dominated))
        if v.stopped_only:
            parts.append("only stopped early: " + ", ".join(f"{k} ({n})" for k, n in v.stopped_only.items()))
        if v.failed_only:
            parts.append("only failed: " + ", ".join(f"{k} ({n})" for k, n in v.failed_only.items()))
        if v.untried:
            parts.append("not trained: " + ", ".join(v.untried))
        out.append((f"stage {v.stage}", parts))
    return out


def verdict_lines(items: Sequence[StageVerdict]) -> list[str]:
    """The verdicts as plain text, one line per stage."""
    return [f"{stage}: " + "; ".join(parts) for stage, parts in verdict_parts(items)]


def _chip(kind: str, text: str = "") -> str:
    return (
        f'<span class="kind"><span class="dot" style="background:{display.kind_color(kind)}"></span>'
        f"{html.escape(kind)}{html.escape(text)}</span>"
    )


def verdict_table_html(items: Sequence[StageVerdict]) -> str:
    """The verdicts as a table: per stage, the kinds on the global front (with how many of their
    full-budget trials are), dominated everywhere, used only by stopped or failed trials, never trained."""
    rows = [
        "<table class='t verdicts'><thead><tr><th>stage</th><th>on the global front "
        "(front trials of full-budget ones)</th><th>dominated everywhere</th>"
        "<th>only stopped early or failed</th><th>not trained</th></tr></thead><tbody>"
    ]
    for v in items:
        front = " ".join(_chip(k, f" {n} of {v.trained[k]}") for k, n in v.on_front.items()) or display.MISSING
        dominated = " ".join(_chip(k, f" ({v.trained[k]})") for k in v.dominated) or display.MISSING
        partial = [_chip(k, f" ({n} stopped)") for k, n in v.stopped_only.items()]
        partial += [_chip(k, f" ({n} failed)") for k, n in v.failed_only.items()]
        untried = " ".join(_chip(k) for k in v.untried) or display.MISSING
        rows.append(
            f"<tr><td class='stage'>stage {v.stage}</td><td>{front}</td><td>{dominated}</td>"
            f"<td>{' '.join(partial) or display.MISSING}</td><td>{untried}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "".join(rows)


def kind_front(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The trials of ``frame`` non-dominated in the (x, y) pair (one objective: the best ones)."""
    if frame.empty:
        return frame
    names = [n for n in (x, y) if n != "number"]
    return frame[non_dominated(minimised(frame, names))]


@dataclass(frozen=True)
class _Panel:
    stage: int
    x: str
    y: str


def _panels(df: pd.DataFrame, objectives: Sequence[str], stages: Sequence[int]) -> tuple[list[_Panel], int]:
    """Panels and columns: one per stage with 2 objectives (3 a row), a row of pairs per stage with 3+."""
    pairs = objective_pairs(objectives)
    if len(pairs) == 1:
        x, y = pairs[0]
        return [_Panel(s, x, y) for s in stages], min(3, len(stages))
    return [_Panel(s, x, y) for s in stages for x, y in pairs], len(pairs)


def _views(done: pd.DataFrame, objectives: Sequence[str]) -> dict[str, AxisView]:
    names = {n for pair in objective_pairs(objectives) for n in pair}
    return {n: axis_view(n, done[n]) for n in names}


def evidence_figure(df: pd.DataFrame, objectives: Sequence[str]) -> Any:
    """Per stage, each conv kind's front (staircase in 2-D) over its trials, the global front dashed
    and the knee marked; one legend entry per kind toggles it in every panel."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    objectives = list(objectives)
    done = full_budget(df, objectives)
    uses = stage_kinds(done)
    stages = sorted(set(uses["stage"]))
    panels, cols = _panels(df, objectives, stages)
    rows = -(-len(panels) // cols)
    titles = [
        f"stage {p.stage}" + ("" if len(objectives) == 2 else f": {display.label(p.y)} vs {display.label(p.x)}")
        for p in panels
    ]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.07, vertical_spacing=0.16)
    front = pareto(df, objectives)
    knee_row = knee(df, objectives) if not front.empty else None
    views = _views(done, objectives)
    shown_kinds: set[str] = set()
    for index, p in enumerate(panels):
        row, col = index // cols + 1, index % cols + 1
        here = uses[uses["stage"] == p.stage]
        best = kind_front(done, p.x, p.y)
        if p.x != "number" and not best.empty:
            sx, sy = staircase(best, p.x, p.y)
            fig.add_trace(
                go.Scatter(
                    x=sx,
                    y=sy,
                    mode="lines",
                    line={"shape": "hv", "color": "#222", "width": 1.2, "dash": "dot"},
                    name="front of all kinds",
                    legendgroup="all",
                    legendrank=1,
                    showlegend=index == 0,
                    hoverinfo="skip",
                ),
                row=row,
                col=col,
            )
        for kind in _kind_order(list(here["kind"])):
            trials = done[done["number"].isin(here[here["kind"] == kind]["number"])]
            color = display.kind_color(kind)
            first = kind not in shown_kinds
            shown_kinds.add(kind)
            fig.add_trace(
                go.Scatter(
                    x=trials[p.x],
                    y=trials[p.y],
                    mode="markers",
                    marker={"color": color, "size": 5, "opacity": 0.3},
                    name=kind,
                    legendgroup=kind,
                    showlegend=False,
                    text=hover_text(trials),
                    hovertemplate="%{text}<extra></extra>",
                ),
                row=row,
                col=col,
            )
            own = kind_front(trials, p.x, p.y).sort_values([p.x, p.y])
            fig.add_trace(
                go.Scatter(
                    x=own[p.x],
                    y=own[p.y],
                    mode="lines+markers" if p.x != "number" else "markers",
                    line={"shape": "hv", "color": color, "width": 2},
                    marker={"color": color, "size": 8},
                    name=kind,
                    legendgroup=kind,
                    legendrank=10 + _rank(kind),
                    showlegend=first,
                    text=hover_text(own),
                    hovertemplate="%{text}<extra></extra>",
                ),
                row=row,
                col=col,
            )
        if knee_row is not None:  # hollow: the kind's own point stays visible inside it
            fig.add_trace(
                go.Scatter(
                    x=[knee_row[p.x]],
                    y=[knee_row[p.y]],
                    mode="markers+text",
                    marker={"symbol": "star-open", "size": 20, "color": "#111", "line": {"width": 2}},
                    text=[f"knee: trial {int(knee_row['number'])}"],
                    textposition="bottom right",
                    textfont={"size": 11},
                    name="knee",
                    legendgroup="knee",
                    legendrank=1000,
                    showlegend=index == 0,
                    hovertext=hover_text(knee_row.to_frame().T),
                    hovertemplate="%{hovertext}<extra></extra>",
                ),
                row=row,
                col=col,
            )
        fig.update_xaxes(**views[p.x].plotly(), row=row, col=col)
        fig.update_yaxes(**views[p.y].plotly(), row=row, col=col)
    fig.update_layout(
        template="plotly_white",
        height=max(420, 380 * rows),
        hoverlabel={"align": "left"},
        legend={"title": {"text": "conv kind"}},
        margin={"t": 60},
    )
    return fig


def plot_evidence_png(df: pd.DataFrame, objectives: Sequence[str], path: Path) -> Path:
    """The evidence figure as a PNG for documents and design reviews."""
    objectives = list(objectives)
    done = full_budget(df, objectives)
    uses = stage_kinds(done)
    stages = sorted(set(uses["stage"]))
    panels, cols = _panels(df, objectives, stages)
    rows = -(-len(panels) // cols)
    front = pareto(df, objectives)
    knee_row = knee(df, objectives) if not front.empty else None
    views = _views(done, objectives)
    with png_figure(path, rows, cols, (5.0, 4.0)) as (fig, axes):
        handles: dict[str, Any] = {}
        for ax, p in zip(axes.flat, panels):
            here = uses[uses["stage"] == p.stage]
            best = kind_front(done, p.x, p.y)
            if p.x != "number" and not best.empty:
                sx, sy = staircase(best, p.x, p.y)
                handles["front of all kinds"] = ax.plot(sx, sy, ":", c="0.15", lw=1.2, drawstyle="steps-post")[0]
            for kind in _kind_order(list(here["kind"])):
                trials = done[done["number"].isin(here[here["kind"] == kind]["number"])]
                color = display.kind_color(kind)
                ax.scatter(trials[p.x], trials[p.y], s=10, c=color, alpha=0.3)
                own = kind_front(trials, p.x, p.y).sort_values([p.x, p.y])
                handles[kind] = ax.plot(
                    own[p.x],
                    own[p.y],
                    "o-" if p.x != "number" else "o",
                    c=color,
                    ms=5,
                    lw=1.8,
                    drawstyle="steps-post",
                )[0]
            if knee_row is not None:
                handles["knee"] = ax.scatter(
                    [knee_row[p.x]],
                    [knee_row[p.y]],
                    s=260,
                    marker="*",
                    facecolors="none",
                    edgecolors="#111",
                    linewidths=1.3,
                    zorder=4,
                )
                ax.annotate(
                    f"knee: trial {int(knee_row['number'])}",
                    (knee_row[p.x], knee_row[p.y]),
                    xytext=(10, -16),
                    textcoords="offset points",
                    fontsize=8,
                )
            ax.set_title(
                f"stage {p.stage}" + ("" if len(objectives) == 2 else f": {display.label(p.y)} vs {display.label(p.x)}")
            )
            views[p.x].apply(ax, "x")
            views[p.y].apply(ax, "y")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(panels) :]:
            ax.axis("off")
        order = sorted(handles, key=lambda n: (n != "front of all kinds", n == "knee", _rank(n)))
        axes.flat[len(panels) - 1].legend(
            [handles[n] for n in order], order, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8
        )
        fig.suptitle("Each conv kind's front, per stage (full-budget trials)")
    return path


__all__ = [
    "StageVerdict",
    "evidence_figure",
    "kind_front",
    "plot_evidence_png",
    "space_kinds",
    "stage_kinds",
    "verdict_lines",
    "verdict_parts",
    "verdict_table_html",
    "verdicts",
]
