"""Arch: one architecture as plain, frozen, hashable data, and the model builder.

An Arch rebuilds exactly (Once-for-All's config/build_from_config idea): ``build_model(arch)``
is the only way a network is made, and ``Arch.from_dict(arch.to_dict()) == arch``.
"""

from __future__ import annotations

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
from ..ops import build_conv, kind_params, registered_kinds, short_label

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish}


def _option_defaults(kind: str) -> dict[str, Any]:
    """The kind's options that have defaults (none for a kind this installation does not know)."""
    if kind not in registered_kinds():
        return {}
    defaults = {name: value for name, value in kind_params(kind).items() if value is not inspect.Parameter.empty}
    return {name: tuple(v) if isinstance(v, list) else v for name, v in defaults.items()}


@dataclass(frozen=True, kw_only=True)
class StageArch:
    """One stage: ``depth`` blocks of one conv kind; the first block carries ``stride``.

    Canonical: options are sorted, and a 1 x 1 kernel has dilation 1 (dilation cannot change it),
    so two stages that build the same network compare equal.
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
        options = {**_option_defaults(self.kind), **options}
        object.__setattr__(self, "options", tuple(sorted(options.items())))
        if self.kernel == 1:
            object.__setattr__(self, "dilation", 1)

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
        """Every field of a sensible type, every kind and option known, and the network buildable."""

        def positive(name: str, value: Any) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NasconvError(f"{where}: {name} must be a positive integer, got {brief(value)}")

        for name in ("input_channels", "input_size", "classes", "stem_channels", "stem_kernel", "stem_stride"):
            positive(name, getattr(self, name))
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise NasconvError(f"{where}: dropout must be in [0, 1), got {brief(self.dropout)}")
        for i, stage in enumerate(self.stages):
            at = f"stages[{i}]"
            for name in ("channels", "depth", "stride", "kernel", "dilation"):
                positive(f"{at}.{name}", getattr(stage, name))
            if stage.kind not in registered_kinds():
                known = ", ".join(registered_kinds())
                raise NasconvError(f"{where}: {at}.kind: unknown conv kind {brief(stage.kind)} (known: {known})")
            if stage.activation not in ACTIVATIONS:
                raise NasconvError(f"{where}: {at}.activation: unknown {brief(stage.activation)}")
            if isinstance(stage.se, bool) or not isinstance(stage.se, (int, float)) or not 0 <= stage.se < 1:
                raise NasconvError(f"{where}: {at}.se must be in [0, 1), got {brief(stage.se)}")
        try:
            with torch.device("meta"):
                Net(self)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise NasconvError(f"{where}: cannot build this architecture ({exc})") from None

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
    "Block",
    "Net",
    "StageArch",
    "arch_parts",
    "block_key",
    "build_model",
    "build_part",
    "head_key",
    "input_shape",
    "load_arch",
    "stem_key",
]
