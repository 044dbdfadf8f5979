"""The results folder: the trials as a DataFrame, and the files a search keeps current (trials.csv,
pareto.csv, pareto.png, pareto.html).

Everything here reads the Optuna study (the record) and never writes to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import NasconvError
from ..files import atomic_write
from ..search.record import trial_state
from ..search.study import open_study
from .front import full_budget, pareto

COST_COLUMNS = ["params", "macs", "flops", "latency_ms", "train_seconds", "epochs"]


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


def trial_row(df: pd.DataFrame, number: int, where: str = "") -> pd.Series:
    """Trial ``number``'s row, which must record an architecture; else a NasconvError naming it."""
    prefix = f"{where}: " if where else ""
    rows = df[df["number"] == number]
    if rows.empty:
        raise NasconvError(f"{prefix}no trial {number} (trials are numbered 0 to {len(df) - 1})")
    row = rows.iloc[0]
    if not isinstance(row["arch"], str):
        raise NasconvError(f"{prefix}trial {number} records no architecture (state {row['state']})")
    return row


def load_results(folder: str | Path) -> pd.DataFrame:
    """Every trial of the search stored in ``folder``, one row each (``df.attrs['objectives']``)."""
    return trials_frame(open_study(folder))


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
