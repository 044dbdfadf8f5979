"""The Pareto front and the knee of a trials table (a DataFrame from :mod:`nasconv.results.folder`).

Computed over full-budget trials only (state COMPLETE): early-stopped trials were measured after
fewer epochs and are listed apart, never ranked against full-budget ones; infeasible trials and
repeats are never on the front. The maths itself is :mod:`nasconv.search.multi_objective`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..errors import NasconvError
from ..search.multi_objective import OBJECTIVES, knee_index, minimised, non_dominated
from ..search.record import COMPLETE

FRONT_STATES = (COMPLETE,)


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
