"""Shared base of the nasconv operators and the registry that builds them by name.

Every operator is a *leaf* module: it owns its parameters directly (no child modules),
so its trainable-parameter count is exactly ``sum(p.numel())`` and its MACs come from one
rule, :meth:`ConvOp.count_macs`, which :mod:`nasconv.model.cost` registers with thop.

A kind is one class, registered with ``@register("name")``; everything else nasconv needs to know
about it (its short label in reports, example options for ``nasconv ops`` and the tests, what the
standalone ``model.py`` must copy, its closed-form parameter count, a slow reference forward) is
declared on the class. :mod:`nasconv.ops` discovers the kinds: every module in the package, and
every module an installed distribution names under the entry-point group ``nasconv.ops``.
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
    if not kind.isidentifier():
        raise ValueError(f"conv kind {kind!r} must be an identifier (letters, digits, _)")

    def decorate(cls: type[ConvOp]) -> type[ConvOp]:
        if kind in _REGISTRY:
            raise ValueError(f"conv kind {kind!r} is already registered by {_REGISTRY[kind].__name__}")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return decorate


def registered_kinds() -> tuple[str, ...]:
    """Every registered kind, in display order (``ConvOp.order``, then name)."""
    return tuple(sorted(_REGISTRY, key=lambda k: (_REGISTRY[k].order, k)))


def op_class(kind: str) -> type[ConvOp]:
    try:
        return _REGISTRY[kind]
    except KeyError:
        known = ", ".join(registered_kinds())
        raise ValueError(f"unknown conv kind {kind!r}; known kinds: {known}") from None


def kind_params(kind: str) -> dict[str, Any]:
    """The kind-specific keyword parameters of ``kind`` and their defaults (``inspect._empty`` if required)."""
    cls = op_class(kind)
    params = _KEYWORD_PARAMS.get(cls)
    if params is None:  # inspect.signature is slow, and samplers decode thousands of candidates
        sig = inspect.signature(cls.__init__)
        params = {n: p.default for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        _KEYWORD_PARAMS[cls] = params
    return dict(params)


_KEYWORD_PARAMS: dict[type, dict[str, Any]] = {}


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is a positive int (not a bool), else a ValueError naming ``name``."""
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
    #: display order among the kinds (tables, reports); ties by name
    order: ClassVar[float] = 1000.0
    #: option name -> its letter in short architecture labels (``het(p4)``); unlisted options use their name
    short_names: ClassVar[dict[str, str]] = {}
    #: option values too ordinary to print in short labels (e.g. ghost's ``dw_kernel: 3``)
    short_omit: ClassVar[dict[str, Any]] = {}
    #: option sets that show the kind: the first is what ``nasconv ops`` lists, the tests run them all
    examples: ClassVar[tuple[dict[str, Any], ...]] = ({},)
    #: module-level helpers (functions, classes) the kind's forward needs in a standalone model.py
    standalone: ClassVar[tuple[Any, ...]] = ()
    #: False where the forward executes more multiply-accumulates than the op's rule counts (a dense
    #: masked form, say), so torch's aten-level FLOP counter cannot check the rule
    flops_match_aten: ClassVar[bool] = True

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
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.stride = positive_int("stride", stride)
        self.dilation = positive_int("dilation", dilation)
        self.padding = dilation * (kernel_size - 1) // 2
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.stride), -(-width // self.stride)

    @classmethod
    def closed_form_params(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        """The paper's parameter count (bias excluded), independent of how the weights are stored:
        the tests hold the op's real parameters to it."""
        raise NotImplementedError(f"{cls.__name__} declares no closed-form parameter count")

    def macs_per_position(self) -> int:
        """Multiply-accumulates per output pixel (all output channels), bias excluded."""
        raise NotImplementedError

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's definition taken literally and slowly; kinds that have one override this and
        the tests hold ``forward`` to it. Not copied into a standalone model.py."""
        raise NotImplementedError(f"{type(self).__name__} has no reference forward")

    @classmethod
    def has_reference(cls) -> bool:
        return cls.reference_forward is not ConvOp.reference_forward

    def extra_macs(self) -> int:
        """Multiply-accumulates per sample that do not scale with the output size."""
        return 0

    def macs_per_sample(self, height: int, width: int) -> int:
        """MACs of one sample of ``height`` x ``width``: ``macs_per_position()`` at every output pixel
        plus ``extra_macs()``. Kinds that also work at another resolution (a strided block's 1 x 1
        expansion at the input's, a k x 1 conv at ceil(H/stride) x W) override this instead."""
        out_h, out_w = self.output_size(height, width)
        return self.macs_per_position() * out_h * out_w + self.extra_macs()

    def count_macs(self, input_shape: tuple[int, ...]) -> int:
        """MACs of one forward pass on an input of shape (B, C, H, W) (or (C, H, W))."""
        batch = input_shape[0] if len(input_shape) == 4 else 1
        return batch * self.macs_per_sample(input_shape[-2], input_shape[-1])

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


def short_label(kind: str, kernel: int, dilation: int, options: dict[str, Any]) -> str:
    """Compact label of one configured kind, e.g. ``het(p4)``, ``group(g2,s)``, ``dsc(k5)``: the
    kernel when not 3, the dilation when not 1, then each option by its class's ``short_names``
    (a true flag prints its letter alone, ordinary values in ``short_omit`` are left out)."""
    cls = _REGISTRY.get(kind)
    names = cls.short_names if cls else {}
    omit = cls.short_omit if cls else {}
    parts = [f"k{kernel}"] if kernel != 3 else []
    if dilation != 1:
        parts.append(f"dil{dilation}")
    for name, value in sorted(options.items()):
        if name in omit and omit[name] == value:
            continue
        label = names.get(name, name)
        if isinstance(value, bool):
            if value:
                parts.append(label)
        elif isinstance(value, (list, tuple)):
            parts.append(label + "-".join(str(v) for v in value))
        else:
            parts.append(f"{label}{value:g}" if isinstance(value, (int, float)) else f"{label}{value}")
    return f"{kind}({','.join(parts)})" if parts else kind
