"""The trust fixes of issue 9: results that used to be silently wrong, each with the check that
failed before the fix. No Ray here: the searcher and the study are driven in-process."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import optuna
import pandas as pd
import pytest

from nasconv.errors import NasconvError
from nasconv.experiment import as_run, resolve_options
from nasconv.results.folder import trials_frame
from nasconv.results.front import knee, pareto
from nasconv.search.multi_objective import as_minimised, hypervolume, non_dominated
from nasconv.search.promotion import RungPromotion
from nasconv.search.protocol import TrialReport
from nasconv.search.record import trial_state
from nasconv.search.samplers import SamplerContext, make_sampler
from nasconv.search.searcher import StudySearcher
from nasconv.search.space import parse_space
from nasconv.search.study import open_or_create_study, resume_differences

from .conftest import search_in_process, tiny_space_dict


def _open(space, out: Path, resume: bool = False):
    return open_or_create_study(
        space,
        out,
        storage=None,
        resume=resume,
        sampler=lambda n: make_sampler("random", SamplerContext(space=space, seed=n)),
    )


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    search_in_process(parse_space(tiny_space_dict(), source="tiny.yaml"), folder, trials=3)
    return folder


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"objectives": ["accuracy", "params"]}, "objectives[1] changed ('macs' -> 'params')"),
        ({"objectives": ["accuracy", "macs", "params"]}, "objectives changed"),
        ({"constraints": {"max_macs": 1000}}, "constraints.max_macs changed (None -> 1000.0)"),
        ({"training": {"epochs": 5}}, "training.epochs changed (1 -> 5)"),
        ({"dataset": {"name": "synthetic", "samples": 200}}, "dataset.samples changed (120 -> 200)"),
        ({"classes": 4}, "classes changed (3 -> 4)"),
        ({"input": {"channels": 1, "size": 12}}, "input.size changed (8 -> 12)"),
    ],
)
def test_resume_refuses_a_space_that_changes_recorded_meaning(small_study: Path, change: dict, refusal: str) -> None:
    before = _digest(small_study)
    data = tiny_space_dict()
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    with pytest.raises(NasconvError, match="cannot resume: " + re.escape(refusal)):
        _open(parse_space(data), small_study, resume=True)
    assert _digest(small_study) == before  # nothing touched, space.yaml included


def test_resume_refuses_changed_genes(small_study: Path) -> None:
    data = tiny_space_dict()
    data["stages"][0]["conv"]["het"]["p"] = [2]
    with pytest.raises(NasconvError, match=r"stages\[0\]\.conv\.het\.p changed"):
        _open(parse_space(data), small_study, resume=True)


def test_resume_accepts_search_settings_with_a_note(small_study: Path) -> None:
    data = tiny_space_dict(search={"trials": 9, "population": 2, "seed": 4, "sampler": "tpe"})
    opened = _open(parse_space(data), small_study, resume=True)
    assert opened.resumed and "search.sampler 'ehvi' -> 'tpe'" in opened.notes
    assert len(opened.study.trials) >= 3


def test_mo_asha_never_stops_a_non_dominated_trial_whatever_the_arrival_order() -> None:
    # issue 9: A(0.9, 1000), B(0.8, 2000), C(0.5, 10) with reduction 3 stopped C (or A, the other way round)
    a, b, c = (0.9, 1000.0), (0.8, 2000.0), (0.5, 10.0)
    for order in ([a, b, c], [c, b, a], [b, c, a], [a, c, b]):
        rule = RungPromotion(["accuracy", "macs"], max_epochs=9, grace=1, reduction=3)
        decisions = {point: rule.decide(1, point) for point in order}
        assert decisions[a] and decisions[c], order  # both non-dominated
    rule = RungPromotion(["accuracy", "macs"], max_epochs=9, grace=1, reduction=3)
    rule.decide(1, (0.9, 10.0))
    rule.decide(1, (0.8, 20.0))
    assert not rule.decide(1, (0.7, 30.0))  # dominated by both: cut


def _drive(searcher: StudySearcher, reports: list[TrialReport]) -> None:
    for i, report in enumerate(reports):
        config = searcher.suggest(f"t{i}")
        assert isinstance(config, dict)
        searcher.on_trial_complete(f"t{i}", report.replace(macs=config["costs"]["macs"]).to_metrics())


def test_stopped_trials_never_enter_the_front_and_rank_below_complete_ones(tmp_path: Path) -> None:
    # issue 9: a 1-epoch accuracy of a stopped trial became the knee, above full-budget trials
    space = parse_space(tiny_space_dict(training={"epochs": 3}), source="tiny.yaml")
    study = _open(space, tmp_path).study
    searcher = StudySearcher(study, space, budget=3, epochs=3, on_change=lambda: None)
    _drive(
        searcher,
        [
            TrialReport(accuracy=0.99, epoch=1),  # stopped early, with a partial (high) accuracy
            TrialReport(accuracy=0.40, epoch=3),
            TrialReport(accuracy=0.50, epoch=3),
        ],
    )
    df = trials_frame(study)
    assert list(df["state"]) == ["STOPPED", "COMPLETE", "COMPLETE"]
    assert set(pareto(df)["state"]) == {"COMPLETE"} and knee(df)["state"] == "COMPLETE"
    stopped = study.trials[0]
    assert stopped.constraints == {"early_stopped": 1.0}  # infeasible for constrained NSGA-II / TPE / GP
    assert all(t.constraints == {"early_stopped": 0.0} for t in study.trials[1:])  # the same keys on every trial


def test_failed_trials_keep_their_costs_and_equal_values_keep_both_architectures(tmp_path: Path) -> None:
    space = parse_space(tiny_space_dict(), source="tiny.yaml")
    study = _open(space, tmp_path).study
    searcher = StudySearcher(study, space, budget=3, epochs=1, on_change=lambda: None)
    _drive(searcher, [TrialReport(failed=True, reason="loss became nan"), TrialReport(accuracy=0.5, epoch=1)])
    df = trials_frame(study)
    failed = df[df["state"] == "FAIL"].iloc[0]
    assert failed["macs"] > 0 and failed["params"] > 0  # issue 9: macs was empty
    # two different architectures with identical objective values are both on the front
    frame = pd.DataFrame(
        {"number": [0, 1, 2], "state": ["COMPLETE"] * 3, "accuracy": [0.9, 0.9, 0.5], "macs": [10.0, 10.0, 50.0]}
    )
    frame.attrs["objectives"] = ["accuracy", "macs"]
    assert list(pareto(frame)["number"]) == [0, 1]


def test_repeats_are_answered_from_the_record_without_training(tmp_path: Path) -> None:
    space = parse_space(tiny_space_dict(), source="tiny.yaml")
    study = _open(space, tmp_path).study
    searcher = StudySearcher(study, space, budget=2, epochs=1, on_change=lambda: None)
    first = searcher.suggest("a")
    assert isinstance(first, dict)
    # the same architecture proposed again while the first still runs: parked, no worker, no budget
    study.enqueue_trial(study.trials[0].params)
    second = searcher.suggest("b")
    assert isinstance(second, dict) and second["arch"] != first["arch"]
    assert searcher.counters.repeats == 1 and searcher.scheduled == 2
    searcher.on_trial_complete("a", TrialReport(accuracy=0.7, epoch=1, macs=first["costs"]["macs"]).to_metrics())
    repeat = study.trials[1]
    assert trial_state(repeat) == "REPEAT" and repeat.user_attrs["repeat_of"] == 0
    assert repeat.values == study.trials[0].values


def test_exhausted_space_stops_with_a_reason(tmp_path: Path) -> None:
    data = tiny_space_dict(stem={"channels": [4]})
    data["stages"][0].update(channels=[8], conv={"standard": {"kernel": [1, 3]}})  # two networks
    space = parse_space(data, source="tiny.yaml")
    study = _open(space, tmp_path).study
    searcher = StudySearcher(study, space, budget=5, epochs=1, on_change=lambda: None, stuck_after=50)
    for i in range(10):
        config = searcher.suggest(f"t{i}")
        if config == "FINISHED":
            break
        if isinstance(config, dict):
            searcher.on_trial_complete(f"t{i}", TrialReport(accuracy=0.5, epoch=1, macs=1.0).to_metrics())
    assert searcher.finished_reason and "exhausted" in searcher.finished_reason
    assert sum(trial_state(t) == "COMPLETE" for t in study.trials) == 2


def test_even_stem_kernel_is_rejected_at_load() -> None:
    # issue 9: passed the schema, then crashed the searcher and left trial 0 RUNNING
    with pytest.raises(NasconvError, match=r"stem\.kernel: 4 must be odd"):
        parse_space(tiny_space_dict(stem={"channels": [8], "kernel": 4}))


def test_only_channel_pairs_that_can_occur_are_checked() -> None:
    # issue 9: one block 8->6 with het p=4 builds, but 6->6 (which cannot occur at depth 1) was checked
    data = tiny_space_dict(stem={"channels": [8]})
    data["stages"] = [{"channels": [6], "depth": [1], "conv": {"het": {"p": 4}}}]
    space = parse_space(data)
    assert space.sample(0).stages[0].options == (("p", 4),)
    data["stages"][0]["depth"] = [1, 2]  # now 6->6 occurs, and p=4 cannot divide 6
    with pytest.raises(NasconvError, match=r"het\.p: 4 cannot build 6->6"):
        parse_space(data)


def test_multi_objective_maths_has_one_definition() -> None:
    points = [as_minimised(v, ["accuracy", "macs"]) for v in [(0.9, 10), (0.8, 20), (0.95, 30)]]
    assert list(non_dominated(points)) == [True, False, True]
    assert hypervolume([[0.0, 0.5], [0.5, 0.0]], [1.0, 1.0]) == pytest.approx(0.75)


def test_tabular_option_resolves_the_table_path(tmp_path: Path) -> None:
    opts = resolve_options(parse_space(tiny_space_dict()), out=tmp_path, table="t.csv")
    assert opts.table is not None and opts.table.is_absolute() and opts.table.name == "t.csv"


def _fake_accuracy(arch_json: str) -> float:
    return 0.5 + (int(hashlib.sha256(arch_json.encode()).hexdigest(), 16) % 400) / 1000


def test_cost_aware_sampler_proposes_new_feasible_architectures_cheapest_first(tmp_path: Path) -> None:
    from nasconv.model.cost import static_costs
    from nasconv.search.cost_aware import CostAwareSampler

    data = tiny_space_dict(constraints={"max_macs": 20_000})
    space = parse_space(data)
    archs = {space.decode(p).to_json(): static_costs(space.decode(p)) for p in space.enumerate()}
    feasible = {k for k, c in archs.items() if c["macs"] <= 20_000}
    assert 5 < len(feasible) < len(archs)  # the premise: the limit cuts some out
    study = optuna.create_study(directions=space.directions, sampler=CostAwareSampler(space, seed=1, startup=3))
    seen: list[str] = []
    for _ in range(min(15, len(feasible))):
        trial = study.ask()
        key = space.suggest(trial).to_json()
        trial.set_user_attr("arch", key)
        study.tell(trial, [_fake_accuracy(key), archs[key]["macs"]])
        seen.append(key)
    assert len(set(seen)) == len(seen)  # never an architecture twice
    assert set(seen) <= feasible  # never one over the static limit
    assert archs[seen[0]]["macs"] == min(archs[k]["macs"] for k in feasible)  # the cheapest first
    assert all(set(t.params) <= {n for n, _ in space.genes()} for t in study.trials)  # a plain Optuna record


def test_a_sampler_that_only_repeats_itself_ends_the_search(tmp_path: Path) -> None:
    space = parse_space(tiny_space_dict(), source="tiny.yaml")
    study = _open(space, tmp_path).study
    searcher = StudySearcher(study, space, budget=5, epochs=1, on_change=lambda: None, stuck_after=20)
    first = searcher.suggest("t0")
    assert isinstance(first, dict)
    searcher.on_trial_complete("t0", TrialReport(accuracy=0.5, epoch=1, macs=1.0).to_metrics())
    fixed = dict(study.trials[0].params)  # from now on the sampler can only propose that one network
    study.sampler = optuna.samplers.PartialFixedSampler(fixed, optuna.samplers.RandomSampler(seed=0))
    assert searcher.suggest("t1") in (None, "FINISHED")
    while searcher.suggest("t1") is None:
        pass
    assert searcher.finished_reason and "20 known or infeasible architectures in a row" in searcher.finished_reason
    assert sum(trial_state(t) == "REPEAT" for t in study.trials) == 20


def test_the_fast_two_objective_front_equals_the_definition() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(50):
        points = rng.integers(0, 12, size=(int(rng.integers(65, 300)), 2)).astype(float)  # many ties
        by_definition = [not (np.all(points <= p, axis=1) & np.any(points < p, axis=1)).any() for p in points]
        assert list(non_dominated(points)) == by_definition


class _Opened(Exception):
    """Raised where run_search opens the study: what it passes is what the study records."""


def test_the_study_records_the_settings_this_run_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the study recorded the space file's search: settings, so a resume after `--trials 4` read
    # "search.trials 4 -> 9" in its notes, and workers rebuilt the space without the run's overrides
    from nasconv import experiment

    seen = {}

    def opened(space, out, **kwargs):
        seen["space"] = space
        raise _Opened

    monkeypatch.setattr(experiment, "prepare_data", lambda *a, **k: None)
    monkeypatch.setattr(experiment, "reserve", lambda *a, **k: {"cpu": 1.0})
    monkeypatch.setattr(experiment, "open_or_create_study", opened)
    space = parse_space(tiny_space_dict(search={"trials": 9, "seed": 0}))
    with pytest.raises(_Opened):
        experiment.run_search(space, resolve_options(space, out=tmp_path, trials=4, sampler="random", seed=3))
    search = seen["space"].spec.search
    assert (search.trials, search.sampler, search.seed) == (4, "random", 3)
    refusal, notes = resume_differences(space.spec.model_dump(mode="json"), seen["space"])
    assert refusal is None
    assert {"search.trials 9 -> 4", "search.sampler 'ehvi' -> 'random'", "search.seed 0 -> 3"} <= set(notes)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"trials": 2_000_000}, "--trials: Input should be less than or equal to 1000000"),
        ({"workers": 5000}, "--workers: Input should be less than or equal to 4096"),
        ({"gpus_per_trial": 65.0}, "--gpus-per-trial: Input should be less than or equal to 64"),
    ],
)
def test_overrides_beyond_the_schema_are_refused_before_anything_runs(
    tmp_path: Path, override: dict, message: str
) -> None:
    # a --trials the schema refuses was stored as it came: every worker failed to rebuild the space,
    # and a resume could not read the recorded one
    space = parse_space(tiny_space_dict())
    with pytest.raises(NasconvError, match=re.escape(message)):
        as_run(space, resolve_options(space, out=tmp_path / "out", **override))
    assert not (tmp_path / "out").exists()
