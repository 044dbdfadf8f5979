"""Every sampler through the real search path: run_search -> Ray Tune -> StudySearcher -> the study, in
tabular mode on a small table (issue 10's audit: NSGA-II/III crashed when Tune pickled the searcher,
and no test ran them through Ray). One private Ray for the module, in its own temp dir, shut down
after, with no process of it left behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest

from nasconv.experiment import resolve_options, run_search
from nasconv.model.arch import Arch
from nasconv.model.cost import static_costs
from nasconv.search.record import counts_toward_budget, trial_state
from nasconv.search.samplers import SAMPLER_NAMES
from nasconv.search.space import parse_space
from nasconv.search.study import EVALUATION_ATTR

from .conftest import RayCluster, tiny_space_dict

pytestmark = pytest.mark.slow
BUDGET = 12  # past the startup of GPSampler and TPE (10) and ehvi (6), several NSGA generations


@pytest.fixture(scope="module")
def private_ray() -> Iterator[None]:
    import ray

    from nasconv.experiment import start_ray

    temp = tempfile.mkdtemp(prefix="nr", dir="/tmp")  # Unix socket paths must stay under 107 characters
    saved = {key: os.environ.get(key) for key in ("RAY_TMPDIR", "RAY_ADDRESS")}
    os.environ["RAY_TMPDIR"] = temp
    os.environ.pop("RAY_ADDRESS", None)
    try:
        start_ray(None)
        yield
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        left = RayCluster(temp, port=0).stop(grace_s=5.0)  # normally none: ray.shutdown ended them
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"processes of the module's Ray still alive: {sorted(left)}"


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    space = parse_space(tiny_space_dict())
    archs = sorted({space.decode(genes).to_json() for genes in space.enumerate()})
    accuracy = {a: 0.3 + int(hashlib.sha256(a.encode()).hexdigest(), 16) % 600 / 1000 for a in archs}
    path = tmp_path_factory.mktemp("table") / "tiny.csv"
    pd.DataFrame({"arch": archs, "accuracy": [accuracy[a] for a in archs]}).to_csv(path, index=False)
    return path, accuracy


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_runs_the_real_search_in_tabular_mode(
    private_ray: None, table: tuple[Path, dict[str, float]], tmp_path: Path, sampler: str
) -> None:
    path, accuracy = table
    space = parse_space(tiny_space_dict(), source="tiny.yaml")
    out = tmp_path / "out"
    opts = resolve_options(space, out=out, trials=BUDGET, workers=1, seed=3, sampler=sampler, table=path)
    df = run_search(space, opts, progress=False)

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.trials
    trained = [t for t in trials if counts_toward_budget(t)]
    assert len(trained) == BUDGET  # the budget counts distinct trained architectures
    assert len({t.user_attrs["arch"] for t in trained}) == BUDGET
    assert {trial_state(t) for t in trials} <= {"COMPLETE", "REPEAT"}
    assert len(df) == len(trials) and list(df["number"]) == [t.number for t in trials]
    assert study.user_attrs[EVALUATION_ATTR]["mode"] == "table"
    assert study.user_attrs[EVALUATION_ATTR]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    for t in trials:
        arch = t.user_attrs["arch"]
        assert t.values == [accuracy[arch], static_costs(Arch.from_json(arch))["macs"]]  # looked up, costed
        assert t.constraints == {"early_stopped": 0.0}  # the same keys on every told trial
        if trial_state(t) == "REPEAT":
            original = trials[t.user_attrs["repeat_of"]]
            assert original.user_attrs["arch"] == arch and trial_state(original) == "COMPLETE"
        else:
            assert t.user_attrs.get("train_seconds", 0.0) == 0.0 and t.user_attrs["epochs"] == 1
