"""The results folder: trials as a DataFrame, the Pareto front, the knee, and the files.

Everything here reads the Optuna study (the record) and never writes to it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import NasconvError
from .space import OBJECTIVES

STUDY_FILE = "study.db"
STORAGE_FILE = "storage.url"
COST_COLUMNS = ["params", "macs", "flops", "latency_ms", "train_seconds", "epochs"]


def storage_url(folder: str | Path) -> str | None:
    """The study storage a results folder points at, or None if it holds no study."""
    folder = Path(folder)
    if (folder / STORAGE_FILE).is_file():
        return (folder / STORAGE_FILE).read_text().strip()
    if (folder / STUDY_FILE).is_file():
        return f"sqlite:///{(folder / STUDY_FILE).resolve()}"
    return None


def open_study(folder: str | Path):  # -> optuna.Study
    import optuna

    url = storage_url(folder)
    if url is None:
        raise NasconvError(f"{folder}: no study here (expected {STUDY_FILE} or {STORAGE_FILE} from nasconv search)")
    storage = optuna.storages.RDBStorage(url, skip_compatibility_check=False)
    names = optuna.get_all_study_names(storage)
    if not names:
        raise NasconvError(f"{folder}: the study storage {url} holds no study")
    name = (Path(folder) / "study.name").read_text().strip() if (Path(folder) / "study.name").is_file() else names[0]
    return optuna.load_study(study_name=name, storage=storage)


def _state(trial: Any) -> str:
    state = trial.state.name
    if state == "COMPLETE" and trial.user_attrs.get("infeasible"):
        return "INFEASIBLE"
    if state == "COMPLETE" and trial.user_attrs.get("early_stopped"):
        return "STOPPED"
    return state


def trials_frame(study: Any) -> pd.DataFrame:
    objectives = list(study.user_attrs.get("objectives") or [])
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        row: dict[str, Any] = {"number": t.number, "state": _state(t)}
        values = t.values if t.values is not None else [None] * len(objectives)
        for name, value in zip(objectives, values):
            row[name] = value
        for name in COST_COLUMNS:
            row.setdefault(name, attrs.get(name))
        row["short"] = attrs.get("short")
        row["arch"] = attrs.get("arch")
        row["reason"] = attrs.get("reason")
        rows.append(row)
    columns = [
        "number",
        "state",
        *objectives,
        *[c for c in COST_COLUMNS if c not in objectives],
        "short",
        "arch",
        "reason",
    ]
    df = pd.DataFrame(rows, columns=columns)
    df.attrs["objectives"] = objectives
    return df


def load_results(folder: str | Path) -> pd.DataFrame:
    """Every trial of the search stored in ``folder``, one row each (``df.attrs['objectives']``)."""
    return trials_frame(open_study(folder))


def _minimised(df: pd.DataFrame, objectives: Sequence[str]) -> np.ndarray:
    cols = []
    for name in objectives:
        if name not in OBJECTIVES:
            raise ValueError(f"unknown objective {name!r}")
        values = df[name].to_numpy(dtype=float)
        cols.append(-values if OBJECTIVES[name] == "maximize" else values)
    return np.stack(cols, axis=1) if cols else np.zeros((len(df), 0))


def sort_objective(objectives: Sequence[str]) -> str:
    """Fronts are listed along the first cost objective (or the only objective)."""
    return next((o for o in objectives if OBJECTIVES[o] == "minimize"), objectives[0])


def pareto(df: pd.DataFrame, objectives: Sequence[str] | None = None) -> pd.DataFrame:
    """The non-dominated rows among feasible trained trials. Early-stopped trials compete with their
    last (partial) values and, when non-dominated, stay in the front flagged by state STOPPED."""
    objectives = list(objectives or df.attrs.get("objectives") or [])
    done = df[df["state"].isin(["COMPLETE", "STOPPED"])].dropna(subset=objectives)
    if done.empty:
        return done
    points = _minimised(done, objectives)
    keep = np.ones(len(points), dtype=bool)
    for i, p in enumerate(points):
        dominated_by = np.all(points <= p, axis=1) & np.any(points < p, axis=1)
        keep[i] = not dominated_by.any()
    front = done[keep].copy()
    front = front.drop_duplicates(subset=objectives)
    sort_by = sort_objective(objectives)
    front = front.sort_values(sort_by, ascending=OBJECTIVES[sort_by] == "minimize")
    front.attrs["objectives"] = objectives
    return front


def knee(df: pd.DataFrame, objectives: Sequence[str] | None = None) -> pd.Series:
    """The front's knee: the point nearest the ideal point after scaling each objective to [0, 1]."""
    objectives = list(objectives or df.attrs.get("objectives") or [])
    front = pareto(df, objectives)
    if front.empty:
        raise NasconvError("no completed feasible trial yet: the Pareto front is empty")
    points = _minimised(front, objectives)
    low, high = points.min(axis=0), points.max(axis=0)
    scaled = (points - low) / np.where(high > low, high - low, 1.0)
    return front.iloc[int(np.argmin(np.linalg.norm(scaled, axis=1)))]


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
    done = df[df["state"].isin(["COMPLETE", "STOPPED"])].dropna(subset=objectives)
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


def write_results(study: Any, folder: str | Path, *, plots: bool = True) -> pd.DataFrame:
    """trials.csv, pareto.csv and (with ``plots``) pareto.png / pareto.html, from the study."""
    folder = Path(folder)
    df = trials_frame(study)
    objectives = df.attrs["objectives"]
    _atomic_csv(df, folder / "trials.csv")
    front = pareto(df, objectives)
    _atomic_csv(front, folder / "pareto.csv")
    if plots and not front.empty:
        title = f"{study.study_name}: {len(front)} Pareto-optimal of {(df['state'] == 'COMPLETE').sum()} trained"
        plot_pareto_png(df, objectives, folder / "pareto.png", title)
        plot_pareto_html(df, objectives, folder / "pareto.html", title)
    return df


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)


def arch_of(row: pd.Series):  # -> Arch
    from .arch import Arch

    return Arch.from_dict(json.loads(row["arch"]))
