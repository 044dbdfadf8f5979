"""The results folder: the trials as a DataFrame, the Pareto front, the knee, and the CSV files.

Everything here reads the Optuna study (the record) and never writes to it. The front and the
knee are computed over full-budget trials only (state COMPLETE); early-stopped trials were
measured after fewer epochs and are listed apart, never ranked against full-budget ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import NasconvError
from ..files import atomic_write
from ..search.multi_objective import OBJECTIVES, knee_index, minimised, non_dominated
from ..search.study import COMPLETE, open_study, trial_state

COST_COLUMNS = ["params", "macs", "flops", "latency_ms", "train_seconds", "epochs"]
FRONT_STATES = (COMPLETE,)


def trials_frame(study: Any) -> pd.DataFrame:
    """One row per trial: number, state, objectives, costs, the architecture, and why it failed or
    which trial it repeats."""
    objectives = list(study.user_attrs.get("objectives") or [])
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        row: dict[str, Any] = {"number": t.number, "state": trial_state(t)}
        values = t.values if t.values is not None else [None] * len(objectives)
        for name, value in zip(objectives, values):
            # a failed trial has no values, but its costs were known before it ran
            row[name] = value if value is not None else attrs.get(name)
        for name in COST_COLUMNS:
            row.setdefault(name, attrs.get(name))
        row["short"] = attrs.get("short")
        row["arch"] = attrs.get("arch")
        row["repeat_of"] = attrs.get("repeat_of")
        row["reason"] = attrs.get("reason")
        rows.append(row)
    columns = [
        "number",
        "state",
        *objectives,
        *[c for c in COST_COLUMNS if c not in objectives],
        "short",
        "arch",
        "repeat_of",
        "reason",
    ]
    df = pd.DataFrame(rows, columns=columns)
    df["repeat_of"] = df["repeat_of"].astype("Int64")
    df.attrs["objectives"] = objectives
    return df


def load_results(folder: str | Path) -> pd.DataFrame:
    """Every trial of the search stored in ``folder``, one row each (``df.attrs['objectives']``)."""
    return trials_frame(open_study(folder))


def sort_objective(objectives: Sequence[str]) -> str:
    """Fronts are listed along the first cost objective (or the only objective)."""
    return next((o for o in objectives if OBJECTIVES[o] == "minimize"), objectives[0])


def full_budget(df: pd.DataFrame, objectives: Sequence[str] | None = None) -> pd.DataFrame:
    """The trials a front is made of: trained for the full budget, feasible, every objective known."""
    objectives = list(objectives or df.attrs.get("objectives") or [])
    return df[df["state"].isin(FRONT_STATES)].dropna(subset=objectives)


def pareto(df: pd.DataFrame, objectives: Sequence[str] | None = None) -> pd.DataFrame:
    """The non-dominated full-budget trials, sorted along the first cost objective. Two different
    architectures with identical values are both kept."""
    objectives = list(objectives or df.attrs.get("objectives") or [])
    done = full_budget(df, objectives)
    if done.empty:
        return done
    front = done[non_dominated(minimised(done, objectives))].copy()
    sort_by = sort_objective(objectives)
    front = front.sort_values([sort_by, "number"], ascending=[OBJECTIVES[sort_by] == "minimize", True])
    front.attrs["objectives"] = objectives
    return front


def knee(df: pd.DataFrame, objectives: Sequence[str] | None = None) -> pd.Series:
    """The front's knee: the point nearest the ideal point after scaling each objective to [0, 1]."""
    objectives = list(objectives or df.attrs.get("objectives") or [])
    front = pareto(df, objectives)
    if front.empty:
        raise NasconvError("no trial trained for the full budget yet: the Pareto front is empty")
    return front.iloc[knee_index(minimised(front, objectives))]


def write_results(study: Any, folder: str | Path, *, plots: bool = True) -> pd.DataFrame:
    """trials.csv, pareto.csv and (with ``plots``) pareto.png / pareto.html, from the study."""
    folder = Path(folder)
    df = trials_frame(study)
    objectives = df.attrs["objectives"]
    write_csv(df, folder / "trials.csv")
    front = pareto(df, objectives)
    write_csv(front, folder / "pareto.csv")
    if plots and not front.empty:
        from .plots import plot_pareto_html, plot_pareto_png

        title = f"{study.study_name}: {len(front)} Pareto-optimal of {len(full_budget(df, objectives))} trained"
        plot_pareto_png(df, objectives, folder / "pareto.png", title)
        plot_pareto_html(df, objectives, folder / "pareto.html", title)
    return df


def write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_write(path) as f:
        df.to_csv(f, index=False)
