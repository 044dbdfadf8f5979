"""Search quality on fully known spaces: how many trained architectures each sampler needs to find
the true Pareto front, through the real search path in tabular mode.

    python benchmarks/search_quality.py [--seeds 20] [--trials 150] [--samplers random,nsga2,tpe,gp,ehvi]
                                        [--spaces kinds,widths] [--jobs 2]

1. Each benchmark space (below) is enumerated and every architecture proxy-trained once on digits
   (3 epochs, seed 0); the table is saved to benchmarks/tables/<space>.csv and built only once.
2. For every sampler and seed, ``nasconv search SPACE --table TABLE --workers 1`` runs (the real
   searcher, dedupe, sampler, Ray and study), and the hypervolume of accuracy vs MACs is followed
   after each *trained* architecture (repeats are free and not counted), objectives scaled to the
   table's range, reference point 1.1.
3. Printed per sampler: the median number of trained architectures to reach 90 / 95 / 99% of the
   true front's hypervolume (">T" where a seed never reaches it; the count of seeds that did in
   brackets), the median hypervolume fraction at 25 / 50 / 100, and proposals answered as repeats.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TABLES = Path(__file__).resolve().parent / "tables"
TRAINING = {"epochs": 3, "batch_size": 32, "optimizer": "sgd", "lr": 0.1, "seed": 0}

SPACES: dict[str, dict[str, Any]] = {
    # 7 kind variants in each of 3 stages: 343 networks; the question is which conv where
    "kinds": {
        "name": "bench-kinds",
        "input": {"channels": 1, "size": 16},
        "classes": 10,
        "dataset": {"name": "digits"},
        "stem": {"channels": 16},
        "stages": [
            {
                "stride": stride,
                "channels": channels,
                "conv": {
                    "standard": {},
                    "group": {"groups": 4},
                    "dsc": {"kernel": [3, 5]},
                    "het": {"p": 4},
                    "ghost": {"ratio": 2},
                    "cond": {"experts": 2},
                },
            }
            for stride, channels in ((1, 16), (2, 32), (2, 48))
        ],
        "objectives": ["accuracy", "macs"],
        "training": TRAINING,
    },
    # 4 kinds x 2 widths x 2 depths in each of 2 stages: 256 networks; width and depth matter too
    "widths": {
        "name": "bench-widths",
        "input": {"channels": 1, "size": 16},
        "classes": 10,
        "dataset": {"name": "digits"},
        "stem": {"channels": 8},
        "stages": [
            {
                "stride": stride,
                "channels": channels,
                "depth": [1, 2],
                "conv": {"standard": {}, "dsc": {}, "het": {"p": 2}, "ghost": {"ratio": 2}},
            }
            for stride, channels in ((1, [16, 32]), (2, [32, 48]))
        ],
        "objectives": ["accuracy", "macs"],
        "training": TRAINING,
    },
}


# ---------------------------------------------------------------- the tables


def _train_one(job: tuple[str, str]) -> dict[str, Any]:
    space_json, arch_json = job
    import torch

    from nasconv.model.arch import Arch
    from nasconv.model.cost import static_costs
    from nasconv.search.data import space_data
    from nasconv.search.space import parse_space
    from nasconv.search.training import train

    torch.set_num_threads(1)
    space = parse_space(json.loads(space_json))
    arch = Arch.from_json(arch_json)
    result, _ = train(arch, space_data(space.spec), space.spec.training)
    costs = static_costs(arch)
    accuracy = result.accuracy if not result.failed else 0.0
    return {"arch": arch_json, "accuracy": accuracy, **costs, "train_seconds": result.train_seconds}


def build_table(name: str, jobs: int) -> Path:
    import pandas as pd

    from nasconv.search.space import parse_space

    path = TABLES / f"{name}.csv"
    if path.is_file():
        return path
    space = parse_space(SPACES[name])
    archs = sorted({space.decode(genes).to_json() for genes in space.enumerate()})
    print(f"{name}: training all {len(archs)} architectures once (built only once: {path})", flush=True)
    start = time.perf_counter()
    space_json = json.dumps(SPACES[name])
    with ProcessPoolExecutor(jobs) as pool:
        rows = list(pool.map(_train_one, [(space_json, a) for a in archs], chunksize=4))
    TABLES.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    print(f"{name}: table built in {time.perf_counter() - start:.0f}s", flush=True)
    return path


# ---------------------------------------------------------------- the runs


def _run(job: tuple[str, str, int, int, str]) -> dict[str, Any]:
    """One search in a fresh process (its own private Ray): the trained sequence and repeats."""
    name, sampler, seed, trials, table = job
    script = (
        "import json, sys\n"
        "from nasconv.experiment import resolve_options, run_search\n"
        "from nasconv.search.space import parse_space\n"
        f"space = parse_space(json.loads({json.dumps(json.dumps(SPACES[name]))}))\n"
        f"opts = resolve_options(space, out=sys.argv[1], trials={trials}, workers=1, seed={seed},"
        f" sampler={sampler!r}, table={table!r})\n"
        "df = run_search(space, opts, progress=False)\n"
        "print(json.dumps({'arch': list(df['arch']), 'state': list(df['state'])}))\n"
    )
    for attempt in range(3):  # a Ray worker lost on a loaded machine is retried, not fatal to the benchmark
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", script, str(Path(tmp) / "out")],
                capture_output=True,
                text=True,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        if out.returncode == 0:
            break
        log = Path(tempfile.gettempdir()) / f"search_quality-{name}-{sampler}-{seed}-{attempt}.log"
        log.write_text(out.stderr)
        print(f"{name}/{sampler}/{seed}: attempt {attempt + 1} failed (exit {out.returncode}, log {log})", flush=True)
    else:
        raise RuntimeError(f"{name}/{sampler}/{seed} failed three times: {out.stderr[-2000:]}")
    record = json.loads(out.stdout.strip().splitlines()[-1])
    trained = [a for a, s in zip(record["arch"], record["state"]) if s in ("COMPLETE", "STOPPED", "FAIL")]
    repeats = sum(s == "REPEAT" for s in record["state"])
    return {"name": name, "sampler": sampler, "seed": seed, "trained": trained, "repeats": repeats,
            "seconds": time.perf_counter() - start}  # fmt: skip


def hv_curve(trained: list[str], table: Any, objectives: list[str]) -> tuple[list[float], float]:
    """Hypervolume (scaled to the table's range, reference 1.1) after each trained architecture, and
    the true front's."""
    from nasconv.search.multi_objective import hypervolume, minimised
    from nasconv.search.tabular import canonical

    points = minimised(table, objectives)
    low, span = points.min(axis=0), np.ptp(points, axis=0)
    scaled = (points - low) / np.where(span > 0, span, 1.0)
    index = {canonical(a): i for i, a in enumerate(table["arch"])}
    reference = np.full(len(objectives), 1.1)
    true = hypervolume(scaled, reference)
    curve, seen = [], []
    for arch in trained:
        if arch in index:
            seen.append(scaled[index[arch]])
        curve.append(hypervolume(np.array(seen), reference) if seen else 0.0)
    return curve, true


def reach(curve: list[float], target: float) -> float:
    return next((i + 1 for i, v in enumerate(curve) if v >= target), math.inf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--samplers", default="random,nsga2,tpe,gp,ehvi")
    parser.add_argument("--spaces", default=",".join(SPACES))
    parser.add_argument("--jobs", type=int, default=2, help="searches (and table trainings) run at once")
    parser.add_argument("--save", help="append every run to this JSON-lines file (and resume from it)")
    args = parser.parse_args()
    import pandas as pd

    sys.path.insert(0, str(ROOT))
    samplers = args.samplers.split(",")
    runs: list[dict[str, Any]] = []
    saved = Path(args.save) if args.save else None
    if saved and saved.is_file():  # resume an interrupted benchmark: runs already saved are kept
        runs = [json.loads(line) for line in saved.read_text().splitlines() if line.strip()]
    done = {(r["name"], r["sampler"], r["seed"]) for r in runs}
    for name in args.spaces.split(","):
        table_path = build_table(name, args.jobs)
        jobs = [
            (name, s, seed, args.trials, str(table_path))
            for seed in range(args.seeds)
            for s in samplers
            if (name, s, seed) not in done
        ]
        with ProcessPoolExecutor(args.jobs) as pool:
            for run in pool.map(_run, jobs):
                runs.append(run)
                if saved:
                    with saved.open("a") as f:
                        f.write(json.dumps(run) + "\n")

    for name in args.spaces.split(","):
        table = pd.read_csv(TABLES / f"{name}.csv")
        objectives = SPACES[name]["objectives"]
        print(
            f"\n{name}: {len(table)} architectures, {args.seeds} seeds, {args.trials} trained architectures per run, "
            f"accuracy {table['accuracy'].min():.3f}-{table['accuracy'].max():.3f}"
        )
        head = f"{'sampler':<8}{'to 90%':>11}{'to 95%':>11}{'to 99%':>11}{'HV@25':>8}{'HV@50':>8}{'HV@100':>8}"
        print(head + f"{'repeats':>9}{'s/run':>7}")
        medians: dict[str, float] = {}
        for sampler in samplers:
            mine = [r for r in runs if r["name"] == name and r["sampler"] == sampler]
            curves = []
            for r in mine:
                curve, true = hv_curve(r["trained"], table, objectives)
                curves.append([v / true for v in curve])
            cells = []
            for frac in (0.90, 0.95, 0.99):
                hits = [reach(c, frac) for c in curves]
                median = statistics.median(hits)
                reached = sum(math.isfinite(h) for h in hits)
                if frac == 0.95:
                    medians[sampler] = median
                text = f"{median:g}" if math.isfinite(median) else f">{args.trials}"
                cells.append(f"{text} ({reached})" if reached < len(hits) else text)
            at = [statistics.median(c[min(k, len(c)) - 1] for c in curves) for k in (25, 50, 100)]
            repeats = statistics.median(r["repeats"] for r in mine)
            seconds = statistics.median(r["seconds"] for r in mine)
            print(
                f"{sampler:<8}{cells[0]:>11}{cells[1]:>11}{cells[2]:>11}"
                + "".join(f"{v:>8.3f}" for v in at)
                + f"{repeats:>9g}{seconds:>7.0f}"
            )
        if "random" in medians:
            for sampler, median in medians.items():
                if sampler != "random":
                    ratio = median / medians["random"]
                    print(f"  {sampler}: trials to 95% = {ratio:.2f} x random's (goal <= 0.33)")


if __name__ == "__main__":
    main()
