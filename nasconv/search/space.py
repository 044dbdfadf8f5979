"""Search spaces: a YAML file -> a validated :class:`Space` -> architectures drawn through Optuna.

Encoding (see :meth:`Space.draw`): *conditional*, so that every gene drawn matters. Each stage
draws its kind, channels, depth, SE ratio and activation, then only the options of the kind it
drew (and a dilation only for kernels larger than 1). Distinct gene values therefore always give
distinct architectures, a sampler never spends a mutation on a gene that changes nothing, and
:meth:`Space.count` is the exact number of architectures. ``Space.genes`` lists every gene any
trial can draw (what optuna-dashboard shows).

Validation is a pydantic schema with limits on everything a space may ask for (numbers, list
lengths, the largest network), so that any input either loads or is one :class:`NasconvError` line
naming the file and the key path; options that can never build are rejected at load, checked
only at the channel pairs that can actually occur.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import json
import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, get_args

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

# what a space may ask for: generous for real networks, small enough that checking and building
# any accepted space stays quick and within memory
MAX_CHOICES = 32
MAX_CHANNELS = 16_384
MAX_INPUT_SIZE = 4_096
MAX_KERNEL = 31
MAX_STRIDE = 8
MAX_DILATION = 16
MAX_DEPTH = 64
MAX_STAGES = 32
MAX_OPTION_INT = 4_096
MAX_OPTION_FLOAT = 1_024.0
MAX_PARAMS = 1_000_000_000
MAX_LAYER_PARAMS = 1 << 25  # 33.5M: a 4096 -> 4096 1x1 conv fits, ten times VGG's largest layer
MAX_SEED = 2**31 - 1

# the closed sets of names a space file may use, spelled once: the schema, the CLI and the modules
# that act on them read these
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:[0-9]{1,3})$"
DatasetName = Literal["digits", "cifar10", "mnist", "fashion-mnist", "imagefolder", "npz", "synthetic"]
Precision = Literal["fp32", "bf16", "fp16"]
Augmentation = Literal["none", "flip", "crop-flip"]
KeepWeights = Literal["front", "all", "none"]
DATASETS: tuple[str, ...] = get_args(DatasetName)
PRECISIONS: tuple[str, ...] = get_args(Precision)
AUGMENTATIONS: tuple[str, ...] = get_args(Augmentation)
KEEP_WEIGHTS: tuple[str, ...] = get_args(KeepWeights)
EMBEDDED_DATASETS = ("digits", "synthetic")


Gene = tuple[Any, ...]
"""A gene's choices: one value or a list in the file, always a tuple once validated."""


def _as_choices(value: Any) -> tuple[Any, ...]:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("an empty list offers nothing to choose from")
        if len(value) > MAX_CHOICES:
            raise ValueError(f"{len(value):,} choices; at most {MAX_CHOICES} per list")
        if len({json.dumps(v, sort_keys=True, default=repr) for v in value}) != len(value):
            raise ValueError(f"duplicate choices in {brief(list(value))}")
        return tuple(value)
    return (value,)


def _closest(key: str, known: list[str]) -> str | None:
    """The known key a typo most likely meant: one that starts the other (``hetconv`` -> ``het``),
    else the closest spelling."""
    lowered = key.lower()
    prefixed = [k for k in known if len(lowered) >= 3 and (lowered.startswith(k) or k.startswith(lowered))]
    if prefixed:
        return max(prefixed, key=len)
    close = difflib.get_close_matches(key, known, n=1)
    return close[0] if close else None


class Strict(BaseModel):
    """Unknown keys are errors, with a did-you-mean hint; NaN and infinity are never numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = list(cls.model_fields)
            for key in data:
                if not isinstance(key, str):
                    raise ValueError(f"key {brief(key)} is not a name")
                if key not in cls.model_fields:
                    close = _closest(key, known)
                    hint = f"did you mean '{close}'?" if close else f"known keys: {', '.join(known)}"
                    raise ValueError(f"unknown key {brief(key)} ({hint})")
        return data


def _check_value(v: Any, typ: type, low: float, high: float, odd: bool, names: tuple[str, ...]) -> Any:
    if typ is bool:
        if not isinstance(v, bool):
            raise ValueError(f"{brief(v)} is not true/false")
        return v
    if typ is str:
        if not isinstance(v, str) or v not in names:
            raise ValueError(f"{brief(v)} is not one of {', '.join(names)}")
        return v
    if typ is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{brief(v)} is not an integer")
        if not low <= v <= high:
            raise ValueError(f"{brief(v)} is not between {low:g} and {high:g}")
        if odd and v % 2 == 0:
            raise ValueError(f"{v} must be odd ('same' padding)")
        return v
    if typ is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{brief(v)} is not a finite number")
        if not low <= v <= high:
            raise ValueError(f"{brief(v)} is not between {low:g} and {high:g}")
        return float(v)
    if typ is tuple:  # a list-valued option: odd positive ints (inception's kernels)
        if not isinstance(v, (list, tuple)) or not v or len(v) > MAX_CHOICES:
            raise ValueError(f"{brief(v)} is not a list of 1 to {MAX_CHOICES} values")
        return tuple(_check_value(x, int, 1, MAX_KERNEL, odd, names) for x in v)
    raise TypeError(typ)  # pragma: no cover - a programming error


def _typed_choices(
    typ: type, low: float = 1, high: float = MAX_OPTION_INT, *, odd: bool = False, names: tuple[str, ...] = ()
) -> BeforeValidator:
    """Validator of a gene: one value or a list of choices, each of type ``typ`` within [low, high]."""

    def check(value: Any) -> tuple[Any, ...]:
        if typ is tuple:  # [[1, 3], [1, 3, 5]] is two choices; [1, 3, 5] is one
            nested = isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], (list, tuple))
            choices = _as_choices(value) if nested else (value,)
        else:
            choices = _as_choices(value)
        return tuple(_check_value(v, typ, low, high, odd, names) for v in choices)

    return BeforeValidator(check)


def _kind_options_model(kind: str) -> type[Strict]:
    fields: dict[str, Any] = {
        "kernel": (Annotated[Gene, _typed_choices(int, 1, MAX_KERNEL, odd=True)], (3,)),
        "dilation": (Annotated[Gene, _typed_choices(int, 1, MAX_DILATION)], (1,)),
    }
    for name, default in kind_params(kind).items():
        if isinstance(default, bool):
            gene = _typed_choices(bool)
        elif isinstance(default, int):
            gene = _typed_choices(int, 0, MAX_OPTION_INT, odd=name.endswith("kernel"))
        elif isinstance(default, (list, tuple)):
            gene = _typed_choices(tuple, odd=True)
        else:  # floats, and options whose default is None
            gene = _typed_choices(float, 0.0, MAX_OPTION_FLOAT)
        fields[name] = (Annotated[Gene, gene], (tuple(default) if isinstance(default, list) else default,))
    return create_model(f"{kind.capitalize()}Options", __base__=Strict, **fields)


KIND_OPTIONS: dict[str, type[Strict]] = {kind: _kind_options_model(kind) for kind in CONV_KINDS}
ConvSection = create_model(  # type: ignore[call-overload]
    "ConvSection", __base__=Strict, **{kind: (model | None, None) for kind, model in KIND_OPTIONS.items()}
)


class InputSpec(Strict):
    channels: int = Field(ge=1, le=64)
    size: int = Field(ge=1, le=MAX_INPUT_SIZE)


class DatasetSpec(Strict):
    name: DatasetName = "digits"
    path: str | None = Field(default=None, max_length=4096)
    samples: int = Field(default=1000, ge=10, le=10_000_000, description="synthetic only")
    max_samples: int | None = Field(default=None, ge=10, le=10**12, description="train on at most this many")

    @model_validator(mode="after")
    def _path_needed(self) -> DatasetSpec:
        if self.name not in EMBEDDED_DATASETS and not self.path:
            raise ValueError(f"dataset '{self.name}' needs a 'path' to local files (nothing is downloaded)")
        if self.path is not None and "\x00" in self.path:
            raise ValueError("path: contains a NUL character")
        return self


class StemSpec(Strict):
    channels: Annotated[Gene, _typed_choices(int, 1, MAX_CHANNELS)] = (16,)
    kernel: int = Field(default=3, ge=1, le=MAX_KERNEL)
    stride: int = Field(default=1, ge=1, le=MAX_STRIDE)

    @field_validator("kernel")
    @classmethod
    def _odd(cls, kernel: int) -> int:
        if kernel % 2 == 0:
            raise ValueError(f"{kernel} must be odd ('same' padding)")
        return kernel


class StageSpec(Strict):
    stride: int = Field(default=1, ge=1, le=MAX_STRIDE)
    channels: Annotated[Gene, _typed_choices(int, 1, MAX_CHANNELS)]
    depth: Annotated[Gene, _typed_choices(int, 1, MAX_DEPTH)] = (1,)
    se: Annotated[Gene, _typed_choices(float, 0.0, 0.99)] = (0.0,)
    activation: Annotated[Gene, _typed_choices(str, names=tuple(ACTIVATIONS))] = ("relu",)
    conv: ConvSection  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _check(self) -> StageSpec:
        if not self.kinds():
            raise ValueError(f"conv: allow at least one kind ({', '.join(CONV_KINDS)})")
        return self

    def kinds(self) -> list[str]:
        return [kind for kind in CONV_KINDS if getattr(self.conv, kind) is not None]


class ConstraintsSpec(Strict):
    max_macs: float | None = Field(default=None, gt=0)
    max_params: float | None = Field(default=None, gt=0)
    max_latency_ms: float | None = Field(default=None, gt=0)


def _one_of(name: str, names: tuple[str, ...]) -> str:
    if name not in names:
        raise ValueError(f"unknown {brief(name)}; known: {', '.join(names)}")
    return name


class SearchSpec(Strict):
    trials: int = Field(default=20, ge=1, le=1_000_000)
    workers: int | None = Field(default=None, ge=1, le=4096)
    sampler: str = DEFAULT_SAMPLER
    population: int = Field(default=10, ge=2, le=10_000)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    early_stopping: str = "none"
    grace_epochs: int = Field(default=1, ge=1, le=10_000, description="mo-asha: first rung")
    reduction: int = Field(default=3, ge=2, le=1_000, description="mo-asha: keep 1/reduction at each rung")
    cpus_per_trial: int = Field(default=1, ge=1, le=1024)
    gpus_per_trial: float = Field(default=0.0, ge=0, le=64, description="fractional: 0.25 = four trials per GPU")
    keep_weights: KeepWeights = "front"

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, name: str) -> str:
        return _one_of(name, SAMPLER_NAMES)

    @field_validator("early_stopping")
    @classmethod
    def _known_early_stopping(cls, name: str) -> str:
        return _one_of(name, EARLY_STOPPING)


class TrainingSpec(Strict):
    epochs: int = Field(default=3, ge=1, le=100_000)
    batch_size: int = Field(default=32, le=1 << 20)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0, le=1)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    device: str = Field(default="auto", pattern=DEVICE_PATTERN, description="auto | cpu | cuda | cuda:N")
    precision: Precision = "fp32"
    channels_last: bool = False
    augment: Augmentation = "none"

    @field_validator("batch_size")
    @classmethod
    def _two_per_batch(cls, size: int) -> int:
        if size < 2:
            raise ValueError(f"must be at least 2 (BatchNorm needs two samples per batch), got {size}")
        return size


class LatencySpec(Strict):
    threads: int = Field(default=1, ge=1, le=1024)
    batch: int = Field(default=1, ge=1, le=4096)
    warmup: int = Field(default=5, ge=0, le=100_000)
    repeats: int = Field(default=20, ge=1, le=100_000)
    table: str | None = Field(default=None, max_length=4096, description="lookup table from nasconv profile-device")


class SpaceSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    input: InputSpec
    classes: int = Field(ge=2, le=100_000)
    dataset: DatasetSpec = DatasetSpec()
    stem: StemSpec = StemSpec()
    stages: list[StageSpec] = Field(min_length=1, max_length=MAX_STAGES)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    objectives: list[str] = Field(default=["accuracy", "macs"], max_length=len(OBJECTIVES))
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
                raise ValueError(f"objectives: unknown objective {brief(name)}; known: {', '.join(OBJECTIVES)}")
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError("objectives: each objective may appear once")
        return self


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


def _gene_choice(value: Any) -> Any:
    """Optuna's categorical choices must be None, bool, int, float or str: a list-valued option is
    stored as its JSON text."""
    return json.dumps(list(value)) if isinstance(value, tuple) else value


def _option_value(value: Any) -> Any:
    return tuple(json.loads(value)) if isinstance(value, str) and value.startswith("[") else value


Pick = Callable[[str, tuple[Any, ...]], Any]


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

    # the encoding ----------------------------------------------------------------------------

    def _kind_genes(self, index: int, kind: str) -> list[tuple[str, tuple[Any, ...]]]:
        options = getattr(self.spec.stages[index].conv, kind)
        return [(f"s{index}.{kind}.{name}", tuple(_gene_choice(v) for v in choices)) for name, choices in options]

    def genes(self) -> list[tuple[str, tuple[Any, ...]]]:
        """Every gene any trial can draw, in drawing order, with its choices (the Optuna parameters)."""
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
                genes += self._kind_genes(i, kind)
        return genes

    def draw(self, pick: Pick) -> dict[str, Any]:
        """Draw one architecture's genes, asking ``pick(name, choices)`` for each *active* gene in
        order: a stage's kind first, then only that kind's options (dilation only for kernels > 1)."""
        params = {"stem.channels": pick("stem.channels", tuple(self.spec.stem.channels))}
        for i, stage in enumerate(self.spec.stages):
            kind = params[f"s{i}.kind"] = pick(f"s{i}.kind", tuple(stage.kinds()))
            for gene in ("channels", "depth", "se", "activation"):
                params[f"s{i}.{gene}"] = pick(f"s{i}.{gene}", tuple(getattr(stage, gene)))
            for name, choices in self._kind_genes(i, kind):
                if name.endswith(".dilation") and params[f"s{i}.{kind}.kernel"] == 1:
                    continue  # a 1 x 1 kernel is the same at every dilation
                params[name] = pick(name, choices)
        return params

    def decode(self, params: Mapping[str, Any]) -> Arch:
        """The Arch a set of gene values describes (inactive genes, if present, are ignored)."""
        spec = self.spec
        stages = []
        for i, stage in enumerate(spec.stages):
            kind = params[f"s{i}.kind"]
            prefix = f"s{i}.{kind}."
            options = {name: _option_value(params[prefix + name]) for name in kind_params(kind)}
            kernel = params[prefix + "kernel"]
            stages.append(
                StageArch(
                    kind=kind,
                    channels=params[f"s{i}.channels"],
                    depth=params[f"s{i}.depth"],
                    stride=stage.stride,
                    kernel=kernel,
                    dilation=1 if kernel == 1 else params[prefix + "dilation"],
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
        return self.decode(self.draw(trial.suggest_categorical))

    def sample(self, seed: int | random.Random | None = None) -> Arch:
        return self.suggest(RandomTrial(seed))

    def _kind_count(self, index: int, kind: str) -> int:
        options = getattr(self.spec.stages[index].conv, kind)
        rest = math.prod(len(choices) for name, choices in options if name not in ("kernel", "dilation"))
        return rest * sum(1 if k == 1 else len(options.dilation) for k in options.kernel)

    def count(self) -> int:
        """The exact number of distinct architectures in the space."""
        total = len(self.spec.stem.channels)
        for i, stage in enumerate(self.spec.stages):
            shared = len(stage.channels) * len(stage.depth) * len(stage.se) * len(stage.activation)
            total *= shared * sum(self._kind_count(i, kind) for kind in stage.kinds())
        return total

    def _stage_variants(self, index: int) -> list[dict[str, Any]]:
        """Every assignment of stage ``index``'s active genes."""
        stage = self.spec.stages[index]
        shared = [
            [(f"s{index}.{gene}", value) for value in getattr(stage, gene)]
            for gene in ("channels", "depth", "se", "activation")
        ]
        variants = []
        for kind in stage.kinds():
            genes = self._kind_genes(index, kind)
            for values in itertools.product(*(choices for _, choices in genes)):
                options = dict(zip((name for name, _ in genes), values))
                if options[f"s{index}.{kind}.kernel"] == 1 and options[f"s{index}.{kind}.dilation"] != genes[1][1][0]:
                    continue  # one 1 x 1 variant, whatever the dilation
                if options[f"s{index}.{kind}.kernel"] == 1:
                    del options[f"s{index}.{kind}.dilation"]
                for common in itertools.product(*shared):
                    variants.append({f"s{index}.kind": kind, **dict(common), **options})
        return variants

    def enumerate(self) -> Iterator[dict[str, Any]]:
        """Every architecture's genes, each exactly once (use on small spaces: see :meth:`count`)."""
        stages = [self._stage_variants(i) for i in range(len(self.spec.stages))]
        for stem in self.spec.stem.channels:
            for parts in itertools.product(*stages):
                params: dict[str, Any] = {"stem.channels": stem}
                for part in parts:
                    params.update(part)
                yield params

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.spec.model_dump(mode="json", exclude_defaults=False), sort_keys=False)


def _closed_form_params(kind: str, m: int, n: int, kernel: int, options: dict[str, Any]) -> int | None:
    from ..ops import op_class

    try:
        return int(op_class(kind).closed_form_params(m, n, kernel, **options))
    except Exception:  # noqa: BLE001 - a kind without a closed form (or options it rejects) is built instead
        return None


_BUILD_CHECKS: dict[tuple[Any, ...], tuple[str | None, int]] = {}


def _try_build(
    kind: str, m: int, n: int, stride: int, kernel: int, dilation: int, options: dict[str, Any], params: int | None
) -> tuple[str | None, int]:
    """(why the operator cannot build, or None; its parameter count), remembered per process."""
    key = (kind, m, n, stride, kernel, dilation, tuple(sorted(options.items())))
    found = _BUILD_CHECKS.get(key)
    if found is None:
        # small layers build fastest for real; large ones on the meta device (no memory)
        small = params is not None and params <= 1 << 20
        try:
            with contextlib.nullcontext() if small else torch.device("meta"):
                op = build_conv(kind, m, n, kernel, stride, dilation, **options)
            found = (None, sum(p.numel() for p in op.parameters()))
        except (ValueError, TypeError, ArithmeticError, RuntimeError) as exc:
            found = (str(exc), 0)
        if len(_BUILD_CHECKS) > 100_000:
            _BUILD_CHECKS.clear()
        _BUILD_CHECKS[key] = found
    return found


def _check_buildable(spec: SpaceSpec) -> None:
    """Every option of every allowed kind must build at every channel pair the space can give it
    (the first block of a stage: previous channels -> channels with the stage's stride; later
    blocks: channels -> channels), and no network may exceed MAX_PARAMS parameters."""
    bound = 0
    previous = tuple(spec.stem.channels)
    for i, stage in enumerate(spec.stages):
        pairs = {(m, n, stage.stride) for m in previous for n in stage.channels}
        if max(stage.depth) > 1:
            pairs |= {(n, n, 1) for n in stage.channels}
        stage_max = 0
        for kind in stage.kinds():
            options = getattr(stage.conv, kind)
            first = {name: choices[0] for name, choices in options}
            # kind parameters first: they are what channel counts constrain, so they take the blame
            ordered = sorted(options, key=lambda item: item[0] in ("kernel", "dilation"))
            for option, choices in ordered:
                for value, (m, n, stride) in itertools.product(choices, sorted(pairs)):
                    values = {**first, option: value}
                    kernel, dilation = values.pop("kernel"), values.pop("dilation")
                    where = f"stages[{i}].conv.{kind}.{option}: {brief(value)}"
                    params = _closed_form_params(kind, m, n, kernel, values)
                    if params is not None and params > MAX_LAYER_PARAMS:
                        raise NasconvError(
                            f"{where} makes a {m}->{n} layer of {params:,} parameters (at most {MAX_LAYER_PARAMS:,})"
                        )
                    problem, op_params = _try_build(kind, m, n, stride, kernel, dilation, values, params)
                    if problem is not None:
                        raise NasconvError(f"{where} cannot build {m}->{n} channels ({problem})")
                    stage_max = max(stage_max, op_params)
        bound += stage_max * max(stage.depth)
        if bound > MAX_PARAMS:
            raise NasconvError(
                f"stages[{i}]: the largest network would have over {bound:,} parameters (at most {MAX_PARAMS:,})"
            )
        previous = tuple(stage.channels)


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
    """Read and validate a space file (``yaml.safe_load`` only). Errors name the file and key path."""
    return parse_space(read_yaml(path, "space file"), source=str(path))
