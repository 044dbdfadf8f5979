"""End-to-end search tests. Each search runs the real CLI in a subprocess with its own local Ray
(isolated; a killed driver takes its Ray with it), except the unit tests of the trial and searcher.
A test that needs a `ray start` cluster gets one of its own (conftest.ray_cluster): its own temp dir
and port, and on exit only its processes are ended, never another Ray on the machine."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from nasconv.model.arch import Arch, build_model
from nasconv.model.cost import static_costs
from nasconv.results.folder import load_results
from nasconv.results.front import pareto
from nasconv.search.evaluation import evaluate_trial
from nasconv.search.protocol import EvaluationContext, TrialReport, TrialRequest
from nasconv.search.record import INTERRUPTED, trial_state
from nasconv.search.space import parse_space

from .conftest import ray_cluster, tiny_space_dict

NASCONV = [sys.executable, "-m", "nasconv.cli"]
pytestmark = pytest.mark.slow


def nasconv(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a subprocess; ``env`` adds to this process's environment (a cluster's ``env`` is whole)."""
    return subprocess.run(
        [*NASCONV, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def count_states(folder: Path) -> dict[str, int]:
    return load_results(folder)["state"].value_counts().to_dict()


def test_search_writes_the_record_and_results(tmp_path: Path, write_space) -> None:
    space = write_space(tiny_space_dict())
    out = tmp_path / "out"
    run = nasconv("search", str(space), "--trials", "5", "--workers", "2", "--out", str(out), "--seed", "3")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(5 complete" in run.stdout
    for name in ("trials.csv", "pareto.csv", "pareto.png", "pareto.html", "space.yaml", "study.db"):
        assert (out / name).is_file(), name
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials.columns[:4]) == ["number", "state", "accuracy", "macs"]
    assert {"params", "latency_ms", "train_seconds", "arch", "repeat_of", "reason"} <= set(trials.columns)
    assert set(trials["state"]) <= {"COMPLETE", "REPEAT"}
    trained = trials[trials["state"] == "COMPLETE"]
    assert len(trained) == 5 and (trained["train_seconds"] > 0).all()
    assert trained["arch"].is_unique  # no architecture trained twice
    html = (out / "pareto.html").read_text()
    assert "plotly" in html and "Pareto front" in html

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == len(trials)
    for t in study.trials:
        arch = Arch.from_json(t.user_attrs["arch"])
        assert t.user_attrs["macs"] == static_costs(arch)["macs"] == t.values[1]
        assert 0 <= t.values[0] <= 1
        if t.user_attrs.get("repeat_of") is not None:  # answered from the record: the original's values
            assert t.values == study.trials[t.user_attrs["repeat_of"]].values
    front = pareto(load_results(out))
    assert set(front["number"]) <= set(trained["number"])
    assert len(pd.read_csv(out / "pareto.csv")) == len(front)
    build_model(Arch.from_json(trials["arch"][0]))

    again = nasconv("search", str(space), "--trials", "5", "--out", str(out))
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0
    assert f"already holds study 'tiny' with {len(trials)} trials; use --resume" in again.stderr
    assert len(optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}").trials) == len(trials)


def test_mostly_infeasible_space_is_recorded_not_trained(tmp_path: Path, write_space) -> None:
    space = tiny_space_dict(constraints={"max_macs": 5_000})
    costs = [static_costs(parse_space(space).sample(seed))["macs"] for seed in range(40)]
    assert sum(c > 5_000 for c in costs) > len(costs) / 2  # the premise: most are over the limit
    out = tmp_path / "out"
    run = nasconv("search", str(write_space(space)), "--trials", "3", "--out", str(out), "--sampler", "random")
    assert run.returncode == 0, run.stderr[-2000:]
    df = load_results(out)
    infeasible = df[df["state"] == "INFEASIBLE"]
    assert (df["state"] == "COMPLETE").sum() == 3 and len(infeasible) >= 3  # the budget counts trained ones
    assert (infeasible["macs"] > 5_000).all() and infeasible["train_seconds"].isna().all()
    assert (infeasible["reason"] == "max_macs").all()
    assert (df[df["state"] == "COMPLETE"]["macs"] <= 5_000).all()
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    assert all(t.constraints["max_macs"] > 0 for t in study.trials if t.user_attrs.get("infeasible"))
    assert set(pareto(df)["state"]) <= {"COMPLETE"}


def test_diverging_trials_fail_with_reason_and_search_goes_on(tmp_path: Path, write_space) -> None:
    space = tiny_space_dict(training={"epochs": 2, "lr": 1e30, "momentum": 0.0})
    out = tmp_path / "out"
    run = nasconv("search", str(write_space(space)), "--trials", "3", "--out", str(out))
    assert run.returncode == 0, run.stderr[-2000:]
    df = load_results(out)
    assert (df["state"] == "FAIL").all() and len(df) == 3
    assert df["reason"].str.contains("became").all()


def test_trial_that_raises_is_reported_as_failed() -> None:
    space = parse_space(tiny_space_dict())
    arch = space.sample(0).to_dict()
    arch["stages"][0].update(kind="het", options={"p": 3})  # 3 cannot divide the stem's channels
    reports: list[TrialReport] = []
    evaluate_trial(
        TrialRequest(number=0, arch=json.dumps(arch)),
        EvaluationContext(space=space.spec.model_dump_json()),
        reports.append,
    )
    assert len(reports) == 1 and reports[0].failed
    assert "het p=3 must divide in_channels" in reports[0].reason


def _wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError("timed out waiting")


def _complete_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_kill_9_then_resume_keeps_every_finished_trial(tmp_path: Path, write_space) -> None:
    space = write_space(tiny_space_dict(training={"epochs": 3}, dataset={"name": "synthetic", "samples": 600}))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*NASCONV, "search", str(space), "--trials", "8", "--workers", "2", "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: _complete_count(out / "study.db") >= 2, timeout=180)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {t.number: t for t in optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}").trials}
    finished_before = {n: t.values for n, t in before.items() if trial_state(t) == "COMPLETE"}
    assert 2 <= len(finished_before) < 8

    resumed = nasconv("search", str(space), "--trials", "8", "--workers", "2", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    after = {t.number: t for t in study.trials}
    for number, values in finished_before.items():  # kept, untouched, not re-run
        assert after[number].values == values and after[number].state.name == "COMPLETE"
    complete = [t for t in study.trials if trial_state(t) == "COMPLETE"]
    interrupted = [t for t in study.trials if t.user_attrs.get("reason") == INTERRUPTED]
    assert len(complete) == 8 and len({t.user_attrs["arch"] for t in complete}) == 8
    assert all(t.state.name == "FAIL" for t in interrupted)
    assert {trial_state(t) for t in study.trials} <= {"COMPLETE", "REPEAT", "FAIL"}
    assert not [t for t in study.trials if t.state.name == "RUNNING"]


def test_ctrl_c_stops_cleanly_and_keeps_results(tmp_path: Path, write_space) -> None:
    space = write_space(tiny_space_dict(training={"epochs": 3}, dataset={"name": "synthetic", "samples": 600}))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*NASCONV, "search", str(space), "--trials", "50", "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(lambda: _complete_count(out / "study.db") >= 2, timeout=180)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode in (0, 130), stderr[-2000:]
    df = pd.read_csv(out / "trials.csv")
    assert (df["state"] == "COMPLETE").sum() >= 2
    assert "RUNNING" not in set(df["state"])
    assert len(df) < 50


def test_two_node_cluster_on_loopback(tmp_path: Path, write_space) -> None:
    with ray_cluster("--num-cpus=1", workers=1, env={"RAY_AUTH_MODE": "token"}) as cluster:
        out = tmp_path / "out"
        space = write_space(tiny_space_dict(training={"epochs": 2}, dataset={"name": "synthetic", "samples": 900}))
        run = nasconv(
            "search", str(space), "--trials", "6", "--workers", "2", "--out", str(out),
            "--address", cluster.address, env=cluster.env,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
        assert sum(trial_state(t) == "COMPLETE" for t in study.trials) == 6
        assert len({t.user_attrs["node"] for t in study.trials if "node" in t.user_attrs}) == 2  # both nodes ran trials


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "--trials: '0' must be at least 1"),
        (["--sampler", "cmaes"], "invalid choice: 'cmaes'"),
        (["--resume"], "no study 'tiny' to resume"),
    ],
)
def test_bad_flags_fail_before_ray_with_one_line(tmp_path: Path, write_space, args: list, message: str) -> None:
    run = nasconv("search", str(write_space(tiny_space_dict())), "--out", str(tmp_path / "o"), *args, timeout=60)
    assert run.returncode == 2
    assert message in run.stderr and run.stderr.strip().count("\n") == 0
    assert "Traceback" not in run.stderr


def test_bad_space_and_missing_dataset_fail_with_exit_2(tmp_path: Path, write_space) -> None:
    bad = tiny_space_dict()
    bad["stages"][0]["conv"]["het"]["p"] = 3
    run = nasconv("search", str(write_space(bad)), "--out", str(tmp_path / "o"), timeout=60)
    assert run.returncode == 2 and "stages[0].conv.het.p: 3 cannot build" in run.stderr
    missing = tiny_space_dict(dataset={"name": "npz", "path": str(tmp_path / "none.npz")})
    run = nasconv("search", str(write_space(missing)), "--out", str(tmp_path / "o"), timeout=60)
    assert run.returncode == 2 and "none.npz does not exist" in run.stderr
    assert not (tmp_path / "o").exists()


def test_mo_asha_stops_trials_early_and_records_them(tmp_path: Path, write_space) -> None:
    space = tiny_space_dict(
        training={"epochs": 3},
        search={"trials": 9, "population": 3, "seed": 1, "early_stopping": "mo-asha", "reduction": 2},
    )
    out = tmp_path / "out"
    run = nasconv("search", str(write_space(space)), "--out", str(out), "--workers", "1", "--sampler", "random")
    assert run.returncode == 0, run.stderr[-2000:]
    df = load_results(out)
    stopped = df[df["state"] == "STOPPED"]
    assert len(df) == 9 and len(stopped) >= 1
    assert (stopped["epochs"] < 3).all() and (df[df["state"] == "COMPLETE"]["epochs"] == 3).all()
    assert set(pareto(df)["state"]) <= {"COMPLETE", "STOPPED"}


def test_without_address_a_private_ray_is_started_even_beside_a_running_cluster(tmp_path: Path, write_space) -> None:
    # issue 9: ray.init() joined a `ray start` cluster it found on the machine, and passing num_cpus failed.
    # The cluster's env points Ray's default temp dir at the cluster's own, so a plain ray.init() there
    # would find it, as it finds one that `ray start` left in /tmp/ray.
    with ray_cluster("--num-cpus=1", env={"RAY_AUTH_MODE": "token"}) as cluster:
        import ray._private.utils as ray_utils

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("RAY_TMPDIR", cluster.temp)
            assert ray_utils.read_ray_address() == cluster.address  # the premise: a cluster ray.init() would join
        out = tmp_path / "out"
        run = nasconv(
            "search", str(write_space(tiny_space_dict())), "--trials", "2", "--out", str(out), env=cluster.env
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert (load_results(out)["state"] == "COMPLETE").sum() == 2


def test_tabular_mode_runs_the_real_search_by_lookup(tmp_path: Path, write_space) -> None:
    import hashlib

    data = tiny_space_dict()
    space = parse_space(data)
    archs = sorted({space.decode(p).to_json() for p in space.enumerate()})
    accuracy = {a: 0.5 + int(hashlib.sha256(a.encode()).hexdigest(), 16) % 400 / 1000 for a in archs}
    listed = archs[: len(archs) * 3 // 4]  # a quarter of the space is not in the table
    table = tmp_path / "table.csv"
    pd.DataFrame({"arch": listed, "accuracy": [accuracy[a] for a in listed]}).to_csv(table, index=False)
    for sampler in ("ehvi", "random"):
        out = tmp_path / sampler
        run = nasconv(
            "search", str(write_space(data)), "--trials", "12", "--workers", "1", "--out", str(out),
            "--table", str(table), "--sampler", sampler, "--seed", "2",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        df = load_results(out)
        trained = df[df["state"].isin(["COMPLETE", "FAIL"])]
        assert len(trained) == 12 and trained["arch"].is_unique
        complete = df[df["state"] == "COMPLETE"]
        assert all(row["accuracy"] == accuracy[row["arch"]] for _, row in complete.iterrows())
        missing = df[df["state"] == "FAIL"]
        assert (missing["reason"] == "not in table").all()
        assert set(missing["arch"]).isdisjoint(listed)
        assert (trained["train_seconds"].fillna(0) == 0).all()  # looked up, never trained


def test_gpus_are_requested_from_ray_and_each_trial_reports_its_own(tmp_path: Path, write_space) -> None:
    # `ray start --num-gpus=2` declares GPUs this machine does not have: Ray assigns them all the same
    with ray_cluster("--num-cpus=2", "--num-gpus=2", env={"RAY_AUTH_MODE": "token"}) as cluster:
        out = tmp_path / "out"
        space = write_space(tiny_space_dict(search={"trials": 4, "gpus_per_trial": 1, "population": 2}))
        run = nasconv("search", str(space), "--out", str(out), "--address", cluster.address, env=cluster.env)
        assert run.returncode == 0, run.stderr[-2000:]
        study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
        trained = [t for t in study.trials if trial_state(t) == "COMPLETE"]
        assert len(trained) == 4
        assert all(len(t.user_attrs["gpu_ids"]) == 1 for t in trained)  # one whole GPU each
        assert {g for t in trained for g in t.user_attrs["gpu_ids"]} <= {"0", "1"}
        # a request the cluster cannot meet is refused before any trial starts
        again = nasconv(
            "search", str(space), "--out", str(tmp_path / "o2"), "--address", cluster.address,
            "--gpus-per-trial", "3", env=cluster.env,
        )  # fmt: skip
        assert again.returncode == 2 and "the Ray cluster has 2 GPU(s)" in again.stderr
        assert again.stderr.strip().count("\n") == 0


def test_gpus_per_trial_on_a_cluster_without_gpus_exits_2_before_any_trial(tmp_path: Path, write_space) -> None:
    space = write_space(tiny_space_dict())
    run = nasconv("search", str(space), "--out", str(tmp_path / "o"), "--gpus-per-trial", "0.25")
    assert run.returncode == 2 and "the Ray cluster has no GPUs" in run.stderr
    assert run.stderr.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()  # nothing written: a rerun with a sound setting starts afresh
