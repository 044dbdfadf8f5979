"""The ehvi sampler and the multi-objective maths it uses (issue 10's audit: D9/D14 the seed, D10 the
speed of three and more objectives, D11 the capacity prior), each checked against its definition."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import optuna
import pytest
from scipy.stats import norm

from nasconv.model.arch import Arch
from nasconv.model.cost import static_costs
from nasconv.search.cost_aware import CostAwareSampler, _ehvi_one_learned, _expected_improvement
from nasconv.search.multi_objective import (
    REFERENCE,
    dominated_boxes,
    hypervolume,
    hypervolume_improvement,
    non_dominated,
    scaled_hypervolume,
)
from nasconv.search.space import parse_space

from .conftest import tiny_space_dict


def _by_inclusion_exclusion(points: np.ndarray, reference: np.ndarray) -> float:
    """The hypervolume by its definition: the union of the points' boxes, by inclusion-exclusion."""
    points = points[np.all(points < reference, axis=1)]
    total = 0.0
    for size in range(1, len(points) + 1):
        for subset in itertools.combinations(range(len(points)), size):
            corner = points[list(subset)].max(axis=0)
            total += (-1) ** (size + 1) * float(np.prod(reference - corner))
    return total


def test_hypervolume_and_its_boxes_equal_the_definition() -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        m, n = int(rng.integers(2, 5)), int(rng.integers(1, 8))
        points = rng.random((n, m)) * 1.3 - 0.1
        if rng.random() < 0.3:
            points = np.round(points, 1)  # ties and duplicates
        reference = np.full(m, REFERENCE)
        expected = _by_inclusion_exclusion(points, reference)
        assert hypervolume(points, reference) == pytest.approx(expected, abs=1e-12)
        low, high = dominated_boxes(points, reference)
        assert np.all(high > low)
        # disjoint: sampled points fall in at most one box, and inside a box exactly when dominated
        probe = rng.random((300, m)) * 1.2
        inside = np.all((probe[:, None, :] >= low[None]) & (probe[:, None, :] < high[None]), axis=2)
        assert inside.sum(axis=1).max(initial=0) <= 1
        dominated = np.any(np.all(points[None, :, :] <= probe[:, None, :], axis=2), axis=1) & np.all(
            probe < reference, axis=1
        )
        assert np.array_equal(inside.any(axis=1), dominated)


def test_hypervolume_improvement_equals_the_difference_of_hypervolumes() -> None:
    rng = np.random.default_rng(1)
    for _ in range(60):
        m = int(rng.integers(2, 5))
        front = rng.random((int(rng.integers(0, 9)), m))
        reference = np.full(m, REFERENCE)
        candidates = rng.random((25, m)) * 1.4 - 0.2
        base = hypervolume(front, reference) if len(front) else 0.0
        expected = [hypervolume(np.vstack([front, c[None]]), reference) - base for c in candidates]
        assert np.allclose(hypervolume_improvement(candidates, front, reference), expected, atol=1e-12)


def test_scaled_hypervolume() -> None:
    points = np.array([[-0.9, 100.0], [-0.5, 50.0]])  # minimised (accuracy negated), macs
    low, high = np.array([-1.0, 0.0]), np.array([0.0, 100.0])
    # scaled: (0.1, 1.0) and (0.5, 0.5), reference 1.1
    expected = hypervolume(np.array([[0.1, 1.0], [0.5, 0.5]]), np.full(2, 1.1))
    assert scaled_hypervolume(points, low, high) == pytest.approx(expected)
    assert scaled_hypervolume(np.array([[1.0, 2.0]]), np.array([1.0, 0.0]), np.array([1.0, 4.0])) == pytest.approx(
        1.1 * 0.6
    )  # an axis without spread keeps a span of 1


@pytest.mark.parametrize("m", [3, 4])
def test_the_closed_form_expected_improvement_equals_a_fine_quadrature(m: int) -> None:
    rng = np.random.default_rng(2)
    front = rng.random((12, m))
    front = front[non_dominated(front)]
    reference = np.full(m, REFERENCE)
    base = rng.random((30, m)) * 1.2 - 0.05
    mean, std = rng.random(30), rng.random(30) * 0.3 + 0.01
    for j in range(m):
        exact = _ehvi_one_learned(base, j, mean, std, dominated_boxes(front, reference), reference)
        total = np.zeros(30)
        quantiles = norm.ppf((np.arange(2000) + 0.5) / 2000)
        for z in quantiles:
            points = base.copy()
            points[:, j] = mean + std * z
            total += hypervolume_improvement(points, front, reference)
        assert np.allclose(exact, total / len(quantiles), atol=2e-5)


def test_several_learned_objectives_use_the_quadrature_on_the_screened_candidates() -> None:
    rng = np.random.default_rng(3)
    front = rng.random((10, 3))
    front = front[non_dominated(front)]
    base = rng.random((40, 3))
    means, stds = [rng.random(40), rng.random(40)], [np.full(40, 0.05), np.full(40, 0.05)]
    gain = _expected_improvement(base, [0, 2], means, stds, front, np.random.default_rng(0))
    assert gain.shape == (40,) and np.all(gain >= 0) and gain.max() > 0
    at_mean = base.copy()
    at_mean[:, 0], at_mean[:, 2] = means
    best = np.argmax(hypervolume_improvement(at_mean, front, np.full(3, REFERENCE)))
    assert gain[best] > 0


def test_the_quadrature_over_several_learned_objectives_equals_the_mean_improvement() -> None:
    from nasconv.search.cost_aware import _draws, _ehvi_by_quadrature

    rng = np.random.default_rng(4)
    front = rng.random((15, 4))
    front = front[non_dominated(front)]
    reference = np.full(4, REFERENCE)
    base = rng.random((30, 4)) * 1.2 - 0.05
    learned = [0, 3]
    means, stds = [rng.random(30), rng.random(30)], [rng.random(30) * 0.2 + 0.01, rng.random(30) * 0.2 + 0.01]
    draws = _draws(2, np.random.default_rng(0))
    expected = np.zeros(30)
    for draw in draws:
        points = base.copy()
        for i, j in enumerate(learned):
            points[:, j] = means[i] + stds[i] * draw[i]
        expected += hypervolume_improvement(points, front, reference)
    got = _ehvi_by_quadrature(base, learned, means, stds, dominated_boxes(front, reference), reference, draws)
    assert np.allclose(got, expected / len(draws), atol=1e-12)


def test_beyond_the_exact_budget_the_best_candidates_are_screened_then_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    import nasconv.search.cost_aware as cost_aware

    rng = np.random.default_rng(5)
    front = rng.random((60, 4))
    front = front[non_dominated(front)]
    reference = np.full(4, REFERENCE)
    base = rng.random((400, 4))
    mean, std = rng.random(400), rng.random(400) * 0.1 + 0.01
    exact = _ehvi_one_learned(base, 0, mean, std, dominated_boxes(front, reference), reference)
    monkeypatch.setattr(cost_aware, "EXACT_PAIRS", 1)
    monkeypatch.setattr(cost_aware, "SCREENED", 40)
    gain = _expected_improvement(base, [0], [mean], [std], front, np.random.default_rng(0))
    kept = gain > 0
    assert 0 < kept.sum() <= 40
    assert np.allclose(gain[kept], exact[kept])  # exact where computed
    assert np.argmax(gain) == np.argmax(exact)  # the thinned front's bound kept the best


def _fake_accuracy(arch_json: str) -> float:
    return 0.5 + (int(hashlib.sha256(arch_json.encode()).hexdigest(), 16) % 400) / 1000


def _trajectory(space, seed: int, n: int, **kwargs) -> list[str]:
    study = optuna.create_study(directions=space.directions, sampler=CostAwareSampler(space, seed=seed, **kwargs))
    seen: list[str] = []
    for _ in range(n):
        trial = study.ask()
        arch = space.suggest(trial)
        key = arch.to_json()
        trial.set_user_attr("arch", key)
        costs = static_costs(arch)
        study.tell(trial, [_fake_accuracy(key) if o == "accuracy" else costs[o] for o in space.objectives])
        seen.append(key)
    return seen


def test_the_seed_changes_the_search_and_the_same_seed_repeats_it() -> None:
    # audit D9/D14: on an enumerable two-objective space seeds 0, 1 and 2 proposed the same sequence
    space = parse_space(tiny_space_dict(), source="tiny.yaml")
    runs = {seed: _trajectory(space, seed, 10, startup=4) for seed in (0, 1, 2)}
    assert len({tuple(run) for run in runs.values()}) == 3
    assert _trajectory(space, 1, 10, startup=4) == runs[1]  # reproducible
    cheapest = min(static_costs(space.decode(g))["macs"] for g in space.enumerate())
    for run in runs.values():
        assert len(set(run)) == len(run)
        assert static_costs(Arch.from_json(run[0]))["macs"] == cheapest  # the cheapest first, whatever the seed


@pytest.mark.parametrize(
    ("objectives", "measure"),
    [
        (["accuracy", "macs"], "params"),
        (["accuracy", "params"], "macs"),
        (["accuracy", "flops"], "params"),
        (["accuracy", "macs", "params"], None),
        (["accuracy", "flops", "params"], None),
    ],
)
def test_the_capacity_prior_never_uses_an_objective_as_capacity(objectives: list[str], measure: str | None) -> None:
    # audit D11: with params an objective, "most params for the params" put every architecture on the front
    space = parse_space(tiny_space_dict(objectives=objectives), source="tiny.yaml")
    sampler = CostAwareSampler(space, seed=0)
    known = [o for o in objectives if o != "accuracy"]
    assert sampler.capacity_measure(known) == measure


def test_with_params_an_objective_the_start_has_the_most_macs_for_its_params() -> None:
    space = parse_space(tiny_space_dict(objectives=["accuracy", "params"]), source="tiny.yaml")
    costs = [static_costs(space.decode(g)) for g in space.enumerate()]
    points = np.array([[-c["macs"], c["params"]] for c in costs])
    front = {(c["macs"], c["params"]) for c, keep in zip(costs, non_dominated(points)) if keep}
    assert len(front) < len({(c["macs"], c["params"]) for c in costs})  # the premise: the prior filters
    for seed in range(4):
        start = [static_costs(Arch.from_json(k)) for k in _trajectory(space, seed, 4, startup=6)]
        assert all((c["macs"], c["params"]) in front for c in start), seed
