"""Search spaces: a YAML file -> a validated :class:`Space` -> architectures drawn through Optuna.

Encoding (see :meth:`Space.draw`): *conditional*, so that every gene drawn matters. Each stage
draws its kind, channels, depth, SE ratio and activation, then only the options of the kind it
drew, in their order, skipping those the kind declares inert given the ones before
(``ConvOp.inert_options``: dilation at a 1 x 1 kernel, or for inception when every branch is 1 x 1;
a shuffle of one group). A kind that takes no stage kernel (``ConvOp.uses_stage_kernel``, e.g.
inception) has no kernel gene, and its dilation is drawn after its options. Distinct gene values
therefore always give distinct architectures, a sampler never spends a mutation on a gene that
changes nothing, and :meth:`Space.count` is the exact number of architectures. ``Space.genes``
lists every gene any trial can draw (what optuna-dashboard shows).

Validation is a strict pydantic schema (no coercion: ``"3"`` and ``true`` are not integers) with limits
on everything a space may ask for (numbers, list lengths), so that any input either loads or is one
:class:`NasconvError` line naming the file and the key path; options that can never build are
rejected at load, checked only at the channel pairs that can actually occur; and the worst
architecture the space can draw, over every combination of its choices, is held to the size limits
of :mod:`nasconv.model.arch` (one operator's parameters, the network's parameters and MACs, the
largest feature map), bounded per stage with the kinds' closed forms, never by listing the space.
A kind's options are typed by the annotations of its ``__init__`` (bool, int, float, str,
``Literal[...]``, ``tuple[X, ...]``, ``X | None``), limited by its ``option_rules`` (the value schema
lives in :mod:`nasconv.ops.base`, shared with architectures and ``nasconv ops``); the schema reads the
live registry, so a kind registered after import is usable at once. Choices are compared as values:
``se: [0, 0.0]`` is a duplicate.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import json
import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol, get_args

import torch
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from ..errors import NasconvError, brief
from ..files import read_yaml
from ..model.arch import (
    ACTIVATIONS,
    MAX_ACTIVATION,
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_DEPTH,
    MAX_DILATION,
    MAX_INPUT_CHANNELS,
    MAX_INPUT_SIZE,
    MAX_LAYER_PARAMS,
    MAX_MACS,
    MAX_PARAMS,
    MAX_SE,
    MAX_STAGES,
    MAX_STRIDE,
    Arch,
    ArchChoices,
    Figures,
    StageArch,
    StageChoices,
    block_figures,
    head_figures,
    stem_figures,
)
from ..ops import DEFAULT_KERNEL, MAX_KERNEL, ConvOp, build_conv, kind_options, op_class, registered_kinds
from ..ops.base import (
    MAX_OPTION_INT,
    Check,
    check_bool,
    float_check,
    int_check,
    names_check,
    option_check,
    out_size,
)
from .multi_objective import OBJECTIVES
from .promotion import EARLY_STOPPING
from .samplers import DEFAULT_SAMPLER, SAMPLER_NAMES

# what a space may ask for beyond what a network may be (model.arch's limits, re-exported here: a space
# is held to them for its worst combination of choices): generous for real searches, small enough that
# checking and building any accepted space stays quick and within memory
MAX_CHOICES = 32
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
    """Unknown keys are errors, with a did-you-mean hint; NaN and infinity are never numbers; values are
    never coerced (``"3"`` is not an integer, ``true`` is not 1), as in the lists of choices."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)
    #: keys that are not fields but have a message of their own (why they are not)
    key_hints: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = list(cls.model_fields)
            for key in data:
                if not isinstance(key, str):
                    raise ValueError(f"key {brief(key)} is not a name")
                if key in cls.key_hints:
                    raise ValueError(cls.key_hints[key])
                if key not in cls.model_fields:
                    close = _closest(key, known)
                    hint = f"did you mean '{close}'?" if close else f"known keys: {', '.join(known)}"
                    raise ValueError(f"unknown key {brief(key)} ({hint})")
        return data


def _gene(check: Check, *, lists: bool = False) -> BeforeValidator:
    """Validator of a gene: one value or a list of choices, each passed through ``check``; for a
    list-valued option (``lists``), ``[[1, 3], [1, 3, 5]]`` is two choices and ``[1, 3, 5]`` one.
    Choices are compared once checked, as values: ``[0, 0.0]`` is a duplicate."""

    def validate(value: Any) -> tuple[Any, ...]:
        if lists:  # [[1, 3], [1, 3, 5]] is two choices; [1, 3, 5] is one
            nested = isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], (list, tuple))
            choices = _as_choices(value) if nested else (value,)
        else:
            choices = _as_choices(value)
        checked = tuple(check(v) for v in choices)
        if len(set(checked)) != len(checked):
            raise ValueError(f"duplicate choices in {brief(list(choices))}")
        return checked

    return BeforeValidator(validate)


def _typed_choices(
    typ: type, low: float = 1, high: float = MAX_OPTION_INT, *, odd: bool = False, names: tuple[str, ...] = ()
) -> BeforeValidator:
    """Validator of a gene of ``typ`` (bool, int, float or str among ``names``) within [low, high]."""
    if typ is bool:
        return _gene(check_bool)
    if typ is int:
        return _gene(int_check(low, high, odd))
    if typ is float:
        return _gene(float_check(low, high))
    return _gene(names_check(names))


def _kind_options_model(kind: str, cls: type[ConvOp]) -> type[Strict]:
    """The schema of one kind's section: its genes in drawing order. A kind that uses the stage
    kernel draws kernel and dilation first; one that does not has no kernel, and draws dilation after
    its options (inert or not depends on them)."""
    kernel = (Annotated[Gene, _typed_choices(int, 1, MAX_KERNEL, odd=True)], (DEFAULT_KERNEL,))
    dilation = (Annotated[Gene, _typed_choices(int, 1, MAX_DILATION)], (1,))
    fields: dict[str, Any] = {"kernel": kernel, "dilation": dilation} if cls.uses_stage_kernel else {}
    for option in kind_options(cls):
        check, lists = option_check(option)
        gene = Annotated[Gene, _gene(check, lists=lists)]
        if option.default is inspect.Parameter.empty:
            fields[option.name] = (gene, ...)
        else:
            default = option.default
            fields[option.name] = (gene, (tuple(default) if isinstance(default, list) else default,))
    if not cls.uses_stage_kernel:
        fields["dilation"] = dilation
    model: type[Strict] = create_model(f"{kind.capitalize()}Options", __base__=Strict, **fields)
    if not cls.uses_stage_kernel:
        named = ", ".join(o.name for o in kind_options(cls)) or "none"
        model.key_hints = {"kernel": f"{kind} takes no stage 'kernel' (its kernel sizes are options; it has: {named})"}
    return model


_KIND_MODELS: dict[type[ConvOp], type[Strict]] = {}


def kind_options_model(kind: str) -> type[Strict]:
    """The schema of a registered kind's options in a space (built on first use, per kind class)."""
    cls = op_class(kind)
    model = _KIND_MODELS.get(cls)
    if model is None:
        model = _KIND_MODELS[cls] = _kind_options_model(kind, cls)
    return model


class _NestedError(ValueError):
    """A kind section's own validation error, raised through the ``conv`` field with its key path."""

    def __init__(self, prefix: tuple[Any, ...], error: Mapping[str, Any]) -> None:
        super().__init__(str(error["msg"]))
        self.prefix = prefix
        self.error = error


def _conv_section(value: Any) -> dict[str, Strict]:
    """The kinds a stage allows and their options, against the registry as it is now."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{brief(value)} is not a mapping of conv kinds to their options")
    known = registered_kinds()
    section: dict[str, Strict] = {}
    for kind, options in value.items():
        if not isinstance(kind, str):
            raise ValueError(f"key {brief(kind)} is not a name")
        if kind not in known:
            close = _closest(kind, list(known))
            hint = f"did you mean '{close}'?" if close else f"known kinds: {', '.join(known)}"
            raise ValueError(f"unknown key {brief(kind)} ({hint})")
        if options is None:
            continue
        try:
            model = kind_options_model(kind)
        except TypeError as exc:
            raise ValueError(f"{kind}: {exc}") from None
        try:
            section[kind] = model.model_validate(options)
        except ValidationError as exc:
            raise _NestedError((kind,), exc.errors()[0]) from None
    return section


class InputSpec(Strict):
    channels: int = Field(ge=1, le=MAX_INPUT_CHANNELS)
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
    se: Annotated[Gene, _typed_choices(float, 0.0, MAX_SE)] = (0.0,)
    activation: Annotated[Gene, _typed_choices(str, names=tuple(ACTIVATIONS))] = ("relu",)
    conv: Annotated[dict[str, SerializeAsAny[Strict]], BeforeValidator(_conv_section)]
    """The kinds the stage may use (registered kinds), each with its options' schema."""

    @model_validator(mode="after")
    def _check(self) -> StageSpec:
        if not self.kinds():
            raise ValueError(f"conv: allow at least one kind ({', '.join(registered_kinds())})")
        return self

    def kinds(self) -> list[str]:
        """The kinds the stage allows, in display order."""
        return [kind for kind in registered_kinds() if kind in self.conv]


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
    classes: int = Field(ge=2, le=MAX_CLASSES)
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
    nested = (error.get("ctx") or {}).get("error")
    if isinstance(nested, _NestedError):  # a kind section's error: its path continues the field's
        return _format_error({**nested.error, "loc": (*error["loc"], *nested.prefix, *nested.error["loc"])})
    where = _format_location(tuple(error["loc"]))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "required key is missing"
    elif error["type"] != "value_error" and "input" in error and not isinstance(error["input"], (dict, list)):
        message = f"{message}, got {brief(error['input'])}"  # pydantic's own checks do not say what they got
    return f"{where}: {message}" if where else message


def _gene_choice(value: Any) -> Any:
    """Optuna's categorical choices must be None, bool, int, float or str: a list-valued option is
    stored as its JSON text."""
    return json.dumps(list(value)) if isinstance(value, tuple) else value


def _list_options(kind: str) -> frozenset[str]:
    """The kind's options whose values are lists (stored as JSON text in a gene)."""
    cls = op_class(kind)
    found = _LIST_OPTIONS.get(cls)
    if found is None:
        found = _LIST_OPTIONS[cls] = frozenset(o.name for o in kind_options(cls) if option_check(o)[1])
    return found


_LIST_OPTIONS: dict[type[ConvOp], frozenset[str]] = {}


def _list_value(value: Any) -> tuple[Any, ...]:
    """A list-valued option from its gene value (JSON text, as Optuna stores it, or a sequence)."""
    return tuple(json.loads(value) if isinstance(value, str) else value)


Pick = Callable[[str, tuple[Any, ...]], Any]


@dataclass(frozen=True, kw_only=True)
class KindDraw:
    """One configuration of a stage's kind: the active genes' values (by gene name) and what they mean."""

    genes: dict[str, Any]
    kernel: int
    dilation: int
    options: dict[str, Any]
    """The active options (inert ones are left out: the Arch records their defaults)."""


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

    @property
    def latency_table(self) -> str | None:
        """The lookup table the space names (``latency.table``), as written (relative to ``source``)."""
        return self.spec.latency.table

    # the encoding ----------------------------------------------------------------------------

    def _kind_genes(self, index: int, kind: str) -> list[tuple[str, tuple[Any, ...]]]:
        """(gene name, choices) of a stage's kind, in drawing order."""
        cache = self.__dict__.setdefault("_kind_genes_cache", {})  # frozen: cached beside the fields
        genes = cache.get((index, kind))
        if genes is None:
            options = self.spec.stages[index].conv[kind]
            genes = [(f"s{index}.{kind}.{name}", tuple(_gene_choice(v) for v in choices)) for name, choices in options]
            cache[(index, kind)] = genes
        return list(genes)

    def _draw_kind(self, index: int, kind: str, pick: Pick) -> KindDraw:
        """Draw one configuration of a stage's kind, asking ``pick(gene, choices)`` for each active
        gene in order; a gene the kind declares inert given the ones before it is not drawn."""
        cls, lists = op_class(kind), _list_options(kind)
        prefix = f"s{index}.{kind}."
        genes: dict[str, Any] = {}
        kernel, dilation = DEFAULT_KERNEL, 1
        options: dict[str, Any] = {}
        for gene, choices in self._kind_genes(index, kind):
            name = gene.removeprefix(prefix)
            if name != "kernel" and name in cls.inert_options(kernel, options):
                continue
            value = genes[gene] = pick(gene, choices)
            if name == "kernel":
                kernel = value
            elif name == "dilation":
                dilation = value
            else:
                options[name] = _list_value(value) if name in lists else value
        return KindDraw(genes=genes, kernel=kernel, dilation=dilation, options=options)

    def _kind_draws(self, index: int, kind: str) -> list[KindDraw]:
        """Every configuration of a stage's kind, each once."""
        draws: list[KindDraw] = []

        def extend(fixed: dict[str, Any]) -> None:
            # replay the drawing order with the genes fixed so far; branch on the first free active one
            free: list[tuple[str, tuple[Any, ...]]] = []

            def pick(gene: str, choices: tuple[Any, ...]) -> Any:
                if gene in fixed:
                    return fixed[gene]
                free.append((gene, choices))
                return choices[0]

            draw = self._draw_kind(index, kind, pick)
            if not free:
                draws.append(draw)
                return
            gene, choices = free[0]
            for value in choices:
                extend({**fixed, gene: value})

        extend({})
        return draws

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
        order: a stage's kind first, then only that kind's options, less the inert ones."""
        params = {"stem.channels": pick("stem.channels", tuple(self.spec.stem.channels))}
        for i, stage in enumerate(self.spec.stages):
            kind = params[f"s{i}.kind"] = pick(f"s{i}.kind", tuple(stage.kinds()))
            for gene in ("channels", "depth", "se", "activation"):
                params[f"s{i}.{gene}"] = pick(f"s{i}.{gene}", tuple(getattr(stage, gene)))
            params.update(self._draw_kind(i, kind, pick).genes)
        return params

    def decode(self, params: Mapping[str, Any]) -> Arch:
        """The Arch a set of gene values describes (inactive genes, if present, are ignored)."""
        spec = self.spec
        stages = []
        for i, stage in enumerate(spec.stages):
            kind = params[f"s{i}.kind"]
            drawn = self._draw_kind(i, kind, lambda gene, _choices: params[gene])
            stages.append(
                StageArch(
                    kind=kind,
                    channels=params[f"s{i}.channels"],
                    depth=params[f"s{i}.depth"],
                    stride=stage.stride,
                    kernel=drawn.kernel,
                    dilation=drawn.dilation,
                    options=tuple(drawn.options.items()),
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
        cls = op_class(kind)
        if not cls.uses_stage_kernel or cls.inert_options.__func__ is not ConvOp.inert_options.__func__:  # type: ignore[attr-defined]
            return len(self._kind_draws(index, kind))
        # the base rule (dilation inert at 1 x 1 only) in closed form, without listing configurations
        choices = dict(self.spec.stages[index].conv[kind])
        rest = math.prod(len(c) for name, c in choices.items() if name not in ("kernel", "dilation"))
        return rest * sum(1 if k == 1 else len(choices["dilation"]) for k in choices["kernel"])

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
            for drawn in self._kind_draws(index, kind):
                for common in itertools.product(*shared):
                    variants.append({f"s{index}.kind": kind, **dict(common), **drawn.genes})
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

    def arch_choices(self) -> ArchChoices:
        """Every architecture the space can draw, as the stem, block and head configurations they are
        made of (from the encoding itself: inert genes give no extra blocks)."""
        spec = self.spec
        stages = []
        for i, stage in enumerate(spec.stages):
            configurations = [
                StageArch(
                    kind=kind,
                    channels=channels,
                    stride=stage.stride,
                    kernel=drawn.kernel,
                    dilation=drawn.dilation,
                    options=tuple(drawn.options.items()),
                    se=se,
                    activation=activation,
                )
                for kind in stage.kinds()
                for drawn in self._kind_draws(i, kind)
                for se, activation, channels in itertools.product(stage.se, stage.activation, stage.channels)
            ]
            stages.append(
                StageChoices(
                    stride=stage.stride,
                    depths=tuple(stage.depth),
                    configurations=tuple(dict.fromkeys(configurations)),
                )
            )
        return ArchChoices(
            input_channels=spec.input.channels,
            input_size=spec.input.size,
            classes=spec.classes,
            stem_channels=tuple(spec.stem.channels),
            stem_kernel=spec.stem.kernel,
            stem_stride=spec.stem.stride,
            stages=tuple(stages),
        )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.spec.model_dump(mode="json", exclude_defaults=False), sort_keys=False)


_BUILD_CHECKS: dict[tuple[Any, ...], str | None] = {}

MAX_BUILD_CHECKS = 200_000
"""Operators the loader may build (on the meta device, about 0.1 ms each) to check that every option
value builds at every channel pair it can meet: far beyond a real search space's few thousand."""


def _try_build(
    kind: str, m: int, n: int, stride: int, kernel: int, dilation: int, options: dict[str, Any]
) -> str | None:
    """Why the operator cannot build, or None; built on the meta device (no memory, no initialisation),
    remembered per process."""
    key = (kind, m, n, stride, kernel, dilation, tuple(sorted(options.items())))
    if key not in _BUILD_CHECKS:
        try:
            with torch.device("meta"):
                build_conv(kind, m, n, kernel, stride, dilation, **options)
            problem = None
        except (ValueError, TypeError, ArithmeticError, RuntimeError) as exc:
            problem = str(exc)
        if len(_BUILD_CHECKS) > 100_000:
            _BUILD_CHECKS.clear()
        _BUILD_CHECKS[key] = problem
    return _BUILD_CHECKS[key]


def _check_buildable(spec: SpaceSpec) -> None:
    """Every option of every allowed kind must build at every channel pair the space can give it
    (the first block of a stage: previous channels -> channels with the stage's stride; later
    blocks: channels -> channels), with the other options at their first choice; the kernel and
    dilation, which no kind constrains by channel count, at the stage's first pair. Sizes are
    :func:`_check_size`'s, checked first: nothing too large is built here."""
    budget = MAX_BUILD_CHECKS
    previous = tuple(spec.stem.channels)
    for i, stage in enumerate(spec.stages):
        pairs = {(m, n, stage.stride) for m in previous for n in stage.channels}
        if max(stage.depth) > 1:
            pairs |= {(n, n, 1) for n in stage.channels}
        every_pair = sorted(pairs)
        for kind in stage.kinds():
            options = dict(stage.conv[kind])
            first = {name: choices[0] for name, choices in options.items()}
            # kind parameters first: they are what channel counts constrain, so they take the blame
            ordered = sorted(options.items(), key=lambda item: item[0] in ("kernel", "dilation"))
            for option, choices in ordered:
                at = every_pair[:1] if option in ("kernel", "dilation") else every_pair
                budget -= len(choices) * len(at)
                if budget < 0:
                    raise NasconvError(
                        f"stages[{i}].conv.{kind}: checking that every option builds at each of the stages' channel"
                        f" pairs would take over {MAX_BUILD_CHECKS:,} builds; offer fewer channel or option choices"
                    )
                for value, (m, n, stride) in itertools.product(choices, at):
                    values = {**first, option: value}
                    kernel, dilation = values.pop("kernel", DEFAULT_KERNEL), values.pop("dilation")
                    problem = _try_build(kind, m, n, stride, kernel, dilation, values)
                    if problem is not None:
                        where = f"stages[{i}].conv.{kind}.{option}: {brief(value)}"
                        raise NasconvError(f"{where} cannot build {m}->{n} channels ({problem})")
        previous = tuple(stage.channels)


# The worst case of a stage is found over the product of its kinds' option choices where that is small;
# beyond, each numeric option is reduced to its smallest and largest choice (every kind's closed forms
# grow or shrink monotonically in each numeric option), and beyond that a coordinate ascent picks, one
# option at a time, the choice that maximises the figure.
_EXACT_COMBINATIONS = 256
_EXACT_EVALUATIONS = 512
"""Combinations x channel pairs evaluated one by one; beyond, only the widest pair (the closed forms
grow with the channel counts)."""


def _combinations(choices: Mapping[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    names = list(choices)
    return [dict(zip(names, values)) for values in itertools.product(*(choices[name] for name in names))]


def _extremes(values: tuple[Any, ...]) -> tuple[Any, ...]:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return (min(values), max(values)) if numeric and len(values) > 2 else values


def _ascend(choices: Mapping[str, tuple[Any, ...]], score: Callable[[dict[str, Any]], int]) -> dict[str, Any]:
    """The combination a coordinate ascent from the first choices reaches (two rounds)."""
    combo = {name: values[0] for name, values in choices.items()}
    for _ in range(2):
        for name, values in choices.items():
            combo[name] = max(values, key=lambda v: score({**combo, name: v}))
    return combo


@dataclass(frozen=True)
class _StageWorst:
    """The worst a stage can be: its costliest blocks (over kinds, options, channels and the largest
    depth and SE ratio), and its largest operator with what makes it."""

    params: int
    macs: int
    layer_params: int
    layer: str
    """The largest layer and what makes it, e.g. ``stages[0].conv.cond: a 32->32 layer with kernel 31, experts 512``."""


def _describe(
    i: int, kind: str, combo: Mapping[str, Any], chosen: Mapping[str, tuple[Any, ...]], m: int, n: int
) -> str:
    """The largest layer, e.g. ``stages[0].conv.cond: a 32->32 layer with kernel 31, experts 512``: its
    kernel and the options the stage chooses among."""
    names = [name for name in combo if name == "kernel" or len(chosen[name]) > 1]
    shown = ", ".join(
        f"{name} {brief(list(v) if isinstance(v, tuple) else v)}" for name, v in combo.items() if name in names
    )
    return f"stages[{i}].conv.{kind}: a {m}->{n} layer" + (f" with {shown}" if shown else "")


def _stage_worst(spec: SpaceSpec, i: int, previous: tuple[int, ...], size: int) -> _StageWorst:
    """The worst case of stage ``i`` at an input of ``size`` x ``size`` from ``previous`` channels."""
    stage = spec.stages[i]
    after = out_size(size, stage.stride)
    depth, se = max(stage.depth), max(stage.se)
    params = macs = layer_params = 0
    layer = ""

    def block(kind: str, m: int, n: int, stride: int, at: int, combo: Mapping[str, Any]) -> Figures | None:
        options = dict(combo)
        kernel = options.pop("kernel", DEFAULT_KERNEL)
        try:
            return block_figures(kind, m, n, kernel, stride, options, at, se)
        except ValueError:  # a combination that cannot build is never a network: it costs nothing
            return None

    for kind in stage.kinds():
        choices = {name: tuple(values) for name, values in stage.conv[kind] if name != "dilation"}
        if math.prod(len(v) for v in choices.values()) > _EXACT_COMBINATIONS:
            choices = {name: _extremes(values) for name, values in choices.items()}
        exact = math.prod(len(v) for v in choices.values()) <= _EXACT_COMBINATIONS
        combos = _combinations(choices) if exact else []
        pairs = [(m, n) for n in stage.channels for m in previous]
        if not exact or len(combos) * len(pairs) > _EXACT_EVALUATIONS:
            pairs = [(max(previous), max(stage.channels))]
        if not exact:
            m, n = pairs[0]
            for figure in ("layer_params", "macs"):

                def score(combo: dict[str, Any], kind: str = kind, figure: str = figure, m: int = m, n: int = n) -> int:
                    found = block(kind, m, n, stage.stride, size, combo)
                    return -1 if found is None else int(getattr(found, figure))

                combos.append(_ascend(choices, score))
        for combo in combos:
            for n in dict.fromkeys(n for _, n in pairs):
                later = block(kind, n, n, 1, after, combo) if depth > 1 else Figures(0, 0, 0, 0)
                for m in (m for m, out in pairs if out == n):
                    first = block(kind, m, n, stage.stride, size, combo)
                    if first is None or later is None:
                        continue
                    params = max(params, first.params + (depth - 1) * later.params)
                    macs = max(macs, first.macs + (depth - 1) * later.macs)
                    for figures, source in ((first, m), (later, n)):
                        if figures.layer_params > layer_params:
                            layer_params, layer = figures.layer_params, _describe(i, kind, combo, choices, source, n)
    return _StageWorst(params=params, macs=macs, layer_params=layer_params, layer=layer)


def _check_size(spec: SpaceSpec) -> None:
    """No architecture the space can draw may exceed the limits of :mod:`nasconv.model.arch`: the
    largest operator (MAX_LAYER_PARAMS), the largest network (MAX_PARAMS), the costliest one
    (MAX_MACS, one image) and the largest feature map (MAX_ACTIVATION, one image), each for the worst
    combination of the space's choices, bounded per stage without listing the space's architectures."""

    def over_activation(where: str, channels: int, side: int) -> None:
        if channels * side * side > MAX_ACTIVATION:
            raise NasconvError(
                f"{where}: {channels:,} channels at {side}x{side} px make feature maps of {channels * side * side:,}"
                f" values per image (at most {MAX_ACTIVATION:,})"
            )

    size = spec.input.size
    over_activation("input", spec.input.channels, size)
    stem = max(
        (stem_figures(spec.input.channels, c, spec.stem.kernel, spec.stem.stride, size) for c in spec.stem.channels),
        key=lambda f: f.params,
    )
    if stem.layer_params > MAX_LAYER_PARAMS:
        raise NasconvError(
            f"stem: a {spec.input.channels}->{max(spec.stem.channels)} layer with kernel {spec.stem.kernel} has "
            f"{stem.layer_params:,} parameters (at most {MAX_LAYER_PARAMS:,})"
        )
    size = out_size(size, spec.stem.stride)
    over_activation("stem.channels", max(spec.stem.channels), size)
    params, macs = stem.params, stem.macs
    previous = tuple(spec.stem.channels)
    for i, stage in enumerate(spec.stages):
        worst = _stage_worst(spec, i, previous, size)
        if worst.layer_params > MAX_LAYER_PARAMS:
            raise NasconvError(f"{worst.layer} has {worst.layer_params:,} parameters (at most {MAX_LAYER_PARAMS:,})")
        size = out_size(size, stage.stride)
        over_activation(f"stages[{i}].channels", max(stage.channels), size)
        params, macs = params + worst.params, macs + worst.macs
        if params > MAX_PARAMS:
            raise NasconvError(
                f"stages[{i}]: the largest network would have over {params:,} parameters by this stage"
                f" (at most {MAX_PARAMS:,})"
            )
        if macs > MAX_MACS:
            raise NasconvError(
                f"stages[{i}]: the costliest network would need over {macs:.3g} MACs per image by this stage"
                f" (at most {MAX_MACS:.0e}); input.size is {spec.input.size}"
            )
        previous = tuple(stage.channels)
    head = head_figures(max(previous), spec.classes)
    if head.layer_params > MAX_LAYER_PARAMS:
        raise NasconvError(
            f"classes: a {max(previous)}->{spec.classes} classifier has {head.layer_params:,} parameters"
            f" (at most {MAX_LAYER_PARAMS:,})"
        )
    if params + head.params > MAX_PARAMS:
        raise NasconvError(
            f"classes: the largest network would have {params + head.params:,} parameters with its classifier"
            f" (at most {MAX_PARAMS:,})"
        )


def parse_space(data: Any, source: str = "<space>") -> Space:
    if not isinstance(data, Mapping):
        raise NasconvError(f"{source}: a space file must be a YAML mapping (name, input, classes, stages, ...)")
    try:
        spec = SpaceSpec.model_validate(data)
    except ValidationError as exc:
        raise NasconvError(f"{source}: {_format_error(exc.errors()[0])}") from None
    try:
        _check_size(spec)  # first: a layer too large to build is never built
        _check_buildable(spec)
    except NasconvError as exc:
        raise NasconvError(f"{source}: {exc}") from None
    return Space(spec=spec, source=source)


def load_space(path: str | Path) -> Space:
    """Read and validate a space file (``yaml.safe_load`` only). Errors name the file and key path."""
    return parse_space(read_yaml(path, "space file"), source=str(path))
