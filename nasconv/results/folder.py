"""The results folder: the trials as a DataFrame, and the files a search keeps current (trials.csv,
pareto.csv, pareto.png, pareto.html).

Everything here reads the Optuna study (the record) and never writes to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import NasconvError, brief
from ..files import atomic_write
from ..search.multi_objective import CONSTRAINTS, OBJECTIVES
from ..search.record import trial_state
from ..search.study import open_study
from .front import full_budget, pareto

COST_COLUMNS = ["params", "macs", "flops", "latency_ms", "train_seconds", "epochs"]


def trials_frame(study: Any, where: str | Path = "") -> pd.DataFrame:
    """One row per trial: number, state, objectives, costs, the architecture, and why it failed or
    which trial it repeats. A record that cannot be read (``where`` names it: the results folder) is a
    NasconvError naming the trial, never a traceback from deep inside a plot."""
    prefix = f"{where}: " if where else ""
    objectives = study.user_attrs.get("objectives")
    if (
        not isinstance(objectives, list)
        or len(objectives) != len(study.directions)
        or any(o not in OBJECTIVES for o in objectives)
    ):
        raise NasconvError(
            f"{prefix}the study records objectives {brief(objectives)}, not a list of "
            f"{len(study.directions)} of {', '.join(OBJECTIVES)}: is it a nasconv study?"
        )
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        arch = attrs.get("arch")
        problem = _unreadable(arch) if arch is not None else None
        if problem:
            raise NasconvError(f"{prefix}trial {t.number}: the stored architecture {problem}: {brief(arch)}")
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
    df.attrs["constraints"] = recorded_limits(study)
    return df


def _unreadable(text: Any) -> str | None:
    """Why a stored architecture cannot be read as one, or None (its fields are checked where it is built)."""
    if not isinstance(text, str):
        return "is not a nasconv architecture (not JSON text)"
    try:
        data = json.loads(text)
    except ValueError:
        return "is not valid JSON"
    return None if isinstance(data, dict) else "is not a nasconv architecture"


def recorded_limits(study: Any) -> dict[str, float]:
    """The space's constraints by the column they limit (``max_macs: 300000`` -> ``{'macs': 300000.0}``),
    from the space recorded in the study; plots draw them and say by how much a trial was over."""
    space = study.user_attrs.get("space")
    constraints = space.get("constraints") if isinstance(space, dict) else None
    if not isinstance(constraints, dict):
        return {}
    return {
        CONSTRAINTS[name]: float(limit)
        for name, limit in constraints.items()
        if name in CONSTRAINTS and isinstance(limit, (int, float))
    }


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
    return trials_frame(open_study(folder), folder)


def write_results(study: Any, folder: str | Path, *, plots: bool = True) -> pd.DataFrame:
    """trials.csv, pareto.csv and (with ``plots``) pareto.png / pareto.html, from the study."""
    folder = Path(folder)
    df = trials_frame(study, folder)
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


INTEGER_COLUMNS = ("macs", "flops", "params", "epochs")
"""Counts: written as integers (152896, not 152896.0) when every known value is whole."""


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """``df`` as CSV, counts as integers (an unknown count stays empty)."""
    out = df.copy()
    for name in INTEGER_COLUMNS:
        if name in out:
            values = pd.to_numeric(out[name], errors="coerce")
            known = values.dropna()
            if (known == known.round()).all():
                out[name] = values.round().astype("Int64")
    with atomic_write(path) as f:
        out.to_csv(f, index=False)
