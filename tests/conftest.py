from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"


def tiny_space_dict(**overrides: object) -> dict:
    """A space small enough to search in seconds: synthetic data, 8x8 input."""
    space = {
        "name": "tiny",
        "input": {"channels": 1, "size": 8},
        "classes": 3,
        "dataset": {"name": "synthetic", "samples": 120},
        "stem": {"channels": [4, 8]},
        "stages": [
            {
                "stride": 2,
                "channels": [8, 16],
                "conv": {
                    "standard": {"kernel": [1, 3]},
                    "dsc": {"kernel": 3},
                    "het": {"p": [2, 4]},
                    "ghost": {"ratio": 2},
                    "group": {"groups": [2, 4]},
                    "cond": {"experts": 2},
                },
            }
        ],
        "objectives": ["accuracy", "macs"],
        "search": {"trials": 4, "population": 2, "seed": 0},
        "training": {"epochs": 1, "batch_size": 32},
    }
    space.update(overrides)
    return space


@pytest.fixture
def write_space(tmp_path: Path):
    def write(data: dict, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def search_in_process(space, out: Path, trials: int, sampler: str = "random", seed: int = 0):
    """A search through the real searcher and study bookkeeping, with each trial evaluated in this
    process one after another instead of on Ray: what report/export tests read is what a search stores."""
    from nasconv.experiment import resolve_options
    from nasconv.search.evaluation import evaluate_trial
    from nasconv.search.protocol import EvaluationContext, TrialReport, TrialRequest
    from nasconv.search.samplers import SamplerContext, make_sampler
    from nasconv.search.searcher import StudySearcher
    from nasconv.search.study import open_or_create_study

    opts = resolve_options(space, out=out, trials=trials, sampler=sampler, seed=seed)
    study = open_or_create_study(
        space,
        out,
        storage=None,
        resume=False,
        sampler=lambda n: make_sampler(sampler, SamplerContext(space=space, seed=seed + n, population=4)),
    ).study
    searcher = StudySearcher(
        study, space, budget=opts.trials, epochs=space.spec.training.epochs, on_change=lambda: None
    )
    context = EvaluationContext(space=space.spec.model_dump_json(), threads=1)
    for index in range(10 * trials):
        config = searcher.suggest(f"t{index}")
        if config == "FINISHED" or config is None and searcher.finished_reason:
            break
        if config is None:
            continue
        reports: list[TrialReport] = []
        evaluate_trial(TrialRequest.from_config(config), context, reports.append)
        for report in reports:
            searcher.on_trial_result(f"t{index}", report.to_metrics())
        searcher.on_trial_complete(f"t{index}", reports[-1].to_metrics())
    return study
