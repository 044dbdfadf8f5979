"""Proxy training: a few epochs of an architecture, reporting validation accuracy per epoch.

Deterministic for a given seed and thread count. A diverging run (NaN/inf loss) stops and
returns a failed result with its reason; it never raises into the caller.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..model.arch import Arch, build_model
from .data import Data
from .space import TrainingSpec


@dataclass(frozen=True)
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


EpochCallback = Callable[[EpochResult], bool | None]


def batch_bounds(samples: int, batch_size: int) -> list[tuple[int, int]]:
    """[begin, end) of each batch of an epoch: every sample exactly once, and a last batch that
    would hold a single sample (BatchNorm cannot normalise one) joins the one before it."""
    bounds = [(begin, min(begin + batch_size, samples)) for begin in range(0, samples, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], samples)]
    return bounds


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on (x, y), in eval mode."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(y), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    model.train(was_training)
    return correct / len(y), loss / len(y)


def _optimizer(model: nn.Module, settings: TrainingSpec) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=settings.lr)
    return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=settings.momentum > 0)


def train(
    arch: Arch | nn.Module,
    data: Data,
    settings: TrainingSpec,
    *,
    epochs: int | None = None,
    on_epoch: EpochCallback | None = None,
    seed: int | None = None,
) -> tuple[TrainResult, nn.Module]:
    """Train from scratch; ``on_epoch`` sees each epoch's validation result and may return True to stop."""
    epochs = epochs or settings.epochs
    seed = settings.seed if seed is None else seed
    torch.manual_seed(seed)
    model = build_model(arch) if isinstance(arch, Arch) else arch
    model.train()
    optimizer = _optimizer(model, settings)
    n = len(data.y_train)
    batches = batch_bounds(n, settings.batch_size)
    steps_per_epoch = len(batches)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    result = TrainResult()
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=generator)
        total, seen = 0.0, 0
        for step, (begin, end) in enumerate(batches):
            idx = order[begin:end]
            logits = model(data.x_train[idx])
            loss = F.cross_entropy(logits, data.y_train[idx], label_smoothing=settings.label_smoothing)
            if not torch.isfinite(loss):
                result.failed = True
                result.reason = f"loss became {loss.item()} at epoch {epoch} step {step + 1}"
                result.train_seconds = time.perf_counter() - start
                return result, model
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        accuracy, val_loss = evaluate(model, data.x_val, data.y_val)
        result.train_seconds = time.perf_counter() - start
        if not math.isfinite(val_loss):
            result.failed = True
            result.reason = f"validation loss became {val_loss} at epoch {epoch}"
            return result, model
        epoch_result = EpochResult(epoch, accuracy, val_loss, total / max(seen, 1), result.train_seconds)
        result.history.append(epoch_result)
        result.accuracy, result.loss, result.epochs = accuracy, val_loss, epoch
        if on_epoch is not None:
            paused = time.perf_counter()
            stop = on_epoch(epoch_result)
            start += time.perf_counter() - paused  # time spent in the callback is not training
            if stop:
                result.stopped = epoch < epochs
                break
    return result, model
