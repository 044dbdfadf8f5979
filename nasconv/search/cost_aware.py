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
for accuracy: among the architectures with the most capacity for their known costs (the most
parameters for their MACs; the most MACs for their parameters when params is an objective; no
filter when both are objectives, as capacity would then be a cost), the cheapest first (always
Pareto-optimal in its cost) and then draws at random, so that every seed starts differently (a
maximin spread over the known costs made every seed the same run; starting at a random point of
the capacity front instead of the cheapest was measured worse, see the README).

With three or more objectives the expected improvement is exact and vectorised: the region the
front dominates is cut into disjoint boxes once per proposal, and each candidate's expectation over
a single learned objective (accuracy) has a closed form per box (normal CDF and density); with
several learned objectives, a quadrature over the most promising candidates.

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
from .multi_objective import (
    CONSTRAINTS,
    REFERENCE,
    as_minimised,
    dominated_boxes,
    hypervolume_improvement,
    minimised,
    non_dominated,
)
from .record import COMPLETE, INTERRUPTED, trial_state

if TYPE_CHECKING:
    from .space import Space

QUADRATURE = 16
SCREENED = 256
"""At least this many candidates get the exact expected improvement when the rest are screened out."""
EXACT_PAIRS = 20_000_000
"""Candidate x box pairs computed exactly per proposal (three or more objectives). Beyond it (a large
front: about F^3 / 6 boxes at four objectives), candidates are screened first against a thinned
front (THIN of its points: an upper bound, as fewer points dominate less)."""
THIN = 24
CAPACITY = {"params": ("params",), "macs": ("macs", "flops")}
"""Capacity measures for the capacity prior, first preferred, each with the objectives that are it."""


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

    def capacity_measure(self, known: list[str]) -> str | None:
        """The cost that stands for accuracy before any is learned (more is better at equal known
        costs): params, or MACs when params is an objective; None when both are objectives (capacity
        would then be a cost itself and every architecture on the capacity front)."""
        for name, same in CAPACITY.items():
            if not set(same) & set(known):
                return name
        return None

    def _space_filling(self, pool: list[_Candidate], history: _History, known: list[str]) -> _Candidate:
        """Before accuracy is known, capacity stands for it. Among the candidates with the most
        capacity for their known costs (non-dominated in capacity up, costs down, see
        :meth:`capacity_measure`): the cheapest first (always Pareto-optimal in its cost), then one
        drawn at random (the seed's say: every seed a different start)."""
        if not known:
            return pool[int(self.rng.integers(len(pool)))]
        costs = self._cost_matrix(pool, known)
        capacity = self.capacity_measure(known) if self.capacity_prior else None
        if capacity is not None and capacity in pool[0].costs:
            more = -np.array([[c.costs[capacity]] for c in pool], dtype=float)
            on_front = non_dominated(np.hstack([more, costs]))
            pool = [c for c, keep in zip(pool, on_front) if keep]
            costs = costs[on_front]
        if not history.tried_keys:
            return pool[int(np.lexsort(costs.T[::-1])[0])]
        return pool[int(self.rng.integers(len(pool)))]

    def _best_expected_improvement(self, pool: list[_Candidate], history: _History, known: list[str]) -> _Candidate:
        objectives = self.space.objectives
        learned = [o for o in objectives if o not in known]
        hist = [self._candidate_for(history, key) for key in history.value_keys]
        points = np.array([as_minimised(v, objectives) for v in history.values], dtype=float)
        x_hist = np.array([c.features for c in hist])
        x_pool = np.array([c.features for c in pool])
        extra_hist = self._cost_features(hist, known)
        extra_pool = self._cost_features(pool, known, reference=hist)
        x_hist, x_pool = np.hstack([x_hist, extra_hist]), np.hstack([x_pool, extra_pool])

        # scale every objective to about [0, 1]: known ones over pool and history, learned ones over history
        costs_pool = self._known_minimised(pool, known)
        low, high = points.min(axis=0), points.max(axis=0)
        for j, o in enumerate(objectives):
            if o in known:
                column = costs_pool[:, known.index(o)]
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
            costs_pending = self._known_minimised(pending, known)
            for j, o in enumerate(objectives):
                if o in known:
                    fantasy[:, j] = (costs_pending[:, known.index(o)] - low[j]) / span[j]
            front = np.vstack([front, fantasy])
        front = front[non_dominated(front)]

        base = np.zeros((len(pool), len(objectives)))
        for j, o in enumerate(objectives):
            if o in known:
                base[:, j] = (costs_pool[:, known.index(o)] - low[j]) / span[j]
        gain = _expected_improvement(base, [objectives.index(o) for o in learned], means, stds, front, self.rng)
        if not np.any(gain > 0):  # nothing promises an improvement: the most uncertain, to learn
            gain = np.sum(stds, axis=0)
        gain = gain + 1e-12 * self.rng.random(len(pool))
        return pool[int(np.argmax(gain))]

    def _known_minimised(self, candidates: list[_Candidate], known: list[str]) -> np.ndarray:
        """The known objectives of the candidates in minimisation form, (candidates, len(known))."""
        matrix = self._cost_matrix(candidates, known)
        return minimised({o: matrix[:, i] for i, o in enumerate(known)}, known).reshape(len(candidates), len(known))

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
        mask = non_dominated(np.array([as_minimised(v, objectives) for v in self.values]))
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
    n, m = base.shape
    if m > 2:
        return _expected_improvement_nd(base, learned, means, stds, front, rng)
    total = np.zeros(n)
    draws = _draws(len(learned), rng)
    for draw in draws:
        points = base.copy()
        for i, j in enumerate(learned):
            points[:, j] = means[i] + stds[i] * draw[i]
        total += _improvement(points, front)
    return total / len(draws)


def _draws(learned: int, rng: np.random.Generator) -> np.ndarray:
    """Standard normal quadrature points, (QUADRATURE, learned): the midpoint quantiles for one
    learned objective, a Latin hypercube for several."""
    from scipy.stats import norm

    if learned == 1:
        return np.asarray(norm.ppf((np.arange(QUADRATURE) + 0.5) / QUADRATURE))[:, None]
    u = (np.stack([rng.permutation(QUADRATURE) for _ in range(learned)], axis=1) + 0.5) / QUADRATURE
    return np.asarray(norm.ppf(u))


def _expected_improvement_nd(
    base: np.ndarray,
    learned: list[int],
    means: list[np.ndarray],
    stds: list[np.ndarray],
    front: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Three or more objectives: the front's dominated region as disjoint boxes, once per proposal.
    With one learned objective the expectation is exact (closed form per box); with several, a
    quadrature. Exact for every candidate while candidates x boxes stays within EXACT_PAIRS (and
    with several learned objectives for the SCREENED best at optimistic values); beyond, for the
    candidates ranked best against a thinned front, the others getting 0."""
    n, m = base.shape
    reference = np.full(m, REFERENCE)
    boxes = dominated_boxes(front, reference)
    several = len(learned) > 1
    if not several and n * len(boxes[0]) <= EXACT_PAIRS:
        return _ehvi_one_learned(base, learned[0], means[0], stds[0], boxes, reference)
    # screen: an upper bound (a thinned front dominates less), at optimistic values with several learned
    order = np.argsort(front[:, learned[0]], kind="stable")
    thin = front[order[np.unique(np.linspace(0, len(front) - 1, THIN).round().astype(int))]] if len(front) else front
    thin_boxes = dominated_boxes(thin, reference)
    if several:
        optimistic = base.copy()
        for i, j in enumerate(learned):
            optimistic[:, j] = means[i] - 2 * stds[i]
        bound = hypervolume_improvement(optimistic, thin, reference, boxes=thin_boxes)
    else:
        bound = _ehvi_one_learned(base, learned[0], means[0], stds[0], thin_boxes, reference)
    keep = np.argsort(-bound, kind="stable")[: max(SCREENED, EXACT_PAIRS // max(1, len(boxes[0])))]
    keep = keep[bound[keep] > 0]
    out = np.zeros(n)
    if not len(keep):
        return out
    if not several:
        out[keep] = _ehvi_one_learned(base[keep], learned[0], means[0][keep], stds[0][keep], boxes, reference)
        return out
    keep = keep[:SCREENED]
    kept_means, kept_stds = [mu[keep] for mu in means], [sd[keep] for sd in stds]
    draws = _draws(len(learned), rng)
    out[keep] = _ehvi_by_quadrature(base[keep], learned, kept_means, kept_stds, boxes, reference, draws)
    return out


def _ehvi_by_quadrature(
    base: np.ndarray,
    learned: list[int],
    means: list[np.ndarray],
    stds: list[np.ndarray],
    boxes: tuple[np.ndarray, np.ndarray],
    reference: np.ndarray,
    draws: np.ndarray,
    chunk: int = 1 << 22,
) -> np.ndarray:
    """Expected hypervolume improvement over the quadrature ``draws`` of the learned objectives: the
    overlap of each candidate with each box along the known axes is computed once, along the learned
    ones per draw; boxes no candidate overlaps along the known axes are dropped."""
    n, m = base.shape
    known = [d for d in range(m) if d not in learned]
    low, high = boxes
    own_known = np.prod(np.clip(reference[known] - base[:, known], 0, None), axis=1)
    total = np.zeros(n)
    values = [[means[i] + stds[i] * draw[i] for i in range(len(learned))] for draw in draws]
    for draw_values in values:  # the candidates' own boxes
        own = own_known.copy()
        for i, j in enumerate(learned):
            own *= np.clip(reference[j] - draw_values[i], 0, None)
        total += own
    step = max(1, chunk // max(1, n))
    for start in range(0, len(low), step):
        lo, hi = low[start : start + step], high[start : start + step]
        along_known = np.ones((n, len(lo)))
        for d in known:
            along_known *= np.clip(hi[None, :, d] - np.maximum(lo[None, :, d], base[:, None, d]), 0, None)
        used = along_known.any(axis=0)
        along_known, lo, hi = along_known[:, used], lo[used], hi[used]
        for draw_values in values:
            overlap = along_known.copy()
            for i, j in enumerate(learned):
                overlap *= np.clip(hi[None, :, j] - np.maximum(lo[None, :, j], draw_values[i][:, None]), 0, None)
            total -= overlap.sum(axis=1)
    return np.clip(total / len(draws), 0, None)


def _ehvi_one_learned(
    base: np.ndarray,
    j: int,
    mean: np.ndarray,
    std: np.ndarray,
    boxes: tuple[np.ndarray, np.ndarray],
    reference: np.ndarray,
    chunk: int = 1 << 21,
) -> np.ndarray:
    """Exact expected hypervolume improvement when only objective ``j`` is uncertain (normal with
    ``mean`` and ``std`` per candidate). The improvement is the candidate's box up to the reference
    less its overlap with each box [lo, hi) of the dominated region; along j the overlap is
    max(0, hi - max(lo, a)), whose expectation for a ~ N(mu, sd) is, with b(x) = (x - mu) / sd,
    (hi - lo) Phi(b(lo)) + (hi - mu) (Phi(b(hi)) - Phi(b(lo))) + sd (phi(b(hi)) - phi(b(lo)))."""
    from scipy.special import ndtr

    n, m = base.shape
    others = [d for d in range(m) if d != j]
    mu, sd = mean[:, None], std[:, None]

    def pdf(z: np.ndarray) -> np.ndarray:
        return np.asarray(np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi))

    # the candidate's own box: its other sides times E[max(0, reference - a)]
    own = np.prod(np.clip(reference[others] - base[:, others], 0, None), axis=1)
    b_ref = (reference[j] - mean) / std
    total = own * ((reference[j] - mean) * ndtr(b_ref) + std * pdf(b_ref))
    low, high = boxes
    if len(low) == 0:
        return np.clip(total, 0, None)
    # along j the boxes take few distinct bounds: their expectations are computed once per candidate
    bounds, inverse = np.unique(np.concatenate([low[:, j], high[:, j]]), return_inverse=True)
    lo_index, hi_index = inverse[: len(low)], inverse[len(low) :]
    step = max(1, chunk // len(low))
    for start in range(0, n, step):
        rows = slice(start, start + step)
        part = base[rows]
        known = np.ones((len(part), len(low)))
        for d in others:
            known *= np.clip(high[None, :, d] - np.maximum(low[None, :, d], part[:, None, d]), 0, None)
        b = (bounds[None, :] - mu[rows]) / sd[rows]
        cdf, density = ndtr(b), pdf(b)
        lo, hi = bounds[lo_index][None, :], bounds[hi_index][None, :]
        cdf_lo, cdf_hi = cdf[:, lo_index], cdf[:, hi_index]
        pdf_lo, pdf_hi = density[:, lo_index], density[:, hi_index]
        along = (hi - lo) * cdf_lo + (hi - mu[rows]) * (cdf_hi - cdf_lo) + sd[rows] * (pdf_hi - pdf_lo)
        total[rows] -= np.sum(known * along, axis=1)
    return np.clip(total, 0, None)


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


__all__ = ["CostAwareSampler"]
