"""Arch: one architecture as plain, frozen, hashable data, and the model builder.

An Arch rebuilds exactly (Once-for-All's config/build_from_config idea): ``build_model(arch)``
is the only way a network is made, and ``Arch.from_dict(arch.to_dict()) == arch``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ..errors import NasconvError, brief
from ..files import read_yaml
from ..ops import (
    CONV_KINDS,
    DEFAULT_KERNEL,
    MAX_KERNEL,
    build_conv,
    kind_params,
    op_class,
    registered_kinds,
    short_label,
)
from ..ops.base import check_option_values, float_check, int_check, out_size

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish}

# ---------------------------------------------------------------- what a network may be
# The limits every architecture (and so every search space) is held to: far beyond real mobile, edge
# and server networks (ImageNet at 224 px with 2,048-channel stages, EfficientNet-B7 at 600 px:
# 37 GMACs), small enough that validating, costing, building and a batch-1 forward of any accepted
# network stay quick and within memory. A space is held to them for its worst combination of choices.
MAX_INPUT_CHANNELS = 64
MAX_INPUT_SIZE = 1_024
"""Input height = width, in pixels."""
MAX_CLASSES = 100_000
MAX_CHANNELS = 16_384
MAX_STRIDE = 8
MAX_DILATION = 16
MAX_DEPTH = 64
MAX_STAGES = 32
MAX_SE = 0.99
MAX_LAYER_PARAMS = 1 << 26
"""67.1M parameters in one operator: a 2,048 -> 2,048 3x3 conv fits (37.7M), 25 times VGG's largest."""
MAX_PARAMS = 1_000_000_000
MAX_MACS = 10**11
"""Multiply-accumulates of one forward pass of one image: 2.7x EfficientNet-B7 at 600 px."""
MAX_ACTIVATION = 1 << 27
"""Values in one feature map of one image (134M, 512 MiB in fp32): 2,048 channels at 224 x 224, 128 at
1,024 x 1,024. The input, the stem's output and every block's output are held to it."""


@dataclass(frozen=True)
class Figures:
    """Size figures of a part of a network (one image): what the limits above are checked against,
    counted by the cost model's rules (convolutions and linear layers; BatchNorm parameters too)."""

    params: int
    macs: int
    layer_params: int
    """The largest single operator's own parameters."""
    activation: int
    """Values in the largest feature map the part outputs."""


def conv_figures(
    kind: str, in_channels: int, out_channels: int, kernel: int, stride: int, options: Mapping[str, Any], size: int
) -> tuple[int, int]:
    """(parameters, MACs at ``size`` x ``size``) of one operator: the kind's closed forms, else counted
    on an operator built on the meta device (no memory). ValueError if it cannot build."""
    cls = op_class(kind)
    try:
        params = int(cls.closed_form_params(in_channels, out_channels, kernel, **options))
        macs = int(cls.closed_form_macs(in_channels, out_channels, kernel, stride, height=size, width=size, **options))
        return params, macs
    except Exception:  # noqa: BLE001 - no closed form (or options it cannot take): count a meta build
        pass
    try:
        with torch.device("meta"):
            op = build_conv(kind, in_channels, out_channels, kernel, stride, 1, **options)
    except (TypeError, ArithmeticError, RuntimeError) as exc:
        raise ValueError(str(exc)) from None
    return sum(p.numel() for p in op.parameters()), int(op.macs_per_sample(size, size))


def block_figures(
    kind: str,
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int,
    options: Mapping[str, Any],
    size: int,
    se: float = 0.0,
) -> Figures:
    """Figures of one block (operator, BatchNorm, activation, squeeze-and-excitation) at an input of
    ``size`` x ``size``."""
    params, macs = conv_figures(kind, in_channels, out_channels, kernel, stride, options, size)
    layer = params
    params += 2 * out_channels  # BatchNorm
    if se > 0:  # two 1 x 1 convolutions with bias on the pooled vector
        reduced = max(1, round(out_channels * se))
        params += 2 * out_channels * reduced + reduced + out_channels
        macs += 2 * out_channels * reduced
    side = out_size(size, stride)
    return Figures(params=params, macs=macs, layer_params=layer, activation=out_channels * side * side)


def stem_figures(in_channels: int, out_channels: int, kernel: int, stride: int, size: int) -> Figures:
    """Figures of the stem (a standard conv, BatchNorm, ReLU) at an input of ``size`` x ``size``."""
    return block_figures("standard", in_channels, out_channels, kernel, stride, {}, size)


def head_figures(channels: int, classes: int) -> Figures:
    """Figures of the head (global pool, dropout, linear classifier)."""
    weights = channels * classes
    return Figures(params=weights + classes, macs=weights, layer_params=weights + classes, activation=classes)


def check_size(arch: Arch) -> None:
    """Hold an architecture's figures to the limits; ValueError starting with the key path if one is over."""
    size = arch.input_size
    stem = stem_figures(arch.input_channels, arch.stem_channels, arch.stem_kernel, arch.stem_stride, size)
    # (key path, the part's operator as words, its figures)
    parts = [("stem_channels", f"a {arch.input_channels}->{arch.stem_channels} stem", stem)]
    size, channels = out_size(size, arch.stem_stride), arch.stem_channels
    for i, stage in enumerate(arch.stages):
        options = dict(stage.options)
        for index in range(min(stage.depth, 2)):  # the blocks after the first are all alike
            stride = stage.stride if index == 0 else 1
            try:
                figures = block_figures(
                    stage.kind, channels, stage.channels, stage.kernel, stride, options, size, stage.se
                )
            except ValueError as exc:
                raise ValueError(f"stages[{i}]: cannot build this architecture ({exc})") from None
            if index:
                repeats = stage.depth - 1
                figures = Figures(
                    figures.params * repeats, figures.macs * repeats, figures.layer_params, figures.activation
                )
            parts.append((f"stages[{i}]", f"a {channels}->{stage.channels} {stage.short()} layer", figures))
            size, channels = out_size(size, stride), stage.channels
    parts.append(("classes", f"a {channels}->{arch.classes} classifier", head_figures(channels, arch.classes)))
    params = macs = 0
    for where, what, figures in parts:
        if figures.layer_params > MAX_LAYER_PARAMS:
            raise ValueError(
                f"{where}: {what} has {figures.layer_params:,} parameters (at most {MAX_LAYER_PARAMS:,} per layer)"
            )
        if figures.activation > MAX_ACTIVATION:
            raise ValueError(
                f"{where}: {what} makes a feature map of {figures.activation:,} values per image"
                f" (at most {MAX_ACTIVATION:,})"
            )
        params, macs = params + figures.params, macs + figures.macs
    if params > MAX_PARAMS:
        raise ValueError(f"stages: the network has {params:,} parameters (at most {MAX_PARAMS:,})")
    if macs > MAX_MACS:
        raise ValueError(f"stages: the network needs {macs:.3g} MACs per image (at most {MAX_MACS:.0e})")


def _option_defaults(kind: str) -> dict[str, Any]:
    """The kind's options that have defaults (none for a kind this installation does not know)."""
    if kind not in CONV_KINDS:
        return {}
    defaults = {name: value for name, value in kind_params(kind).items() if value is not inspect.Parameter.empty}
    return {name: tuple(v) if isinstance(v, list) else v for name, v in defaults.items()}


@dataclass(frozen=True, kw_only=True)
class StageArch:
    """One stage: ``depth`` blocks of one conv kind; the first block carries ``stride``.

    Canonical, so that two stages that build the same network compare equal: options are sorted and
    complete; a kind that takes no stage kernel (``ConvOp.uses_stage_kernel``) records DEFAULT_KERNEL;
    what the kind declares inert given the rest (``ConvOp.inert_options``: dilation at a 1 x 1 kernel,
    a shuffle of one group, ...) is recorded as dilation 1 and the option's default.
    """

    kind: str
    channels: int
    depth: int = 1
    stride: int = 1
    kernel: int = 3
    dilation: int = 1
    options: tuple[tuple[str, Any], ...] = ()
    se: float = 0.0
    activation: str = "relu"

    def __post_init__(self) -> None:
        options = {str(k): tuple(v) if isinstance(v, list) else v for k, v in dict(self.options).items()}
        # every option of the kind, defaults filled in: an architecture recorded before a kind gained
        # an option still names the same network, and the same text
        known = isinstance(self.kind, str) and self.kind in CONV_KINDS  # a stored record may hold anything
        defaults = _option_defaults(self.kind) if known else {}
        options = {**defaults, **options}
        inert: frozenset[str] = frozenset({"dilation"}) if self.kernel == 1 else frozenset()
        if known:
            cls = op_class(self.kind)
            if not cls.uses_stage_kernel:
                object.__setattr__(self, "kernel", DEFAULT_KERNEL)
            with contextlib.suppress(TypeError, ValueError, AttributeError, KeyError):  # check() names the bad value
                inert = cls.inert_options(self.kernel, options)
        options.update({name: defaults[name] for name in inert if name in defaults})
        object.__setattr__(self, "options", tuple(sorted(options.items())))
        if "dilation" in inert:
            object.__setattr__(self, "dilation", 1)

    @property
    def uses_kernel(self) -> bool:
        """Whether ``kernel`` means anything for this stage's kind (inception's kernels are options)."""
        return self.kind not in CONV_KINDS or op_class(self.kind).uses_stage_kernel

    def short(self) -> str:
        """Compact label, e.g. ``het(p4)`` or ``group(g2,s)`` or ``dsc(k5)``."""
        return short_label(self.kind, self.kernel, self.dilation, dict(self.options))


@dataclass(frozen=True, kw_only=True)
class Arch:
    """A whole network as plain data: input, stem, stages, head."""

    input_channels: int
    input_size: int
    classes: int
    stem_channels: int
    stages: tuple[StageArch, ...]
    stem_kernel: int = 3
    stem_stride: int = 1
    dropout: float = 0.0

    def short(self) -> str:
        return "·".join(stage.short() for stage in self.stages)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stages"}
        d["stages"] = [
            {**{f.name: getattr(s, f.name) for f in fields(s) if f.name != "options"}, "options": dict(s.options)}
            for s in self.stages
        ]
        return d

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal architectures give equal text."""
        text = self.__dict__.get("_json")
        if text is None:
            text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
            self.__dict__["_json"] = text  # frozen: cache beside the fields, outside eq and hash
        return text

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any, where: str = "arch", *, check: bool = True) -> Arch:
        """Rebuild an Arch from ``to_dict`` output, checked: a wrong shape, an unknown kind or option,
        or a network that cannot build is a NasconvError naming ``where`` and the key."""
        if not isinstance(data, Mapping) or not isinstance(data.get("stages"), (list, tuple)):
            raise NasconvError(f"{where}: not a nasconv architecture (expected a mapping with a list of 'stages')")
        try:
            stages = []
            for i, s in enumerate(data["stages"]):
                if not isinstance(s, Mapping) or not isinstance(s.get("options") or {}, Mapping):
                    raise TypeError(f"stages[{i}] is not a mapping with an options mapping")
                stages.append(StageArch(**{**s, "options": tuple(dict(s.get("options") or {}).items())}))
            arch = cls(**{**data, "stages": tuple(stages)})
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise NasconvError(f"{where}: not a nasconv architecture ({exc})") from None
        if check:
            arch.check(where)
        return arch

    @classmethod
    def from_json(cls, text: str, where: str = "arch", *, check: bool = True) -> Arch:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise NasconvError(f"{where}: the architecture is not valid JSON ({exc})") from None
        return cls.from_dict(data, where, check=check)

    def check(self, where: str = "arch") -> None:
        """Every field of the type and within the limits a search space allows, every kind and option
        known and valid by the kind's option schema, the network buildable and within the size limits
        (MAX_LAYER_PARAMS, MAX_PARAMS, MAX_MACS, MAX_ACTIVATION): else a NasconvError naming ``where``
        and the field."""
        try:
            self._check_fields()
            check_size(self)  # before building: a layer too large is never built, not even on meta
        except ValueError as exc:
            raise NasconvError(f"{where}: {exc}") from None
        try:
            with torch.device("meta"):
                Net(self)
        except (ValueError, TypeError, RuntimeError, ArithmeticError) as exc:
            raise NasconvError(f"{where}: cannot build this architecture ({exc})") from None

    def _check_fields(self) -> None:
        """The fields' types and ranges (before anything hashes or builds them); ValueError naming the field."""

        def field(name: str, value: Any, check: Any) -> Any:
            try:
                return check(value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None

        def odd_kernel(v: Any) -> int:
            return int_check(1, MAX_KERNEL, odd=True)(v)

        field("input_channels", self.input_channels, int_check(1, MAX_INPUT_CHANNELS))
        field("input_size", self.input_size, int_check(1, MAX_INPUT_SIZE))
        field("classes", self.classes, int_check(2, MAX_CLASSES))
        field("stem_channels", self.stem_channels, int_check(1, MAX_CHANNELS))
        field("stem_kernel", self.stem_kernel, odd_kernel)
        field("stem_stride", self.stem_stride, int_check(1, MAX_STRIDE))
        dropout = field("dropout", self.dropout, float_check(0.0, 1.0))
        if dropout >= 1:
            raise ValueError(f"dropout: {brief(self.dropout)} is not below 1")
        if not isinstance(self.stages, tuple) or not 1 <= len(self.stages) <= MAX_STAGES:
            count = len(self.stages) if isinstance(self.stages, (tuple, list)) else brief(self.stages)
            raise ValueError(f"stages: {count} stages; a network has 1 to {MAX_STAGES}")
        for i, stage in enumerate(self.stages):
            at = f"stages[{i}]"
            if not isinstance(stage.kind, str) or stage.kind not in registered_kinds():
                known = ", ".join(registered_kinds())
                raise ValueError(f"{at}.kind: unknown conv kind {brief(stage.kind)} (known: {known})")
            field(f"{at}.channels", stage.channels, int_check(1, MAX_CHANNELS))
            field(f"{at}.depth", stage.depth, int_check(1, MAX_DEPTH))
            field(f"{at}.stride", stage.stride, int_check(1, MAX_STRIDE))
            field(f"{at}.kernel", stage.kernel, odd_kernel)
            field(f"{at}.dilation", stage.dilation, int_check(1, MAX_DILATION))
            field(f"{at}.se", stage.se, float_check(0.0, MAX_SE))
            if not isinstance(stage.activation, str) or stage.activation not in ACTIVATIONS:
                raise ValueError(f"{at}.activation: {brief(stage.activation)} is not one of {', '.join(ACTIVATIONS)}")
            try:
                check_option_values(stage.kind, dict(stage.options))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{at}.options.{exc}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() if path.suffix == ".json" else self.to_yaml())
        return path


def load_arch(path: str | Path) -> Arch:
    """Read an architecture written by ``Arch.save`` / ``nasconv export`` (YAML or JSON)."""
    data = read_yaml(path, "architecture file")
    if isinstance(data, dict) and isinstance(data.get("arch"), dict):
        data = data["arch"]
    return Arch.from_dict(data, where=str(path))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., 2018) with a hard sigmoid gate as in GhostNet/MobileNetV3."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        reduced = max(1, round(channels * ratio))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class Block(nn.Module):
    """operator -> BatchNorm -> activation (-> SE), plus a residual connection where shapes match."""

    def __init__(self, stage: StageArch, in_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = build_conv(
            stage.kind, in_channels, stage.channels, stage.kernel, stride, stage.dilation, **dict(stage.options)
        )
        self.bn = nn.BatchNorm2d(stage.channels)
        self.act = ACTIVATIONS[stage.activation]()
        self.se = SqueezeExcite(stage.channels, stage.se) if stage.se > 0 else None
        self.residual = stride == 1 and in_channels == stage.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(self.conv(x)))
        if self.se is not None:
            y = self.se(y)
        return x + y if self.residual else y


def make_stem(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Sequential:
    """standard conv -> BatchNorm -> ReLU."""
    return nn.Sequential(
        build_conv("standard", in_channels, out_channels, kernel, stride),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def make_head(channels: int, classes: int, dropout: float = 0.0) -> nn.Sequential:
    """global average pool -> dropout -> linear classifier."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout), nn.Linear(channels, classes))


class Net(nn.Module):
    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.stem = make_stem(arch.input_channels, arch.stem_channels, arch.stem_kernel, arch.stem_stride)
        blocks: list[nn.Module] = []
        channels = arch.stem_channels
        for stage in arch.stages:
            for index in range(stage.depth):
                blocks.append(Block(stage, channels, stage.stride if index == 0 else 1))
                channels = stage.channels
        self.blocks = nn.Sequential(*blocks)
        self.head = make_head(channels, arch.classes, arch.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def build_model(arch: Arch) -> nn.Module:
    """The network an Arch describes: stem -> stages of blocks -> global pool -> classifier."""
    if arch.stages and any(s.activation not in ACTIVATIONS for s in arch.stages):
        bad = next(s.activation for s in arch.stages if s.activation not in ACTIVATIONS)
        raise ValueError(f"unknown activation {bad!r}; known: {', '.join(ACTIVATIONS)}")
    return Net(arch)


def input_shape(arch: Arch, batch: int = 1) -> tuple[int, int, int, int]:
    return (batch, arch.input_channels, arch.input_size, arch.input_size)


@dataclass(frozen=True, kw_only=True)
class StageChoices:
    """What one stage of a search space can be: every distinct block configuration it can draw
    (``depth`` 1, the stage's stride) and its depths."""

    stride: int
    depths: tuple[int, ...]
    configurations: tuple[StageArch, ...]

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(s.channels for s in self.configurations))


@dataclass(frozen=True, kw_only=True)
class ArchChoices:
    """Every architecture a search space can draw, as the parts they are made of: what a latency
    table must cover. The search space gives it (``Space.arch_choices``), from its own encoding."""

    input_channels: int
    input_size: int
    classes: int
    stem_channels: tuple[int, ...]
    stem_kernel: int
    stem_stride: int
    stages: tuple[StageChoices, ...]


# ---------------------------------------------------------------- parts: a network as stem, blocks, head
# A part key names one module of a network and the size of its input, so that a cost or latency
# known for a part applies wherever the same part occurs (latency tables, the per-part cost cache).


def _key(**fields: Any) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def stem_key(in_channels: int, out_channels: int, kernel: int, stride: int, size: int) -> str:
    return _key(part="stem", inp=in_channels, out=out_channels, kernel=kernel, stride=stride, size=size)


def head_key(channels: int, classes: int, size: int) -> str:
    return _key(part="head", inp=channels, classes=classes, size=size)


def block_key(stage: StageArch, in_channels: int, stride: int, size: int) -> str:
    return _key(
        part="block",
        kind=stage.kind,
        inp=in_channels,
        out=stage.channels,
        stride=stride,
        kernel=stage.kernel,
        dilation=stage.dilation,
        options=dict(stage.options),
        se=stage.se,
        activation=stage.activation,
        size=size,
    )


def arch_parts(arch: Arch) -> list[str]:
    """The table keys an architecture's forward pass is made of, in order."""
    size = arch.input_size
    keys = [stem_key(arch.input_channels, arch.stem_channels, arch.stem_kernel, arch.stem_stride, size)]
    size = -(-size // arch.stem_stride)
    channels = arch.stem_channels
    for stage in arch.stages:
        for index in range(stage.depth):
            stride = stage.stride if index == 0 else 1
            keys.append(block_key(stage, channels, stride, size))
            size, channels = -(-size // stride), stage.channels
    keys.append(head_key(channels, arch.classes, size))
    return keys


def build_part(key: str, dropout: float = 0.0) -> tuple[nn.Module, tuple[int, int, int]]:
    """The module a key describes and its input (C, H, W)."""
    k = json.loads(key)
    if k["part"] == "stem":
        return make_stem(k["inp"], k["out"], k["kernel"], k["stride"]), (k["inp"], k["size"], k["size"])
    if k["part"] == "head":
        return make_head(k["inp"], k["classes"], dropout), (k["inp"], k["size"], k["size"])
    stage = StageArch(
        kind=k["kind"],
        channels=k["out"],
        stride=k["stride"],
        kernel=k["kernel"],
        dilation=k["dilation"],
        options=tuple(k["options"].items()),
        se=k["se"],
        activation=k["activation"],
    )
    return Block(stage, k["inp"], k["stride"]), (k["inp"], k["size"], k["size"])


__all__ = [
    "ACTIVATIONS",
    "Arch",
    "ArchChoices",
    "Block",
    "Net",
    "StageArch",
    "StageChoices",
    "arch_parts",
    "block_key",
    "build_model",
    "build_part",
    "head_key",
    "input_shape",
    "load_arch",
    "stem_key",
]
