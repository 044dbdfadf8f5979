"""The report's parts: number formatting, the architecture breakdown and diagram, the evidence
view, the hypervolume per trained architecture, importance over live genes, comparisons and the
``report`` command's options and errors. Studies are built without Ray (tests/conftest.py)."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from nasconv.cli import main
from nasconv.model.arch import build_model, input_shape
from nasconv.model.cost import profile
from nasconv.results import display
from nasconv.results.architecture import architecture_svg, block_rows, breakdown, describe
from nasconv.results.evidence import evidence_figure, verdicts
from nasconv.results.folder import load_results
from nasconv.results.front import knee, pareto
from nasconv.results.plots import Search, front_figure, hover_text, plotted, staircase
from nasconv.results.report import (
    build_report,
    compare_report,
    hypervolume,
    hypervolume_growth,
    important_genes,
    live_genes,
    normalisation,
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
    assert display.kind_color("het") == display.kind_color("het") != display.kind_color("ghost")


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
    assert first.untried == ("standard", "cond")  # a stopped trial is no evidence


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
    labels = [a.text for a in fig.layout.annotations]
    assert labels.count(f"knee: trial {int(knee(df, objectives)['number'])}") == 3  # one per panel
    assert not any(t.meta and t.meta["role"] == "staircase" for t in fig.data)  # no staircase of a projection
    evidence = evidence_figure(df, objectives)
    assert len(evidence.layout.annotations) == 3 * 3  # 3 stages x 3 pairs, titled
    assert any(t.name == "ghost" for t in evidence.data)
    assert all("trial" in text for text in hover_text(df))


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
    assert "291872.0" not in page and "0.952646" not in page


def test_report_trial_prints_the_block_table(studies: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    df = load_results(studies[0])
    row = knee(df)
    assert main(["report", str(studies[0]), "--trial", str(int(row["number"]))]) == 0
    out = capsys.readouterr().out
    assert f"trial {int(row['number'])} (complete, the knee of the front)" in out
    for text in ("stem", "s0.b0", "head", "total", display.count(row["params"]), display.count(row["macs"])):
        assert text in out


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
