"""Search spaces: a YAML file -> a validated :class:`Space` -> architectures drawn through Optuna.

Encoding (see ``Space.genes``): every stage *always* draws its kind gene and the option genes of
every kind it allows, used or not. The gene set is therefore the same for every trial, so
Optuna's NSGA-II sees one intersection search space and recombines all genes (conditional
parameters would be sampled independently at random and lose crossover).
"""

from __future__ import annotations

import difflib
import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import torch
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from ..errors import NasconvError, brief
from ..files import read_yaml
from ..model.arch import ACTIVATIONS, Arch, StageArch
from ..ops import CONV_KINDS, build_conv, kind_params
from .multi_objective import OBJECTIVES
from .samplers import DEFAULT_SAMPLER, SAMPLER_NAMES
from .scheduler import EARLY_STOPPING


def _as_choices(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("an empty list offers nothing to choose from")
        if len(set(map(repr, value))) != len(value):
            raise ValueError(f"duplicate choices in {list(value)}")
        return tuple(value)
    return (value,)


Choices = Annotated[tuple[Any, ...], BeforeValidator(_as_choices)]


class Strict(BaseModel):
    """Unknown keys are errors, with a did-you-mean hint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = list(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    close = difflib.get_close_matches(str(key), known, n=1)
                    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
                    raise ValueError(f"unknown key '{key}' ({hint})")
        return data


def _typed_choices(typ: type, positive: bool = True, odd: bool = False) -> Any:
    def check(values: tuple[Any, ...]) -> tuple[Any, ...]:
        out = []
        for v in values:
            if typ is bool:
                if not isinstance(v, bool):
                    raise ValueError(f"{v!r} is not true/false")
            elif typ is int:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ValueError(f"{v!r} is not an integer")
                if positive and v < 1:
                    raise ValueError(f"{v} must be at least 1")
                if odd and v % 2 == 0:
                    raise ValueError(f"{v} must be odd ('same' padding)")
            elif typ is float:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError(f"{v!r} is not a number")
                v = float(v)
            out.append(v)
        return tuple(out)

    return Annotated[Choices, BeforeValidator(lambda v: check(_as_choices(v)))]


def _kind_options_model(kind: str) -> type[Strict]:
    fields: dict[str, Any] = {
        "kernel": (_typed_choices(int, odd=True), (3,)),
        "dilation": (_typed_choices(int), (1,)),
    }
    for name, default in kind_params(kind).items():
        typ = type(default) if isinstance(default, (bool, int, float)) else int
        fields[name] = (_typed_choices(typ, odd=name.endswith("kernel")), (default,))
    return create_model(f"{kind.capitalize()}Options", __base__=Strict, **fields)


KIND_OPTIONS: dict[str, type[Strict]] = {kind: _kind_options_model(kind) for kind in CONV_KINDS}
ConvSection = create_model(  # type: ignore[call-overload]
    "ConvSection", __base__=Strict, **{kind: (model | None, None) for kind, model in KIND_OPTIONS.items()}
)


class InputSpec(Strict):
    channels: int = Field(ge=1)
    size: int = Field(ge=1)


class DatasetSpec(Strict):
    name: Literal["digits", "cifar10", "mnist", "fashion-mnist", "imagefolder", "npz", "synthetic"] = "digits"
    path: str | None = None
    samples: int = Field(default=1000, ge=10, description="synthetic only")
    max_samples: int | None = Field(default=None, ge=10, description="use at most this many training samples")

    @model_validator(mode="after")
    def _path_needed(self) -> DatasetSpec:
        if self.name not in ("digits", "synthetic") and not self.path:
            raise ValueError(f"dataset '{self.name}' needs a 'path' to local files (nothing is downloaded)")
        return self


class StemSpec(Strict):
    channels: _typed_choices(int) = (16,)  # type: ignore[valid-type]
    kernel: int = Field(default=3, ge=1)
    stride: int = Field(default=1, ge=1)


class StageSpec(Strict):
    stride: int = Field(default=1, ge=1)
    channels: _typed_choices(int)  # type: ignore[valid-type]
    depth: _typed_choices(int) = (1,)  # type: ignore[valid-type]
    se: _typed_choices(float) = (0.0,)  # type: ignore[valid-type]
    activation: Choices = ("relu",)
    conv: ConvSection  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _check(self) -> StageSpec:
        for act in self.activation:
            if act not in ACTIVATIONS:
                raise ValueError(f"activation {act!r} is not one of {', '.join(ACTIVATIONS)}")
        if any(not 0 <= s < 1 for s in self.se):
            raise ValueError("se ratios must be in [0, 1)")
        if not self.kinds():
            raise ValueError(f"conv: allow at least one kind ({', '.join(CONV_KINDS)})")
        return self

    def kinds(self) -> list[str]:
        return [kind for kind in CONV_KINDS if getattr(self.conv, kind) is not None]


class ConstraintsSpec(Strict):
    max_macs: float | None = Field(default=None, gt=0)
    max_params: float | None = Field(default=None, gt=0)
    max_latency_ms: float | None = Field(default=None, gt=0)


class SearchSpec(Strict):
    trials: int = Field(default=20, ge=1)
    workers: int | None = Field(default=None, ge=1)
    sampler: str = DEFAULT_SAMPLER
    population: int = Field(default=10, ge=2)
    seed: int = 0
    early_stopping: str = "none"
    grace_epochs: int = Field(default=1, ge=1, description="mo-asha: first rung")
    reduction: int = Field(default=3, ge=2, description="mo-asha: keep 1/reduction at each rung")
    cpus_per_trial: int = Field(default=1, ge=1, le=1024)
    gpus_per_trial: float = Field(default=0.0, ge=0, le=64, description="fractional: 0.25 = four trials per GPU")
    keep_weights: Literal["front", "all", "none"] = "front"

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, name: str) -> str:
        return _one_of(name, SAMPLER_NAMES)

    @field_validator("early_stopping")
    @classmethod
    def _known_early_stopping(cls, name: str) -> str:
        return _one_of(name, EARLY_STOPPING)


DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:[0-9]+)$"
PRECISIONS = ("fp32", "bf16", "fp16")
AUGMENTATIONS = ("none", "flip", "crop-flip")
KEEP_WEIGHTS = ("front", "all", "none")


class TrainingSpec(Strict):
    epochs: int = Field(default=3, ge=1, le=100_000)
    batch_size: int = Field(default=32, le=1 << 20)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0
    device: str = Field(default="auto", pattern=DEVICE_PATTERN, description="auto | cpu | cuda | cuda:N")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    augment: Literal["none", "flip", "crop-flip"] = "none"

    @field_validator("batch_size")
    @classmethod
    def _two_per_batch(cls, size: int) -> int:
        if size < 2:
            raise ValueError(f"must be at least 2 (BatchNorm needs two samples per batch), got {size}")
        return size


class LatencySpec(Strict):
    threads: int = Field(default=1, ge=1)
    batch: int = Field(default=1, ge=1)
    warmup: int = Field(default=5, ge=0)
    repeats: int = Field(default=20, ge=1)
    table: str | None = Field(default=None, description="latency lookup table from nasconv profile-device")


class SpaceSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    input: InputSpec
    classes: int = Field(ge=2)
    dataset: DatasetSpec = DatasetSpec()
    stem: StemSpec = StemSpec()
    stages: list[StageSpec] = Field(min_length=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    objectives: list[str] = ["accuracy", "macs"]
    constraints: ConstraintsSpec = ConstraintsSpec()
    search: SearchSpec = SearchSpec()
    training: TrainingSpec = TrainingSpec()
    latency: LatencySpec = LatencySpec()

    @model_validator(mode="after")
    def _check_objectives(self) -> SpaceSpec:
        if not self.objectives:
            raise ValueError("objectives: name at least one of " + ", ".join(OBJECTIVES))
        for name in self.objectives:
            if name not in OBJECTIVES:
                raise ValueError(f"objectives: unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError("objectives: each objective may appear once")
        return self


def _one_of(name: str, names: tuple[str, ...]) -> str:
    if name not in names:
        raise ValueError(f"unknown {brief(name)}; known: {', '.join(names)}")
    return name


class TrialLike(Protocol):
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


class RandomTrial:
    """Draws genes uniformly at random (tests, benchmarks), without Optuna."""

    def __init__(self, seed: int | random.Random | None = None) -> None:
        self.rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        self.params[name] = value = self.rng.choice(list(choices))
        return value


def _format_location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "tuple[")):  # pydantic's validator frames
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _format_error(error: Mapping[str, Any]) -> str:
    where = _format_location(tuple(error["loc"]))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "required key is missing"
    return f"{where}: {message}" if where else message


@dataclass(frozen=True)
class Space:
    """A validated search space. ``spec`` is the parsed file; ``source`` where it came from."""

    spec: SpaceSpec
    source: str = "<space>"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def objectives(self) -> list[str]:
        return list(self.spec.objectives)

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        return [OBJECTIVES[o] for o in self.spec.objectives]

    def stage_in_channels(self, index: int) -> tuple[int, ...]:
        previous = self.spec.stem.channels if index == 0 else self.spec.stages[index - 1].channels
        return tuple(previous)

    def genes(self) -> list[tuple[str, tuple[Any, ...]]]:
        """Every gene, in a fixed order, with its choices (the Optuna parameter names)."""
        genes: list[tuple[str, tuple[Any, ...]]] = [("stem.channels", tuple(self.spec.stem.channels))]
        for i, stage in enumerate(self.spec.stages):
            genes += [
                (f"s{i}.kind", tuple(stage.kinds())),
                (f"s{i}.channels", tuple(stage.channels)),
                (f"s{i}.depth", tuple(stage.depth)),
                (f"s{i}.se", tuple(stage.se)),
                (f"s{i}.activation", tuple(stage.activation)),
            ]
            for kind in stage.kinds():
                for option, choices in getattr(stage.conv, kind):
                    genes.append((f"s{i}.{kind}.{option}", tuple(choices)))
        return genes

    def decode(self, params: Mapping[str, Any]) -> Arch:
        """The Arch a full set of gene values describes."""
        spec = self.spec
        stages = []
        for i, stage in enumerate(spec.stages):
            kind = params[f"s{i}.kind"]
            prefix = f"s{i}.{kind}."
            options = {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}
            kernel, dilation = options.pop("kernel"), options.pop("dilation")
            stages.append(
                StageArch(
                    kind=kind,
                    channels=params[f"s{i}.channels"],
                    depth=params[f"s{i}.depth"],
                    stride=stage.stride,
                    kernel=kernel,
                    dilation=dilation,
                    options=tuple(options.items()),
                    se=params[f"s{i}.se"],
                    activation=params[f"s{i}.activation"],
                )
            )
        return Arch(
            input_channels=spec.input.channels,
            input_size=spec.input.size,
            classes=spec.classes,
            stem_channels=params["stem.channels"],
            stem_kernel=spec.stem.kernel,
            stem_stride=spec.stem.stride,
            stages=tuple(stages),
            dropout=spec.dropout,
        )

    def suggest(self, trial: TrialLike) -> Arch:
        """Draw one architecture through an Optuna trial (or any object with ``suggest_categorical``)."""
        return self.decode({name: trial.suggest_categorical(name, choices) for name, choices in self.genes()})

    def sample(self, seed: int | random.Random | None = None) -> Arch:
        return self.suggest(RandomTrial(seed))

    def size(self) -> int:
        """Number of distinct gene combinations (an upper bound on distinct architectures)."""
        total = 1
        for _, choices in self.genes():
            total *= len(choices)
        return total

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.spec.model_dump(mode="json", exclude_defaults=False), sort_keys=False)


def _check_buildable(spec: SpaceSpec) -> None:
    """Every option of every allowed kind must build at every channel count the space can give it."""
    with torch.device("meta"):
        for i, stage in enumerate(spec.stages):
            ins = (spec.stem.channels if i == 0 else spec.stages[i - 1].channels) + tuple(stage.channels)
            pairs = sorted({(m, n) for m in ins for n in stage.channels})
            for kind in stage.kinds():
                options = getattr(stage.conv, kind)
                # kind parameters first: they are what channel counts constrain, so they take the blame
                ordered = sorted(options, key=lambda item: item[0] in ("kernel", "dilation"))
                for option, choices in ordered:
                    for value, (m, n) in itertools.product(choices, pairs):
                        kw = {k: v[0] for k, v in options if k not in ("kernel", "dilation")}
                        geometry = {"kernel_size": options.kernel[0], "dilation": options.dilation[0]}
                        if option in ("kernel", "dilation"):
                            geometry["kernel_size" if option == "kernel" else option] = value
                        else:
                            kw[option] = value
                        try:
                            build_conv(kind, m, n, stride=stage.stride, **geometry, **kw)
                        except ValueError as exc:
                            raise NasconvError(
                                f"stages[{i}].conv.{kind}.{option}: {value} cannot build {m}->{n} channels ({exc})"
                            ) from None


def parse_space(data: Any, source: str = "<space>") -> Space:
    if not isinstance(data, Mapping):
        raise NasconvError(f"{source}: a space file must be a YAML mapping (name, input, classes, stages, ...)")
    try:
        spec = SpaceSpec.model_validate(data)
    except ValidationError as exc:
        raise NasconvError(f"{source}: {_format_error(exc.errors()[0])}") from None
    try:
        _check_buildable(spec)
    except NasconvError as exc:
        raise NasconvError(f"{source}: {exc}") from None
    return Space(spec=spec, source=source)


def load_space(path: str | Path) -> Space:
    """Read and validate a space file (``yaml.safe_load`` only). Errors name the key path."""
    return parse_space(read_yaml(path, "space file"), source=str(path))
