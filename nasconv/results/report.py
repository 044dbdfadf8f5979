"""``nasconv report``: read a study (never write it) and explain its front.

Writes pareto.png/.html and the CSVs again, plus report.html with the interactive front, the
hypervolume over trials, which conv kind each stage uses across the front vs across all
trials, and Optuna's parameter importance per objective; each plot is also saved as PNG.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..search.multi_objective import hypervolume as exact_hypervolume
from ..search.multi_objective import minimised
from ..search.study import COMPLETE, open_study, trial_state
from .folder import full_budget, knee, pareto, sort_objective, write_results
from .plots import pareto_figure, png_figure


def normalisation(df: pd.DataFrame, objectives: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per objective in minimisation form, over every trained trial: HV is computed on
    objectives scaled to [0, 1] with the reference point at 1.1 in every axis."""
    done = full_budget(df, objectives)
    pts = minimised(done, objectives)
    low, high = pts.min(axis=0), pts.max(axis=0)
    for i, name in enumerate(objectives):
        if name == "accuracy":
            low[i], high[i] = -1.0, 0.0  # accuracy spans [0, 1] whatever was reached
    return low, np.where(high > low, high, low + 1.0)


def hypervolume(
    df: pd.DataFrame, objectives: Sequence[str], scale: tuple[np.ndarray, np.ndarray] | None = None
) -> float:
    """Hypervolume of the completed feasible trials in ``df`` (objectives scaled, reference 1.1)."""
    front = pareto(df, objectives)
    if front.empty:
        return 0.0
    low, high = scale or normalisation(df, objectives)
    pts = (minimised(front, objectives) - low) / (high - low)
    return exact_hypervolume(pts, np.full(len(objectives), 1.1))


def hypervolume_history(df: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    scale = normalisation(df, objectives)
    ordered = df.sort_values("number")
    values = [hypervolume(ordered.iloc[: i + 1], objectives, scale) for i in range(len(ordered))]
    return pd.DataFrame({"trial": ordered["number"].to_numpy(), "hypervolume": values})


def kind_usage(df: pd.DataFrame, front: pd.DataFrame) -> pd.DataFrame:
    """Share of trials using each conv kind per stage, across the front and across all trained trials."""
    rows = []
    for group, frame in (("Pareto front", front), ("all trained", df[df["state"] == "COMPLETE"])):
        for arch_json in frame["arch"].dropna():
            for stage, s in enumerate(json.loads(arch_json)["stages"]):
                rows.append({"group": group, "stage": f"stage {stage}", "kind": s["kind"]})
    if not rows:
        return pd.DataFrame(columns=["group", "stage", "kind", "share"])
    usage = pd.DataFrame(rows).value_counts().rename("count").reset_index()
    usage["share"] = usage["count"] / usage.groupby(["group", "stage"])["count"].transform("sum")
    return usage.sort_values(["stage", "group", "kind"])


def importances(study: Any, objectives: Sequence[str]) -> pd.DataFrame:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    feasible = [t for t in study.get_trials(deepcopy=False) if trial_state(t) == COMPLETE]
    rows = []
    if len(feasible) < 3:
        return pd.DataFrame(columns=["objective", "gene", "importance"])
    sub = optuna.create_study(directions=study.directions)
    sub.add_trials(feasible)
    for i, name in enumerate(objectives):

        def target(t: optuna.trial.FrozenTrial, i: int = i) -> float:
            return float(t.values[i])

        try:
            imp = optuna.importance.get_param_importances(
                sub, target=target, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
        except (RuntimeError, ValueError):
            continue
        rows += [{"objective": name, "gene": gene, "importance": value} for gene, value in imp.items()]
    return pd.DataFrame(rows, columns=["objective", "gene", "importance"])


def _png_hypervolume(hist: pd.DataFrame, path: Path) -> None:
    with png_figure(path, 1, 1, (6, 3.6)) as (_, axes):
        ax = axes[0][0]
        ax.plot(hist["trial"], hist["hypervolume"], drawstyle="steps-post")
        ax.set_xlabel("trial")
        ax.set_ylabel("hypervolume (scaled objectives)")
        ax.grid(alpha=0.3)


def _png_kinds(usage: pd.DataFrame, path: Path) -> None:
    stages = sorted(usage["stage"].unique())
    with png_figure(path, 1, len(stages), (4, 3.4)) as (_, axes):
        for ax, stage in zip(axes[0], stages):
            table = usage[usage["stage"] == stage].pivot_table(
                index="kind", columns="group", values="share", fill_value=0.0
            )
            table.plot.bar(ax=ax, rot=30)
            ax.set_title(stage)
            ax.set_ylabel("share of trials")
            ax.set_xlabel("")


def _png_importance(imp: pd.DataFrame, path: Path) -> None:
    objectives = list(imp["objective"].unique())
    with png_figure(path, 1, len(objectives), (5, 4)) as (_, axes):
        for ax, name in zip(axes[0], objectives):
            part = imp[imp["objective"] == name].sort_values("importance").tail(12)
            ax.barh(part["gene"], part["importance"])
            ax.set_title(f"importance for {name}")


def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, escape=True, border=0, classes="t", na_rep="")


def build_report(folder: str | Path) -> dict[str, Any]:
    """Regenerate every results file in ``folder`` from its study; return what the terminal shows."""
    import plotly.express as px

    folder = Path(folder)
    study = open_study(folder)
    df = write_results(study, folder)
    objectives = df.attrs["objectives"]
    front = pareto(df, objectives)
    knee_row = knee(df, objectives) if not front.empty else None
    hist = hypervolume_history(df, objectives) if not front.empty else pd.DataFrame()
    usage = kind_usage(df, front)
    imp = importances(study, objectives)

    figures = []
    if not front.empty:
        figures.append(("The Pareto front", pareto_figure(df, objectives)))
        _png_hypervolume(hist, folder / "hypervolume.png")
        figures.append(("Hypervolume over trials", px.line(hist, x="trial", y="hypervolume", line_shape="hv")))
    if not usage.empty:
        _png_kinds(usage, folder / "kinds.png")
        figures.append(
            (
                "Conv kind per stage: Pareto front vs all trained trials",
                px.bar(usage, x="kind", y="share", color="group", barmode="group", facet_col="stage"),
            )
        )
    if not imp.empty:
        _png_importance(imp, folder / "importance.png")
        figures.append(
            (
                "Parameter importance per objective (fANOVA)",
                px.bar(imp, x="importance", y="gene", color="objective", orientation="h", barmode="group"),
            )
        )
    parts = [
        f"<h1>nasconv report: {html.escape(study.study_name)}</h1>",
        f"<p>{len(df)} trials: "
        + ", ".join(f"{n} {s.lower()}" for s, n in df["state"].value_counts().items())
        + f". Objectives: {', '.join(objectives)}.</p>",
    ]
    for index, (title, fig) in enumerate(figures):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=index == 0))
    shown = ["number", *objectives, "params", "macs", "short"]
    parts.append("<h2>Pareto-optimal trials</h2>" + _table_html(front[[c for c in dict.fromkeys(shown)]]))
    bad = df[df["state"].isin(["FAIL", "INFEASIBLE", "STOPPED"])]
    parts.append(
        "<h2>Failed, infeasible and early-stopped trials</h2>"
        + (_table_html(bad[["number", "state", "short", "reason"]]) if not bad.empty else "<p>none</p>")
    )
    style = "<style>body{font-family:sans-serif;margin:2em} table.t td,table.t th{padding:2px 8px}</style>"
    (folder / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'>{style}</head><body>" + "\n".join(parts) + "</body></html>"
    )
    return {
        "df": df,
        "front": front,
        "knee": knee_row,
        "objectives": objectives,
        "importance": imp,
        "usage": usage,
        "hypervolume": float(hist["hypervolume"].iloc[-1]) if not hist.empty else 0.0,
    }


def print_report(summary: dict[str, Any], folder: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    df, front, objectives, knee_row = summary["df"], summary["front"], summary["objectives"], summary["knee"]
    console = Console()
    counts = df["state"].value_counts().to_dict()
    print(
        f"{len(df)} trials: {counts.get('COMPLETE', 0)} trained, {counts.get('INFEASIBLE', 0)} infeasible, "
        f"{counts.get('FAIL', 0)} failed, {counts.get('STOPPED', 0)} stopped early, "
        f"{counts.get('RUNNING', 0)} running"
    )
    table = Table(title=f"Pareto front: {len(front)} trials, sorted by {sort_objective(objectives)}")
    table.add_column("trial", justify="right")
    for name in objectives:
        table.add_column(name, justify="right")
    table.add_column("stages")
    table.add_column("")
    for _, row in front.iterrows():
        cells = [f"{row[o]:.4f}" if o in ("accuracy", "latency_ms") else f"{row[o]:,.0f}" for o in objectives]
        mark = "◀ knee" if knee_row is not None and row["number"] == knee_row["number"] else ""
        table.add_row(str(row["number"]), *cells, str(row["short"]), mark)
    console.print(table)
    console.print(f"hypervolume (scaled objectives, reference 1.1): {summary['hypervolume']:.4f}")
    for name in (
        "report.html",
        "pareto.png",
        "pareto.html",
        "hypervolume.png",
        "kinds.png",
        "importance.png",
        "trials.csv",
        "pareto.csv",
    ):
        if (folder / name).exists():
            console.print(f"  {folder / name}")
