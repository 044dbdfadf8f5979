"""The report's parts: number formatting, the architecture breakdown and diagram, the evidence
view, the hypervolume per trained architecture, importance over live genes, comparisons and the
``report`` command's options and errors. Studies are built without Ray (tests/conftest.py)."""

from __future__ import annotations

import json
import math
import os
import random
import re
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from nasconv.cli import main
from nasconv.files import atomic_write
from nasconv.model.arch import StageArch, build_model, input_shape
from nasconv.model.cost import profile
from nasconv.results import display
from nasconv.results.architecture import (
    TABLE_COLUMNS,
    TERMINAL_COLUMNS,
    architecture_svg,
    block_rows,
    breakdown,
    describe,
    options_text,
    terminal_rows,
)
from nasconv.results.evidence import evidence_figure, verdict_lines, verdicts
from nasconv.results.folder import load_results
from nasconv.results.front import knee, pareto
from nasconv.results.plots import (
    Search,
    axis_view,
    draw_fronts,
    front_figure,
    hover_text,
    label_spots,
    over_limits,
    plotted,
    staircase,
)
from nasconv.results.report import (
    FULL_BUDGET,
    build_report,
    compare_report,
    exported_test_text,
    front_rows,
    hypervolume,
    hypervolume_growth,
    important_genes,
    kind_usage,
    kinds_figure,
    live_genes,
    normalisation,
    not_on_front,
    zero_genes,
)
from nasconv.search.space import load_space, parse_space

from .conftest import SPACES, search_in_process, tiny_space_dict


def test_counts_and_accuracy_read_the_same_everywhere() -> None:
    assert display.count(291872.0) == "292k"
    assert display.count(1_200_000) == "1.2M"
    assert display.count(1_234_567) == "1.23M"
    assert display.count(999_950) == "1M"
    assert display.count(950) == "950"
    assert display.count(4.0e9) == "4G"
    assert display.count(None) == display.count(float("nan")) == display.MISSING
    assert display.percent(0.952646) == "95.3%"
    assert display.share(0.262) == "26%" and display.share(0.001) == "<1%" and display.share(0.0) == "0%"
    assert display.milliseconds(1.2345) == "1.23 ms"
    assert display.value("accuracy", 0.5) == "50.0%" and display.value("macs", 291872) == "292k"
    assert display.tick_format("macs") == display.COUNT_TICKS and display.tick_format("accuracy")
    assert display.kind_color("het") != display.kind_color("ghost")


def test_log_axes_get_sparse_readable_ticks() -> None:
    # issue: plotly labelled every minor tick of a log params axis (100k 90k 80k ... colliding)
    for low, high in [(2_700, 120_000), (140_000, 4e6), (3_000, 60_000), (100, 1_000), (1e3, 1e9), (250, 700)]:
        ticks = display.log_ticks(low, high)
        assert 2 <= len(ticks) <= 7, (low, high, ticks)
        span = math.log10(high / low)
        assert min(math.log10(b / a) for a, b in zip(ticks, ticks[1:])) >= 0.15 * span, ticks
        assert all(low <= t <= high for t in ticks)
    view = axis_view("params", pd.Series([2_700.0, 6_000.0, 41_000.0, 120_000.0]))
    settings = view.plotly()
    assert settings["type"] == "log" and 2 <= len(settings["tickvals"]) <= 7
    assert settings["ticktext"] == [display.count(v) for v in settings["tickvals"]]
    assert all(re.fullmatch(r"\d+(\.\d+)?[kM]?", t) for t in settings["ticktext"])


def test_header_text_contrasts_with_its_colour() -> None:
    # issue: white text on the yellow cond header
    assert display.contrast_text("#edc948") == "#222" and display.contrast_text("#4e79a7") == "#fff"
    assert display.contrast_text("#ffffff") == "#222" and display.contrast_text("#000000") == "#fff"


def _archs(count: int, seed: int = 0) -> list:
    space = load_space(SPACES / "digits.yaml")
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(count)]


def test_breakdown_adds_up_to_the_profile_and_draws_every_stage() -> None:
    for arch in _archs(4):
        prof = profile(build_model(arch), input_shape(arch))
        parts = breakdown(arch)
        assert (parts.params, parts.macs) == (prof.params, prof.macs)
        assert sum(b.params for b in parts.blocks) == prof.params
        assert sum(b.macs for b in parts.blocks) == prof.macs
        assert sum(b.macs_share for b in parts.blocks) == pytest.approx(1.0)
        assert len(parts.blocks) == 2 + sum(s.depth for s in arch.stages)
        assert [b.name for b in parts.blocks][:2] == ["stem", "s0.b0"] and parts.blocks[-1].name == "head"
        first = parts.stage_blocks(1)[0]
        assert first.stride == arch.stages[1].stride and first.se == arch.stages[1].se
        rows = block_rows(parts)
        assert rows[-1][0] == "total" and rows[-1][7] == display.count(prof.params)
        svg = architecture_svg(parts, trial=7)
        root = ET.fromstring(svg)  # well-formed, standalone SVG
        blocks = root.findall(".//{http://www.w3.org/2000/svg}g[@class='block stage']")
        assert len(blocks) == len(arch.stages) and root.get("data-trial") == "7"
        for stage in arch.stages:
            assert f"· {stage.kind}" in svg
        assert "id=" not in svg  # many diagrams share a page
        assert describe(arch.to_json()).startswith(f"stem {arch.stem_channels} → ")
        for block in blocks:  # the header text reads on its colour
            header = block.find("{http://www.w3.org/2000/svg}path").get("fill")
            title = block.find("{http://www.w3.org/2000/svg}text")
            assert title.get("fill") == display.contrast_text(header)
        assert "True" not in svg and "False" not in svg


def test_flags_read_as_people_write_them() -> None:
    # issue: "depthwise False", "shuffle True" in the diagram and the --trial table
    cond = StageArch(kind="cond", channels=16, options=(("experts", 4), ("depthwise", False)))
    group = StageArch(kind="group", channels=16, options=(("groups", 4), ("shuffle", True)))
    assert options_text(cond) == "3×3, experts 4"
    assert options_text(group) == "3×3, groups 4, shuffle"
    assert options_text(StageArch(kind="cond", channels=16, options=(("depthwise", True),))).startswith(
        "3×3, depthwise"
    )


def test_block_tables_have_named_columns_and_fit_a_terminal() -> None:
    assert len(set(TABLE_COLUMNS)) == len(TABLE_COLUMNS) and all(c == c.strip() and c for c in TABLE_COLUMNS)
    assert all(c == c.strip() and c for c in TERMINAL_COLUMNS)
    parts = breakdown(_archs(1, seed=5)[0])
    for row in terminal_rows(parts):
        assert len(row) == len(TERMINAL_COLUMNS)
        assert all(len(cell) <= 11 for cell in (row[0], row[2], row[3], row[4])), row  # only conv wraps


def _frame(rows: list[tuple[int, str, float, float, str]], objectives: list[str]) -> pd.DataFrame:
    archs = _archs(len(rows), seed=3)
    data = []
    for (number, state, accuracy, macs, kind), arch in zip(rows, archs):
        stages = [{**s, "kind": kind} for s in json.loads(arch.to_json())["stages"]]
        data.append(
            {
                "number": number,
                "state": state,
                "accuracy": accuracy,
                "macs": macs,
                "params": macs / 10,
                "short": kind,
                "arch": json.dumps({**json.loads(arch.to_json()), "stages": stages}),
                "repeat_of": pd.NA,
                "reason": None,
                "epochs": 1,
            }
        )
    df = pd.DataFrame(data)
    df.attrs["objectives"] = objectives
    return df


def test_hypervolume_grows_per_trained_architecture_not_per_proposal() -> None:
    df = _frame(
        [
            (0, "COMPLETE", 0.5, 100.0, "dsc"),
            (1, "REPEAT", 0.5, 100.0, "dsc"),
            (2, "INFEASIBLE", 0.0, 900.0, "standard"),
            (3, "COMPLETE", 0.8, 300.0, "het"),
            (4, "FAIL", np.nan, 200.0, "ghost"),
            (5, "STOPPED", 0.9, 50.0, "ghost"),
            (6, "COMPLETE", 0.9, 200.0, "ghost"),
        ],
        ["accuracy", "macs"],
    )
    growth = hypervolume_growth(df, ["accuracy", "macs"], trained={0, 3, 4, 5, 6})
    assert list(growth["trained"]) == [1, 2, 3, 4, 5]
    assert list(growth["trial"]) == [0, 3, 4, 5, 6]
    assert list(growth["hypervolume"]) == sorted(growth["hypervolume"])
    assert growth["hypervolume"].iloc[-1] == pytest.approx(hypervolume(df, ["accuracy", "macs"]))
    # the stopped trial (better on both) never joins the front
    assert growth["hypervolume"].iloc[3] == growth["hypervolume"].iloc[2]
    assert set(pareto(df)["number"]) == {0, 6}
    low, high = normalisation(df, ["accuracy", "macs"])
    assert list(low) == [-1.0, 100.0] and list(high) == [0.0, 300.0]


def test_verdicts_say_which_kinds_reach_the_front() -> None:
    df = _frame(
        [
            (0, "COMPLETE", 0.5, 100.0, "dsc"),
            (1, "COMPLETE", 0.9, 300.0, "ghost"),
            (2, "COMPLETE", 0.4, 400.0, "het"),
            (3, "STOPPED", 0.99, 10.0, "cond"),
            (4, "COMPLETE", 0.45, 120.0, "dsc"),
        ],
        ["accuracy", "macs"],
    )
    allowed = [["standard", "dsc", "het", "ghost", "cond"]] * 3
    found = verdicts(df, ["accuracy", "macs"], allowed)
    assert len(found) == 3
    first = found[0]
    assert first.on_front == {"dsc": 1, "ghost": 1}
    assert first.trained == {"dsc": 2, "het": 1, "ghost": 1}
    assert first.dominated == ("het",)
    # a stopped trial is no evidence, but its kind was trained there, if not to the end
    assert first.stopped_only == {"cond": 1} and first.untried == ("standard",)
    assert "only stopped early: cond (1)" in verdict_lines(found)[0]
    assert (
        "not trained: standard" in verdict_lines(found)[0]
        and "cond" not in verdict_lines(found)[0].split("not trained:")[1]
    )


def test_front_and_evidence_figures_with_three_objectives() -> None:
    rng = np.random.default_rng(0)
    rows = [
        (i, "COMPLETE" if i % 5 else "INFEASIBLE", float(rng.uniform(0.3, 0.9)), float(rng.uniform(1e4, 1e6)), kind)
        for i, kind in enumerate(["dsc", "ghost", "het", "standard"] * 4)
    ]
    df = _frame(rows, ["accuracy", "macs", "params"])
    df["params"] = rng.uniform(100, 5000, len(df))
    objectives = ["accuracy", "macs", "params"]
    fig = front_figure([Search("", df, "#000")], objectives)
    points = [t for t in fig.data if t.meta and t.meta["role"] in ("trials", "front") and t.xaxis == "x"]
    assert sum(len(t.x) for t in points) == len(plotted(df, objectives)) == len(df)
    front = pareto(df, objectives)
    assert sum(len(t.x) for t in points if t.meta["role"] == "front") == len(front)
    the_knee = knee(df, objectives)
    knees = [a for a in fig.layout.annotations if a.name == "knee"]
    assert [a.text for a in knees] == [f"knee: trial {int(the_knee['number'])}"] * 3  # one per panel
    columns = {"MACs": "macs", "params": "params", "accuracy": "accuracy"}
    logs = 0
    for a in knees:  # at the knee, in plotly's axis coordinates: log10 of the value on a log axis
        for ref in (a.xref, a.yref):
            axis = fig.layout[ref.replace("x", "xaxis") if ref[0] == "x" else ref.replace("y", "yaxis")]
            value = float(the_knee[columns[axis.title.text]])
            position = a.x if ref[0] == "x" else a.y
            logs += axis.type == "log"
            assert position == pytest.approx(math.log10(value) if axis.type == "log" else value), (ref, position)
            assert min(axis.range) <= position <= max(axis.range)
    assert logs >= 2  # MACs and params both span more than 20x here: the log case is exercised
    assert not any(t.meta and t.meta["role"] == "staircase" for t in fig.data)  # no staircase of a projection
    evidence = evidence_figure(df, objectives)
    assert len(evidence.layout.annotations) == 3 * 3  # 3 stages x 3 pairs, titled
    assert any(t.name == "ghost" for t in evidence.data)
    # the knee star is hollow: a kind whose only point is the knee stays visible inside it
    assert {t.marker.symbol for t in evidence.data if t.name == "knee"} == {"star-open"}
    texts = hover_text(df[df["state"] == "COMPLETE"])
    assert all(re.search(r"accuracy \d+\.\d%", t) and re.search(r"MACs \d+(\.\d+)?[kM]", t) for t in texts)


def _png_axes(searches: list[Search], objectives: list[str]) -> tuple:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16.5, 4.3), squeeze=False)
    draw_fronts(fig, axes, searches, objectives, single=len(searches) == 1)
    fig.canvas.draw()
    return fig, axes


def _overlapping(boxes: list) -> list:
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]


def test_png_log_axes_label_major_ticks_only_like_the_pages() -> None:
    # issue: "2×10⁵3×10⁵…" minor tick labels overlapping on every PNG with a log axis
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    rows = [(i, "COMPLETE", float(rng.uniform(0.8, 0.99)), float(rng.uniform(1.4e5, 4e6)), "dsc") for i in range(12)]
    df = _frame(rows, ["accuracy", "macs", "params"])
    df["params"] = rng.uniform(2_700, 120_000, len(df))
    fig, axes = _png_axes([Search("", df, "#000")], ["accuracy", "macs", "params"])
    try:
        for ax in axes.flat:
            for axis in (ax.xaxis, ax.yaxis):
                minor = [t.get_text() for t in axis.get_ticklabels(minor=True)]
                assert not any(minor), minor
                labels = [t for t in axis.get_ticklabels() if t.get_text()]
                assert labels, ax.get_title()
                assert all(re.fullmatch(r"\d+(\.\d+)?[kM%]?", t.get_text()) for t in labels), [
                    t.get_text() for t in labels
                ]
                assert not _overlapping([t.get_window_extent() for t in labels])
    finally:
        plt.close(fig)


def test_comparison_knees_in_their_colours_with_labels_apart() -> None:
    # issue: knee labels of several searches drawn over each other, every star the same grey
    frames = []
    for shift, seed in ((0.0, 1), (0.004, 2), (0.008, 3)):
        rng = np.random.default_rng(seed)
        rows = [
            (i, "COMPLETE", float(rng.uniform(0.9, 0.98) + shift), float(rng.uniform(1.5e5, 3e6)), "dsc")
            for i in range(10)
        ]
        frames.append(_frame(rows, ["accuracy", "macs"]))
    searches = [Search(f"s{i}", df, c) for i, (df, c) in enumerate(zip(frames, ("#1f77b4", "#d62728", "#2ca02c")))]
    fig = front_figure(searches, ["accuracy", "macs"], single=False)
    for s in searches:
        (trace,) = [t for t in fig.data if t.meta and t.meta["role"] == "front" and t.meta["search"] == s.label]
        star = list(trace.marker.symbol).index("star")
        assert trace.marker.color[star] == s.color
    knees = [a for a in fig.layout.annotations if a.name == "knee"]
    assert len(knees) == 3
    rows_at = sorted(a.ay for a in knees)  # each label on its own row of the panel
    yaxis = fig.layout.yaxis
    height = max(yaxis.range) - min(yaxis.range)
    assert all(b - a >= 0.1 * height for a, b in zip(rows_at, rows_at[1:])), rows_at
    import matplotlib.pyplot as plt

    png, axes = _png_axes(searches, ["accuracy", "macs"])
    try:
        labels = [t for t in axes[0][0].texts if t.get_text().startswith("knee")]
        assert len(labels) == 3 and not _overlapping([t.get_bbox_patch().get_window_extent() for t in labels])
    finally:
        plt.close(png)


def test_label_spots_never_share_a_row() -> None:
    for points in ([(0.2, 0.9), (0.22, 0.9), (0.25, 0.88)], [(0.5, 0.1), (0.55, 0.12)], [(0.9, 0.5)] * 5):
        for below in (True, False):
            spots = label_spots(points, below=below)
            ys = sorted(y for _, y, _ in spots)
            assert all(b - a >= 0.1 for a, b in zip(ys, ys[1:])), (points, spots)
            assert all(0 <= y <= 1 and 0 <= x <= 1 for x, y, _ in spots)


def test_stopped_trials_do_not_stretch_the_accuracy_axis_and_limits_are_drawn() -> None:
    rows = [(i, "COMPLETE", 0.9 + 0.008 * i, 1e5 * (i + 1), "dsc") for i in range(6)]
    rows += [(6, "STOPPED", 0.12, 2e5, "ghost"), (7, "INFEASIBLE", 0.0, 9e5, "het")]
    df = _frame(rows, ["accuracy", "macs"])
    df.loc[df["number"] == 7, "reason"] = "max_macs"
    df.attrs["constraints"] = {"macs": 7e5}
    fig = front_figure([Search("", df, "#000")], ["accuracy", "macs"])
    low, high = fig.layout.yaxis.range
    assert 0.85 < low < 0.9 and 0.94 < high <= 1.0  # the full-budget range with a margin, not 12%
    (stopped,) = [t for t in fig.data if t.meta and t.meta.get("state") == "stopped"]
    (infeasible,) = [t for t in fig.data if t.meta and t.meta.get("state") == "infeasible"]
    assert low < stopped.y[0] < 0.9 and stopped.y[0] == infeasible.y[0]  # both in the band at the foot
    assert "off scale" in stopped.name and "off scale" in fig.layout.yaxis.ticktext
    assert "accuracy 12.0%" in stopped.text[0]  # the hover still tells the measured value
    assert "never trained: over max_macs 700k: 900k" in infeasible.text[0]
    limit = [s for s in fig.layout.shapes if s.name == "limit"]
    assert [(s.x0, s.x1) for s in limit] == [(7e5, 7e5)]
    assert "max_macs 700k" in [a.text for a in fig.layout.annotations if a.name == "limit"]
    row = df[df["number"] == 7].iloc[0]
    assert over_limits(row, {"macs": 7e5}) == "over max_macs 700k: 900k" and over_limits(row) == "over max_macs"


def test_trials_not_on_the_front_are_all_listed_with_why() -> None:
    # issue: dominated full-budget trials appeared in no table ("Trials not on the front: none")
    df = _frame(
        [
            (0, "COMPLETE", 0.5, 100.0, "dsc"),
            (1, "COMPLETE", 0.9, 300.0, "ghost"),
            (2, "COMPLETE", 0.4, 400.0, "het"),
            (3, "STOPPED", 0.3, 50.0, "cond"),
            (4, "INFEASIBLE", 0.0, 900.0, "standard"),
        ],
        ["accuracy", "macs"],
    )
    df.loc[df["number"] == 4, "reason"] = "max_macs"
    df.attrs["constraints"] = {"macs": 500.0}
    rows = not_on_front(df, pareto(df), ["accuracy", "macs"])
    assert [r[0] for r in rows] == ["2", "3", "4"]
    assert rows[0][1] == "dominated" and "dominated by trial 0" in rows[0][4]
    assert rows[1][1] == "stopped early" and rows[2][4] == "never trained: over max_macs 500: 900"
    header, front = front_rows(df, pareto(df), knee(df))
    assert all(header) and header[-1] == "knee" and "state" not in header
    assert sum(r[-1] == "◀ knee" for r in front) == 1


def test_kinds_chart_names_what_it_counts() -> None:
    # issue: hover "share=0.625", "kind=%{x}"; "all trained" silently left out stopped trials
    df = _frame(
        [(0, "COMPLETE", 0.5, 100.0, "dsc"), (1, "COMPLETE", 0.9, 300.0, "ghost"), (2, "STOPPED", 0.4, 90.0, "het")],
        ["accuracy", "macs"],
    )
    usage = kind_usage(df, pareto(df))
    assert set(usage["group"]) == {"Pareto front", FULL_BUDGET} and "het" not in set(usage["kind"])
    fig = kinds_figure(usage)
    for trace in fig.data:
        assert "%{x}" in trace.hovertemplate and "%{y:.0%}" in trace.hovertemplate
        assert "share=" not in trace.hovertemplate and "kind=" not in trace.hovertemplate
        assert trace.name in trace.hovertemplate and "of %{customdata[1]} trials" in trace.hovertemplate


def test_exported_test_accuracy_says_why_it_is_missing() -> None:
    # issue: "no test split" for untrained exports and kept weights not measured
    assert exported_test_text({"test_accuracy": 0.91, "weights": "retrained 2 epochs", "dataset": "digits"}) == "91.0%"
    assert exported_test_text({"test_accuracy": None, "weights": "untrained", "dataset": None}) == "not measured"
    kept = {"test_accuracy": None, "weights": "kept from search trial 3 (2 epochs)"}
    assert exported_test_text({**kept, "dataset": None}) == "not measured"
    assert exported_test_text({**kept, "dataset": "synthetic"}) == "no test split in synthetic"
    assert exported_test_text({"test_accuracy": None, "weights": "retrained 2 epochs", "dataset": "cifar"}).startswith(
        "no test split"
    )


def test_atomic_write_gives_the_permissions_of_a_new_file(tmp_path: Path) -> None:
    # issue: report.html, plotly.min.js and the CSVs were written 0600 (mkstemp's mode)
    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "a.txt") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


def test_staircase_holds_each_accuracy_until_the_next_cost() -> None:
    front = pd.DataFrame({"macs": [300.0, 100.0, 200.0], "accuracy": [0.9, 0.5, 0.7]})
    assert staircase(front, "macs", "accuracy") == ([100.0, 200.0, 300.0], [0.5, 0.7, 0.9])


def test_importance_pins_the_options_of_unused_kinds() -> None:
    dist = optuna.distributions.CategoricalDistribution
    trial = optuna.trial.create_trial(
        params={"s0.kind": "dsc", "s0.het.p": 4, "s0.dsc.kernel": 5, "s0.channels": 16},
        distributions={
            "s0.kind": dist(["het", "dsc"]),
            "s0.het.p": dist([2, 4]),
            "s0.dsc.kernel": dist([3, 5]),
            "s0.channels": dist([8, 16]),
        },
        values=[0.5, 10.0],
    )
    live = live_genes(trial)
    assert live.params == {"s0.kind": "dsc", "s0.het.p": 2, "s0.dsc.kernel": 5, "s0.channels": 16}
    # a trial of the conditional encoding lacks the options of kinds it did not draw: they are added, pinned
    drawn = optuna.trial.create_trial(
        params={"s0.kind": "dsc", "s0.dsc.kernel": 5},
        distributions={"s0.kind": dist(["het", "dsc"]), "s0.dsc.kernel": dist([3, 5])},
        values=[0.5, 10.0],
    )
    genes = [("s0.kind", ["het", "dsc"]), ("s0.het.p", [2, 4]), ("s0.dsc.kernel", [3, 5])]
    assert live_genes(drawn, genes).params == {"s0.kind": "dsc", "s0.het.p": 2, "s0.dsc.kernel": 5}
    imp = pd.DataFrame(
        {
            "objective": ["accuracy"] * 5,
            "gene": ["s0.kind", "s1.het.p", "stem.channels", "s0.se", "s2.cond.experts"],
            "importance": [0.6, 0.3, 0.095, 0.004, 0.001],
        }
    )
    shown = important_genes(imp)
    assert list(shown["gene"]) == ["stage 0 kind", "stage 1 het p", "stem channels", "2 other genes"]
    assert shown["importance"].sum() == pytest.approx(1.0)
    # genes of no importance at all (options of kinds never used) are dropped, not counted as "others"
    dead = pd.DataFrame(
        {"objective": ["accuracy"] * 4, "gene": [f"s0.opt{i}" for i in range(4)], "importance": [0.0] * 4}
    )
    shown = important_genes(pd.concat([imp, dead]))
    assert list(shown["gene"]) == ["stage 0 kind", "stage 1 het p", "stem channels", "2 other genes"]
    assert zero_genes(pd.concat([imp, dead])) == {"accuracy": 4}


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small searches of one space (random and TPE), one with infeasible trials."""
    folders = []
    for sampler in ("random", "tpe"):
        folder = tmp_path_factory.mktemp(f"search-{sampler}")
        space = parse_space(tiny_space_dict(constraints={"max_params": 600}), source="tiny.yaml")
        search_in_process(space, folder, trials=6, sampler=sampler, seed=1)
        folders.append(folder)
    return folders[0], folders[1]


def test_report_pages_share_one_plotly_js(studies: tuple[Path, Path]) -> None:
    folder = studies[0]
    report = build_report(folder)
    assert report.knee is not None and report.plotted == len(plotted(report.df, report.objectives))
    assert len(report.growth) == int(report.df["state"].isin(["COMPLETE", "STOPPED", "FAIL"]).sum())
    js = (folder / "plotly.min.js").stat().st_size
    assert js > 1_000_000
    for page in ("report.html", "pareto.html"):
        text = (folder / page).read_text()
        assert 'src="plotly.min.js"' in text or "src='plotly.min.js'" in text, page
        assert len(text) < js / 4, page  # the bundle is not embedded
    page = (folder / "report.html").read_text()
    assert f"id='arch-{int(report.knee['number'])}'" in page and '<svg class="arch"' in page
    visible = re.sub(r"<script.*?</script>|<[^>]+>", " ", page, flags=re.S)
    assert not re.search(r"\b\d+\.\d{5,}\b|\b\d{3,}\.0\b", visible), "raw floats in the tables"
    assert "id='importance-caveat'" in page  # 6 trials: importance is noise-level, and the page says so
    for name in ("report.html", "plotly.min.js", "trials.csv", "pareto.csv", "pareto.html"):
        mode = stat.S_IMODE((folder / name).stat().st_mode)
        assert mode == 0o666 & ~_umask(), (name, oct(mode))
    with open(folder / "trials.csv") as f:  # counts are integers
        header = f.readline().strip().split(",")
        macs = [line.split(",")[header.index("macs")] for line in f]
    assert macs and all(re.fullmatch(r"\d+", m) for m in macs if m), macs[:3]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_report_trial_prints_the_block_table(studies: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    df = load_results(studies[0])
    row = knee(df)
    assert main(["report", str(studies[0]), "--trial", str(int(row["number"]))]) == 0
    out = capsys.readouterr().out
    assert f"trial {int(row['number'])} (complete, the knee of the front)" in out
    for text in ("stem", "s0.b0", "head", "total", display.count(row["params"]), display.count(row["macs"])):
        assert text in out
    assert "True" not in out and "False" not in out


@pytest.mark.parametrize("columns", [80, 60])
def test_terminal_tables_fit_columns_without_cutting(
    studies: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    # issue: `blo…` and cut architectures at 80 columns; a pipe was always 160 wide, COLUMNS ignored
    monkeypatch.setenv("COLUMNS", str(columns))
    number = int(knee(load_results(studies[0]))["number"])
    commands = [
        ["report", str(studies[0])],
        ["report", str(studies[0]), "--trial", str(number)],
        ["report", *map(str, studies), "--out", str(studies[0].parent / f"cmp-{columns}")],
    ]
    for argv in commands:
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "…" not in out, out
        lines = [line for line in out.splitlines() if not line.startswith("  /") and "nasconv report" not in line]
        assert max(map(len, lines)) <= columns, max(lines, key=len)
    assert main(["report", str(studies[0])]) == 0
    assert "◀ knee" in capsys.readouterr().out


def test_compare_overlays_fronts_on_one_scale(studies: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    comparison = compare_report(list(studies), out)
    assert [s.label for s in comparison.searches] == [studies[0].name, studies[1].name]
    union = pd.concat([s.df for s in comparison.searches])
    scale = normalisation(union, comparison.objectives)
    for s in comparison.searches:
        assert s.hypervolume == pytest.approx(hypervolume(s.df, comparison.objectives, scale))
    assert comparison.plotted == sum(len(plotted(s.df, comparison.objectives)) for s in comparison.searches)
    page = (out / "report.html").read_text()
    assert (out / "plotly.min.js").is_file() and (out / "fronts.png").is_file()
    assert page.count('<svg class="arch"') == len(studies)
    # trained splits into full budget and stopped early (a stopped trial is no full-budget trial)
    header = re.search(r"<table class='t searches'><thead><tr>(.*?)</tr>", page).group(1)
    assert re.findall(r">([^<]+)</th>", header)[:5] == ["search", "folder", "trials", "full budget", "stopped"]
    assert not (studies[0] / "compare").exists()  # the results folders are only read


def test_report_errors_are_one_line(
    studies: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    space = parse_space(tiny_space_dict(name="other", objectives=["accuracy", "params"]), source="o.yaml")
    search_in_process(space, other, trials=1, sampler="random", seed=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["report", str(tmp_path / "missing")], "no such results folder"),
        (["report", str(empty)], "no study here"),
        (["report", str(studies[0]), str(other)], "differ from"),
        (["report", str(studies[0]), str(studies[0])], "given twice"),
        (["report", str(studies[0]), str(studies[1]), "--trial", "1"], "give a single DIR"),
        (["report", str(studies[0]), "--out", str(tmp_path / "x")], "--out"),
        (["report", str(studies[0]), "--trial", "999"], "no trial 999"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
