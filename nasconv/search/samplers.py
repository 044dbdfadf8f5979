"""The samplers a search may use, by name: one registry read by the space schema and the CLI.

Each factory takes a :class:`SamplerContext`. Optuna (and any heavier module a sampler needs) is
imported inside the factories, so the names can be read without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import NasconvError

if TYPE_CHECKING:
    import optuna

    from ..model.arch import Arch
    from .space import Space


@dataclass(frozen=True, kw_only=True)
class SamplerContext:
    """What a sampler may know: the space, its seed and population, and the costs every
    architecture has before training (params, MACs, FLOPs, table latency)."""

    space: Space
    seed: int
    population: int = 10
    costs: Callable[[Arch], dict[str, float]] | None = None


def _nsga2(ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.NSGAIISampler(population_size=ctx.population, seed=ctx.seed)


def _nsga3(ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    import warnings

    import optuna

    with warnings.catch_warnings():  # marked experimental since Optuna 3.2; a choice the user makes by name
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.NSGAIIISampler(population_size=ctx.population, seed=ctx.seed)


def _tpe(ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    import warnings

    import optuna

    with warnings.catch_warnings():  # group=True is marked experimental; it is what conditional genes need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=ctx.seed, multivariate=True, group=True, constant_liar=True)


def _gp(ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.GPSampler(seed=ctx.seed)


def _random(ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=ctx.seed)


def _ehvi(ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    from .cost_aware import CostAwareSampler

    return CostAwareSampler(ctx.space, seed=ctx.seed, costs=ctx.costs)


def _ehvi_gp(ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    from .cost_aware import CostAwareSampler

    return CostAwareSampler(ctx.space, seed=ctx.seed, costs=ctx.costs, model="gp")


SAMPLERS: dict[str, Callable[[SamplerContext], Any]] = {
    "ehvi": _ehvi,
    "ehvi-gp": _ehvi_gp,
    "nsga2": _nsga2,
    "nsga3": _nsga3,
    "tpe": _tpe,
    "gp": _gp,
    "random": _random,
}
"""Sampler name -> factory(SamplerContext)."""

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)
DEFAULT_SAMPLER = "ehvi"


def make_sampler(name: str, ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a space or ``--sampler`` names."""
    try:
        factory = SAMPLERS[name]
    except KeyError:
        raise NasconvError(f"unknown sampler {name!r}; known: {', '.join(SAMPLER_NAMES)}") from None
    return factory(ctx)
