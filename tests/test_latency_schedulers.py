from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from nasconv.errors import NasconvError
from nasconv.model.arch import build_model
from nasconv.model.cost import static_costs
from nasconv.model.latency import (
    LatencyTable,
    arch_parts,
    build_part,
    measure_latency_table,
    percent_errors,
    space_latency_table,
    space_parts,
)
from nasconv.search.multi_objective import non_dominated_ranks
from nasconv.search.promotion import promotable, rungs
from nasconv.search.space import load_space, parse_space

from .conftest import SPACES, tiny_space_dict


def test_space_parts_cover_every_drawn_architecture() -> None:
    space = load_space(SPACES / "digits.yaml")
    parts = set(space_parts(space.arch_choices()))
    for seed in range(200):
        assert set(arch_parts(space.sample(seed))) <= parts


@pytest.mark.parametrize(
    "conv",
    [
        {"dsc": {"kernel": [1, 3], "dilation": [1, 2]}},
        {"group": {"groups": [1, 2], "shuffle": [False, True]}},
        {"inception": {"kernels": [[1], [1, 3]], "dilation": [1, 2], "reduce": [0, 0.5]}},
    ],
    ids=lambda conv: next(iter(conv)),
)
def test_space_parts_are_exactly_the_blocks_the_encoding_draws(conv: dict) -> None:
    data = tiny_space_dict()
    data["stages"][0].update(conv=conv, depth=[1, 2])
    space = parse_space(data)
    drawn = set().union(*(arch_parts(space.decode(genes)) for genes in space.enumerate()))
    parts = space_parts(space.arch_choices())
    assert len(parts) == len(set(parts)) and set(parts) == drawn


def test_latency_needs_only_the_typed_choices_of_a_space(tiny_table) -> None:
    """The latency layer reads what a space offers through ``arch_choices`` (no schema underneath)."""
    path, space = tiny_table

    class Offer:
        source = "offer.yaml"
        latency_table = str(path)

        def arch_choices(self):  # noqa: ANN202 - a structural stand-in for a Space
            return space.arch_choices()

        def sample(self, seed=None):  # noqa: ANN001, ANN202
            return space.sample(seed)

    table = space_latency_table(Offer())  # type: ignore[arg-type]
    assert table is not None and not table.missing(Offer())  # type: ignore[arg-type]


def test_parts_build_and_chain_like_the_model() -> None:
    arch = load_space(SPACES / "digits.yaml").sample(5)
    model = build_model(arch).eval()
    x = torch.randn(1, 1, 16, 16)
    for key in arch_parts(arch):
        module, shape = build_part(key)
        assert tuple(x.shape[1:]) == shape
        x = module.eval()(x)
    assert x.shape == model(torch.randn(1, 1, 16, 16)).shape


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    space = parse_space(tiny_space_dict(), source="tiny.yaml")
    path = tmp_path_factory.mktemp("lut") / "device.json"
    measure_latency_table(space, path, warmup=1, repeats=3, calibrate=6, progress=False)
    return path, space


def test_profile_device_measures_every_block_and_calibrates(tiny_table) -> None:
    path, space = tiny_table
    table = LatencyTable.load(path)
    assert not table.missing(space)
    assert all(e["median_ms"] > 0 for e in table.entries.values())
    assert table.calibration["models"] == 6 and all(v > 0 for v in table.scales.values())
    assert table.machine["torch"] == torch.__version__ and table.settings["backend"] == "torch"
    arch = space.sample(1)
    features = table.features(arch)
    assert sum(features.values()) == pytest.approx(sum(table.entries[k]["median_ms"] for k in arch_parts(arch)))
    expected = sum(table.scales.get(t, 1.0) * v for t, v in features.items()) + table.offset_ms
    assert table.predict(arch) == pytest.approx(expected)
    assert table.predict(arch) == table.predict(arch)  # deterministic


def test_profile_device_reuses_measured_entries(tiny_table, tmp_path: Path) -> None:
    path, space = tiny_table
    copy = tmp_path / "device.json"
    copy.write_text(path.read_text())
    data = json.loads(copy.read_text())
    dropped = sorted(data["entries"])[0]
    del data["entries"][dropped]
    copy.write_text(json.dumps(data))
    start = time.perf_counter()
    table = measure_latency_table(space, copy, warmup=1, repeats=3, calibrate=0, progress=False)
    assert time.perf_counter() - start < 30
    before = json.loads(path.read_text())["entries"]
    same = [k for k in before if k != dropped and table.entries[k] == before[k]]
    assert len(same) == len(before) - 1  # every other entry kept as measured
    assert dropped in table.entries


def test_space_with_table_predicts_latency_and_checks_coverage(tiny_table, tmp_path: Path, write_space) -> None:
    path, _ = tiny_table
    data = tiny_space_dict(objectives=["accuracy", "latency_ms"], latency={"table": str(path)})
    space = load_space(write_space(data))
    table = space_latency_table(space)
    arch = space.sample(3)
    assert static_costs(arch, table)["latency_ms"] == table.predict(arch)
    data["stages"][0]["channels"] = [8, 16, 32]
    bigger = load_space(write_space(data, "bigger.yaml"))
    with pytest.raises(NasconvError, match="lacks .* of the space's blocks; run nasconv profile-device"):
        space_latency_table(bigger)


def test_onnxruntime_backend_measures_parts(tmp_path: Path) -> None:
    space = parse_space(
        tiny_space_dict(
            stages=[{"stride": 2, "channels": 8, "conv": {"het": {"p": 4}, "cond": {}}}], stem={"channels": 8}
        )
    )
    table = measure_latency_table(
        space, tmp_path / "ort.json", backend="onnxruntime", warmup=1, repeats=3, calibrate=3, progress=False
    )
    assert len(table.entries) == len(space_parts(space.arch_choices())) and table.settings["backend"] == "onnxruntime"


def test_percent_errors() -> None:
    e = percent_errors([1.0, 1.1, 2.0], [1.0, 1.0, 1.0])
    assert e["median"] == pytest.approx(0.1) and e["within_10"] == pytest.approx(2 / 3)


def test_non_dominated_ranks() -> None:
    points = [[0, 3], [1, 1], [3, 0], [2, 2], [4, 4]]
    assert non_dominated_ranks(points) == [0, 0, 0, 1, 2]


def test_cheap_moderate_trial_is_promoted_where_accuracy_alone_cuts_it() -> None:
    # (-accuracy, MACs): three accurate expensive trials, then a cheap less accurate one
    recorded = [[-0.95, 9e6], [-0.94, 8e6], [-0.93, 8.5e6], [-0.80, 1e6]]
    assert promotable(recorded, 3, keep=2)
    by_accuracy = sorted(range(4), key=lambda i: recorded[i][0])[:2]
    assert 3 not in by_accuracy
    assert not promotable(recorded + [[-0.90, 9.5e6]], 4, keep=2)  # dominated: cut


def test_scheduler_rungs_and_decisions() -> None:
    from ray.tune.schedulers import TrialScheduler

    from nasconv.search.scheduler import MultiObjectiveASHA

    assert rungs(9, 1, 3) == [1, 3] and rungs(3, 1, 3) == [1]
    scheduler = MultiObjectiveASHA(["accuracy", "macs"], max_epochs=9, grace=1, reduction=3)
    decisions = [
        scheduler.on_trial_result(None, None, {"epoch": 1, "accuracy": acc, "macs": macs})
        for acc, macs in [(0.9, 5e6), (0.8, 6e6), (0.7, 7e6), (0.6, 8e6), (0.95, 1e6), (0.5, 9e6)]
    ]
    assert decisions[:2] == [TrialScheduler.CONTINUE] * 2  # too few to judge
    assert decisions[4] == TrialScheduler.CONTINUE  # dominates everything
    assert decisions[5] == TrialScheduler.STOP
    assert scheduler.on_trial_result(None, None, {"epoch": 2, "accuracy": 0.1, "macs": 1e9}) == "CONTINUE"
    assert scheduler.on_trial_result(None, None, {"epoch": 1, "failed": True}) == "CONTINUE"
    assert not math.isnan(scheduler.stopped)
