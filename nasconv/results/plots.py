"""The front as pictures: a PNG for documents and an interactive plotly page."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .folder import full_budget, pareto


def _label(name: str) -> str:
    return {"macs": "MACs", "flops": "FLOPs", "params": "parameters", "latency_ms": "latency (ms)"}.get(name, name)


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


def plot_pareto_png(df: pd.DataFrame, objectives: Sequence[str], path: Path, title: str = "") -> Path:
    objectives = list(objectives)
    front = pareto(df, objectives)
    done = full_budget(df, objectives)
    infeasible = df[df["state"] == "INFEASIBLE"]
    pairs = (
        [(objectives[0], objectives[1])]
        if len(objectives) == 2
        else [(a, b) for i, a in enumerate(objectives) for b in objectives[i + 1 :]]
    )
    if len(objectives) == 1:
        pairs = [("number", objectives[0])]
    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    with png_figure(path, rows, cols, (5.5, 4.3)) as (fig, axes):
        _draw_pareto(axes, pairs, done, infeasible, front, objectives)
        fig.suptitle(title or f"{len(front)} Pareto-optimal of {len(done)} trained trials")
    return path


def _draw_pareto(
    axes: Any, pairs: list, done: pd.DataFrame, infeasible: pd.DataFrame, front: pd.DataFrame, objectives: list[str]
) -> None:
    for ax, (x, y) in zip(axes.flat, pairs):
        # cost on x, accuracy on y reads naturally
        if x == "accuracy":
            x, y = y, x
        ax.scatter(done[x], done[y], s=18, c="0.7", label="trials")
        if not infeasible.empty and x in infeasible and infeasible[x].notna().any():
            ax.scatter(
                infeasible[x],
                [done[y].min() if y == "accuracy" and not done.empty else v for v in infeasible[y]],
                s=18,
                marker="x",
                c="tab:red",
                label="infeasible",
            )
        f = front.sort_values(x)
        ax.plot(
            f[x],
            f[y],
            "o-",
            c="tab:blue",
            ms=5,
            drawstyle="steps-post" if len(objectives) == 2 else None,
            label="Pareto front",
        )
        ax.set_xlabel(_label(x))
        ax.set_ylabel(_label(y))
        if x in ("macs", "flops", "params") and done[x].max() > 20 * max(done[x].min(), 1):
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    axes.flat[0].legend(loc="best", fontsize=8)


def plot_pareto_html(df: pd.DataFrame, objectives: Sequence[str], path: Path, title: str = "") -> Path:
    pareto_figure(df, objectives, title).write_html(path, include_plotlyjs=True, full_html=True)
    return path


def pareto_figure(df: pd.DataFrame, objectives: Sequence[str], title: str = "") -> Any:
    """Interactive front: every trained/infeasible trial, the front highlighted, the arch on hover."""
    import plotly.express as px

    objectives = list(objectives)
    shown = df[df["state"].isin(["COMPLETE", "STOPPED", "INFEASIBLE"])].dropna(subset=objectives).copy()
    front_numbers = set(pareto(df, objectives)["number"])
    shown["group"] = [
        "Pareto front" if n in front_numbers else ("infeasible" if s == "INFEASIBLE" else s.lower())
        for n, s in zip(shown["number"], shown["state"])
    ]
    hover = ["number", "short", *[c for c in ("params", "macs", "latency_ms") if c in shown and c not in objectives]]
    colors = {"Pareto front": "#1f77b4", "complete": "#b0b0b0", "infeasible": "#d62728", "stopped": "#ff7f0e"}
    common = {
        "color": "group",
        "hover_data": hover,
        "color_discrete_map": colors,
        "labels": {c: _label(c) for c in objectives},
        "title": title,
    }
    if len(objectives) == 2:
        x, y = objectives if objectives[0] != "accuracy" else objectives[::-1]
        return px.scatter(shown, x=x, y=y, **common)
    return px.scatter_matrix(shown, dimensions=objectives, **common)
