"""Report and export on a real (small) study, built once per module without Ray: the same
searcher bookkeeping is exercised by tests/test_search.py; here the study is filled through the
public trial evaluation so report/export see exactly what a search stores."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

from nasconv.model.arch import Arch, build_model, load_arch
from nasconv.ops import CONV_KINDS, op_class
from nasconv.results.export import Rule, pick_trial, standalone_source
from nasconv.results.folder import load_results, write_results
from nasconv.results.front import knee, pareto
from nasconv.results.report import hypervolume
from nasconv.search.multi_objective import hypervolume as exact_hypervolume
from nasconv.search.space import parse_space

from .conftest import search_in_process, tiny_space_dict

NASCONV = [sys.executable, "-m", "nasconv.cli"]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study of 10 trained trials, some infeasible and one failed, stored by the real searcher."""
    folder = tmp_path_factory.mktemp("results")
    space = parse_space(tiny_space_dict(constraints={"max_params": 600}), source="tiny.yaml")
    study = search_in_process(space, folder, trials=10, sampler="random", seed=0)
    assert (load_results(folder)["state"] == "INFEASIBLE").sum() >= 2
    failed = study.ask()
    space.suggest(failed)
    failed.set_user_attr("reason", "loss became nan at epoch 1 step 3")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    write_results(study, folder)
    return folder


def test_pareto_and_knee_follow_the_definitions(results: Path) -> None:
    df = load_results(results)
    front = pareto(df)
    done = df[df["state"] == "COMPLETE"]
    numbers = set(front["number"])
    for _, row in done.iterrows():
        dominated = (
            (done["accuracy"] >= row["accuracy"])
            & (done["macs"] <= row["macs"])
            & ((done["accuracy"] > row["accuracy"]) | (done["macs"] < row["macs"]))
        ).any()
        same = ((front["accuracy"] == row["accuracy"]) & (front["macs"] == row["macs"])).any()
        if dominated:
            assert row["number"] not in numbers
        else:
            assert row["number"] in numbers or same
    assert knee(df)["number"] in set(front["number"])
    assert set(front["state"]) == {"COMPLETE"}
    assert list(front["macs"]) == sorted(front["macs"])


def test_hypervolume_exact_on_known_fronts() -> None:
    assert exact_hypervolume(np.array([[0.0, 0.0]]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    assert exact_hypervolume(np.array([[0.0, 0.5], [0.5, 0.0]]), np.array([1.0, 1.0])) == pytest.approx(0.75)
    assert exact_hypervolume(np.array([[0.5, 0.5, 0.5]]), np.array([1.0, 1.0, 1.0])) == pytest.approx(0.125)
    df = pd.DataFrame({"number": [0, 1], "state": ["COMPLETE"] * 2, "accuracy": [0.5, 0.9], "macs": [10.0, 20.0]})
    assert hypervolume(df, ["accuracy", "macs"]) > hypervolume(df.iloc[:1], ["accuracy", "macs"])


def test_report_command_writes_every_view(results: Path) -> None:
    def snapshot() -> list:
        study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{results / 'study.db'}")
        return [(t.number, t.state, t.values, t.params, t.user_attrs, t.system_attrs) for t in study.trials]

    before = snapshot()
    run = subprocess.run([*NASCONV, "report", str(results)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    df = load_results(results)
    infeasible = (df["state"] == "INFEASIBLE").sum()
    said = " ".join(run.stdout.split())  # as read, whatever the width the lines were wrapped at
    assert "◀ knee" in said and f"{infeasible} infeasible, 1 failed" in said
    text_lines = [line for line in run.stdout.splitlines() if str(results) not in line]  # paths stay whole
    assert max(map(len, text_lines)) <= 80  # a pipe: 80 columns
    for name in (
        "report.html",
        "pareto.png",
        "pareto.html",
        "hypervolume.png",
        "evidence.png",
        "kinds.png",
        "importance.png",
        "trials.csv",
        "pareto.csv",
        "plotly.min.js",
    ):
        assert (results / name).stat().st_size > 0, name
    page = (results / "report.html").read_text()
    for text in (
        "Hypervolume per trained architecture",
        "Which convolution where",
        "The knee: trial",
        '<svg class="arch"',
        "Conv kind per stage",
        "Parameter importance",
        "infeasible",
        "loss became nan",
    ):
        assert text in page
    assert snapshot() == before  # read-only on the record


def test_pick_trial_by_number_knee_and_rule(results: Path) -> None:
    df = load_results(results)
    done = df[df["state"] == "COMPLETE"]
    limit = float(done["macs"].median())
    row = pick_trial(df, rule=Rule(max_macs=limit))
    assert row["macs"] <= limit
    assert row["accuracy"] == done[done["macs"] <= limit]["accuracy"].max()
    assert pick_trial(df, use_knee=True)["number"] == knee(df)["number"]
    assert pick_trial(df, trial=int(done["number"].iloc[0]))["number"] == done["number"].iloc[0]
    with pytest.raises(Exception, match="no trained trial meets the rule; nearest: trial"):
        pick_trial(df, rule=Rule(min_accuracy=1.5))


def test_export_writes_and_verifies_every_format(results: Path, tmp_path: Path) -> None:
    to = tmp_path / "exp"
    run = subprocess.run(
        [*NASCONV, "export", str(results), "--knee", "--epochs", "1", "--to", str(to)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "validation accuracy" in run.stdout
    assert run.stdout.count(" ok") == 5
    arch = load_arch(to / "arch.yaml")
    model = build_model(arch).eval()
    model.load_state_dict(torch.load(to / "model.pt", weights_only=True))
    x = torch.randn(3, arch.input_channels, arch.input_size, arch.input_size)
    import onnxruntime as ort

    onnx_out = ort.InferenceSession(str(to / "model.onnx")).run(None, {"input": x.numpy()})[0]
    with torch.inference_mode():
        ref = model(x)
        torch.testing.assert_close(torch.from_numpy(onnx_out), ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(torch.jit.load(str(to / "model.ts"))(x), ref, atol=1e-4, rtol=1e-4)
    # model.py runs with torch alone, in a fresh interpreter that cannot import nasconv
    check = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import sys; sys.modules['nasconv'] = None; "
            f"sys.path.insert(0, {str(to)!r}); import model, torch; "
            "n = model.build_model(); n.load_state_dict(torch.load("
            f"{str(to / 'model.pt')!r}, weights_only=True)); print(n.eval()(torch.zeros(1, "
            f"{arch.input_channels}, {arch.input_size}, {arch.input_size})).shape)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    assert "torch.Size([1, 3])" in check.stdout


@pytest.mark.parametrize(
    ("kind", "options"), [(kind, example) for kind in CONV_KINDS for example in op_class(kind).examples]
)
def test_every_kind_exports_standalone_and_torchscript(kind: str, options: dict, tmp_path: Path) -> None:
    from nasconv.results.export import export

    space = parse_space(tiny_space_dict())
    params = {name: choices[-1] for name, choices in space.genes()}
    params["s0.kind"] = "standard"
    tiny = space.decode(params)
    # every registered kind with each of its examples, in the tiny space's stage (8 -> 16 channels, stride 2)
    stage = dataclasses.replace(tiny.stages[0], kind=kind, options=tuple(options.items()))
    arch = dataclasses.replace(tiny, stages=(stage,))
    arch.check()
    report = export(arch, build_model(arch), tmp_path, ["py", "ts", "onnx"])
    assert set(report) == {"py", "ts", "onnx"}
    assert "import nasconv" not in standalone_source(arch)


def test_export_errors_are_one_line(results: Path) -> None:
    run = subprocess.run(
        [*NASCONV, "export", str(results), "--trial", "999"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2 and "no trial 999" in run.stderr and run.stderr.count("\n") == 1
    run = subprocess.run(
        [*NASCONV, "export", str(results), "--knee", "--format", "pt,tflite"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "unknown format 'tflite'" in run.stderr
    run = subprocess.run([*NASCONV, "report", str(results / "nope")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "no such results folder" in run.stderr


def test_load_results_api(results: Path) -> None:
    df = load_results(results)
    assert df.attrs["objectives"] == ["accuracy", "macs"]
    assert {"INFEASIBLE", "FAIL", "COMPLETE"} <= set(df["state"])
    assert isinstance(Arch.from_json(df["arch"].dropna().iloc[0]), Arch)
