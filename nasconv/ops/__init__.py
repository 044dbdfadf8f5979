"""The convolution operator library: one module per kind, one factory, one registry.

Kinds are discovered, never listed: importing this package imports every module in it (each
registers its kind with ``@register``), then every module that an installed distribution names
under the entry-point group ``nasconv.ops``::

    # pyproject.toml of a third-party package
    [project.entry-points."nasconv.ops"]
    mykind = "mypackage.mykind"

A third-party module that fails to import is reported on stderr once and skipped; nasconv goes on
with the kinds it has. ``CONV_KINDS`` reads the registry at each use, so a kind registered later
(``nasconv.register``) is listed, and usable in a space, from then on.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from importlib.metadata import entry_points

from .base import (
    CONV_KINDS,
    DEFAULT_KERNEL,
    KERNEL_SIZE,
    MAX_KERNEL,
    ConvOp,
    KindNames,
    KindOption,
    OptionRule,
    build_conv,
    kaiming_,
    kind_options,
    kind_params,
    op_class,
    positive_int,
    register,
    registered_kinds,
    short_label,
    with_defaults,
)

ENTRY_POINT_GROUP = "nasconv.ops"


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take nasconv down with it
            print(f"nasconv: warning: conv kinds from {entry.value!r} not loaded ({exc})", file=sys.stderr)


_discover()

__all__ = [
    "CONV_KINDS",
    "DEFAULT_KERNEL",
    "ENTRY_POINT_GROUP",
    "KERNEL_SIZE",
    "MAX_KERNEL",
    "ConvOp",
    "KindNames",
    "KindOption",
    "OptionRule",
    "build_conv",
    "kaiming_",
    "kind_options",
    "kind_params",
    "op_class",
    "positive_int",
    "register",
    "registered_kinds",
    "short_label",
    "with_defaults",
]
