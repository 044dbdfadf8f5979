"""``nasconv report``: read a study (never write it) and answer "which convolution where".

One folder: rewrites pareto.png/.html and the CSVs, and writes report.html with the front (the
staircase, the knee labelled, early-stopped and infeasible trials apart), the knee's
architecture as a block diagram (and every other front trial's on demand), the evidence view
(each conv kind's front per stage, and which kinds reach the global front), the hypervolume per
trained architecture, the repeats answered from the record, the kind usage and Optuna's
parameter importance. Each plot is also saved as PNG.

Several folders (same objectives): a comparison page in its own folder, the fronts overlaid with
their hypervolumes on one scale.

Every page references one ``plotly.min.js`` in its folder.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import NasconvError
from ..files import atomic_write
from ..model.arch import Arch
from ..search.multi_objective import OBJECTIVES, minimised
from ..search.multi_objective import hypervolume as exact_hypervolume
from ..search.record import COMPLETE, FAIL, INFEASIBLE, REPEAT, RUNNING, STOPPED, counts_toward_budget, trial_state
from ..search.study import open_study
from . import display
from .architecture import (
    TABLE_COLUMNS,
    TERMINAL_COLUMNS,
    Breakdown,
    architecture_svg,
    block_rows,
    breakdown,
    describe,
    terminal_rows,
)
from .evidence import (
    StageVerdict,
    evidence_figure,
    plot_evidence_png,
    space_kinds,
    verdict_parts,
    verdict_table_html,
    verdicts,
)
from .export import exported_metrics
from .folder import trial_row, trials_frame, write_results
from .front import full_budget, knee, pareto, sort_objective
from .plots import (
    FRONT_COLOR,
    PLOT_CONFIG,
    PLOTLY_JS,
    SEARCH_COLORS,
    Search,
    front_figure,
    limits,
    over_limits,
    plot_fronts_png,
    plotted,
    png_figure,
    write_plotly_js,
)

IMPORTANCE_FLOOR = 0.01
"""Genes below this share of an objective's importance are summed into one bar, not listed."""

IMPORTANCE_TRIALS = 20
"""Below this many full-budget trials, the report warns that importances are noise-level."""

FULL_BUDGET = "all full-budget trials"
"""The kinds chart's second group: every trial trained for the full budget (the front's pool)."""


# --- the numbers ------------------------------------------------------------------------------


def normalisation(df: pd.DataFrame, objectives: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per objective in minimisation form, over every trained trial: HV is computed on
    objectives scaled to [0, 1] with the reference point at 1.1 in every axis."""
    done = full_budget(df, objectives)
    pts = minimised(done, objectives)
    if len(pts) == 0:
        pts = np.zeros((1, len(objectives)))
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


def trained_numbers(study: Any) -> set[int]:
    """The trials that trained a distinct architecture (what a search's budget counts)."""
    return {t.number for t in study.get_trials(deepcopy=False) if counts_toward_budget(t)}


def hypervolume_growth(
    df: pd.DataFrame,
    objectives: Sequence[str],
    trained: set[int],
    scale: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """The hypervolume after each trained architecture, in trial order: ``trained`` (1, 2, ...: the
    distinct architectures trained so far, repeats and infeasible proposals not counted), ``trial``
    (its number) and ``hypervolume`` (of every trial up to it)."""
    scale = scale or normalisation(df, objectives)
    ordered = df.sort_values("number")
    rows: list[dict[str, Any]] = []
    for number in sorted(n for n in ordered["number"] if int(n) in trained):
        rows.append(
            {
                "trained": len(rows) + 1,
                "trial": int(number),
                "hypervolume": hypervolume(ordered[ordered["number"] <= number], objectives, scale),
            }
        )
    return pd.DataFrame(rows, columns=["trained", "trial", "hypervolume"])


def hypervolume_history(df: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    """The hypervolume after each trial (every state), in trial order."""
    scale = normalisation(df, objectives)
    ordered = df.sort_values("number")
    values = [hypervolume(ordered.iloc[: i + 1], objectives, scale) for i in range(len(ordered))]
    return pd.DataFrame({"trial": ordered["number"].to_numpy(), "hypervolume": values})


def kind_usage(df: pd.DataFrame, front: pd.DataFrame) -> pd.DataFrame:
    """Share of trials using each conv kind per stage, across the front and across every full-budget
    trial (the trials the front is chosen from; early-stopped ones are not counted): columns ``group``,
    ``stage``, ``kind``, ``count``, ``share`` and ``total`` (the trials of the group)."""
    rows = []
    for group, frame in (("Pareto front", front), (FULL_BUDGET, df[df["state"] == COMPLETE])):
        for arch_json in frame["arch"].dropna():
            for stage, s in enumerate(json.loads(arch_json)["stages"]):
                rows.append({"group": group, "stage": f"stage {stage}", "kind": s["kind"]})
    if not rows:
        return pd.DataFrame(columns=["group", "stage", "kind", "count", "share", "total"])
    usage = pd.DataFrame(rows).value_counts().rename("count").reset_index()
    usage["total"] = usage.groupby(["group", "stage"])["count"].transform("sum")
    usage["share"] = usage["count"] / usage["total"]
    return usage.sort_values(["stage", "group", "kind"])


def live_genes(trial: Any, genes: Sequence[tuple[str, Sequence[Any]]] = ()) -> Any:
    """``trial`` with every gene of the space present, the ones that did not act pinned to their first
    choice: options of a kind a stage did not draw (absent from the trial, or drawn but unused in a
    study recorded with the older fixed-length encoding). fANOVA needs the same genes in every
    trial; pinned, a gene varies only where it acted."""
    import optuna

    params = dict(trial.params)
    distributions = dict(trial.distributions)
    for name, choices in genes:
        if name not in params and choices:
            params[name] = choices[0]
            distributions[name] = optuna.distributions.CategoricalDistribution(list(choices))
    for name, distribution in distributions.items():
        stage, _, rest = name.partition(".")
        kind, _, option = rest.partition(".")
        used = params.get(f"{stage}.kind")
        if option and used is not None and kind != used and hasattr(distribution, "choices"):
            params[name] = distribution.choices[0]
    return optuna.trial.create_trial(params=params, distributions=distributions, values=trial.values)


def importances(study: Any, objectives: Sequence[str]) -> pd.DataFrame:
    """fANOVA importance of every gene for every objective, over the full-budget trials, with the
    options of unused kinds pinned (:func:`live_genes`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    feasible = [t for t in study.get_trials(deepcopy=False) if trial_state(t) == COMPLETE]
    rows = []
    if len(feasible) < 3:
        return pd.DataFrame(columns=["objective", "gene", "importance"])
    try:
        genes = [(name, choices) for name, choices in json.loads(study.user_attrs.get("genes") or "[]")]
    except (TypeError, ValueError):
        genes = []
    sub = optuna.create_study(directions=study.directions)
    sub.add_trials([live_genes(t, genes) for t in feasible])
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


def gene_label(gene: str) -> str:
    """``s1.het.p`` -> ``stage 1 het p``, ``s0.kind`` -> ``stage 0 kind``, ``stem.channels`` -> ``stem channels``."""
    head, _, rest = gene.partition(".")
    if head[:1] == "s" and head[1:].isdigit():
        head = f"stage {head[1:]}"
    return f"{head} {rest.replace('.', ' ')}".strip()


def zero_genes(imp: pd.DataFrame) -> dict[str, int]:
    """Per objective, how many genes have no importance at all (options of kinds a stage never used,
    values that never varied): the report leaves them out and says how many."""
    return {str(name): int((part["importance"] <= 0).sum()) for name, part in imp.groupby("objective", sort=False)}


def important_genes(imp: pd.DataFrame, floor: float = IMPORTANCE_FLOOR, top: int = 10) -> pd.DataFrame:
    """Per objective, the genes that matter (at least ``floor``, at most ``top``), readable names,
    and one ``N other genes`` row summing the rest that has any importance; genes with none
    (:func:`zero_genes`) are dropped, not counted among the others."""
    rows = []
    for name, part in imp.groupby("objective", sort=False):
        part = part[part["importance"] > 0].sort_values("importance", ascending=False)
        keep = part[part["importance"] >= floor].head(top)
        rest = part.drop(keep.index)
        rows += [
            {"objective": name, "gene": gene_label(g), "importance": v}
            for g, v in zip(keep["gene"], keep["importance"])
        ]
        if len(rest):
            rows.append(
                {"objective": name, "gene": f"{len(rest)} other genes", "importance": float(rest["importance"].sum())}
            )
    return pd.DataFrame(rows, columns=["objective", "gene", "importance"])


def state_counts(df: pd.DataFrame) -> dict[str, int]:
    counts = df["state"].value_counts().to_dict()
    return {s: int(counts.get(s, 0)) for s in (COMPLETE, STOPPED, INFEASIBLE, REPEAT, FAIL, RUNNING)}


def counts_sentence(df: pd.DataFrame) -> str:
    """``40 trials: 27 trained, 1 stopped early, 3 infeasible, 1 failed, 8 repeats answered from the record,
    0 running``."""
    c = state_counts(df)
    return (
        f"{len(df)} trials: {c[COMPLETE]} trained, {c[STOPPED]} stopped early, {c[INFEASIBLE]} infeasible, "
        f"{c[FAIL]} failed, {c[REPEAT]} repeat{'' if c[REPEAT] == 1 else 's'} answered from the record, "
        f"{c[RUNNING]} running"
    )


def trial_figures(row: pd.Series) -> str:
    """``accuracy 97.5% · MACs 452k · params 7.19k`` (what is known of a trial)."""
    parts = []
    for name in ("accuracy", "macs", "params", "latency_ms"):
        if name in row and row[name] is not None and row[name] == row[name]:
            if name == "accuracy" and row["state"] == INFEASIBLE:
                continue
            parts.append(f"{display.label(name).replace(' (ms)', '')} {display.value(name, row[name])}")
    return " · ".join(parts)


# --- what a report holds ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Report:
    """What ``nasconv report DIR`` found and wrote (the terminal shows it)."""

    folder: Path
    df: pd.DataFrame
    objectives: list[str]
    front: pd.DataFrame
    knee: pd.Series | None
    hypervolume: float
    growth: pd.DataFrame
    verdicts: list[StageVerdict]
    importance: pd.DataFrame
    usage: pd.DataFrame
    plotted: int
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class SearchSummary:
    """One search of a comparison."""

    label: str
    folder: Path
    df: pd.DataFrame
    front: pd.DataFrame
    knee: pd.Series | None
    trained: int
    hypervolume: float
    growth: pd.DataFrame


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """What ``nasconv report DIR1 DIR2 ...`` found and wrote."""

    out: Path
    objectives: list[str]
    searches: list[SearchSummary]
    plotted: int
    files: list[Path] = field(default_factory=list)


# --- HTML -------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1500px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
p.note{color:#555;max-width:60em}
table.t{border-collapse:collapse;font-size:.9em}
table.t td,table.t th{padding:3px 10px;text-align:left;border-bottom:1px solid #eee}
table.t td.n,table.t th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.knee td{font-weight:bold;background:#fffbe6}
.kind{display:inline-block;margin-right:.8em;white-space:nowrap}
.dot{display:inline-block;width:.7em;height:.7em;border-radius:50%;margin-right:.3em;vertical-align:baseline}
.arch-wrap{overflow-x:auto;margin:.6em 0}
svg.arch{max-width:100%;height:auto}
details{margin:.4em 0}summary{cursor:pointer}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
table.verdicts td.stage{white-space:nowrap}
p.caveat{background:#fff4d6;border-left:4px solid #e0a800;padding:.5em .8em;max-width:60em}
"""

_NUMERIC = {
    "trial",
    "accuracy",
    "MACs",
    "params",
    "latency",
    "hypervolume",
    "params %",
    "MACs %",
    "stride",
    "trials",
    "full budget",
    "stopped",
    "repeats",
    "front",
}


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, css: str = "t", marked: int | None = None) -> str:
    """An HTML table of already formatted cells; row ``marked`` is highlighted (the knee)."""

    def cell(tag: str, name: str, text: str) -> str:
        cls = ' class="n"' if name in _NUMERIC else ""
        return f"<{tag}{cls}>{html.escape(text)}</{tag}>"

    out = [f"<table class='{css}'><thead><tr>" + "".join(cell("th", h, h) for h in header) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        mark = " class='knee'" if i == marked else ""
        out.append(f"<tr{mark}>" + "".join(cell("td", h, str(v)) for h, v in zip(header, row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _figure_html(fig: Any, div_id: str) -> str:
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG))


def _page(title: str, parts: Sequence[str], script: str = "") -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style><script src='{PLOTLY_JS}'></script></head><body>\n"
        + "\n".join(parts)
        + (f"\n<script>{script}</script>" if script else "")
        + "\n</body></html>\n"
    )


def _write(path: Path, text: str) -> Path:
    with atomic_write(path) as f:
        f.write(text)
    return path


def front_rows(df: pd.DataFrame, front: pd.DataFrame, knee_row: pd.Series | None) -> tuple[list[str], list[list[str]]]:
    """The Pareto table, formatted (terminal and HTML): trial, figures, architecture and a ``knee``
    column marking it (every front trial trained for the full budget: no state column)."""
    costs = [c for c in ("accuracy", "macs", "params", "latency_ms") if c in df and df[c].notna().any()]
    header = ["trial", *[display.label(c).replace(" (ms)", "") for c in costs], "architecture", "knee"]
    rows = []
    for _, row in front.iterrows():
        mark = "◀ knee" if knee_row is not None and row["number"] == knee_row["number"] else ""
        rows.append(
            [
                str(int(row["number"])),
                *[display.value(c, row[c]) for c in costs],
                str(row["short"]),
                mark,
            ]
        )
    return header, rows


def dominated_by(df: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[str]) -> dict[int, int]:
    """For each full-budget trial not on the front, a front trial that dominates it (the first in the
    front's order): its number by the dominated trial's."""
    done = full_budget(df, objectives)
    rest = done[~done["number"].isin(front["number"])]
    if rest.empty or front.empty:
        return {}
    theirs = minimised(front, objectives)
    out = {}
    for number, point in zip(rest["number"], minimised(rest, objectives)):
        better = np.all(theirs <= point, axis=1) & np.any(theirs < point, axis=1)
        if better.any():
            out[int(number)] = int(front["number"].iloc[int(np.argmax(better))])
    return out


OTHERS_COLUMNS = ["trial", "status", "figures", "architecture", "why"]


def not_on_front(df: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[str]) -> list[list[str]]:
    """Every trial not on the front, formatted (columns ``OTHERS_COLUMNS``), with why: dominated (by
    which front trial), stopped early, infeasible (which limit, by how much), a repeat, failed (the
    reason), still running."""
    others = df[~df["number"].isin(front["number"])].sort_values("number")
    if others.empty:
        return []
    beaten = dominated_by(df, front, objectives)
    constraints = limits(df)

    rows = []
    for _, row in others.iterrows():
        kind = "dominated" if row["state"] == COMPLETE else display.state_label(row["state"])
        why = row["reason"] if isinstance(row["reason"], str) else ""
        if row["state"] == COMPLETE:
            number = int(row["number"])
            why = (
                f"dominated by trial {beaten[number]} (as good or better on every objective)"
                if number in beaten
                else "dominated (an objective is unknown)"
            )
        if row["state"] == REPEAT and row["repeat_of"] is not pd.NA and row["repeat_of"] == row["repeat_of"]:
            why = f"same architecture as trial {int(row['repeat_of'])}: its result, not trained again"
        if row["state"] == STOPPED:
            why = f"stopped after {int(row['epochs'])} epoch(s)" if row["epochs"] == row["epochs"] else "stopped early"
        if row["state"] == INFEASIBLE:
            why = f"never trained: {over_limits(row, constraints)}"
        rows.append(
            [
                str(int(row["number"])),
                kind,
                trial_figures(row),
                str(row["short"]),
                str(why),
            ]
        )
    return rows


def _others_table(df: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[str]) -> str:
    rows = not_on_front(df, front, objectives)
    if not rows:
        return "<p>none: every trial is on the front</p>"
    order = ["dominated", *(display.state_label(s) for s in (STOPPED, INFEASIBLE, REPEAT, FAIL, RUNNING))]
    tally = pd.Series([r[1] for r in rows]).value_counts()
    counts = ", ".join(f"{int(tally[k])} {k}" for k in order if k in tally)
    table = _table(OTHERS_COLUMNS, rows)
    return f"<details{' open' if len(rows) <= 20 else ''}><summary>{counts}</summary>{table}</details>"


def _arch_block(row: pd.Series, parts: Breakdown, *, is_knee: bool) -> str:
    """A trial's block diagram and block table."""
    number = int(row["number"])
    head = f"trial {number}{' (knee)' if is_knee else ''}: {row['short']} · {trial_figures(row)}"
    table = _table(TABLE_COLUMNS, block_rows(parts), css="t blocks")
    return (
        f"<div class='arch-wrap'>{architecture_svg(parts, trial=number, title=head)}</div>"
        f"<details><summary>blocks of trial {number}: params and MACs</summary>{table}</details>"
    )


def _growth_figure(curves: Sequence[tuple[str, pd.DataFrame, str]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, growth, color in curves:
        fig.add_trace(
            go.Scatter(
                x=growth["trained"],
                y=growth["hypervolume"],
                mode="lines",
                line={"shape": "hv", "color": color, "width": 2},
                name=name or "hypervolume",
                customdata=growth["trial"],
                hovertemplate="%{x} trained architectures (trial %{customdata})<br>hypervolume %{y:.4f}<extra></extra>",
            )
        )
    longest = max((len(growth) for _, growth, _ in curves), default=1)
    fig.update_xaxes(tickformat="d", **({"dtick": 1} if longest <= 12 else {}))
    fig.update_layout(
        template="plotly_white",
        height=360,
        xaxis_title="distinct architectures trained",
        yaxis_title="hypervolume (scaled, reference 1.1)",
        showlegend=len(curves) > 1,
        margin={"t": 30},
    )
    return fig


def _png_growth(curves: Sequence[tuple[str, pd.DataFrame, str]], path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    with png_figure(path, 1, 1, (6, 3.6)) as (_, axes):
        ax = axes[0][0]
        for name, growth, color in curves:
            ax.plot(growth["trained"], growth["hypervolume"], drawstyle="steps-post", c=color, label=name or None)
        ax.set_xlabel("distinct architectures trained")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("hypervolume (scaled objectives)")
        if len(curves) > 1:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)


KIND_GROUP_COLORS = {"Pareto front": FRONT_COLOR, FULL_BUDGET: "#b0b0b0"}


def kinds_figure(usage: pd.DataFrame) -> Any:
    """Per stage, the share of the front's trials and of every full-budget trial using each kind;
    hover: the kind, the stage, the share as a percentage and the counts."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    stages = sorted(usage["stage"].unique())
    kinds = sorted(set(usage["kind"]), key=lambda k: (_kind_rank(k), k))
    fig = make_subplots(rows=1, cols=len(stages), subplot_titles=stages, shared_yaxes=True, horizontal_spacing=0.03)
    for col, stage in enumerate(stages, start=1):
        for group, color in KIND_GROUP_COLORS.items():
            part = usage[(usage["stage"] == stage) & (usage["group"] == group)].set_index("kind")
            part = part.reindex([k for k in kinds if k in set(usage[usage["stage"] == stage]["kind"])])
            counts = part["count"].fillna(0).astype(int)
            totals = part["total"].fillna(usage[(usage["stage"] == stage) & (usage["group"] == group)]["total"].max())
            fig.add_trace(
                go.Bar(
                    x=list(part.index),
                    y=part["share"].fillna(0.0),
                    name=group,
                    legendgroup=group,
                    showlegend=col == 1,
                    marker_color=color,
                    customdata=np.column_stack([counts, totals.fillna(0).astype(int)]),
                    hovertemplate=f"<b>%{{x}}</b> in {stage}<br>{group}: %{{y:.0%}} "
                    "(%{customdata[0]} of %{customdata[1]} trials)<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_yaxes(tickformat=".0%", row=1, col=1, title_text="share of trials")
    fig.update_layout(template="plotly_white", barmode="group", height=380, margin={"t": 50})
    return fig


def _kind_rank(kind: str) -> int:
    from ..ops import registered_kinds

    known = list(registered_kinds())
    return known.index(kind) if kind in known else len(known)


def _png_kinds(usage: pd.DataFrame, path: Path) -> None:
    from matplotlib.ticker import PercentFormatter

    stages = sorted(usage["stage"].unique())
    with png_figure(path, 1, len(stages), (4, 3.4)) as (_, axes):
        for ax, stage in zip(axes[0], stages):
            table = usage[usage["stage"] == stage].pivot_table(
                index="kind", columns="group", values="share", fill_value=0.0
            )
            table = table.reindex(sorted(table.index, key=lambda k: (_kind_rank(k), k)))
            table = table[[g for g in KIND_GROUP_COLORS if g in table.columns]]
            table.plot.bar(ax=ax, rot=30, color=[KIND_GROUP_COLORS[c] for c in table.columns], legend=False)
            ax.set_title(stage)
            ax.set_ylabel("share of trials")
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_xlabel("")
            ax.grid(axis="y", alpha=0.3)
        # one legend, beside the last panel, over no bar
        axes[0][-1].legend(*axes[0][0].get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.02, 1))


def _importance_figure(shown: pd.DataFrame) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    objectives = list(dict.fromkeys(shown["objective"]))
    fig = make_subplots(
        rows=1,
        cols=len(objectives),
        subplot_titles=[f"for {display.label(o)}" for o in objectives],
        horizontal_spacing=0.3,
    )
    for col, name in enumerate(objectives, start=1):
        part = shown[shown["objective"] == name].iloc[::-1]
        fig.add_trace(
            go.Bar(
                x=part["importance"],
                y=part["gene"],
                orientation="h",
                marker_color=["#c7c7c7" if g.endswith("other genes") else FRONT_COLOR for g in part["gene"]],
                hovertemplate="%{y}: %{x:.1%}<extra></extra>",
                showlegend=False,
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(tickformat=".0%", row=1, col=col)
        fig.update_yaxes(automargin=True, row=1, col=col)
    rows = shown.groupby("objective").size().max()
    fig.update_layout(template="plotly_white", height=max(260, 80 + 26 * int(rows)), margin={"t": 40})
    return fig


def _importance_note(imp: pd.DataFrame, trials: int) -> str:
    """What the importance chart leaves out (genes with none, the small ones summed) and, with fewer
    than ``IMPORTANCE_TRIALS`` full-budget trials, a visible warning that it is noise-level."""
    zero = zero_genes(imp)
    genes = imp.groupby("objective", sort=False).size()
    dead = [f"{n} of {int(genes[o])} for {display.label(o)}" for o, n in zero.items() if n]
    parts = [
        f"<p class='note' id='importance-note'>Over the {trials} full-budget trials. Genes under "
        f"{display.percent(IMPORTANCE_FLOOR, 0)} of an objective's importance are summed into one grey bar. "
        + (
            "Genes with no importance at all (options of kinds a stage never used, values that never varied) "
            f"are left out: <span id='zero-genes'>{', '.join(dead)}</span>."
            if dead
            else ""
        )
        + "</p>"
    ]
    if trials < IMPORTANCE_TRIALS:
        parts.append(
            f"<p class='caveat' id='importance-caveat'><b>Only {trials} full-budget trials:</b> with fewer than "
            f"{IMPORTANCE_TRIALS}, fANOVA importances are at noise level. Read them as a hint of what to vary, not "
            "as a ranking.</p>"
        )
    return "".join(parts)


def exported_test_text(metrics: dict[str, Any]) -> str:
    """The test column of an exported trial from its metrics.json: the accuracy; "no test split" where
    it was evaluated on a dataset that has none; "not measured" where the weights are untrained or
    the dataset could not be read."""
    if metrics.get("test_accuracy") is not None:
        return display.percent(metrics["test_accuracy"])
    if metrics.get("weights") == "untrained" or not metrics.get("dataset"):
        return "not measured"
    return f"no test split in {metrics['dataset']}"


def _png_importance(shown: pd.DataFrame, path: Path, *, trials: int) -> None:
    from matplotlib.ticker import PercentFormatter

    objectives = list(dict.fromkeys(shown["objective"]))
    rows = int(shown.groupby("objective").size().max())
    with png_figure(path, 1, len(objectives), (5.2, max(2.5, 0.9 + 0.32 * rows))) as (fig, axes):
        if trials < IMPORTANCE_TRIALS:
            fig.suptitle(f"only {trials} full-budget trials: importance is at noise level", color="#a05a00")
        for ax, name in zip(axes[0], objectives):
            part = shown[shown["objective"] == name].iloc[::-1]
            colors = ["#c7c7c7" if g.endswith("other genes") else FRONT_COLOR for g in part["gene"]]
            ax.barh(part["gene"], part["importance"], color=colors)
            ax.set_title(f"importance for {display.label(name)}")
            ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


_CLICK_TO_ARCH = """
document.querySelectorAll('.js-plotly-plot').forEach(function (plot) {
  plot.on && plot.on('plotly_click', function (event) {
    var point = event.points && event.points[0];
    if (!point || point.customdata === undefined) return;
    var target = document.getElementById('arch-' + point.customdata);
    if (!target) return;
    if (target.tagName === 'DETAILS') target.open = true;
    target.scrollIntoView({behavior: 'smooth', block: 'start'});
  });
});
"""


# --- one folder -------------------------------------------------------------------------------


def build_report(folder: str | Path) -> Report:
    """Regenerate every results file in ``folder`` from its study and write report.html."""
    folder = Path(folder)
    study = open_study(folder)
    df = write_results(study, folder)
    objectives = list(df.attrs["objectives"])
    front = pareto(df, objectives)
    knee_row = knee(df, objectives) if not front.empty else None
    trained = trained_numbers(study)
    scale = normalisation(df, objectives)
    growth = hypervolume_growth(df, objectives, trained, scale) if not front.empty else pd.DataFrame()
    usage = kind_usage(df, front)
    imp = importances(study, objectives)
    shown_imp = important_genes(imp) if not imp.empty else imp
    stage_verdicts = verdicts(df, objectives, space_kinds(study.user_attrs.get("space")))
    counts = state_counts(df)
    n_plotted = len(plotted(df, objectives))
    files = [write_plotly_js(folder)]

    parts = [
        f"<h1>nasconv report: {html.escape(study.study_name)}</h1>",
        f"<p id='counts'>{html.escape(counts_sentence(df))}. Objectives: "
        + ", ".join(f"{display.label(o)} ({OBJECTIVES[o][:3]})" for o in objectives)
        + ".</p>",
    ]
    if counts[REPEAT]:
        parts.append(
            f"<p class='note' id='repeats'>{counts[REPEAT]} of {len(df)} proposals were repeats: the sampler proposed "
            "an architecture already evaluated, and the search answered it from the record without training "
            f"it again. {len(trained)} distinct architectures were trained.</p>"
        )
    if front.empty:
        parts.append("<p>No trial has been trained for the full budget yet: there is no front to show.</p>")
    else:
        assert knee_row is not None
        knee_number = int(knee_row["number"])
        parts += [
            "<h2 id='front'>The Pareto front</h2>",
            f"<p class='note'>The plot shows <span id='plotted-count'>{n_plotted}</span> trials "
            f"({counts[COMPLETE]} trained for the full budget, {counts[STOPPED]} stopped early, "
            f"{counts[INFEASIBLE]} infeasible); <span id='front-count'>{len(front)}</span> of them are on the front, "
            f"computed over full-budget trials only. The knee (the point nearest the ideal once every objective is "
            f"scaled to [0, 1]) is trial <span id='knee-number'>{knee_number}</span>. Repeats share their "
            "original's point; failed trials have none. Click a front point to see its architecture.</p>",
            _figure_html(front_figure([Search("", df, FRONT_COLOR)], objectives), "front-plot"),
            f"<h2 id='arch-{knee_number}'>The knee: trial {knee_number}</h2>",
            f"<p class='note'>{html.escape(describe(knee_row['arch']))}. Export it with "
            f"<code>nasconv export {html.escape(str(folder))} --knee</code>; "
            f"<code>nasconv report {html.escape(str(folder))} --trial {knee_number}</code> prints this table.</p>",
            "<div id='knee-arch'>" + _arch_block(knee_row, _breakdown(knee_row, folder), is_knee=True) + "</div>",
        ]
        others = [row for _, row in front.iterrows() if int(row["number"]) != knee_number]
        if others:
            parts.append("<h2>The other trials on the front</h2>")
            for row in others:
                number = int(row["number"])
                summary = f"trial {number}: {row['short']} · {trial_figures(row)}"
                parts.append(
                    f"<details class='front-arch' id='arch-{number}'><summary>{html.escape(summary)}</summary>"
                    f"{_arch_block(row, _breakdown(row, folder), is_knee=False)}</details>"
                )
        parts += [
            "<h2 id='evidence'>Which convolution where</h2>",
            "<p class='note'>For each stage, each conv kind's own front: the best trade the full-budget trials that "
            "used that kind in that stage reached. The dotted line is the front of all kinds; where a kind's "
            "staircase touches it, that kind is the one to use at that budget. A kind used there only by trials "
            "stopped early (or failed) has no full-budget evidence yet.</p>",
            verdict_table_html(stage_verdicts),
            _figure_html(evidence_figure(df, objectives), "evidence-plot"),
        ]
        plot_evidence_png(df, objectives, folder / "evidence.png")
        _png_growth([("", growth, FRONT_COLOR)], folder / "hypervolume.png")
        files += [folder / "evidence.png", folder / "hypervolume.png"]
        parts += [
            "<h2 id='hypervolume'>Hypervolume per trained architecture</h2>",
            f"<p class='note'>After {len(growth)} distinct architectures trained: "
            f"{display.value('hypervolume', growth['hypervolume'].iloc[-1])} (objectives scaled to [0, 1], "
            "reference point 1.1). Repeats and infeasible proposals cost no training and are not counted.</p>",
            _figure_html(_growth_figure([("", growth, FRONT_COLOR)]), "hypervolume-plot"),
        ]
    if not usage.empty:
        _png_kinds(usage, folder / "kinds.png")
        files.append(folder / "kinds.png")
        stopped_note = (
            f" The {counts[STOPPED]} early-stopped trial{'' if counts[STOPPED] == 1 else 's'} are not counted: "
            "they are not in the pool the front is chosen from."
            if counts[STOPPED]
            else ""
        )
        parts += [
            "<h2>Conv kind per stage: Pareto front vs all full-budget trials</h2>",
            f"<p class='note'>For each stage, the share of the front's trials and of every trial trained for the "
            f"full budget that use each kind.{stopped_note}</p>",
            _figure_html(kinds_figure(usage), "kinds-plot"),
        ]
    if not shown_imp.empty:
        _png_importance(shown_imp, folder / "importance.png", trials=counts[COMPLETE])
        files.append(folder / "importance.png")
        parts += ["<h2>Parameter importance per objective (fANOVA)</h2>", _importance_note(imp, counts[COMPLETE])]
        parts.append(_figure_html(_importance_figure(shown_imp), "importance-plot"))
    header, rows = front_rows(df, front, knee_row)
    marked = next((i for i, r in enumerate(rows) if r[-1]), None)
    parts.append("<h2>Pareto-optimal trials</h2>" + _table(header, rows, marked=marked))
    parts.append("<h2>Trials not on the front</h2>" + _others_table(df, front, objectives))
    exported = exported_metrics(folder)
    if exported:
        header = ["trial", "weights", "epochs", "validation", "test", "dataset"]
        rows = [
            [
                str(number),
                str(m.get("weights", "")),
                str(m.get("epochs", "")),
                display.percent(m.get("val_accuracy")) if m.get("val_accuracy") is not None else "not measured",
                exported_test_text(m),
                str(m.get("dataset") or display.MISSING),
            ]
            for number, m in sorted(exported.items())
        ]
        parts.append(
            "<h2>Exported trials (metrics.json)</h2><p class='note'>Test accuracy is measured on the dataset's own "
            "test split, which the search never saw.</p>" + _table(header, rows)
        )
    parts.append(
        "<p class='note'>Files: trials.csv (every trial), pareto.csv (the front), PNG copies of every plot, "
        "and the study itself (study.db).</p>"
    )
    files.append(_write(folder / "report.html", _page(f"nasconv report: {study.study_name}", parts, _CLICK_TO_ARCH)))
    return Report(
        folder=folder,
        df=df,
        objectives=objectives,
        front=front,
        knee=knee_row,
        hypervolume=float(growth["hypervolume"].iloc[-1]) if not growth.empty else 0.0,
        growth=growth,
        verdicts=stage_verdicts,
        importance=imp,
        usage=usage,
        plotted=n_plotted,
        files=[*files, *[folder / n for n in ("pareto.png", "pareto.html", "trials.csv", "pareto.csv")]],
    )


def _breakdown(row: pd.Series, folder: str | Path) -> Breakdown:
    """The per-block params and MACs of a trial; a stored architecture that cannot be read is one line
    naming the results folder and the trial."""
    where = f"{folder}: trial {int(row['number'])}"
    return breakdown(Arch.from_json(row["arch"], where=where))


def _console() -> Any:
    """A rich console as wide as ``COLUMNS`` where set, else the terminal, else 80 columns (a pipe, a
    log): the tables are laid out to fit 80."""
    from rich.console import Console

    return Console()


def _table_style() -> dict[str, Any]:
    """Rich tables without vertical rules: two columns of a terminal per column boundary, not three."""
    from rich import box

    return {"box": box.SIMPLE_HEAD, "pad_edge": False, "title_justify": "left"}


def print_report(report: Report) -> None:
    """The terminal view: counts, the front (knee marked), hypervolume, which kind where, the files."""
    from rich.table import Table

    console = _console()
    df, front, objectives = report.df, report.front, report.objectives
    console.print(counts_sentence(df), highlight=False)
    header, rows = front_rows(df, front, report.knee)
    table = Table(
        title=f"Pareto front: {len(front)} trial{'' if len(front) == 1 else 's'}, "
        f"sorted by {display.label(sort_objective(objectives))}",
        **_table_style(),
    )
    for name in header:
        if name == "architecture":  # wraps between stages, never cut
            table.add_column(name, overflow="fold", min_width=12)
        else:
            table.add_column(name, justify="right" if name in _NUMERIC else "left", no_wrap=True)
    for row in rows:
        cells = [*row[:-2], row[-2].replace("·", " · "), row[-1]]
        table.add_row(*cells, style="bold" if row[-1] else None)
    console.print(table)
    if not report.growth.empty:
        console.print(
            f"hypervolume (scaled objectives, reference 1.1): {display.value('hypervolume', report.hypervolume)} "
            f"after {len(report.growth)} distinct architectures trained",
            highlight=False,
        )
    if report.verdicts:
        console.print("which convolution where (full-budget trials):", highlight=False)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column()
        for stage, verdict in verdict_parts(report.verdicts):
            for i, part in enumerate(verdict):
                grid.add_row(f"  {stage}" if i == 0 else "", part)
        console.print(grid, highlight=False)
    if report.knee is not None:
        number = int(report.knee["number"])
        console.print(f"knee: trial {number} ({report.knee['short']}); its blocks:", highlight=False)
        console.print(f"  nasconv report {report.folder} --trial {number}", highlight=False, soft_wrap=True)
    for path in report.files:
        if path.exists():
            console.print(f"  {path}", highlight=False, soft_wrap=True)


def print_trial(folder: str | Path, number: int) -> None:
    """``nasconv report DIR --trial N``: trial N's architecture block by block, with each block's
    params and MACs and its share of the network's."""
    from rich.table import Table

    folder = Path(folder)
    df = trials_frame(open_study(folder), folder)
    row = trial_row(df, number, str(folder))
    parts = _breakdown(row, folder)
    front = pareto(df)
    is_knee = not front.empty and int(knee(df)["number"]) == number
    on_front = number in set(front["number"])
    where = "the knee of the front" if is_knee else "on the front" if on_front else "not on the front"
    console = _console()
    console.print(
        f"trial {number} ({display.state_label(row['state'])}, {where}): {row['short']} · {trial_figures(row)}",
        highlight=False,
    )
    table = Table(
        title=describe(parts.arch),
        caption="params and MACs of each block, with its share of the network's",
        caption_justify="left",
        **_table_style(),
    )
    for name in TERMINAL_COLUMNS:
        if name == "conv":  # kind and options: wraps between options, never cut
            table.add_column(name, overflow="fold", min_width=14)
        else:
            table.add_column(name, justify="right" if name in _NUMERIC else "left", no_wrap=True)
    for cells in terminal_rows(parts):
        table.add_row(*cells, style="bold" if cells[0] == "total" else None)
    console.print(table)


# --- several folders --------------------------------------------------------------------------


def _labels(folders: Sequence[Path]) -> list[str]:
    names = [f.resolve().name for f in folders]
    if len(set(names)) == len(names):
        return names
    return [f"{f.resolve().parent.name}/{f.resolve().name}" for f in folders]


def default_compare_folder(folders: Sequence[Path]) -> Path:
    """``<parent of the first>/compare-<name1>-<name2>...`` (names shortened past a few)."""
    names = [f.resolve().name for f in folders]
    stem = "-vs-".join(names[:3]) + (f"-and-{len(names) - 3}-more" if len(names) > 3 else "")
    return folders[0].resolve().parent / f"compare-{stem}"


def compare_report(folders: Sequence[str | Path], out: str | Path | None = None) -> Comparison:
    """Overlay the fronts of several searches with the same objectives in one page, their
    hypervolumes on one scale (the union of their trials), written to ``out`` with its own
    plotly.min.js. The results folders are only read."""
    paths = [Path(f) for f in folders]
    if len({p.resolve() for p in paths}) != len(paths):
        raise NasconvError("report: the same results folder is given twice")
    loaded = []
    for path in paths:
        study = open_study(path)
        df = trials_frame(study, path)
        loaded.append((path, study, df))
    objectives = list(loaded[0][2].attrs["objectives"])
    for path, _, df in loaded[1:]:
        theirs = list(df.attrs["objectives"])
        if theirs != objectives:
            raise NasconvError(
                f"{path}: objectives {', '.join(theirs)} differ from {loaded[0][0]}'s {', '.join(objectives)}; "
                "only searches with the same objectives can be compared"
            )
    target = Path(out) if out is not None else default_compare_folder(paths)
    if target.resolve() in {p.resolve() for p in paths}:
        raise NasconvError(f"--out {target}: is one of the results folders; choose another folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NasconvError(f"--out {target}: cannot create the folder ({exc.strerror})") from None
    scale = normalisation(pd.concat([df for _, _, df in loaded]), objectives)
    searches = []
    for (path, study, df), label in zip(loaded, _labels(paths)):
        front = pareto(df, objectives)
        trained = trained_numbers(study)
        growth = hypervolume_growth(df, objectives, trained, scale)
        searches.append(
            SearchSummary(
                label=label,
                folder=path,
                df=df,
                front=front,
                knee=knee(df, objectives) if not front.empty else None,
                trained=len(trained),
                hypervolume=hypervolume(df, objectives, scale),
                growth=growth,
            )
        )
    colors = dict(zip([s.label for s in searches], SEARCH_COLORS * 4))
    plot_searches = [Search(s.label, s.df, colors[s.label]) for s in searches]
    n_plotted = sum(len(plotted(s.df, objectives)) for s in searches)
    title = " vs ".join(s.label for s in searches)
    files = [write_plotly_js(target)]
    files.append(plot_fronts_png(plot_searches, objectives, target / "fronts.png", title, single=False))
    curves = [(s.label, s.growth, colors[s.label]) for s in searches if not s.growth.empty]
    if curves:
        _png_growth(curves, target / "hypervolume.png")
        files.append(target / "hypervolume.png")
    rows = []
    for s in searches:
        counts = state_counts(s.df)
        k = s.knee
        rows.append(
            [
                s.label,
                str(s.folder),
                str(len(s.df)),
                str(counts[COMPLETE]),
                str(counts[STOPPED]),
                str(counts[REPEAT]),
                str(len(s.front)),
                display.value("hypervolume", s.hypervolume),
                f"trial {int(k['number'])}: {k['short']} · {trial_figures(k)}" if k is not None else display.MISSING,
            ]
        )
    header = ["search", "folder", "trials", "full budget", "stopped", "repeats", "front", "hypervolume", "knee"]
    parts = [
        f"<h1>nasconv comparison: {html.escape(title)}</h1>",
        f"<p id='counts'>{len(searches)} searches, objectives "
        + ", ".join(f"{display.label(o)} ({OBJECTIVES[o][:3]})" for o in objectives)
        + ". Hypervolumes share one scale (every search's trials together; reference point 1.1), so they compare "
        "directly. <i>full budget</i> counts the distinct architectures trained for the full budget (the pool "
        "each front is chosen from), <i>stopped</i> those stopped early; <i>repeats</i> were answered from the "
        "record. The hypervolume curves count every architecture trained, stopped ones included.</p>",
        _table(header, rows, css="t searches"),
        "<h2 id='front'>The fronts</h2>",
        f"<p class='note'>The plot shows <span id='plotted-count'>{n_plotted}</span> trials in all ("
        + "; ".join(f"{html.escape(s.label)}: {len(plotted(s.df, objectives))}" for s in searches)
        + f"); <span id='front-count'>{sum(len(s.front) for s in searches)}</span> are on their search's front. "
        "Each search has its own colour; circles are full-budget trials, triangles early-stopped ones, crosses "
        "infeasible ones; the star in a search's colour is its front's knee.</p>",
        _figure_html(front_figure(plot_searches, objectives, single=False), "front-plot"),
    ]
    if curves:
        parts += [
            "<h2 id='hypervolume'>Hypervolume per trained architecture</h2>",
            _figure_html(_growth_figure(curves), "hypervolume-plot"),
        ]
    parts.append("<h2>The knees</h2>")
    for s in searches:
        if s.knee is None:
            parts.append(f"<p>{html.escape(s.label)}: no full-budget trial, no knee.</p>")
            continue
        number = int(s.knee["number"])
        parts += [
            f"<h3>{html.escape(s.label)}: trial {number}</h3>",
            f"<div class='knee-arch'>{_arch_block(s.knee, _breakdown(s.knee, s.folder), is_knee=True)}</div>",
        ]
    files.append(_write(target / "report.html", _page(f"nasconv comparison: {title}", parts)))
    return Comparison(out=target, objectives=objectives, searches=searches, plotted=n_plotted, files=files)


def print_comparison(comparison: Comparison) -> None:
    from rich.table import Table

    console = _console()
    table = Table(
        title=f"{len(comparison.searches)} searches, hypervolume on one scale (reference 1.1)", **_table_style()
    )
    narrow = console.width < 76  # two-line headers, so that every number keeps its width
    for name in ("search", "trials", "full budget", "stopped", "repeats", "front", "hypervolume"):
        if name == "search":
            table.add_column(name, overflow="fold", min_width=8)
        else:
            header = {"full budget": "full\nbudget", "hypervolume": "hyper-\nvolume"}.get(name, name)
            table.add_column(header if narrow else name, justify="right", no_wrap=True)
    best = max(s.hypervolume for s in comparison.searches)
    for s in comparison.searches:
        counts = state_counts(s.df)
        table.add_row(
            s.label,
            str(len(s.df)),
            str(counts[COMPLETE]),
            str(counts[STOPPED]),
            str(counts[REPEAT]),
            str(len(s.front)),
            display.value("hypervolume", s.hypervolume),
            style="bold" if s.hypervolume == best and best > 0 else None,
        )
    console.print(table)
    console.print("the knees:", highlight=False)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column()
    for s in comparison.searches:
        k = s.knee
        grid.add_row(
            f"  {s.label}",
            f"trial {int(k['number'])}: {k['short']} · {trial_figures(k)}" if k is not None else "no full-budget trial",
        )
    console.print(grid, highlight=False)
    for path in comparison.files:
        console.print(f"  {path}", highlight=False, soft_wrap=True)


__all__ = [
    "Comparison",
    "Report",
    "build_report",
    "compare_report",
    "counts_sentence",
    "hypervolume",
    "hypervolume_growth",
    "hypervolume_history",
    "dominated_by",
    "exported_test_text",
    "important_genes",
    "kinds_figure",
    "not_on_front",
    "normalisation",
    "print_comparison",
    "print_report",
    "print_trial",
    "zero_genes",
]
