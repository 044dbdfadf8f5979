"""Trial evaluation on its device with kept weights, the kept-weights files, and export's metrics.json."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nasconv.cli import main
from nasconv.errors import NasconvError
from nasconv.model.arch import Arch, build_model
from nasconv.results.export import exported_metrics, read_metrics
from nasconv.results.folder import load_results
from nasconv.results.weights import kept_trials, load_weights, prune_weights, save_weights, weights_path
from nasconv.search.evaluation import evaluate_trial
from nasconv.search.protocol import EvaluationContext, TrialReport, TrialRequest
from nasconv.search.space import Space, parse_space

from .conftest import search_in_process, tiny_space_dict


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NASCONV_CACHE", str(tmp_path_factory.getbasetemp() / "nasconv-cache"))


def run_trial(space: Space, *, keep: bool, gpu_ids: list[str] | None = None, seed: int = 0) -> list[TrialReport]:
    arch = space.sample(seed)
    reports: list[TrialReport] = []
    context = EvaluationContext(space=space.spec.model_dump_json(), threads=1, keep_weights=keep)
    evaluate_trial(TrialRequest(number=0, arch=arch.to_json()), context, reports.append, gpu_ids=gpu_ids)
    return reports


def test_last_report_carries_the_trained_weights() -> None:
    space = parse_space(tiny_space_dict(training={"epochs": 2}))
    reports = run_trial(space, keep=True, gpu_ids=["1"])
    # the weights travel in a report of their own, repeated without them so Ray keeps a small last result
    assert [r.epoch for r in reports] == [1, 2, 2] and not any(r.failed for r in reports)
    assert [r.weights is not None for r in reports] == [False, True, False]
    assert reports[1].replace(weights=None) == reports[2]
    assert all(r.gpu_ids == ("1",) for r in reports)  # no CUDA here: trained on the CPU, assignment still reported
    assert TrialReport.from_metrics(reports[1].to_metrics()).gpu_ids == ("1",)
    state = torch.load(io.BytesIO(reports[1].weights), weights_only=True)
    model = build_model(space.sample(0))
    model.load_state_dict(state)
    fresh = build_model(space.sample(0)).state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in state.items())  # trained, not initial
    assert all(r.weights is None for r in run_trial(space, keep=False))


def test_trial_weights_reproduce_its_accuracy() -> None:
    from nasconv.search.data import space_data
    from nasconv.search.training import evaluate

    space = parse_space(tiny_space_dict(training={"epochs": 1}))
    last = next(r for r in run_trial(space, keep=True, seed=3) if r.weights is not None)
    model = build_model(space.sample(3))
    model.load_state_dict(torch.load(io.BytesIO(last.weights or b""), weights_only=True))
    assert evaluate(model, space_data(space.spec), "val")[0] == last.accuracy


def test_a_device_that_is_not_there_fails_the_trial_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    space = parse_space(tiny_space_dict(training={"device": "cuda"}))
    reports = run_trial(space, keep=True, gpu_ids=["0"])
    assert len(reports) == 1 and reports[0].failed and reports[0].gpu_ids == ("0",)
    assert "training.device: cuda, but" in (reports[0].reason or "")


def test_weights_files_are_kept_pruned_and_loaded(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    for number in (4, 1, 7):
        assert save_weights(tmp_path, number, buffer.getvalue()) == weights_path(tmp_path, number)
    assert weights_path(tmp_path, 7) == tmp_path / "weights" / "trial-7.pt"
    assert kept_trials(tmp_path) == [1, 4, 7] and kept_trials(tmp_path / "nowhere") == []
    assert prune_weights(tmp_path, keep=[4, 9]) == [1, 7] and kept_trials(tmp_path) == [4]
    loaded = load_weights(tmp_path, 4)
    assert loaded is not None and torch.equal(loaded["weight"], model.weight)
    assert load_weights(tmp_path, 1) is None
    weights_path(tmp_path, 4).write_bytes(b"garbage")
    with pytest.raises(NasconvError, match=r"trial-4.pt: cannot load these kept weights"):
        load_weights(tmp_path, 4)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small study on an npz dataset with a test split, stored by the real searcher."""
    root = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(0)
    y, y_test = np.arange(160) % 4, np.arange(40) % 4
    x = (rng.integers(0, 60, size=(160, 3, 8, 8)) + 50 * y[:, None, None, None]).astype(np.uint8)
    x_test = (rng.integers(0, 60, size=(40, 3, 8, 8)) + 50 * y_test[:, None, None, None]).astype(np.uint8)
    np.savez(root / "d.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    space = parse_space(
        tiny_space_dict(
            input={"channels": 3, "size": 8},
            classes=4,
            dataset={"name": "npz", "path": str(root / "d.npz")},
            training={"epochs": 1, "batch_size": 16},
        )
    )
    folder = tmp_path_factory.mktemp("results")
    search_in_process(space, folder, trials=3, sampler="random", seed=0)
    return folder


def test_export_of_kept_weights_writes_metrics(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nasconv.search.data import space_data
    from nasconv.search.space import load_space
    from nasconv.search.training import evaluate, state_bytes, train

    df = load_results(results)
    done = df[df["state"] == "COMPLETE"]
    kept, other = int(done["number"].iloc[0]), int(done["number"].iloc[1])
    spec = load_space(results / "space.yaml").spec
    arch = Arch.from_json(done["arch"].iloc[0])
    _, model = train(arch, space_data(spec), spec.training)  # what the search's trial trained
    save_weights(results, kept, state_bytes(model))

    assert main(["export", str(results), "--trial", str(kept), "--format", "pt", "--to", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    metrics = read_metrics(tmp_path / "k")
    assert metrics is not None and metrics["weights"] == f"kept from search trial {kept} (1 epochs)"
    assert metrics["val_accuracy"] == pytest.approx(float(done["accuracy"].iloc[0]))
    assert metrics["epochs"] == 1 and metrics["dataset"] == "npz" and metrics["trial"] == kept
    assert metrics["test_accuracy"] == evaluate(model, space_data(spec), "test")[0]
    assert f"kept from search trial {kept}" in out and "test accuracy" in out
    exported = torch.load(tmp_path / "k" / "model.pt", weights_only=True)
    assert all(torch.equal(exported[k], v) for k, v in model.state_dict().items())

    assert main(["export", str(results), "--trial", str(other), "--format", "pt", "--to", str(tmp_path / "u")]) == 0
    untrained = json.loads((tmp_path / "u" / "metrics.json").read_text())
    assert untrained == {
        "trial": other,
        "val_accuracy": None,
        "test_accuracy": None,
        "epochs": 0,
        "weights": "untrained",
        "dataset": None,
    }
    assert "weights: untrained" in capsys.readouterr().out


def test_export_with_epochs_retrains_and_reports_test_accuracy(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    df = load_results(results)
    number = int(df[df["state"] == "COMPLETE"]["number"].iloc[-1])
    assert main(["export", str(results), "--trial", str(number), "--epochs", "2", "--format", "arch,pt"]) == 0
    out = capsys.readouterr().out
    assert "retrained 2 epochs from scratch: validation accuracy" in out and "test accuracy" in out
    metrics = exported_metrics(results)[number]
    assert metrics["weights"] == "retrained 2 epochs" and metrics["epochs"] == 2
    assert 0 <= metrics["val_accuracy"] <= 1 and 0 <= metrics["test_accuracy"] <= 1
    from nasconv.results.report import build_report

    build_report(results)  # the report shows what was exported, test accuracy beside validation
    page = (results / "report.html").read_text()
    assert "Exported trials (metrics.json)" in page and "retrained 2 epochs" in page


def test_export_refuses_weights_of_another_architecture(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    number = int(load_results(results)["number"].iloc[0])
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2).state_dict(), buffer)
    save_weights(results, number, buffer.getvalue())
    try:
        code = main(["export", str(results), "--trial", str(number), "--format", "pt", "--to", str(tmp_path)])
    finally:
        prune_weights(results, keep=[])
    err = capsys.readouterr().err
    assert code == 2 and f"trial-{number}.pt: does not fit trial {number}'s architecture (missing" in err
    assert err.count("\n") == 1


def test_weights_of_a_trial_still_running_survive_a_prune(tmp_path: Path) -> None:
    # keep_weights: front. A trial's weights arrive with its last epoch's report and are saved at once;
    # another trial that finishes before this one is told prunes the kept weights to the front, which
    # the trial still running cannot be on yet: its file must survive, and it stays if it joins the front.
    from nasconv.experiment import ResultsKeeper, resolve_options
    from nasconv.search.samplers import SamplerContext, make_sampler
    from nasconv.search.searcher import Counters, StudySearcher
    from nasconv.search.study import open_or_create_study

    out = tmp_path / "results"
    space = parse_space(tiny_space_dict(search={"trials": 6, "population": 2, "seed": 0}))
    opts = resolve_options(space, out=out, trials=6, sampler="random")
    assert opts.keep_weights == "front"
    study = open_or_create_study(
        space,
        out,
        storage=None,
        resume=False,
        sampler=lambda n: make_sampler("random", SamplerContext(space=space, seed=n, population=2)),
    ).study
    keeper = ResultsKeeper(study, opts, Counters(target=6), progress=False)
    searcher = StudySearcher(
        study,
        space,
        budget=6,
        epochs=1,
        on_change=keeper.update,
        counters=keeper.counters,
        on_weights=lambda number, data: save_weights(out, number, data),
    )
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert isinstance(first, dict) and isinstance(second, dict)
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2).state_dict(), buffer)
    best = TrialReport(accuracy=0.99, params=10, macs=10.0, flops=20.0, epoch=1, train_seconds=0.1)
    worse = TrialReport(accuracy=0.5, params=100, macs=100.0, flops=200.0, epoch=1, train_seconds=0.1)
    searcher.on_trial_result("a", best.replace(weights=buffer.getvalue()).to_metrics())  # saved at once
    a = first["number"]
    assert kept_trials(out) == [a]
    searcher.on_trial_result("b", worse.to_metrics())
    searcher.on_trial_complete("b", worse.to_metrics())  # a prune while trial a still runs
    assert kept_trials(out) == [a]
    searcher.on_trial_result("a", best.to_metrics())
    searcher.on_trial_complete("a", best.to_metrics())
    front = load_results(out).query("state == 'COMPLETE' and accuracy == 0.99")["number"].tolist()
    assert front == [a] and kept_trials(out) == [a]
    loaded = load_weights(out, a)
    assert loaded is not None and set(loaded) == {"weight", "bias"}


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(os.environ["NASCONV_TEST_MARKER"]),))


def test_kept_weights_that_hold_code_are_refused_without_unsafe_advice(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "ran"
    monkeypatch.setenv("NASCONV_TEST_MARKER", str(marker))
    (tmp_path / "weights").mkdir()
    torch.save({"w": _RunsCode()}, tmp_path / "weights" / "trial-0.pt")
    with pytest.raises(NasconvError) as caught:
        load_weights(tmp_path, 0)
    message = str(caught.value)
    assert "trial-0.pt" in message and "could run code" in message and "weights_only" not in message
    assert not marker.exists()


def test_damaged_kept_weights_are_called_damaged(tmp_path: Path) -> None:
    # any unpickling error read "it holds more than tensors, and loading it could run code"
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "trial-0.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(NasconvError, match="damaged or not a torch state_dict"):
        load_weights(tmp_path, 0)
