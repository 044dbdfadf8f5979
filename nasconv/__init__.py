"""nasconv: neural architecture search over convolution types.

Public API (heavy parts import lazily, so ``import nasconv`` stays light)::

    load_space(path) -> Space          Space.suggest(trial) -> Arch, Space.sample(seed) -> Arch
    build_model(arch) -> nn.Module     load_arch(path) -> Arch
    build_conv(kind, in, out, ...)     CONV_KINDS (live), register(kind) (a class decorator)
    profile(model, input_shape) -> Profile    measure_latency(model, input_shape)
    resolve_options(space, ...)        run_search(space, options) -> DataFrame
    load_results(dir) -> DataFrame     pareto(df), knee(df)
    export(arch, model, to, formats)
    space_data(space.spec) -> Data     load_data(DatasetSpec, classes, channels, size) -> Data
    train(arch, data, TrainingSpec) -> (TrainResult, nn.Module)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:  # what editors and type checkers see; at run time each name loads on first use
    from .errors import NasconvError
    from .experiment import SearchOptions, resolve_options, run_search
    from .model.arch import Arch, StageArch, build_model, load_arch
    from .model.cost import Profile, measure_latency, profile, static_costs
    from .ops import CONV_KINDS, ConvOp, build_conv, register
    from .results.export import export
    from .results.folder import load_results
    from .results.front import knee, pareto
    from .search.data import Data, load_data, space_data
    from .search.space import DatasetSpec, Space, TrainingSpec, load_space
    from .search.training import TrainResult, train

_LAZY = {
    "Arch": "nasconv.model.arch",
    "StageArch": "nasconv.model.arch",
    "build_model": "nasconv.model.arch",
    "load_arch": "nasconv.model.arch",
    "profile": "nasconv.model.cost",
    "Profile": "nasconv.model.cost",
    "measure_latency": "nasconv.model.cost",
    "static_costs": "nasconv.model.cost",
    "build_conv": "nasconv.ops",
    "CONV_KINDS": "nasconv.ops",
    "ConvOp": "nasconv.ops",
    "register": "nasconv.ops",
    "Space": "nasconv.search.space",
    "load_space": "nasconv.search.space",
    "DatasetSpec": "nasconv.search.space",
    "TrainingSpec": "nasconv.search.space",
    "Data": "nasconv.search.data",
    "load_data": "nasconv.search.data",
    "space_data": "nasconv.search.data",
    "train": "nasconv.search.training",
    "TrainResult": "nasconv.search.training",
    "SearchOptions": "nasconv.experiment",
    "resolve_options": "nasconv.experiment",
    "run_search": "nasconv.experiment",
    "load_results": "nasconv.results.folder",
    "pareto": "nasconv.results.front",
    "knee": "nasconv.results.front",
    "export": "nasconv.results.export",
    "NasconvError": "nasconv.errors",
}

__all__ = [
    "Arch",
    "CONV_KINDS",
    "ConvOp",
    "Data",
    "DatasetSpec",
    "NasconvError",
    "Profile",
    "SearchOptions",
    "Space",
    "StageArch",
    "TrainResult",
    "TrainingSpec",
    "build_conv",
    "build_model",
    "export",
    "knee",
    "load_arch",
    "load_data",
    "load_results",
    "load_space",
    "measure_latency",
    "pareto",
    "profile",
    "register",
    "resolve_options",
    "run_search",
    "space_data",
    "static_costs",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nasconv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
