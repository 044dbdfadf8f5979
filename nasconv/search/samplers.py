"""The samplers a search may use, by name: one registry read by the space schema and the CLI.

Optuna is imported inside the factories, so the names can be read without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import NasconvError

if TYPE_CHECKING:
    import optuna


def _nsga2(*, seed: int, population: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)


def _nsga3(*, seed: int, population: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.NSGAIIISampler(population_size=population, seed=seed)


def _tpe(*, seed: int, population: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)


def _random(*, seed: int, population: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "nsga2": _nsga2,
    "nsga3": _nsga3,
    "tpe": _tpe,
    "random": _random,
}
"""Sampler name -> factory(seed=, population=)."""

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)
DEFAULT_SAMPLER = "nsga2"


def make_sampler(name: str, *, seed: int, population: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a space or ``--sampler`` names."""
    try:
        factory = SAMPLERS[name]
    except KeyError:
        raise NasconvError(f"unknown sampler {name!r}; known: {', '.join(SAMPLER_NAMES)}") from None
    return factory(seed=seed, population=population)
