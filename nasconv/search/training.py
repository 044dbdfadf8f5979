"""Proxy training: a few epochs of an architecture, reporting validation accuracy per epoch.

A run trains where ``training.device`` says (or where the caller puts it: a Ray trial passes the
GPU Ray assigned), in fp32 or under autocast (``bf16``; ``fp16`` with a gradient scaler, on a GPU
only: on a CPU an fp16 run stays in fp32), with ``channels_last`` if asked. Images stay in their
stored form (uint8) until a batch is taken; the batch is augmented, converted and normalised on
the device. On a GPU, a dataset that fits in a
quarter of the free memory is copied there once per run (as uint8) and batches are gathered on the
device; a larger one is read batch by batch from (memory-mapped) host memory through pinned buffers.

On a CPU a run is deterministic for a given seed and thread count. On a GPU the batch order, the
augmentation draws and the initial weights are the same for a given seed, but the arithmetic is
not bit-reproducible: nothing here sets ``torch.backends.cudnn.deterministic``, so cuDNN uses its
default (fastest, partly nondeterministic) convolution kernels, and two runs of one seed end close,
not identical (the flag alone would not make them so: some CUDA backward kernels, grid_sample's in
``deform`` among them, accumulate with atomics).

A diverging run (NaN/inf loss) stops and returns a failed result with its reason; it never raises
into the caller. On a GPU the loss is checked every ``CHECK_EVERY_CUDA`` steps, so the host does not
wait on the device at every step.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NasconvError
from ..model.arch import Arch, build_model
from .data import Data, Draws, Split, augment, draw, normalise
from .space import DEVICE_PATTERN, TrainingSpec

CHECK_EVERY_CUDA = 16
RESIDENT_FRACTION = 0.25
"""On a GPU, a dataset pool is copied to the device when it takes at most this share of free memory."""
AUGMENT_SEED = 0x5EED
"""Added to the run's seed for the augmentation draws, so turning augmentation on leaves the batch order as it was."""


@dataclass(frozen=True, kw_only=True)
class EpochResult:
    epoch: int
    accuracy: float
    loss: float
    train_loss: float
    train_seconds: float = 0.0


@dataclass
class TrainResult:
    accuracy: float = 0.0
    loss: float = math.inf
    epochs: int = 0
    train_seconds: float = 0.0
    failed: bool = False
    reason: str | None = None
    history: list[EpochResult] = field(default_factory=list)
    stopped: bool = False
    test_accuracy: float | None = None
    """Accuracy on the dataset's own test split, when asked for (``train(test=True)``) and it has one."""
    test_loss: float | None = None
    device: str = "cpu"
    precision: str = "fp32"
    """What the run used (fp16 asked for on a CPU runs in fp32: see :func:`effective_precision`)."""


EpochCallback = Callable[[EpochResult], bool | None]


# ---------------------------------------------------------------- devices


def _cuda_missing() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "torch finds no CUDA device" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")


def _visible_index(gpu_id: str | int, count: int) -> int:
    """Where an assigned GPU id appears among this process's ``count`` visible devices: Ray restricts
    CUDA_VISIBLE_DEVICES to the trial's GPUs, so it is normally 0; without that variable the id is
    the device index itself. An id that names no visible device raises (never a silent fallback to
    another GPU)."""
    gpu = str(gpu_id).strip()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        if not gpu.isdigit() or int(gpu) >= count:
            raise NasconvError(
                f"Ray assigned GPU {gpu}, but CUDA_VISIBLE_DEVICES is unset and {count} CUDA device(s) are "
                f"visible (ids 0..{count - 1})"
            )
        return int(gpu)
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if gpu not in ids:
        raise NasconvError(f"Ray assigned GPU {gpu}, but CUDA_VISIBLE_DEVICES={visible!r} does not list it")
    index = ids.index(gpu)
    if index >= count:
        raise NasconvError(
            f"Ray assigned GPU {gpu}, listed at position {index} of CUDA_VISIBLE_DEVICES={visible!r}, but torch "
            f"finds only {count} CUDA device(s)"
        )
    return index


def resolve_device(
    setting: str = "auto", *, gpu_ids: Sequence[str | int] | None = None, label: str = "training.device"
) -> torch.device:
    """The device a run trains on, for ``training.device`` = auto | cpu | cuda | cuda:N.

    ``gpu_ids`` are the GPUs a resource manager (Ray) assigned to this process, None outside one.
    Outside one, ``auto`` is CUDA when available, else the CPU. Inside one, ``auto`` and ``cuda`` are
    the assigned GPU, found among the visible devices (never a fixed physical index); ``auto`` with
    no GPU assigned, or in a process where torch finds no CUDA at all, is the CPU.
    Raises NasconvError when the device asked for does not exist, or when the assigned GPU is not
    among the visible devices. ``label`` names the setting in messages (``--device`` for a flag).
    """
    if not re.fullmatch(DEVICE_PATTERN, setting):
        raise NasconvError(f"{label}: {setting!r} is not one of auto, cpu, cuda, cuda:N")
    if setting == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if gpu_ids:
        if available:
            try:
                return torch.device("cuda", _visible_index(gpu_ids[0], torch.cuda.device_count()))
            except NasconvError as exc:
                raise NasconvError(f"{label}: {setting}: {exc}") from None
        if setting == "auto":
            return torch.device("cpu")
        raise NasconvError(f"{label}: {setting}, but {_cuda_missing()} (Ray assigned GPU {gpu_ids[0]})")
    if setting == "auto":
        return torch.device("cuda" if available and gpu_ids is None else "cpu")
    if not available:
        raise NasconvError(f"{label}: {setting}, but {_cuda_missing()}")
    device = torch.device(setting)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise NasconvError(f"{label}: {setting}, but {count} CUDA device(s) are visible (cuda:0..cuda:{count - 1})")
    return device


def check_device_request(device: str, gpus_per_trial: float, *, local: bool) -> None:
    """What can be checked of ``training.device`` and ``search.gpus_per_trial`` before Ray starts or
    any data is prepared: the settings against each other and, for a ``local`` search (a private Ray
    on this machine, whose trials train with this torch), ``cuda``/``cuda:N`` against this machine.
    On a cluster the driver may be a machine without GPUs: only the settings are checked.
    Raises NasconvError."""
    if not re.fullmatch(DEVICE_PATTERN, device):
        raise NasconvError(f"training.device: {device!r} is not one of auto, cpu, cuda, cuda:N")
    share = "1 for a GPU per trial, 0.25 for four trials per GPU"
    if gpus_per_trial > 1 and gpus_per_trial != int(gpus_per_trial):
        raise NasconvError(f"search.gpus_per_trial: {gpus_per_trial:g} (above 1 it must be a whole number of GPUs)")
    if local and device.startswith("cuda") and not torch.cuda.is_available():
        raise NasconvError(f"training.device: {device}, but {_cuda_missing()} (a local search trains on this machine)")
    if device == "cpu" and gpus_per_trial > 0:
        raise NasconvError(
            f"training.device is cpu, but search.gpus_per_trial reserves {gpus_per_trial:g} GPU per trial: "
            "set device auto or cuda, or gpus_per_trial 0"
        )
    if device.startswith("cuda") and gpus_per_trial == 0:
        raise NasconvError(
            f"training.device is {device}, but search.gpus_per_trial is 0 so trials get no GPU: "
            f"set search.gpus_per_trial or --gpus-per-trial ({share})"
        )
    if device.startswith("cuda:") and gpus_per_trial > 0:
        raise NasconvError(
            f"training.device is {device}, but with search.gpus_per_trial Ray chooses each trial's GPU: "
            "use cuda or auto"
        )


def check_search_devices(device: str, gpus_per_trial: float, cluster_gpus: float) -> None:
    """Before a search starts: can every trial get what ``training.device`` and ``search.gpus_per_trial``
    ask for on a cluster with ``cluster_gpus`` GPUs (``ray.cluster_resources().get("GPU", 0)``)?
    A request the cluster cannot meet would leave trials pending forever: NasconvError instead.
    (:func:`check_device_request` checks the settings themselves earlier, before Ray starts.)"""
    check_device_request(device, gpus_per_trial, local=False)
    if gpus_per_trial > 0 and cluster_gpus <= 0:
        raise NasconvError(
            f"search.gpus_per_trial: {gpus_per_trial:g}, but the Ray cluster has no GPUs (set it to 0 to train on CPUs)"
        )
    if gpus_per_trial > cluster_gpus:
        raise NasconvError(
            f"search.gpus_per_trial: {gpus_per_trial:g}, but the Ray cluster has {cluster_gpus:g} GPU(s) "
            "in all: no trial could start"
        )


def describe_device(device: torch.device) -> str:
    """``cpu (N threads)`` or ``cuda:0 (device name)``, for messages."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------- one run's placement and batches


def effective_precision(precision: str, device: torch.device) -> str:
    """The precision a run uses: fp16 is a GPU setting, and on a CPU the run stays in fp32 (CPU fp16
    autocast works but measured ~35x slower than fp32 here); bf16 and fp32 run as asked everywhere."""
    return "fp32" if precision == "fp16" and device.type == "cpu" else precision


@dataclass(frozen=True)
class _Run:
    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)


def _fits_on(x: torch.Tensor, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return x.numel() * x.element_size() <= RESIDENT_FRACTION * free


class _Feeder:
    """Batches of one split as normalised float on the run's device. A pool that fits is moved to the
    device once (shared through ``pools`` by the splits of one pool) and batches are gathered there."""

    def __init__(self, split: Split, data: Data, run: _Run, pools: dict[int, tuple[torch.Tensor, torch.Tensor]]):
        self.run = run
        self.resident = _fits_on(split.x, run.device)
        key = id(split.x)
        if self.resident and key not in pools:
            pools[key] = (split.x.to(run.device), split.y.to(run.device))
        self.x, self.y = pools[key] if self.resident else (split.x, split.y)
        self.index_device = run.device if self.resident else torch.device("cpu")
        self.positions = split.positions().to(self.index_device)
        self.mean, self.std = data.mean.to(run.device), data.std.to(run.device)

    def __len__(self) -> int:
        return len(self.positions)

    def take(self, rows: torch.Tensor, draws: Draws | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.positions[rows]
        x, y = self.x[rows], self.y[rows]
        if not self.resident:
            if self.run.device.type == "cuda":  # through pinned buffers: an asynchronous copy
                x, y = x.pin_memory(), y.pin_memory()
            x = x.to(self.run.device, non_blocking=True)
            y = y.to(self.run.device, non_blocking=True)
        if draws is not None:
            x = augment(x, draws)  # on stored values: exact, and padding is black
        x = normalise(x, self.mean, self.std)
        if self.run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


def batch_bounds(samples: int, batch_size: int) -> list[tuple[int, int]]:
    """[begin, end) of each batch of an epoch: every sample exactly once, and a last batch that
    would hold a single sample (BatchNorm cannot normalise one) joins the one before it."""
    bounds = [(begin, min(begin + batch_size, samples)) for begin in range(0, samples, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], samples)]
    return bounds


@torch.no_grad()
def _evaluate(model: nn.Module, feed: _Feeder, batch_size: int = 512) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=feed.run.device)
    loss = torch.zeros((), dtype=torch.float64, device=feed.run.device)
    for begin in range(0, len(feed), batch_size):
        rows = torch.arange(begin, min(begin + batch_size, len(feed)), device=feed.index_device)
        x, y = feed.take(rows)
        with feed.run.autocast():
            logits = model(x)
        logits = logits.float()
        loss += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    return correct.item() / len(feed), loss.item() / len(feed)


def evaluate(
    model: nn.Module,
    data: Data,
    split: str = "val",
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    batch_size: int = 512,
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on a split of ``data`` (``val`` or ``test``), in
    eval mode, on the device the model is on."""
    device = next(model.parameters(), torch.zeros(())).device
    run = _Run(device, effective_precision(precision, device), channels_last)
    return _evaluate(model, _Feeder(data.split(split), data, run, {}), batch_size)


def _optimizer(model: nn.Module, settings: TrainingSpec) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=settings.lr)
    return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=settings.momentum > 0)


@contextlib.contextmanager
def _quiet_scaler_skips(enabled: bool) -> Iterator[None]:
    # a gradient scaler skips optimizer steps with inf gradients; the LR schedule's warning about it is noise
    with warnings.catch_warnings():
        if enabled:
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        yield


def state_bytes(model: nn.Module) -> bytes:
    """The model's state_dict as ``torch.save`` bytes: on the CPU, contiguous, loadable with
    ``torch.load(weights_only=True)`` into ``build_model(arch)``."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def train(
    arch: Arch | nn.Module,
    data: Data,
    settings: TrainingSpec,
    *,
    epochs: int | None = None,
    on_epoch: EpochCallback | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
    test: bool = False,
) -> tuple[TrainResult, nn.Module]:
    """Train from scratch on ``device`` (default: ``settings.device`` resolved); ``on_epoch`` sees each
    epoch's validation result and may return True to stop. With ``test``, the trained model is also
    scored on the dataset's test split (``TrainResult.test_accuracy``; None if it has none)."""
    epochs = epochs or settings.epochs
    seed = settings.seed if seed is None else seed
    where = resolve_device(settings.device) if device is None else torch.device(device)
    run = _Run(where, effective_precision(settings.precision, where), settings.channels_last)
    torch.manual_seed(seed)
    model = build_model(arch) if isinstance(arch, Arch) else arch
    torch.manual_seed(seed)  # the same random stream after building, whether the model was built here or passed in
    model.to(run.device)
    if run.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.train()
    optimizer = _optimizer(model, settings)
    n = len(data.train)
    batches = batch_bounds(n, settings.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(batches))
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.precision == "fp16")
    generator = torch.Generator().manual_seed(seed)
    augment_generator = torch.Generator().manual_seed(seed + AUGMENT_SEED)
    pools: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    feed = _Feeder(data.train, data, run, pools)
    val_feed = _Feeder(data.val, data, run, pools)
    check_every = 1 if run.device.type == "cpu" else CHECK_EVERY_CUDA
    sizes = torch.tensor([end - begin for begin, end in batches], dtype=torch.float32, device=run.device)
    result = TrainResult(device=str(run.device), precision=run.precision)
    start = time.perf_counter()

    def fail(reason: str) -> tuple[TrainResult, nn.Module]:
        result.failed, result.reason = True, reason
        result.train_seconds = time.perf_counter() - start
        return result, model

    with _quiet_scaler_skips(scaler.is_enabled()):
        for epoch in range(1, epochs + 1):
            order = torch.randperm(n, generator=generator).to(feed.index_device)
            draws = draw(settings.augment, n, augment_generator)
            if draws is not None:
                draws = draws.to(run.device)
            losses = torch.zeros(len(batches), device=run.device)
            checked = 0
            for step, (begin, end) in enumerate(batches):
                x, y = feed.take(order[begin:end], None if draws is None else draws[begin:end])
                with run.autocast():
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=settings.label_smoothing)
                losses[step] = loss.detach()
                if (step + 1) % check_every == 0 or step == len(batches) - 1:
                    bad = (~torch.isfinite(losses[checked : step + 1])).nonzero()
                    if len(bad):
                        first = checked + int(bad[0])
                        return fail(f"loss became {losses[first].item()} at epoch {epoch} step {first + 1}")
                    checked = step + 1
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
            accuracy, val_loss = _evaluate(model, val_feed)
            result.train_seconds = time.perf_counter() - start
            if not math.isfinite(val_loss):
                return fail(f"validation loss became {val_loss} at epoch {epoch}")
            train_loss = float((losses * sizes).sum().item()) / max(n, 1)
            epoch_result = EpochResult(
                epoch=epoch, accuracy=accuracy, loss=val_loss, train_loss=train_loss, train_seconds=result.train_seconds
            )
            result.history.append(epoch_result)
            result.accuracy, result.loss, result.epochs = accuracy, val_loss, epoch
            if on_epoch is not None:
                paused = time.perf_counter()
                stop = on_epoch(epoch_result)
                start += time.perf_counter() - paused  # time spent in the callback is not training
                if stop:
                    result.stopped = epoch < epochs
                    break
    if test and data.test is not None:
        result.test_accuracy, result.test_loss = _evaluate(model, _Feeder(data.test, data, run, pools))
    return result, model
