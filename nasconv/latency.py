"""Per-device latency lookup tables: measure every distinct block a space can produce once, then
predict any architecture's latency by summing its blocks (nn-Meter's idea, for these conv kinds).

``nasconv profile-device SPACE --out device.json`` measures on the machine it runs on; a space
naming ``latency: {table: device.json}`` then gets a deterministic ``latency_ms`` that costs
nothing at search time and describes the table's device, not the (shared, noisy) trial machine.

A plain sum of isolated blocks misses per-model costs (the outer module calls, the first
layer's cold caches), so the table also holds a linear calibration, fitted by least squares on
end-to-end measurements of random architectures of the space: predicted = scale * sum + offset.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import platform
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .arch import Arch, Block, StageArch, build_model, make_head, make_stem
from .cost import measure_latency, torch_threads
from .errors import NasconvError

BACKENDS = ("torch", "onnxruntime")


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


def space_parts(space: Any) -> list[str]:
    """Every distinct key any architecture of ``space`` can need (order: stem, stages, head)."""
    spec = space.spec
    size = spec.input.size
    keys = [stem_key(spec.input.channels, c, spec.stem.kernel, spec.stem.stride, size) for c in spec.stem.channels]
    size = -(-size // spec.stem.stride)
    previous = tuple(spec.stem.channels)
    for stage in spec.stages:
        out_size = -(-size // stage.stride)
        for kind in stage.kinds():
            options = getattr(stage.conv, kind)
            names = [n for n, _ in options if n not in ("kernel", "dilation")]
            for kernel, dilation, *values in itertools.product(
                options.kernel, options.dilation, *(getattr(options, n) for n in names)
            ):
                for se, act, out in itertools.product(stage.se, stage.activation, stage.channels):
                    s = StageArch(kind, out, 1, stage.stride, kernel, dilation, tuple(zip(names, values)), se, act)
                    keys += [block_key(s, m, stage.stride, size) for m in previous]
                    if max(stage.depth) > 1:
                        keys.append(block_key(s, out, 1, out_size))
        size, previous = out_size, tuple(stage.channels)
    keys += [head_key(c, spec.classes, size) for c in previous]
    return list(dict.fromkeys(keys))


def build_part(key: str, dropout: float = 0.0) -> tuple[nn.Module, tuple[int, int, int]]:
    """The module a key describes and its input (C, H, W)."""
    k = json.loads(key)
    if k["part"] == "stem":
        return make_stem(k["inp"], k["out"], k["kernel"], k["stride"]), (k["inp"], k["size"], k["size"])
    if k["part"] == "head":
        return make_head(k["inp"], k["classes"], dropout), (k["inp"], k["size"], k["size"])
    stage = StageArch(
        k["kind"],
        k["out"],
        1,
        k["stride"],
        k["kernel"],
        k["dilation"],
        tuple(k["options"].items()),
        k["se"],
        k["activation"],
    )
    return Block(stage, k["inp"], k["stride"]), (k["inp"], k["size"], k["size"])


def _ort_latency(module: nn.Module, shape: tuple[int, ...], threads: int, warmup: int, repeats: int) -> list[float]:
    import logging
    import warnings

    import onnxruntime as ort

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    module = module.eval()
    x = torch.randn(shape)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buffer, input_names=["input"], dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"input": x.numpy()}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return times


@dataclass(frozen=True)
class Measured:
    median_ms: float
    p10_ms: float
    p90_ms: float


def measure(
    module: nn.Module,
    shape: tuple[int, ...],
    *,
    backend: str = "torch",
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
) -> Measured:
    if backend == "torch":
        lat = measure_latency(module, shape, threads=threads, warmup=warmup, repeats=repeats)
        return Measured(lat.median_ms, lat.p10_ms, lat.p90_ms)
    if backend == "onnxruntime":
        with torch_threads(threads):
            times = _ort_latency(module, shape, threads, warmup, repeats)
        deciles = statistics.quantiles(times, n=10)
        return Measured(statistics.median(times), deciles[0], deciles[-1])
    raise NasconvError(f"unknown latency backend {backend!r}; known: {', '.join(BACKENDS)}")


def machine_description() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


@dataclass
class LatencyTable:
    settings: dict[str, Any]
    machine: dict[str, Any]
    entries: dict[str, dict[str, float]]
    scale: float = 1.0
    offset_ms: float = 0.0
    calibration: dict[str, Any] | None = None

    def raw_sum(self, arch: Arch) -> float:
        missing = [k for k in arch_parts(arch) if k not in self.entries]
        if missing:
            raise NasconvError(
                f"latency table lacks {len(missing)} block(s) of {arch.short()}, e.g. {missing[0]}; "
                f"run nasconv profile-device on this space (measured entries are reused)"
            )
        return sum(self.entries[k]["median_ms"] for k in arch_parts(arch))

    def predict(self, arch: Arch) -> float:
        return self.scale * self.raw_sum(arch) + self.offset_ms

    def missing(self, space: Any) -> list[str]:
        return [k for k in space_parts(space) if k not in self.entries]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "settings": self.settings,
                    "machine": self.machine,
                    "scale": self.scale,
                    "offset_ms": self.offset_ms,
                    "calibration": self.calibration,
                    "entries": self.entries,
                },
                indent=1,
            )
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        if not path.is_file():
            raise NasconvError(f"{path}: latency table not found (make one with nasconv profile-device)")
        try:
            data = json.loads(path.read_text())
            return cls(
                data["settings"],
                data["machine"],
                data["entries"],
                float(data.get("scale", 1.0)),
                float(data.get("offset_ms", 0.0)),
                data.get("calibration"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise NasconvError(f"{path}: not a nasconv latency table ({exc})") from None


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares y = a x + b (a > 0), falling back to a pure scale for degenerate data."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if n < 3 or var <= 1e-12:
        return (my / mx if mx > 0 else 1.0), 0.0
    a = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var
    if a <= 0:
        return (my / mx if mx > 0 else 1.0), 0.0
    return a, my - a * mx


def profile_device(
    space: Any,
    out: str | Path,
    *,
    threads: int = 1,
    batch: int = 1,
    backend: str = "torch",
    warmup: int = 10,
    repeats: int = 50,
    calibrate: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> LatencyTable:
    """Measure (or complete) the table for ``space`` at ``out``; entries already there are reused."""
    if backend not in BACKENDS:
        raise NasconvError(f"unknown latency backend {backend!r}; known: {', '.join(BACKENDS)}")
    out = Path(out)
    settings = {"threads": threads, "batch": batch, "backend": backend, "warmup": warmup, "repeats": repeats}
    table = LatencyTable(settings, machine_description(), {})
    if out.exists():
        old = LatencyTable.load(out)
        if {k: old.settings.get(k) for k in ("threads", "batch", "backend")} == {
            k: settings[k] for k in ("threads", "batch", "backend")
        }:
            table.entries = dict(old.entries)
    todo = table.missing(space)
    torch.manual_seed(seed)
    with _progress(len(todo), progress, "blocks") as step:
        for i, key in enumerate(todo):
            module, (c, h, w) = build_part(key)
            m = measure(module, (batch, c, h, w), backend=backend, threads=threads, warmup=warmup, repeats=repeats)
            table.entries[key] = {"median_ms": m.median_ms, "p10_ms": m.p10_ms, "p90_ms": m.p90_ms}
            step()
            if i % 50 == 49:
                table.save(out)  # an interrupted run keeps what it measured
    rng = random.Random(seed)
    archs = list({space.sample(rng) for _ in range(calibrate * 3)})[:calibrate]
    sums, actual = [], []
    with _progress(len(archs), progress, "calibration models") as step:
        for arch in archs:
            model = build_model(arch)
            shape = (batch, arch.input_channels, arch.input_size, arch.input_size)
            actual.append(
                measure(model, shape, backend=backend, threads=threads, warmup=warmup, repeats=repeats).median_ms
            )
            sums.append(table.raw_sum(arch))
            step()
    if archs:
        table.scale, table.offset_ms = _fit(sums, actual)
        errors = [abs(table.scale * s + table.offset_ms - a) / a for s, a in zip(sums, actual)]
        table.calibration = {
            "models": len(archs),
            "median_ape": statistics.median(errors),
            "raw_median_ape": statistics.median(abs(s - a) / a for s, a in zip(sums, actual)),
        }
    table.save(out)
    return table


@contextlib.contextmanager
def _progress(total: int, enabled: bool, what: str) -> Iterator[Any]:
    if not enabled or total == 0:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(f"measuring {what}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False
    ) as bar:
        task = bar.add_task(what, total=total)
        yield lambda: bar.advance(task)


def percent_errors(predicted: list[float], measured: list[float]) -> dict[str, float]:
    errors = sorted(abs(p - m) / m for p, m in zip(predicted, measured))
    return {
        "median": statistics.median(errors),
        "p90": errors[min(len(errors) - 1, math.ceil(0.9 * len(errors)) - 1)],
        "within_10": sum(e <= 0.10 + 1e-9 for e in errors) / len(errors),
    }
