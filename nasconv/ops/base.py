"""Shared base of the nasconv operators and the registry that builds them by name.

Every operator is a *leaf* module: it owns its parameters directly (no child modules),
so its trainable-parameter count is exactly ``sum(p.numel())`` and its MACs come from one
rule, :meth:`ConvOp.count_macs`, which :mod:`nasconv.cost` registers with thop.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

_REGISTRY: dict[str, type[ConvOp]] = {}


def register(kind: str) -> Callable[[type[ConvOp]], type[ConvOp]]:
    """Class decorator: make ``kind`` buildable through :func:`build_conv`."""

    def decorate(cls: type[ConvOp]) -> type[ConvOp]:
        if kind in _REGISTRY:
            raise ValueError(f"conv kind {kind!r} is already registered by {_REGISTRY[kind].__name__}")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return decorate


def registered_kinds() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def op_class(kind: str) -> type[ConvOp]:
    try:
        return _REGISTRY[kind]
    except KeyError:
        known = ", ".join(_REGISTRY)
        raise ValueError(f"unknown conv kind {kind!r}; known kinds: {known}") from None


def kind_params(kind: str) -> dict[str, Any]:
    """The kind-specific keyword parameters of ``kind`` and their defaults (``inspect._empty`` if required)."""
    sig = inspect.signature(op_class(kind).__init__)
    return {name: p.default for name, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def build_conv(
    kind: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    dilation: int = 1,
    bias: bool = False,
    **params: Any,
) -> ConvOp:
    """Build one bare convolution operator of the named kind ("same" padding, no norm/activation)."""
    cls = op_class(kind)
    allowed = kind_params(kind)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        hint = ", ".join(allowed) or "none"
        raise ValueError(f"conv kind {kind!r} has no parameter {unknown[0]!r} (its parameters: {hint})")
    return cls(in_channels, out_channels, kernel_size, stride, dilation, bias, **params)


class ConvOp(nn.Module):
    """A bare 2-D convolution with "same" padding: output is ceil(H/stride) x ceil(W/stride)."""

    kind: ClassVar[str] = ""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.kernel_size = _positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.stride = _positive_int("stride", stride)
        self.dilation = _positive_int("dilation", dilation)
        self.padding = dilation * (kernel_size - 1) // 2
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.stride), -(-width // self.stride)

    def macs_per_position(self) -> int:
        """Multiply-accumulates per output pixel (all output channels), bias excluded."""
        raise NotImplementedError

    def extra_macs(self) -> int:
        """Multiply-accumulates per sample that do not scale with the output size."""
        return 0

    def count_macs(self, input_shape: tuple[int, ...]) -> int:
        """MACs of one forward pass on an input of shape (B, C, H, W) (or (C, H, W))."""
        batch = input_shape[0] if len(input_shape) == 4 else 1
        out_h, out_w = self.output_size(input_shape[-2], input_shape[-1])
        return batch * (self.macs_per_position() * out_h * out_w + self.extra_macs())

    def conv(
        self, x: torch.Tensor, weight: torch.Tensor, groups: int = 1, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The op's k x k convolution geometry (stride, dilation, same padding) applied with ``weight``."""
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.dilation != 1:
            s += f", dilation={self.dilation}"
        return s


def kaiming_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    """He-uniform init given the true fan-in (masked/compact weights need it stated)."""
    bound = math.sqrt(6.0 / max(fan_in, 1))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)
