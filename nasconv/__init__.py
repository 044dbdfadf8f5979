"""nasconv: neural architecture search over convolution types.

Public API (heavy parts import lazily, so ``import nasconv`` stays light)::

    load_space(path) -> Space          Space.suggest(trial) -> Arch
    build_model(arch) -> nn.Module     load_arch(path) -> Arch
    profile(model, input_shape)        measure_latency(model, input_shape)
    load_results(dir) -> DataFrame     pareto(df, objectives), knee(df, objectives)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Arch": "nasconv.arch",
    "StageArch": "nasconv.arch",
    "build_model": "nasconv.arch",
    "load_arch": "nasconv.arch",
    "Space": "nasconv.space",
    "load_space": "nasconv.space",
    "profile": "nasconv.cost",
    "measure_latency": "nasconv.cost",
    "build_conv": "nasconv.ops",
    "CONV_KINDS": "nasconv.ops",
    "load_data": "nasconv.data",
    "train": "nasconv.train",
    "load_results": "nasconv.results",
    "pareto": "nasconv.results",
    "knee": "nasconv.results",
    "NasconvError": "nasconv.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nasconv' has no attribute {name!r}")
