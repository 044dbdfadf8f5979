"""Cost model: trainable parameters, multiply-accumulates (MACs) and measured latency.

MACs are counted with thop, with a rule registered for every nasconv operator (thop's own
rules would miss their functional convolutions or count masked weights as dense). Counted:
convolutions and linear layers, CondConv's routing and kernel mixing. Not counted:
normalisation (folded into the conv at inference), activations, pooling and residual adds,
the convention of the papers nasconv's users compare against. FLOPs = 2 x MACs.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from ..ops import ConvOp
from .arch import Arch, arch_parts, build_part


@dataclass(frozen=True)
class LayerCost:
    name: str
    type: str
    params: int
    macs: int


@dataclass(frozen=True)
class Profile:
    params: int
    macs: int
    input_shape: tuple[int, ...]
    layers: tuple[LayerCost, ...] = field(default=())

    @property
    def flops(self) -> int:
        return 2 * self.macs


def _count_op(module: ConvOp, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    module.__dict__["total_ops"] += module.count_macs(tuple(inputs[0].shape))  # thop keeps a plain int there


def _zero(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    return None


# concrete classes: thop resolves a rule on the most derived class first
_NOT_MACS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.ReLU,
    nn.ReLU6,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.SiLU,
    nn.Identity,
    nn.AdaptiveAvgPool2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.Dropout,
    nn.Flatten,
)


def _custom_ops() -> dict[type[nn.Module], object]:
    rules: dict[type[nn.Module], object] = {t: _zero for t in _NOT_MACS}
    rules[ConvOp] = _count_op
    return rules


def _as_shape(input_shape: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) or (B, C, H, W) with positive sizes, got {input_shape!r}")
    return shape


def _flatten(tree: dict, prefix: str, model: nn.Module) -> Iterator[LayerCost]:
    modules = dict(model.named_modules())
    for name, (ops, params, children) in tree.items():
        path = f"{prefix}.{name}" if prefix else name
        if children:
            yield from _flatten(children, path, model)
        elif ops or params:
            yield LayerCost(path, type(modules[path]).__name__, int(params), int(ops))


def profile(model: nn.Module, input_shape: tuple[int, ...] | list[int]) -> Profile:
    """Count the parameters and MACs of one forward pass of ``model`` at ``input_shape``."""
    from thop import profile as thop_profile

    shape = _as_shape(input_shape)
    x = torch.zeros(shape, device=next(model.parameters(), torch.zeros(())).device)
    # thop adds a root module's own rule to its children's: profile through a wrapper
    wrapper = nn.Sequential(model)
    macs, _, tree = thop_profile(wrapper, (x,), custom_ops=_custom_ops(), verbose=False, ret_layer_info=True)
    layers = tuple(_flatten(tree.get("0", (0, 0, {}))[2], "", model))
    if not layers and (macs or isinstance(model, ConvOp)):
        layers = (LayerCost("", type(model).__name__, count_params(model), int(macs)),)
    return Profile(params=count_params(model), macs=int(macs), input_shape=shape, layers=layers)


class LatencyPredictor(Protocol):
    def predict(self, arch: Arch) -> float: ...


REAL_PART_MACS = 10_000_000
"""Modules whose operators count up to this many MACs are profiled with a real forward (a millisecond,
quicker than the meta device's); larger ones on the meta device, which counts from shapes alone: no
arithmetic and no memory, so that a block of 10^11 MACs costs milliseconds, not seconds, and the same
figures."""


def profile_built(build: Callable[[], nn.Module], input_shape: tuple[int, ...] | list[int]) -> Profile:
    """``profile`` of the module ``build()`` makes, built on the meta device first (a build that fails
    raises here) and profiled there when its operators count over REAL_PART_MACS at ``input_shape``,
    else built and profiled for real. The same figures either way."""
    shape = _as_shape(input_shape)
    with torch.device("meta"):
        module = build()
    estimate = sum(m.count_macs(shape) for m in module.modules() if isinstance(m, ConvOp))
    if estimate > REAL_PART_MACS:
        try:
            return profile(module, shape)
        except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count it for real
            pass
    return profile(build(), shape)


def part_profile(key: str) -> Profile:
    """``profile`` of one part (stem, block or head) of a network, built from its key."""
    with torch.device("meta"):
        _, shape = build_part(key)
    return profile_built(lambda: build_part(key)[0], shape)


class PartCosts:
    """Params and MACs of architectures as the sum of their parts (stem, each block, head), each
    part profiled once and remembered: exactly ``profile(build_model(arch))``, in microseconds once
    the parts are known (a sampler costs thousands of candidates this way)."""

    def __init__(self, max_parts: int = 200_000) -> None:
        self.max_parts = max_parts
        self._parts: dict[str, tuple[int, int]] = {}

    def part(self, key: str) -> tuple[int, int]:
        cost = self._parts.get(key)
        if cost is None:
            prof = part_profile(key)
            cost = (prof.params, prof.macs)
            if len(self._parts) >= self.max_parts:
                self._parts.clear()
            self._parts[key] = cost
        return cost

    def __call__(self, arch: Arch) -> dict[str, float]:
        params = macs = 0
        for key in arch_parts(arch):
            p, m = self.part(key)
            params, macs = params + p, macs + m
        return {"params": params, "macs": macs, "flops": 2 * macs}


_PART_COSTS = PartCosts()


def static_costs(arch: Arch, table: LatencyPredictor | None = None) -> dict[str, float]:
    """Costs of an architecture known before training: params, MACs and FLOPs (batch 1), and
    ``latency_ms`` when a lookup table predicts it."""
    costs = _PART_COSTS(arch)
    if table is not None:
        costs["latency_ms"] = table.predict(arch)
    return costs


def count_params(model: nn.Module) -> int:
    """Trainable parameters (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``, restoring the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True, kw_only=True)
class Latency:
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    threads: int
    device: str


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...] | list[int],
    *,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    device: str | torch.device = "cpu",
) -> Latency:
    """Median wall time of one forward pass (batch 1 unless ``input_shape`` says otherwise).

    Inference mode, eval mode, ``threads`` torch threads, ``warmup`` untimed passes first.
    The model is left in the mode and on the device it came in.
    """
    if repeats < 1 or warmup < 0 or threads < 1:
        raise ValueError("repeats and threads must be >= 1 and warmup >= 0")
    device = torch.device(device)
    shape = _as_shape(input_shape)
    was_training = model.training
    original_device = next(model.parameters(), torch.zeros(())).device
    model.eval().to(device)
    x = torch.randn(shape, device=device)
    times: list[float] = []
    try:
        with torch_threads(threads), torch.inference_mode():
            for _ in range(warmup):
                model(x)
            _sync(device)
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                _sync(device)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        model.train(was_training).to(original_device)
    deciles = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
    return Latency(
        median_ms=statistics.median(times),
        p10_ms=deciles[0],
        p90_ms=deciles[-1],
        repeats=repeats,
        threads=threads,
        device=str(device),
    )
