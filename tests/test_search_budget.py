"""What a search's budget counts, what every told trial carries, and what a resume refuses (issue 10's
audit: D2, D3, D4, D6). No Ray: the searcher is driven in-process; the CLI checks that refuse before
Ray starts run as subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest

from nasconv.errors import NasconvError
from nasconv.experiment import SearchOptions
from nasconv.model.cost import static_costs
from nasconv.search.protocol import TrialReport, TrialRequest
from nasconv.search.record import counts_toward_budget, never_scheduled, trial_state
from nasconv.search.samplers import DEFAULT_SAMPLER, SamplerContext, make_sampler
from nasconv.search.searcher import StudySearcher
from nasconv.search.space import SearchSpec, parse_space
from nasconv.search.study import EVALUATION_ATTR, check_study, open_or_create_study

from .conftest import search_in_process, tiny_space_dict

NASCONV = [sys.executable, "-m", "nasconv.cli"]


def _open(space, out: Path, sampler: str = "random", table: Path | None = None, resume: bool = False):
    return open_or_create_study(
        space,
        out,
        storage=None,
        resume=resume,
        table=table,
        sampler=lambda n: make_sampler(sampler, SamplerContext(space=space, seed=n, population=4)),
    ).study


def _digest(folder: Path) -> dict[str, str]:
    """The folder's files and the study's record (the database's bytes move with SQLite checkpoints)."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}
    files = {name: digest for name, digest in files.items() if not name.startswith("study.db")}
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'study.db'}")
    files["record"] = json.dumps([study.user_attrs, [(t.number, t.state.name) for t in study.trials]], default=str)
    return files


def _three_networks(**overrides: object) -> dict:
    """/tmp/audit10's tiny3: one stage of standard convs with kernel 1, 3 or 5."""
    data = tiny_space_dict(stem={"channels": [8]}, **overrides)
    data["stages"] = [{"channels": [8], "conv": {"standard": {"kernel": [1, 3, 5]}}}]
    return data


# ---------------------------------------------------------------- D2: infeasible never counts


def test_infeasible_in_the_worker_never_uses_the_budget(tmp_path: Path) -> None:
    # audit D2: every network over max_latency_ms (measured in the worker, no latency table) used a unit
    # of the budget, so a budget of 2 ended after 2 infeasible trials and never saw the third network
    space = parse_space(_three_networks(constraints={"max_latency_ms": 0.00001}), source="tiny3.yaml")
    study = _open(space, tmp_path)
    searcher = StudySearcher(study, space, budget=2, epochs=1, on_change=lambda: None)
    for index in range(20):
        config = searcher.suggest(f"t{index}")
        if config == "FINISHED":
            break
        assert isinstance(config, dict)  # one trial at a time: never None here
        report = TrialReport.with_costs(dict(config["costs"]), latency_ms=0.5, infeasible=True, reason="max_latency_ms")
        searcher.on_trial_complete(f"t{index}", report.to_metrics())
    states = [trial_state(t) for t in study.trials if trial_state(t) != "REPEAT"]
    assert states == ["INFEASIBLE"] * 3  # all three measured, none trained
    assert searcher.finished_reason and "exhausted" in searcher.finished_reason
    assert searcher.scheduled == 0 and searcher.counters.done == 0
    assert not any(counts_toward_budget(t) for t in study.trials)


def test_the_worker_measures_latency_and_the_search_covers_the_space(tmp_path: Path) -> None:
    # the same through the real trial evaluation (latency measured as a worker measures it)
    space = parse_space(_three_networks(constraints={"max_latency_ms": 0.00001}), source="tiny3.yaml")
    study = search_in_process(space, tmp_path / "out", trials=2)
    measured = [t for t in study.trials if trial_state(t) != "REPEAT"]
    assert [trial_state(t) for t in measured] == ["INFEASIBLE"] * 3
    assert all(t.user_attrs["latency_ms"] > 0.00001 and t.user_attrs["reason"] == "max_latency_ms" for t in measured)


def test_a_full_budget_waits_for_running_trials_that_may_give_their_unit_back(tmp_path: Path) -> None:
    space = parse_space(tiny_space_dict(), source="tiny.yaml")
    study = _open(space, tmp_path)
    searcher = StudySearcher(study, space, budget=1, epochs=1, on_change=lambda: None)
    first = searcher.suggest("a")
    assert isinstance(first, dict)
    assert searcher.suggest("b") is None  # the budget is scheduled, but "a" may yet be infeasible
    infeasible = TrialReport.with_costs(dict(first["costs"]), latency_ms=9.0, infeasible=True, reason="max_latency_ms")
    searcher.on_trial_complete("a", infeasible.to_metrics())
    second = searcher.suggest("c")
    assert isinstance(second, dict) and second["arch"] != first["arch"]
    searcher.on_trial_complete("c", TrialReport(accuracy=0.5, epoch=1, macs=second["costs"]["macs"]).to_metrics())
    assert searcher.suggest("d") == "FINISHED"
    assert [trial_state(t) for t in study.trials] == ["INFEASIBLE", "COMPLETE"]
    assert searcher.counters.done == 1 and searcher.counters.infeasible == 1


# ---------------------------------------------------------------- D3: failures before any worker


def test_an_architecture_that_cannot_be_costed_counts_neither_live_nor_on_resume(tmp_path: Path) -> None:
    space = parse_space(tiny_space_dict(), source="tiny.yaml")
    study = _open(space, tmp_path)
    broken: set[str] = set()

    def costs(arch):
        if not broken or arch.to_json() in broken:  # the first architecture proposed cannot be costed
            broken.add(arch.to_json())
            raise RuntimeError("no rule for this op")
        return static_costs(arch)

    searcher = StudySearcher(study, space, budget=2, epochs=1, on_change=lambda: None, costs=costs)
    trained = 0
    for index in range(30):
        config = searcher.suggest(f"t{index}")
        if config == "FINISHED":
            break
        if isinstance(config, dict):
            trained += 1
            report = TrialReport(accuracy=0.5, epoch=1, macs=config["costs"]["macs"])
            searcher.on_trial_complete(f"t{index}", report.to_metrics())
    failed = [t for t in study.trials if trial_state(t) == "FAIL"]
    assert len(failed) == 1 and failed[0].user_attrs["reason"].startswith("cannot build: RuntimeError")
    assert never_scheduled(failed[0]) and not counts_toward_budget(failed[0])
    assert trained == 2 and searcher.counters.done == 2  # live: the budget bought two trained networks
    # on resume the record agrees: two of the budget done, and the unbuildable one is known (not retried)
    assert check_study(space, tmp_path, storage=None, resume=True) == 2
    resumed = StudySearcher(study, space, budget=1, epochs=1, on_change=lambda: None)
    assert failed[0].user_attrs["arch"] in resumed.known


def test_what_the_budget_counts() -> None:
    def trial(state: str, **attrs: object) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(
            state=getattr(optuna.trial.TrialState, state),
            values=[0.5] if state == "COMPLETE" else None,
            user_attrs=attrs,
        )

    counted = [trial("COMPLETE"), trial("COMPLETE", early_stopped=True), trial("FAIL", reason="loss became nan")]
    counted.append(trial("FAIL", reason="not in table"))
    free = [
        trial("COMPLETE", infeasible=True),
        trial("COMPLETE", repeat_of=0),
        trial("FAIL", repeat_of=0, reason="repeat of trial 0 (loss became nan)"),
        trial("FAIL", reason="interrupted: the search stopped before this trial finished"),
        trial("FAIL", reason="cannot build: RuntimeError: x"),
        trial("FAIL", reason="the proposal failed: KeyError: 'g'"),
    ]
    assert all(counts_toward_budget(t) for t in counted)
    assert not any(counts_toward_budget(t) for t in free)


# ---------------------------------------------------------------- D4: one set of constraint keys


def _report(request: TrialRequest, index: int, epochs: int) -> TrialReport:
    accuracy = 0.3 + int(hashlib.sha256(request.arch.encode()).hexdigest(), 16) % 600 / 1000
    epoch = 1 if index % 3 == 0 else epochs  # every third trial stopped early by mo-asha
    return TrialReport.with_costs(dict(request.costs), accuracy=accuracy, epoch=epoch)


@pytest.mark.parametrize("sampler", ["gp", "tpe", "nsga2", "ehvi"])
def test_every_told_trial_carries_the_same_constraint_keys(tmp_path: Path, sampler: str) -> None:
    # audit D4: early-stopped trials carried `early_stopped`, complete ones nothing, and Optuna's
    # GPSampler raised "The constraint names must be the same for all trials" once past its startup
    data = tiny_space_dict(constraints={"max_macs": 20_000}, training={"epochs": 3})
    space = parse_space(data, source="tiny.yaml")
    study = _open(space, tmp_path, sampler=sampler)
    if sampler == "gp":
        study.sampler = optuna.samplers.GPSampler(seed=0, n_startup_trials=4)
    searcher = StudySearcher(study, space, budget=12, epochs=3, on_change=lambda: None)
    for index in range(200):
        config = searcher.suggest(f"t{index}")
        if config == "FINISHED":
            break
        if isinstance(config, dict):
            request = TrialRequest.from_config(config)
            searcher.on_trial_complete(f"t{index}", _report(request, index, 3).to_metrics())
    assert searcher.error is None, searcher.error
    assert searcher.counters.done == 12 and searcher.counters.stopped >= 3
    told = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    states = {trial_state(t) for t in told}
    assert {"COMPLETE", "STOPPED"} <= states
    for t in told:
        assert set(t.constraints) == {"max_macs", "early_stopped"}, (trial_state(t), t.constraints)
        assert (t.constraints["early_stopped"] > 0) == bool(t.user_attrs.get("early_stopped"))
        assert (t.constraints["max_macs"] > 0) == (t.user_attrs["macs"] > 20_000)


def test_a_repeat_of_an_older_record_gets_every_key(tmp_path: Path) -> None:
    # a record written before every trial carried every key: the copy is completed, not copied bare
    space = parse_space(tiny_space_dict(), source="tiny.yaml")
    study = _open(space, tmp_path)
    arch = space.sample(0)
    params = dict(space.draw(lambda name, choices: choices[0]))
    old = optuna.trial.create_trial(
        params=params,
        distributions={n: optuna.distributions.CategoricalDistribution(c) for n, c in space.genes() if n in params},
        values=[0.6, 1000.0],
        user_attrs={"arch": arch.to_json()},
    )
    study.add_trial(old)
    searcher = StudySearcher(study, space, budget=1, epochs=1, on_change=lambda: None)
    trial = study.ask()
    searcher._copy_outcome(trial, study.trials[0])
    assert study.trials[-1].constraints == {"early_stopped": 0.0}


# ---------------------------------------------------------------- D6: the table is part of the record


def _table(path: Path, space, salt: str = "") -> Path:
    archs = sorted({space.decode(p).to_json() for p in space.enumerate()})
    accuracy = [0.5 + int(hashlib.sha256((salt + a).encode()).hexdigest(), 16) % 400 / 1000 for a in archs]
    pd.DataFrame({"arch": archs, "accuracy": accuracy}).to_csv(path, index=False)
    return path


def test_the_study_records_how_trials_were_evaluated(tmp_path: Path) -> None:
    space = parse_space(tiny_space_dict(), source="tiny.yaml")
    table = _table(tmp_path / "t.csv", space)
    study = _open(space, tmp_path / "a", table=table)
    record = study.user_attrs[EVALUATION_ATTR]
    assert record == {
        "mode": "table",
        "table": str(table.resolve()),
        "sha256": hashlib.sha256(table.read_bytes()).hexdigest(),
    }
    assert _open(space, tmp_path / "b").user_attrs[EVALUATION_ATTR] == {"mode": "training"}


def test_resume_refuses_another_table_or_mode_and_accepts_a_moved_one(tmp_path: Path) -> None:
    space = parse_space(tiny_space_dict(), source="tiny.yaml")
    table = _table(tmp_path / "t.csv", space)
    tabular, trained = tmp_path / "tabular", tmp_path / "trained"
    _open(space, tabular, table=table)
    _open(space, trained)
    other = _table(tmp_path / "other.csv", space, salt="x")
    moved = tmp_path / "moved.csv"
    moved.write_bytes(table.read_bytes())
    refusals = [
        (tabular, None, r"the study looked its trials up in a table \(.*t\.csv\), this run would train"),
        (tabular, other, "the table's content changed"),
        (trained, table, "the study trained its trials, this run would look them up in"),
    ]
    for folder, given, message in refusals:
        before = _digest(folder)
        with pytest.raises(NasconvError, match=message):
            check_study(space, folder, storage=None, resume=True, table=given)
        with pytest.raises(NasconvError, match=message):
            _open(space, folder, table=given, resume=True)
        assert _digest(folder) == before  # nothing touched
    study = open_or_create_study(
        space, tabular, storage=None, resume=True, table=moved,
        sampler=lambda n: make_sampler("random", SamplerContext(space=space, seed=n)),
    )  # fmt: skip
    assert any("the same content" in note for note in study.notes)


def test_cli_resume_with_another_table_exits_2_in_one_line_and_touches_nothing(tmp_path: Path, write_space) -> None:
    data = tiny_space_dict()
    space_file = write_space(data)
    space = parse_space(data, source=str(space_file))
    table = _table(tmp_path / "t.csv", space)
    other = _table(tmp_path / "other.csv", space, salt="y")
    out = tmp_path / "out"
    _open(space, out, table=table)
    before = _digest(out)
    env = {**os.environ, "RAY_ADDRESS": ""}
    for args, message in (
        (["--table", str(other)], "cannot resume: the table's content changed"),
        ([], "cannot resume: the study looked its trials up in a table"),
    ):
        run = subprocess.run(
            [*NASCONV, "search", str(space_file), "--out", str(out), "--resume", "--trials", "9", *args],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert run.returncode == 2, run.stderr[-2000:]
        assert message in run.stderr and run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr
        assert _digest(out) == before


# ---------------------------------------------------------------- one source for the defaults


def test_search_options_defaults_come_from_their_one_source(tmp_path: Path) -> None:
    opts = SearchOptions(out=tmp_path, trials=1)
    assert opts.sampler == DEFAULT_SAMPLER == SearchSpec().sampler
    assert opts.early_stopping == SearchSpec().early_stopping
    assert opts.keep_weights == SearchSpec().keep_weights


def test_study_records_the_evaluation_as_json(tmp_path: Path) -> None:
    space = parse_space(tiny_space_dict(), source="tiny.yaml")
    study = _open(space, tmp_path)
    assert json.loads(json.dumps(study.user_attrs[EVALUATION_ATTR])) == {"mode": "training"}
