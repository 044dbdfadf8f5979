"""Shared base of the nasconv operators and the registry that builds them by name.

Every operator is a *leaf* module: it owns its parameters directly (no child modules),
so its trainable-parameter count is exactly ``sum(p.numel())`` and its MACs come from one
rule, :meth:`ConvOp.count_macs`, which :mod:`nasconv.model.cost` registers with thop.

A kind is one class, registered with ``@register("name")``; everything else nasconv needs to know
about it (its options and their types, its short label in reports, example options for ``nasconv ops``
and the tests, what the standalone ``model.py`` must copy and import, its closed-form parameter and
MAC counts, whether it uses the stage's kernel, which options are inert given others, a slow
reference forward) is declared on the class. :mod:`nasconv.ops` discovers the kinds: every module in
the package, and every module an installed distribution names under the entry-point group
``nasconv.ops``. The registry is read live: a kind registered later is in ``CONV_KINDS`` and in the
space schema from then on.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import brief

_REGISTRY: dict[str, type[ConvOp]] = {}

DEFAULT_KERNEL = 3
"""The factory's ``kernel_size``; what an architecture records for a kind that takes no stage kernel."""
MAX_KERNEL = 31
"""The largest kernel size a space may ask for."""


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


class KindNames(Sequence[str]):
    """The registered kinds in display order, read from the registry at each use (a kind registered
    after import is listed too). Compares equal to the tuple of the same names."""

    def _names(self) -> tuple[str, ...]:
        return registered_kinds()

    @typing.overload
    def __getitem__(self, index: int) -> str: ...
    @typing.overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return self._names()[index]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, kind: object) -> bool:
        return kind in _REGISTRY

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (KindNames, tuple, list)) else other)

    __hash__ = None  # type: ignore[assignment]  # it changes as kinds register

    def __repr__(self) -> str:
        return repr(self._names())


CONV_KINDS = KindNames()
"""Every registered kind, in display order, read live from the registry."""


def op_class(kind: str) -> type[ConvOp]:
    try:
        return _REGISTRY[kind]
    except KeyError:
        known = ", ".join(registered_kinds())
        raise ValueError(f"unknown conv kind {kind!r}; known kinds: {known}") from None


@dataclass(frozen=True, kw_only=True)
class OptionRule:
    """What the space schema asks of a kind option beyond its type (of each element, for a tuple
    option): a range and, for kernel sizes, oddness. Declared in ``ConvOp.option_rules``."""

    low: float | None = None
    high: float | None = None
    odd: bool = False


KERNEL_SIZE = OptionRule(low=1, high=MAX_KERNEL, odd=True)
"""The rule of an option that is a kernel size: odd ("same" padding), 1 to MAX_KERNEL."""


@dataclass(frozen=True, kw_only=True)
class KindOption:
    """One option of a kind, as its ``__init__`` declares it."""

    name: str
    annotation: Any
    """The parameter's type (resolved from its annotation; unannotated: the default's type; None if
    neither says)."""
    default: Any
    """``inspect.Parameter.empty`` when the option is required."""
    rule: OptionRule | None


def kind_options(kind: str | type[ConvOp]) -> tuple[KindOption, ...]:
    """The options of a kind (its name or class): its keyword-only ``__init__`` parameters, in
    declaration order."""
    cls = op_class(kind) if isinstance(kind, str) else kind
    found = _KIND_OPTIONS.get(cls)
    if found is None:  # inspect.signature is slow, and samplers decode thousands of candidates
        sig = inspect.signature(cls.__init__)
        try:
            hints = typing.get_type_hints(cls.__init__)
        except Exception:  # noqa: BLE001 - an annotation that does not resolve: fall back to the default's type
            hints = {}
        found = tuple(
            KindOption(
                name=name,
                annotation=_option_type(hints.get(name, param.annotation), param.default),
                default=param.default,
                rule=cls.option_rules.get(name),
            )
            for name, param in sig.parameters.items()
            if param.kind is inspect.Parameter.KEYWORD_ONLY
        )
        _KIND_OPTIONS[cls] = found
    return found


_KIND_OPTIONS: dict[type, tuple[KindOption, ...]] = {}


def _option_type(annotation: Any, default: Any) -> Any:
    if annotation is not inspect.Parameter.empty and not isinstance(annotation, str):
        return annotation
    if isinstance(default, (bool, int, float, str)):
        return type(default)
    if isinstance(default, (list, tuple)) and default and isinstance(default[0], (bool, int, float, str)):
        return tuple[type(default[0]), ...]  # type: ignore[misc]
    return None


def kind_params(kind: str | type[ConvOp]) -> dict[str, Any]:
    """The kind-specific keyword parameters of ``kind`` and their defaults (``inspect._empty`` if required)."""
    return {option.name: option.default for option in kind_options(kind)}


def with_defaults(kind: str | type[ConvOp], options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` of a kind (its name or class) completed with the defaults of its signature; an
    unknown or a missing required option is a ValueError."""
    allowed = kind_params(kind)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        hint = ", ".join(allowed) or "none"
        name = kind if isinstance(kind, str) else kind.kind or kind.__name__
        raise ValueError(f"conv kind {name!r} has no parameter {unknown[0]!r} (its parameters: {hint})")
    full = {**allowed, **options}
    missing = [name for name, value in full.items() if value is inspect.Parameter.empty]
    if missing:
        name = kind if isinstance(kind, str) else kind.kind or kind.__name__
        raise ValueError(f"conv kind {name!r} needs its parameter {missing[0]!r}")
    return full


# ---------------------------------------------------------------- the value schema of kind options
# One definition of what a kind option may be, read by the space schema, an architecture's check and
# ``nasconv ops --opt``: its annotated type, limited by the kind's ``option_rules`` and by these.

MAX_OPTION_INT = 4_096
MAX_OPTION_FLOAT = 1_024.0
MAX_OPTION_TEXT = 100
MAX_OPTION_LIST = 32
"""The most elements a list-valued option (inception's ``kernels``) may have."""

Check = Callable[[Any], Any]
"""Checks one value and returns it normalised (a float option's 1 as 1.0), or raises ValueError."""


def check_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{brief(v)} is not true/false")
    return v


def int_check(low: float, high: float, odd: bool = False) -> Check:
    """An integer (never a bool) in [low, high], odd if asked."""

    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{brief(v)} is not an integer")
        if not low <= v <= high:
            raise ValueError(f"{brief(v)} is not between {low:g} and {high:g}")
        if odd and v % 2 == 0:
            raise ValueError(f"{v} must be odd ('same' padding)")
        return v

    return check


def float_check(low: float, high: float) -> Check:
    """A finite number (never a bool) in [low, high], as a float."""

    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{brief(v)} is not a finite number")
        if not low <= v <= high:
            raise ValueError(f"{brief(v)} is not between {low:g} and {high:g}")
        return float(v)

    return check


def names_check(names: tuple[Any, ...]) -> Check:
    """One of ``names``, of the same type (``1`` is not ``true``)."""

    def check(v: Any) -> Any:
        if not any(type(v) is type(name) and v == name for name in names):
            raise ValueError(f"{brief(v)} is not one of {', '.join(str(n) for n in names)}")
        return v

    return check


def check_text(v: Any) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= MAX_OPTION_TEXT or not v.isprintable():
        raise ValueError(f"{brief(v)} is not a printable text of 1 to {MAX_OPTION_TEXT} characters")
    return v


def option_check(option: KindOption) -> tuple[Check, bool]:
    """(the check of one value of a kind option, whether its values are lists), from its type and rule."""
    return _type_check(option.annotation, option.rule or OptionRule(), option.name)


def _type_check(annotation: Any, rule: OptionRule, name: str) -> tuple[Check, bool]:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            inner, lists = _type_check(rest[0], rule, name)
            return (lambda v: None if v is None else inner(v)), lists
    elif origin in (tuple, list, Sequence) and args and (origin is not tuple or args[1:] in ((), (...,))):
        element, nested = _type_check(args[0], rule, name)
        if not nested:

            def check_list(v: Any) -> tuple[Any, ...]:
                if not isinstance(v, (list, tuple)) or not v or len(v) > MAX_OPTION_LIST:
                    raise ValueError(f"{brief(v)} is not a list of 1 to {MAX_OPTION_LIST} values")
                return tuple(element(x) for x in v)

            return check_list, True
    elif origin is Literal:
        return names_check(args), False
    elif annotation is bool:
        return check_bool, False
    elif annotation is int:
        low = 0 if rule.low is None else rule.low
        return int_check(low, MAX_OPTION_INT if rule.high is None else rule.high, rule.odd), False
    elif annotation is float:
        low = 0.0 if rule.low is None else rule.low
        return float_check(low, MAX_OPTION_FLOAT if rule.high is None else rule.high), False
    elif annotation is str:
        return check_text, False
    known = "bool, int, float, str, Literal[...], tuple[X, ...] or X | None"
    raise TypeError(f"option {name!r} has type {annotation!r}; the space schema knows {known}")


def check_option_values(kind: str | type[ConvOp], options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` of a kind checked against its option schema, each value normalised (a list as a
    tuple); an unknown option or a bad value is a ValueError starting with the option's name."""
    known = {option.name: option for option in kind_options(kind)}
    checked: dict[str, Any] = {}
    for name, value in options.items():
        option = known.get(name) if isinstance(name, str) else None
        if option is None:
            label = name if isinstance(name, str) else brief(name)
            kind_name = kind if isinstance(kind, str) else kind.kind or kind.__name__
            raise ValueError(f"{label}: {kind_name} has no such option (its options: {', '.join(known) or 'none'})")
        try:
            checked[name] = option_check(option)[0](value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return checked


def out_size(size: int, stride: int) -> int:
    """Output height (or width) of a "same"-padded convolution: ceil(size / stride)."""
    return -(-size // stride)


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
    #: import lines the kind's code needs in a standalone model.py beyond its header (``import math``,
    #: torch, ``F``, ``nn``, ``Any``, ``ClassVar``), e.g. ``("from fractions import Fraction",)``
    standalone_imports: ClassVar[tuple[str, ...]] = ()
    #: False where the forward executes more multiply-accumulates than the op's rule counts (a dense
    #: masked form, say), so torch's aten-level FLOP counter cannot check the rule
    flops_match_aten: ClassVar[bool] = True
    #: False for a kind that ignores ``kernel_size`` (its kernels are options, like inception's): a
    #: space then has no ``kernel`` for it, and an architecture records DEFAULT_KERNEL, unshown
    uses_stage_kernel: ClassVar[bool] = True
    #: option name -> what the space schema asks of it beyond its annotated type (ranges, odd sizes)
    option_rules: ClassVar[dict[str, OptionRule]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("closed_form_params", "closed_form_macs"):
            if name in vars(cls):
                hook = "params_formula" if name == "closed_form_params" else "macs_formula"
                raise TypeError(f"{cls.__name__}: declare {hook} (it receives every option); {name} fills them in")

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
        return -(-height // self.stride), -(-width // self.stride)  # inline: model.py copies this class alone

    @classmethod
    def closed_form_params(
        cls, in_channels: int, out_channels: int, kernel_size: int = DEFAULT_KERNEL, **options: Any
    ) -> int:
        """The paper's parameter count (bias excluded), independent of how the weights are stored: the
        kind's ``params_formula`` with omitted options at their defaults. The tests hold the op's real
        parameters to it."""
        return cls.params_formula(in_channels, out_channels, kernel_size, **with_defaults(cls, options))

    @classmethod
    def closed_form_macs(
        cls,
        in_channels: int,
        out_channels: int,
        kernel_size: int = DEFAULT_KERNEL,
        stride: int = 1,
        *,
        height: int,
        width: int,
        **options: Any,
    ) -> int:
        """The kind's MACs of one sample of ``height`` x ``width`` by its paper's formula (bias excluded):
        its ``macs_formula`` with omitted options at their defaults. The tests hold what the cost model
        counts to it."""
        full = with_defaults(cls, options)
        return cls.macs_formula(in_channels, out_channels, kernel_size, stride, height, width, **full)

    @classmethod
    def params_formula(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        """Declared by each kind: its closed-form parameter count, given every option."""
        raise NotImplementedError(f"{cls.__name__} declares no closed-form parameter count")

    @classmethod
    def macs_formula(
        cls, in_channels: int, out_channels: int, kernel_size: int, stride: int, height: int, width: int, **options: Any
    ) -> int:
        """The kind's closed-form MACs of one sample, given every option. By default its parameters times
        its output positions: right for a kind whose every weight is applied once per output position
        (standard, group, dsc, het, ghost). A kind that differs (work at the input's resolution,
        routing, sampling) declares its own; the tests hold every kind's to thop's count."""
        per_position = cls.params_formula(in_channels, out_channels, kernel_size, **options)
        return per_position * out_size(height, stride) * out_size(width, stride)

    @classmethod
    def inert_options(cls, kernel_size: int, options: Mapping[str, Any]) -> frozenset[str]:
        """Which of the genes ``dilation`` and the kind's options change nothing, given the kernel and
        the options declared before them (the order a space draws them; ``options`` may hold only
        those). A space does not draw them, and an architecture records ``dilation`` 1 and the others
        at their defaults, so that one network has one description. Here: dilation at a 1 x 1 kernel."""
        return frozenset({"dilation"}) if kernel_size == 1 else frozenset()

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
    kernel when not 3 (never for a kind that takes no stage kernel), the dilation when not 1, then
    each option by its class's ``short_names`` (a true flag prints its letter alone, ordinary values
    in ``short_omit`` are left out)."""
    cls = _REGISTRY.get(kind)
    names = cls.short_names if cls else {}
    omit = cls.short_omit if cls else {}
    uses_kernel = cls.uses_stage_kernel if cls else True
    parts = [f"k{kernel}"] if kernel != DEFAULT_KERNEL and uses_kernel else []
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
