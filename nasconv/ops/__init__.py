"""The convolution operator library: one module per kind, one factory, one registry."""

from __future__ import annotations

from . import cond, dsc, ghost, group, het, standard  # noqa: F401  (fill the registry)
from .base import ConvOp, build_conv, kind_params, op_class, register, registered_kinds
from .cond import CondConv
from .dsc import DepthwiseSeparableConv
from .ghost import GhostConv
from .group import GroupConv, channel_shuffle
from .het import HetConv, het_kxk_mask, het_reference_forward
from .standard import StandardConv

CONV_KINDS: tuple[str, ...] = registered_kinds()

__all__ = [
    "CONV_KINDS",
    "CondConv",
    "ConvOp",
    "DepthwiseSeparableConv",
    "GhostConv",
    "GroupConv",
    "HetConv",
    "StandardConv",
    "build_conv",
    "channel_shuffle",
    "het_kxk_mask",
    "het_reference_forward",
    "kind_params",
    "op_class",
    "register",
]
