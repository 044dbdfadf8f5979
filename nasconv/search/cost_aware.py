"""``ehvi``: multi-objective Bayesian optimisation that knows what costs are known before training.

In architecture search only accuracy (and latency, when it is measured rather than looked up) has
to be learned by training; params, MACs and FLOPs are exact before a trial starts. This sampler
exploits that: it models accuracy alone, by Bayesian linear regression on the architecture's active
genes (one-hot: the effect of each choice in each stage) and its log params and log MACs (capacity),
and proposes the untried, feasible architecture with the largest *expected hypervolume
improvement*, the expectation taken over accuracy only (quadrature over the predictive normal)
while the costs sit at their exact values. ``model="gp"`` uses a Gaussian process on the same
features instead (measured slower and no better on the benchmark spaces, see the README).

The first proposals (``startup``) are made before anything is learned, with capacity standing in
for accuracy: among the architectures with the most parameters for their known costs, the
cheapest (always Pareto-optimal in its cost) and then a maximin spread over the known costs.

It never proposes an architecture already evaluated, running or over a static limit, so each
proposal trains something new. Candidates are every architecture of the space when it has at most
``enumerate_limit``; otherwise a fresh random pool plus every one-gene neighbour of the current
front (the local search that is strong on NAS benchmarks).

It is an Optuna sampler: the whole architecture is chosen at the trial's first parameter and
handed out gene by gene, so the study stays an ordinary Optuna study (optuna-dashboard opens it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution

from ..model.arch import Arch
from ..model.cost import static_costs
from .multi_objective import CONSTRAINTS, direction, hypervolume, non_dominated
from .record import COMPLETE, INTERRUPTED, trial_state

if TYPE_CHECKING:
    from .space import Space

REFERENCE = 1.1
QUADRATURE = 16


class CostAwareSampler(optuna.samplers.BaseSampler):
    """See the module docstring. ``costs(arch)`` gives the costs known before training."""

    def __init__(
        self,
        space: Space,
        *,
        seed: int = 0,
        costs: Callable[[Arch], dict[str, float]] | None = None,
        startup: int = 6,
        pool: int = 2000,
        enumerate_limit: int = 20_000,
        capacity_prior: bool = True,
        model: str = "linear",
    ) -> None:
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.costs = costs or static_costs
        self.startup = startup
        self.pool_size = pool
        self.enumerate_limit = enumerate_limit
        self.capacity_prior = capacity_prior
        self.model = model
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._proposals: dict[int, dict[str, Any]] = {}
        self._candidates: dict[str, _Candidate] = {}
        self._by_genes: dict[tuple[tuple[str, Any], ...], _Candidate] = {}
        self._everything: list[str] | None = None
        self._random_pool: list[str] = []
        self._neighbourhoods: dict[str, list[str]] = {}
        self._vocabulary = {
            (name, value): i for i, (name, value) in enumerate((n, v) for n, choices in space.genes() for v in choices)
        }

    # Optuna's sampler interface --------------------------------------------------------------

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
        return {}

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict) -> dict:
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial, name: str, distribution: BaseDistribution
    ) -> Any:
        if trial.number not in self._proposals:
            self._proposals[trial.number] = self.propose(study, trial.number)
        genes = self._proposals[trial.number]
        choices = getattr(distribution, "choices", ())
        if name in genes and genes[name] in choices:
            return genes[name]
        return self._random.sample_independent(study, trial, name, distribution)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any, values: Any) -> None:
        self._proposals.pop(trial.number, None)

    def reseed_rng(self) -> None:
        self.rng = np.random.default_rng()
        self._random.reseed_rng()

    # proposals --------------------------------------------------------------------------------

    def propose(self, study: optuna.Study, number: int) -> dict[str, Any]:
        """The genes of the next architecture for trial ``number``."""
        history = _History.read(study, self.space, skip=number)
        pool = [c for c in self._pool(history) if c.key not in history.known and self._feasible(c)]
        if not pool:  # everything feasible is known: a repeat, which the searcher answers from the record
            return self._draw()
        objectives = self.space.objectives
        known = [o for o in objectives if o in pool[0].costs]
        if len(history.values) < self.startup or not any(o not in known for o in objectives):
            return self._space_filling(pool, history, known).genes
        return self._best_expected_improvement(pool, history, known).genes

    def _candidate(self, genes: dict[str, Any]) -> _Candidate:
        gene_key = tuple(sorted(genes.items()))
        found = self._by_genes.get(gene_key)
        if found is None:
            arch = self.space.decode(genes)
            key = arch.to_json()
            found = self._candidates.get(key)
            if found is None:
                found = self._candidates[key] = _Candidate(key, genes, self.costs(arch), self._features(genes))
            self._by_genes[gene_key] = found
        return found

    def _draw(self) -> dict[str, Any]:
        return self.space.draw(lambda name, choices: choices[int(self.rng.integers(len(choices)))])

    def _pool(self, history: _History) -> list[_Candidate]:
        """Every architecture of a small space; else a random pool (a tenth renewed per proposal)
        and the one-gene neighbours of the current front."""
        if self._everything is None and self.space.count() <= self.enumerate_limit:
            self._everything = [self._candidate(genes).key for genes in self.space.enumerate()]
        if self._everything is not None:
            return [self._candidates[key] for key in self._everything]
        renew = self.pool_size if not self._random_pool else max(1, self.pool_size // 10)
        fresh = [self._candidate(self._draw()).key for _ in range(renew)]
        self._random_pool = (self._random_pool + fresh)[-self.pool_size :]
        keys = dict.fromkeys(self._random_pool)
        for key in history.front_keys(self.space.objectives):
            if key not in self._neighbourhoods:
                genes = self._candidates[key].genes if key in self._candidates else history.genes.get(key, {})
                self._neighbourhoods[key] = [self._candidate(n).key for n in self._neighbours(genes)]
            keys.update(dict.fromkeys(self._neighbourhoods[key]))
        return [self._candidates[key] for key in keys]

    def _neighbours(self, genes: dict[str, Any]) -> list[dict[str, Any]]:
        """Every architecture one active gene away (a changed kind draws the new kind's options at random)."""
        out = []
        all_genes = dict(self.space.genes())
        for changed, value in genes.items():
            choices = all_genes.get(changed, ())
            for other in choices:
                if other == value:
                    continue

                def pick(name: str, options: tuple[Any, ...], changed: str = changed, other: Any = other) -> Any:
                    if name == changed:
                        return other
                    if name in genes and genes[name] in options:
                        return genes[name]
                    return options[int(self.rng.integers(len(options)))]

                out.append(self.space.draw(pick))
        return out

    def _feasible(self, c: _Candidate) -> bool:
        limits = self.space.spec.constraints
        for key, metric in CONSTRAINTS.items():
            limit = getattr(limits, key)
            if limit is not None and metric in c.costs and c.costs[metric] > limit:
                return False
        return True

    def _features(self, genes: dict[str, Any]) -> np.ndarray:
        x = np.zeros(len(self._vocabulary))
        for name, value in genes.items():
            index = self._vocabulary.get((name, value))
            if index is not None:
                x[index] = 1.0
        return x

    def _cost_matrix(self, candidates: list[_Candidate], known: list[str]) -> np.ndarray:
        return np.array([[c.costs[o] for o in known] for c in candidates], dtype=float).reshape(len(candidates), -1)

    def _space_filling(self, pool: list[_Candidate], history: _History, known: list[str]) -> _Candidate:
        """Before accuracy is known, capacity stands for it: among the candidates with the most
        parameters for their known costs (non-dominated in params up, costs down), the cheapest
        first, then the one farthest (in scaled known costs) from everything tried or running."""
        if not known:
            return pool[int(self.rng.integers(len(pool)))]
        costs = self._cost_matrix(pool, known)
        if self.capacity_prior and "params" in pool[0].costs:
            capacity = np.array([[-c.costs["params"]] for c in pool])
            on_front = non_dominated(np.hstack([capacity, costs]))
            pool = [c for c, keep in zip(pool, on_front) if keep]
            costs = costs[on_front]
        low, span = costs.min(axis=0), np.ptp(costs, axis=0)
        scaled = (costs - low) / np.where(span > 0, span, 1.0)
        tried = [self._candidates[k] for k in history.tried_keys if k in self._candidates]
        if not tried:
            return pool[int(np.lexsort(scaled.T[::-1])[0])]
        seen = (self._cost_matrix(tried, known) - low) / np.where(span > 0, span, 1.0)
        distance = np.min(np.linalg.norm(scaled[:, None, :] - seen[None, :, :], axis=2), axis=1)
        distance += 1e-9 * self.rng.random(len(pool))  # ties broken at random, reproducibly
        return pool[int(np.argmax(distance))]

    def _best_expected_improvement(self, pool: list[_Candidate], history: _History, known: list[str]) -> _Candidate:
        objectives = self.space.objectives
        learned = [o for o in objectives if o not in known]
        hist = [self._candidate_for(history, key) for key in history.value_keys]
        values = np.array(history.values, dtype=float)  # in objective order
        sign = np.array([-1.0 if direction(o) == "maximize" else 1.0 for o in objectives])
        points = values * sign  # minimisation form
        x_hist = np.array([c.features for c in hist])
        x_pool = np.array([c.features for c in pool])
        extra_hist = self._cost_features(hist, known)
        extra_pool = self._cost_features(pool, known, reference=hist)
        x_hist, x_pool = np.hstack([x_hist, extra_hist]), np.hstack([x_pool, extra_pool])

        # scale every objective to about [0, 1]: known ones over pool and history, learned ones over history
        costs_pool = self._cost_matrix(pool, known)
        low, high = points.min(axis=0), points.max(axis=0)
        for j, o in enumerate(objectives):
            if o in known:
                column = costs_pool[:, known.index(o)] * sign[j]
                low[j], high[j] = min(low[j], column.min()), max(high[j], column.max())
        span = np.where(high > low, high - low, 1.0)
        scaled_hist = (points - low) / span

        # running trials count as if they had reached their predicted mean (kriging believer)
        pending = [self._candidates[k] for k in history.running_keys if k in self._candidates]
        x_all = x_pool
        if pending:
            x_pending = np.hstack(
                [np.array([c.features for c in pending]), self._cost_features(pending, known, reference=hist)]
            )
            x_all = np.vstack([x_pool, x_pending])
        means, stds, fantasy = [], [], np.zeros((len(pending), len(objectives)))
        for o in learned:
            j = objectives.index(o)
            mu, sd = _fit_predict(x_hist, scaled_hist[:, j], x_all, seed=self.seed + len(hist), model=self.model)
            means.append(mu[: len(pool)])
            stds.append(sd[: len(pool)])
            fantasy[:, j] = mu[len(pool) :]
        front = scaled_hist
        if pending:
            for j, o in enumerate(objectives):
                if o in known:
                    fantasy[:, j] = (self._cost_matrix(pending, known)[:, known.index(o)] * sign[j] - low[j]) / span[j]
            front = np.vstack([front, fantasy])
        front = front[non_dominated(front)]

        base = np.zeros((len(pool), len(objectives)))
        for j, o in enumerate(objectives):
            if o in known:
                base[:, j] = (costs_pool[:, known.index(o)] * sign[j] - low[j]) / span[j]
        gain = _expected_improvement(base, [objectives.index(o) for o in learned], means, stds, front, self.rng)
        if not np.any(gain > 0):  # nothing promises an improvement: the most uncertain, to learn
            gain = np.sum(stds, axis=0)
        gain = gain + 1e-12 * self.rng.random(len(pool))
        return pool[int(np.argmax(gain))]

    def _candidate_for(self, history: _History, key: str) -> _Candidate:
        if key not in self._candidates:
            self._candidates[key] = _Candidate(
                key, history.genes[key], self.costs(Arch.from_json(key)), self._features(history.genes[key])
            )
        return self._candidates[key]

    def _cost_features(
        self, candidates: list[_Candidate], known: list[str], reference: list[_Candidate] | None = None
    ) -> np.ndarray:
        """log params and log MACs, standardised on the reference set: capacity predicts accuracy."""
        names = [n for n in ("params", "macs") if candidates and n in candidates[0].costs]
        logs = np.log1p(np.array([[c.costs[n] for n in names] for c in candidates], dtype=float)).reshape(
            len(candidates), -1
        )
        ref = candidates if reference is None else reference
        ref_logs = np.log1p(np.array([[c.costs[n] for n in names] for c in ref], dtype=float)).reshape(len(ref), -1)
        mean, std = ref_logs.mean(axis=0), ref_logs.std(axis=0)
        return (logs - mean) / np.where(std > 0, std, 1.0)


class _Candidate:
    __slots__ = ("costs", "features", "genes", "key")

    def __init__(self, key: str, genes: dict[str, Any], costs: dict[str, float], features: np.ndarray) -> None:
        self.key, self.genes, self.costs, self.features = key, genes, costs, features


class _History:
    """What a study knows, read afresh for each proposal."""

    def __init__(self) -> None:
        self.known: set[str] = set()
        self.tried_keys: list[str] = []
        self.running_keys: list[str] = []
        self.value_keys: list[str] = []
        self.values: list[list[float]] = []
        self.genes: dict[str, dict[str, Any]] = {}

    @classmethod
    def read(cls, study: optuna.Study, space: Space, skip: int) -> _History:
        h = cls()
        for t in study.get_trials(deepcopy=False):
            if t.number == skip or t.user_attrs.get("reason") == INTERRUPTED:
                continue
            key = t.user_attrs.get("arch")
            if not isinstance(key, str):
                try:
                    key = space.decode(t.params).to_json()
                except (KeyError, ValueError, TypeError):
                    continue
            h.genes.setdefault(key, dict(t.params))
            if key not in h.known:
                h.known.add(key)
                h.tried_keys.append(key)
            state = trial_state(t)
            if t.state == optuna.trial.TrialState.RUNNING:
                h.running_keys.append(key)
            elif state == COMPLETE and t.values is not None and key not in h.value_keys:
                h.value_keys.append(key)
                h.values.append(list(t.values))
        return h

    def front_keys(self, objectives: list[str]) -> list[str]:
        if not self.values:
            return []
        sign = np.array([-1.0 if direction(o) == "maximize" else 1.0 for o in objectives])
        mask = non_dominated(np.array(self.values) * sign)
        return [k for k, keep in zip(self.value_keys, mask) if keep]


def _fit_predict(
    x: np.ndarray, y: np.ndarray, x_new: np.ndarray, seed: int, model: str = "gp"
) -> tuple[np.ndarray, np.ndarray]:
    """Predictive mean and standard deviation at ``x_new``: a Gaussian process (Matern 5/2 + noise,
    fitted by maximum likelihood), or Bayesian linear regression (``model="linear"``)."""
    import warnings

    if model == "linear":
        from sklearn.linear_model import BayesianRidge

        reg = BayesianRidge()
        reg.fit(x, y)
        mean, std = reg.predict(x_new, return_std=True)
        return np.asarray(mean, dtype=float), np.maximum(np.asarray(std, dtype=float), 1e-9)

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(length_scale=2.0, length_scale_bounds=(0.1, 100.0), nu=2.5)
    kernel = kernel + WhiteKernel(1e-2, (1e-6, 1.0))
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=2, random_state=seed % 2**31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(x, y)
    mean, std = gp.predict(x_new, return_std=True)
    return np.asarray(mean, dtype=float), np.maximum(np.asarray(std, dtype=float), 1e-9)


def _expected_improvement(
    base: np.ndarray,
    learned: list[int],
    means: list[np.ndarray],
    stds: list[np.ndarray],
    front: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Expected hypervolume improvement of each candidate row of ``base`` (known coordinates
    filled, learned ones taken from normal predictions), over ``front``, reference point 1.1."""
    from scipy.stats import norm

    n, m = base.shape
    if len(learned) == 1:
        draws = norm.ppf((np.arange(QUADRATURE) + 0.5) / QUADRATURE)[:, None]
    else:  # a Latin hypercube of normal draws, one column per learned objective
        u = (np.stack([rng.permutation(QUADRATURE) for _ in learned], axis=1) + 0.5) / QUADRATURE
        draws = norm.ppf(u)
    total = np.zeros(n)
    for draw in draws:
        points = base.copy()
        for i, j in enumerate(learned):
            points[:, j] = means[i] + stds[i] * draw[i]
        total += _improvement(points, front) if m == 2 else _improvement_nd(points, front)
    return total / len(draws)


def _improvement(points: np.ndarray, front: np.ndarray) -> np.ndarray:
    """Hypervolume improvement of each 2-D point over a 2-D front, vectorised over points."""
    ref = REFERENCE
    order = np.argsort(front[:, 0])
    fx, fy = front[order, 0], front[order, 1]
    px, py = points[:, :1], points[:, 1:]
    box = np.clip(ref - px[:, 0], 0, None) * np.clip(ref - py[:, 0], 0, None)
    # the part of the point's box the front already dominates: the staircase of the clipped front
    cx = np.clip(np.maximum(fx[None, :], px), None, ref)
    cy = np.clip(np.maximum(fy[None, :], py), None, ref)
    best = np.minimum.accumulate(cy, axis=1)  # lowest y reached at or left of each x
    widths = np.diff(np.concatenate([cx, np.full((len(points), 1), ref)], axis=1), axis=1)
    covered = np.sum(widths * (ref - best), axis=1)
    return np.clip(box - covered, 0, None)


def _improvement_nd(points: np.ndarray, front: np.ndarray) -> np.ndarray:
    reference = np.full(points.shape[1], REFERENCE)
    base = hypervolume(front, reference) if len(front) else 0.0
    out = np.zeros(len(points))
    for i, p in enumerate(points):
        if np.all(p < reference) and not np.any(np.all(front <= p, axis=1)):
            out[i] = hypervolume(np.vstack([front, p]), reference) - base
    return out


__all__ = ["CostAwareSampler"]
