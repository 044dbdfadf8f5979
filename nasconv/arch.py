"""Arch: one architecture as plain, frozen, hashable data, and the model builder.

An Arch rebuilds exactly (Once-for-All's config/build_from_config idea): ``build_model(arch)``
is the only way a network is made, and ``Arch.from_dict(arch.to_dict()) == arch``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from .errors import NasconvError, read_yaml
from .ops import build_conv

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish}
_SHORT = {"p": "p", "groups": "g", "ratio": "r", "experts": "e", "dw_kernel": "d", "shuffle": "s"}


@dataclass(frozen=True)
class StageArch:
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
        object.__setattr__(self, "options", tuple(sorted((str(k), v) for k, v in dict(self.options).items())))

    def short(self) -> str:
        """Compact label, e.g. ``het(p4)`` or ``group(g2s)`` or ``dsc(k5)``."""
        parts = [f"k{self.kernel}"] if self.kernel != 3 else []
        if self.dilation != 1:
            parts.append(f"dil{self.dilation}")
        for name, value in self.options:
            if isinstance(value, bool):
                if value:
                    parts.append(_SHORT.get(name, name))
            elif not (name == "dw_kernel" and value == 3):
                parts.append(f"{_SHORT.get(name, name)}{value:g}")
        return f"{self.kind}({','.join(parts)})" if parts else self.kind


@dataclass(frozen=True)
class Arch:
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
        d = asdict(self)
        d["stages"] = [{**asdict(s), "options": dict(s.options)} for s in self.stages]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "arch") -> Arch:
        try:
            stages = tuple(
                StageArch(**{**s, "options": tuple(dict(s.get("options") or {}).items())}) for s in data["stages"]
            )
            arch = cls(**{**data, "stages": stages})
        except (KeyError, TypeError, AttributeError) as exc:
            raise NasconvError(f"{where}: not a nasconv architecture ({exc})") from None
        return arch

    @classmethod
    def from_json(cls, text: str) -> Arch:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() if path.suffix == ".json" else self.to_yaml())
        return path


def load_arch(path: str | Path) -> Arch:
    """Read an architecture written by ``Arch.save`` / ``nasconv export`` (YAML or JSON)."""
    data = read_yaml(path, "architecture file")
    if isinstance(data, dict) and isinstance(data.get("arch"), dict):
        data = data["arch"]
    if not isinstance(data, dict):
        raise NasconvError(f"{path}: expected a mapping with 'stages'")
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


__all__ = ["ACTIVATIONS", "Arch", "Block", "Net", "StageArch", "build_model", "input_shape", "load_arch"]
