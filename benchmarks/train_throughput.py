"""What training at scale costs, measured side by side in one run.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--threads 1] [--share 4 [--window 30]] [--skip-search]

1. Throughput: images/s of one proxy trial (``nasconv.search.training.train``: uint8 pools,
   per-batch normalisation, validation every epoch) against a plain PyTorch loop doing the same
   work over ready-made normalised float32 tensors on the same device (the limit; goal >= 0.9x),
   on digits and on CIFAR-shaped data (50,000 x 3 x 32 x 32 uint8, made synthetically, read
   through the dataset cache). Rounds interleaved; medians; on a CPU, images per CPU-second of
   this process (a shared machine slows both alike and leaves the ratio).
2. Memory: a 2-worker search (the public API) on the CIFAR-shaped data; the workers' proportional
   memory (PSS, shared pages split between the processes that map them) sampled while it runs,
   against the size of one uint8 copy (goal: the data <= 1.3x one copy, where a float32 copy per
   worker was 8x).
3. Per-trial overhead of the search (driver + Ray): trial wall time from the study's timestamps
   minus the trial's own training time, for digits and for the CIFAR-shaped search.

``--share N`` also runs N CIFAR-shaped proxy trials at once on the device (N processes: on a GPU,
N trials sharing it). The processes load and warm up, meet at a barrier, and are timed over one
common window (``--window`` seconds): the aggregate and per-trial images/s against one trial timed
the same way alone.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray  # noqa: F401 - puts psutil on the path: Ray ships it in its thirdparty_files
import torch
import torch.nn.functional as F

from nasconv.model.arch import Arch, build_model
from nasconv.search.data import Data, load_data, normalise, prepare_data
from nasconv.search.space import Space, SpaceSpec, load_space, parse_space
from nasconv.search.training import describe_device, resolve_device, train

ROOT = Path(__file__).resolve().parents[1]
CIFAR_SHAPE = (50_000, 3, 32, 32)


def cifar_like(folder: Path) -> Path:
    """50,000 training and 10,000 test images of CIFAR's shape, uint8, learnable (class templates + noise)."""
    path = folder / "cifar-shaped.npz"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    templates = rng.integers(40, 216, size=(10, 3, 32, 32)).astype(np.int16)
    arrays = {}
    for x_key, y_key, n in (("x", "y", CIFAR_SHAPE[0]), ("x_test", "y_test", 10_000)):
        y = rng.integers(0, 10, size=n)
        noise = rng.integers(-40, 41, size=(n, 3, 32, 32), dtype=np.int16)
        arrays[x_key] = np.clip(templates[y] + noise, 0, 255).astype(np.uint8)
        arrays[y_key] = y
    np.savez(path, **arrays)
    return path


def cifar_space(npz: Path, *, max_samples: int | None, val_fraction: float, tiny: bool = False) -> Space:
    stages: list[dict[str, Any]]
    if tiny:  # a network small enough that a CPU search reads the whole dataset in seconds
        stages = [{"stride": 2, "channels": [8, 12, 16], "conv": {"dsc": {"kernel": 3}, "standard": {"kernel": 1}}}]
        stem = {"channels": [4, 8], "stride": 2}
    else:
        stages = [
            {"stride": 1, "channels": [16], "conv": {"standard": {"kernel": 3}}},
            {"stride": 2, "channels": [32], "conv": {"dsc": {"kernel": 3}}},
            {"stride": 2, "channels": [64], "conv": {"ghost": {"kernel": 3}}},
        ]
        stem = {"channels": [16]}
    dataset: dict[str, Any] = {"name": "npz", "path": str(npz)}
    if max_samples:
        dataset["max_samples"] = max_samples
    return parse_space(
        {
            "name": "cifar-shaped",
            "input": {"channels": 3, "size": 32},
            "classes": 10,
            "dataset": dataset,
            "stem": stem,
            "stages": stages,
            "objectives": ["accuracy", "macs"],
            "search": {"trials": 4, "sampler": "random", "seed": 0},
            "training": {"epochs": 1, "batch_size": 128, "val_fraction": val_fraction},
        }
    )


# ---------------------------------------------------------------- 1. throughput


def interleaved_medians(
    candidates: dict[str, Callable[[], object]], rounds: int, warmup: int, clock: Callable[[], float]
) -> dict[str, float]:
    """Median ``clock`` seconds per call of each candidate, the candidates interleaved round by round
    (as benchmarks/_timing.py, with the clock chosen)."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = clock()
            fn()
            samples[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def plain_loop(arch: Arch, tensors: dict[str, torch.Tensor], spec: SpaceSpec, device: torch.device) -> None:
    """One epoch and a validation pass, the plain way: float32 tensors already normalised on the device."""
    s = spec.training
    torch.manual_seed(s.seed)
    model = build_model(arch).to(device).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=s.lr, momentum=s.momentum, nesterov=s.momentum > 0, weight_decay=s.weight_decay
    )
    x, y = tensors["x_train"], tensors["y_train"]
    n = len(y)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=(n + s.batch_size - 1) // s.batch_size)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(s.seed)).to(device)
    for begin in range(0, n, s.batch_size):
        idx = order[begin : begin + s.batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with torch.no_grad():
        for begin in range(0, len(tensors["y_val"]), 512):
            logits = model(tensors["x_val"][begin : begin + 512])
            correct += (logits.argmax(1) == tensors["y_val"][begin : begin + 512]).sum()
    correct.item()


def float_tensors(data: Data, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "x_train": normalise(data.train.images(), data.mean, data.std).to(device),
        "y_train": data.train.labels.to(device),
        "x_val": normalise(data.val.images(), data.mean, data.std).to(device),
        "y_val": data.val.labels.to(device),
    }


def throughput(name: str, space: Space, archs: list[Arch], device: torch.device, rounds: int) -> dict[str, float]:
    spec = space.spec
    data = load_data(
        spec.dataset, spec.classes, spec.input.channels, spec.input.size, spec.training.val_fraction, spec.training.seed
    )
    tensors = float_tensors(data, device)
    flip = spec.training.model_copy(update={"augment": "crop-flip"})

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    candidates = {}
    for i, arch in enumerate(archs):
        candidates[f"plain {i}"] = lambda a=arch: (plain_loop(a, tensors, spec, device), sync())
        candidates[f"proxy {i}"] = lambda a=arch: train(a, data, spec.training, epochs=1, device=device)
        candidates[f"proxy+crop-flip {i}"] = lambda a=arch: train(a, data, flip, epochs=1, device=device)
    # on a CPU, count the process's CPU time: a shared machine then slows the figures, not their ratios
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    medians = interleaved_medians(candidates, rounds=rounds, warmup=1, clock=clock)
    images = len(data.train)
    out = {
        kind: images * len(archs) / sum(medians[f"{kind} {i}"] for i in range(len(archs)))
        for kind in ("plain", "proxy", "proxy+crop-flip")
    }
    unit = "img/CPU-s" if device.type == "cpu" else "img/s"
    print(
        f"{name:<14} {images:>6} train + {len(data.val):>5} val images, {len(archs)} archs, batch "
        f"{spec.training.batch_size}: plain loop {out['plain']:6.0f} {unit} | proxy trial {out['proxy']:6.0f} {unit} "
        f"= {out['proxy'] / out['plain']:.2f}x | with crop-flip {out['proxy+crop-flip'] / out['plain']:.2f}x",
        flush=True,
    )
    return out


# ---------------------------------------------------------------- 2. memory of a 2-worker search


def _ray_workers(root: Any) -> list[Any]:
    import psutil

    found = [root]  # the driver: it maps the cache too (it built it)
    for p in root.children(recursive=True):
        try:
            command = p.cmdline()
        except psutil.Error:
            continue
        if command and command[0].startswith("ray::"):
            found.append(p)
    return found


class MemorySampler(threading.Thread):
    """Samples, every ``interval`` s, this process and the Ray worker processes below it: their summed
    PSS and USS, and the PSS and RSS of their mappings of files under ``data_folder``."""

    def __init__(self, data_folder: Path, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.data_folder = str(data_folder)
        self.interval = interval
        self.samples: list[dict[str, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.done.is_set():
            total = {"pss": 0.0, "uss": 0.0, "data_pss": 0.0, "data_rss": 0.0, "workers": 0.0}
            for p in _ray_workers(me):
                try:
                    info = p.memory_full_info()
                    maps = p.memory_maps(grouped=True)
                except (psutil.Error, OSError):
                    continue
                total["workers"] += p.pid != me.pid
                total["pss"] += info.pss
                total["uss"] += info.uss
                for m in maps:
                    if m.path.startswith(self.data_folder):
                        total["data_pss"] += m.pss
                        total["data_rss"] += m.rss
            self.samples.append(total)
            self.done.wait(self.interval)

    def peak(self, key: str) -> float:
        return max((s[key] for s in self.samples), default=0.0)


def search_figures(space: Space, out: Path, workers: int) -> tuple[Any, float]:
    import optuna

    from nasconv.experiment import resolve_options, run_search

    opts = resolve_options(space, out=out, trials=space.spec.search.trials, workers=workers)
    start = time.perf_counter()
    run_search(space, opts, progress=False)
    wall = time.perf_counter() - start
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=space.name, storage=f"sqlite:///{out / 'study.db'}"), wall


def overhead_line(name: str, study: Any, wall: float, workers: int) -> None:
    trials = [
        t
        for t in study.trials
        if t.state.name == "COMPLETE" and t.user_attrs.get("train_seconds") and t.user_attrs.get("repeat_of") is None
    ]
    spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    trained = [float(t.user_attrs["train_seconds"]) for t in trials]
    over = [s - tr for s, tr in zip(spans, trained)]
    first: dict[Any, float] = {}  # each worker's first trial waits for its process to start
    for t, o in sorted(zip(trials, over), key=lambda pair: pair[0].datetime_start):
        first.setdefault(t.user_attrs.get("pid"), o)
    later = [o for t, o in zip(trials, over) if first.get(t.user_attrs.get("pid")) != o] or [float("nan")]
    print(
        f"{name:<14} {len(trials)} trials on {workers} workers in {wall:.1f} s (Ray start-up included): per trial "
        f"{statistics.median(spans):.2f} s wall, {statistics.median(trained):.2f} s training, overhead median "
        f"{statistics.median(over):.2f} s / mean {statistics.mean(over):.2f} s "
        f"({sum(over) / sum(spans):.0%} of trial time); a worker's first trial {statistics.mean(first.values()):.2f} s,"
        f" later trials {statistics.median(later):.2f} s (median)",
        flush=True,
    )


def memory_and_overhead(npz: Path, tmp: Path, workers: int) -> None:
    space = cifar_space(npz, max_samples=None, val_fraction=0.02, tiny=True)
    entry = prepare_data(space.spec, progress=False)
    assert entry is not None
    folder = entry.folder
    one_copy = float(entry.splits["train"].x.nbytes)  # the pool a search reads (its test split is never read)
    del entry
    sampler = MemorySampler(folder)
    sampler.start()
    study, wall = search_figures(space, tmp / "cifar-search", workers)
    sampler.done.set()
    sampler.join()
    mib = 2**20
    busy = [s for s in sampler.samples if s["workers"] >= workers]
    print(
        f"memory: one uint8 copy of the CIFAR-shaped training pool (what a search reads) = {one_copy / mib:.0f} MiB;"
        f" a float32 copy per worker, as before = {workers * 4 * one_copy / mib:.0f} MiB",
        flush=True,
    )
    data_pss, data_rss, uss = (sampler.peak(k) for k in ("data_pss", "data_rss", "uss"))
    print(
        f"  {workers}-worker search ({len(busy)} of {len(sampler.samples)} samples with {workers} workers up), peaks: "
        f"the data's share of memory (PSS of the cache files, driver + workers) {data_pss / mib:.0f} MiB = "
        f"{data_pss / one_copy:.2f}x one copy; the same mappings' summed RSS {data_rss / mib:.0f} MiB = "
        f"{data_rss / one_copy:.2f}x (every process maps it, the pages are shared); private memory (USS) of "
        f"driver + workers {uss / mib:.0f} MiB: the processes' own",
        flush=True,
    )
    overhead_line("cifar-shaped", study, wall, workers)


# ---------------------------------------------------------------- N trials sharing a device


def _share_child(
    npz: Path, device: str, samples: int, threads: int, window: float, barrier: Any, results: Any, slot: int
) -> None:
    """One of N proxy trials sharing the device (a spawned process): load, warm up, wait at the
    barrier for the others, then train epoch after epoch until ``window`` seconds have passed since
    the common start. Reports the training images of the epochs that ended inside the window over
    the time to the last of them: every process is busy for the whole window, so every measured
    interval overlaps all the others."""
    torch.set_num_threads(threads)
    where = resolve_device(device)
    space = cifar_space(npz, max_samples=samples, val_fraction=0.02)
    spec = space.spec
    data = load_data(spec.dataset, 10, 3, 32, spec.training.val_fraction, spec.training.seed)
    arch = space.sample(0)
    train(arch, data, spec.training, epochs=1, device=where)  # warm-up: CUDA context, kernels, page cache
    ends: list[float] = []

    def on_epoch(_: Any) -> bool:
        if where.type == "cuda":
            torch.cuda.synchronize(where)
        ends.append(time.perf_counter())
        return ends[-1] - start >= window

    barrier.wait(timeout=600)  # all load and warm up first; a broken barrier ends the benchmark
    start = time.perf_counter()
    train(arch, data, spec.training, epochs=1_000_000, device=where, on_epoch=on_epoch)
    inside = [t for t in ends if t - start <= window]
    rate = len(inside) * len(data.train) / (inside[-1] - start) if inside else float("nan")
    results.put((slot, rate, len(inside)))


def run_shared(npz: Path, device: torch.device, share: int, samples: int, threads: int, window: float) -> list[float]:
    """Images/s of each of ``share`` proxy trials run at once on ``device``, timed over one common window."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    barrier, results = context.Barrier(share), context.Queue()
    args = (npz, str(device), samples, threads, window, barrier, results)
    procs = [context.Process(target=_share_child, args=(*args, slot)) for slot in range(share)]
    for proc in procs:
        proc.start()
    got: list[tuple[int, float, int]] = []
    try:
        while len(got) < share:
            try:
                got.append(results.get(timeout=5))
            except queue.Empty:
                crashed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if crashed:
                    raise RuntimeError(f"a proxy trial sharing {device} crashed (exit codes {crashed})") from None
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
    got.sort()
    for slot, _, epochs in got:
        if epochs < 2:
            print(f"  (trial {slot}: only {epochs} epoch(s) inside the {window:.0f} s window: use a longer --window)")
    return [rate for _, rate, _ in got]


def shared_device(npz: Path, device: torch.device, share: int, samples: int, threads: int, window: float) -> None:
    alone = run_shared(npz, device, 1, samples, threads, window)[0]
    rates = run_shared(npz, device, share, samples, threads, window)
    each = ", ".join(f"{r:.0f}" for r in rates)
    print(
        f"sharing {device}: {share} proxy trials at once, timed over one common {window:.0f} s window after a barrier: "
        f"{sum(rates):8.0f} img/s in all (per trial: {each}) vs one alone {alone:8.0f} img/s = "
        f"{sum(rates) / alone:.2f}x in all, {statistics.mean(rates) / alone:.2f}x per trial",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2048, help="CIFAR-shaped training images per proxy epoch")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--share", type=int, default=0, help="also run N proxy trials at once on the device")
    parser.add_argument("--window", type=float, default=30.0, help="--share: seconds every trial is timed over")
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["NASCONV_CACHE"] = str(tmp / "cache")  # the search's workers inherit it
        print(f"torch {torch.__version__} on {describe_device(device)}, {os.cpu_count()} CPUs")
        start = time.perf_counter()
        npz = cifar_like(tmp)
        made = time.perf_counter() - start
        space = cifar_space(npz, max_samples=args.samples, val_fraction=0.02)
        start = time.perf_counter()
        entry = prepare_data(space.spec, progress=False)
        built = time.perf_counter() - start
        start = time.perf_counter()
        again = prepare_data(space.spec, progress=False)
        mapped = time.perf_counter() - start
        assert entry is not None and again is not None and again.built_seconds is None
        print(
            f"cifar-shaped data {CIFAR_SHAPE}: written as npz in {made:.1f} s; cache built once in {built:.1f} s, "
            f"mapped again in {mapped * 1e3:.0f} ms ({entry.folder.name})"
        )
        digits = load_space(ROOT / "search_spaces" / "digits.yaml")
        start = time.perf_counter()
        load_data.cache_clear()
        d = digits.spec
        load_data(d.dataset, d.classes, d.input.channels, d.input.size, d.training.val_fraction, d.training.seed)
        print(f"digits loaded (in memory, no disk cache) in {(time.perf_counter() - start) * 1e3:.0f} ms")
        throughput("digits", digits, [digits.sample(i) for i in range(3)], device, args.rounds + 2)
        throughput("cifar-shaped", space, [space.sample(0)], device, args.rounds)
        if args.share:
            shared_device(npz, device, args.share, args.samples, args.threads, args.window)
        if not args.skip_search:
            memory_and_overhead(npz, tmp, args.workers)
            digits_search = parse_space(
                {**digits.spec.model_dump(mode="json"), "search": {"trials": 8, "sampler": "random", "seed": 0}}
            )
            study, wall = search_figures(digits_search, tmp / "digits-search", args.workers)
            overhead_line("digits", study, wall, args.workers)


if __name__ == "__main__":
    main()
