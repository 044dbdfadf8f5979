"""Per-device latency lookup tables: measure every distinct block a space can produce once, then
predict any architecture's latency by summing its blocks (nn-Meter's idea, for these conv kinds).

``nasconv profile-device SPACE --out device.json`` measures on the machine it runs on; a space
naming ``latency: {table: device.json}`` then gets a deterministic ``latency_ms`` that costs
nothing at search time and describes the table's device, not the (shared, noisy) trial machine.

A plain sum of isolated blocks misses per-model costs (the outer module calls, the first
layer's cold caches), so the table also holds a linear calibration, fitted by least squares on
end-to-end measurements of random architectures of the space: predicted = sum over part types
(stem, head, each conv kind) of scale_type x that type's table time, + offset (ridge-regularised
toward scale 1, see ``fit_calibration``).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import NasconvError
from .arch import Arch, ArchChoices, arch_parts, block_key, build_model, build_part, head_key, stem_key
from .cost import measure_latency, torch_threads

BACKENDS = ("torch", "onnxruntime")


class LatencySpace(Protocol):
    """What latency tables need of a search space (:class:`nasconv.search.space.Space` is one)."""

    @property
    def source(self) -> str:
        """Where the space came from (a table path is relative to it)."""
        ...

    @property
    def latency_table(self) -> str | None:
        """The lookup table the space names, if any."""
        ...

    def arch_choices(self) -> ArchChoices: ...

    def sample(self, seed: int | random.Random | None = None) -> Arch: ...


def space_parts(choices: ArchChoices) -> list[str]:
    """Every distinct key any architecture of a space can need (order: stem, stages, head), from the
    configurations the space says it can draw."""
    size = choices.input_size
    keys = [
        stem_key(choices.input_channels, c, choices.stem_kernel, choices.stem_stride, size)
        for c in choices.stem_channels
    ]
    size = -(-size // choices.stem_stride)
    previous = choices.stem_channels
    for stage in choices.stages:
        out_size = -(-size // stage.stride)
        for s in stage.configurations:
            keys += [block_key(s, m, stage.stride, size) for m in previous]
            if max(stage.depths) > 1:
                keys.append(block_key(s, s.channels, 1, out_size))
        size, previous = out_size, stage.channels
    keys += [head_key(c, choices.classes, size) for c in previous]
    return list(dict.fromkeys(keys))


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
        torch.onnx.export(module, (x,), buffer, input_names=["input"], dynamo=False)  # type: ignore[arg-type]
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
    device: str = "cpu",
) -> Measured:
    """One block's latency; on CUDA every timed forward is synchronised (``measure_latency``)."""
    if backend == "torch":
        lat = measure_latency(module, shape, threads=threads, warmup=warmup, repeats=repeats, device=device)
        return Measured(lat.median_ms, lat.p10_ms, lat.p90_ms)
    if backend == "onnxruntime":
        if torch.device(device).type != "cpu":
            raise NasconvError(f"the onnxruntime latency backend measures on the CPU, not {device}")
        with torch_threads(threads):
            times = _ort_latency(module, shape, threads, warmup, repeats)
        deciles = statistics.quantiles(times, n=10)
        return Measured(statistics.median(times), deciles[0], deciles[-1])
    raise NasconvError(f"unknown latency backend {backend!r}; known: {', '.join(BACKENDS)}")


def machine_description(device: str = "cpu") -> dict[str, Any]:
    gpu = {"gpu": torch.cuda.get_device_name(torch.device(device))} if torch.device(device).type == "cuda" else {}
    return {
        **gpu,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


@dataclass
class LatencyTable:
    settings: dict[str, Any]
    machine: dict[str, Any]
    entries: dict[str, dict[str, float]]
    scales: dict[str, float] | None = None
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
        features = self.features(arch)
        return sum((self.scales or {}).get(t, 1.0) * v for t, v in features.items()) + self.offset_ms

    def features(self, arch: Arch) -> dict[str, float]:
        """Table time per part type (stem, head, each conv kind) of an architecture."""
        self.raw_sum(arch)  # raises on missing entries
        out: dict[str, float] = {}
        for key in arch_parts(arch):
            kind = part_type(key)
            out[kind] = out.get(kind, 0.0) + self.entries[key]["median_ms"]
        return out

    def missing(self, space: LatencySpace) -> list[str]:
        return [k for k in space_parts(space.arch_choices()) if k not in self.entries]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "settings": self.settings,
                    "machine": self.machine,
                    "scales": self.scales,
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
                data.get("scales"),
                float(data.get("offset_ms", 0.0)),
                data.get("calibration"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise NasconvError(f"{path}: not a nasconv latency table ({exc})") from None


def space_latency_table(space: LatencySpace) -> LatencyTable | None:
    """The table a space names (``latency.table``, a path relative to the space file), checked to
    cover every block the space can produce; None when it names none."""
    name = space.latency_table
    if not name:
        return None
    path = Path(name).expanduser()
    beside = Path(space.source).parent / path
    if not path.is_absolute() and beside.is_file():
        path = beside
    table = LatencyTable.load(path)
    missing = table.missing(space)
    if missing:
        raise NasconvError(
            f"{path}: lacks {len(missing)} of the space's blocks; run "
            f"nasconv profile-device {space.source} --out {path} (measured entries are reused)"
        )
    return table


def part_type(key: str) -> str:
    k = json.loads(key)
    return k["kind"] if k["part"] == "block" else k["part"]


def fit_calibration(
    features: list[dict[str, float]], actual: list[float], strength: float = 1.0
) -> tuple[dict[str, float], float]:
    """Per-part-type scales and an offset: least squares of measured = sum_t a_t x_t + b, with a
    ridge pull of each a_t toward 1 (weighted by the type's typical time), so types seen in few
    calibration models keep the plain sum."""
    import numpy as np

    types = sorted({t for f in features for t in f})
    x = np.array([[f.get(t, 0.0) for t in types] + [1.0] for f in features])
    y = np.array(actual)
    typical = np.array(
        [max(float(np.mean(x[:, i][x[:, i] > 0])) if (x[:, i] > 0).any() else 1.0, 1e-6) for i in range(len(types))]
    )
    penalty = np.zeros((len(types), len(types) + 1))
    penalty[np.arange(len(types)), np.arange(len(types))] = np.sqrt(strength) * typical
    a = np.vstack([x, penalty])
    b = np.concatenate([y, np.sqrt(strength) * typical])
    solution, *_ = np.linalg.lstsq(a, b, rcond=None)
    scales = {t: float(max(v, 0.1)) for t, v in zip(types, solution[:-1])}
    return scales, float(solution[-1])


def best_of_rounds(
    items: Mapping[str, tuple[nn.Module, tuple[int, ...]]],
    *,
    rounds: int,
    backend: str,
    threads: int,
    warmup: int,
    repeats: int,
    step: Any = lambda: None,
    device: str = "cpu",
) -> dict[str, Measured]:
    """Measure every item ``rounds`` times, one pass over all items per round, and keep each item's
    fastest round: a slow phase of a shared machine then spoils one round of an item, not its figure."""
    best: dict[str, Measured] = {}
    for _ in range(rounds):
        for key, (module, shape) in items.items():
            m = measure(module, shape, backend=backend, threads=threads, warmup=warmup, repeats=repeats, device=device)
            if key not in best or m.median_ms < best[key].median_ms:
                best[key] = m
            step()
    return best


def measure_latency_table(
    space: LatencySpace,
    out: str | Path,
    *,
    threads: int = 1,
    batch: int = 1,
    backend: str = "torch",
    warmup: int = 10,
    repeats: int = 30,
    rounds: int = 5,
    calibrate: int = 40,
    seed: int = 0,
    progress: bool = True,
    device: str = "cpu",
) -> LatencyTable:
    """Measure (or complete) the table for ``space`` at ``out`` on ``device`` (cpu, or cuda[:N] with
    synchronised timing); entries already there, measured with the same settings, are reused."""
    if backend not in BACKENDS:
        raise NasconvError(f"unknown latency backend {backend!r}; known: {', '.join(BACKENDS)}")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise NasconvError(f"latency on {device}: torch finds no CUDA device")
    out = Path(out)
    settings = {
        "threads": threads,
        "batch": batch,
        "backend": backend,
        "warmup": warmup,
        "repeats": repeats,
        "rounds": rounds,
        "device": device,
    }
    table = LatencyTable(settings, machine_description(device), {})
    if out.exists():
        old = LatencyTable.load(out)
        same = ("threads", "batch", "backend", "device")
        if {k: old.settings.get(k, "cpu" if k == "device" else None) for k in same} == {k: settings[k] for k in same}:
            table.entries = dict(old.entries)
    torch.manual_seed(seed)
    todo = {}
    for key in table.missing(space):
        module, shape = build_part(key)
        todo[key] = (module, (batch, *shape))
    # each round is one pass over every block, so the rounds of one block lie far apart in time;
    # the table is saved after each round, so an interrupted run keeps what it measured
    best: dict[str, Measured] = {}
    with _progress(len(todo) * rounds, progress, "blocks") as step:
        for _ in range(rounds):
            for key, m in best_of_rounds(
                todo,
                rounds=1,
                backend=backend,
                threads=threads,
                warmup=warmup,
                repeats=repeats,
                step=step,
                device=device,
            ).items():
                if key not in best or m.median_ms < best[key].median_ms:
                    best[key] = m
                    table.entries[key] = {"median_ms": m.median_ms, "p10_ms": m.p10_ms, "p90_ms": m.p90_ms}
            table.save(out)
    rng = random.Random(seed)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(calibrate * 3)))[:calibrate]
    models = {
        str(i): (build_model(a), (batch, a.input_channels, a.input_size, a.input_size)) for i, a in enumerate(archs)
    }
    with _progress(len(models) * rounds, progress, "calibration models") as step:
        measured = best_of_rounds(
            models,
            rounds=rounds,
            backend=backend,
            threads=threads,
            warmup=warmup,
            repeats=repeats,
            step=step,
            device=device,
        )
    actual = [measured[str(i)].median_ms for i in range(len(archs))]
    sums = [table.raw_sum(a) for a in archs]
    if archs:
        table.scales, table.offset_ms = fit_calibration([table.features(a) for a in archs], actual)
        errors = [abs(table.predict(a) - m) / m for a, m in zip(archs, actual)]
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
