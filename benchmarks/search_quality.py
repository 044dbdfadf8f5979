"""Search quality on fully known spaces: how many trained architectures each sampler needs to find
the true Pareto front, through the real search path in tabular mode.

    python benchmarks/search_quality.py [--seeds 20] [--trials 150] [--samplers random,ehvi,nsga2,tpe]
                                        [--spaces kinds,widths,kinds-params,...] [--jobs 2] [--save FILE]

1. Each benchmark table's space (``SPACES``) is enumerated and every architecture proxy-trained once
   on digits (3 epochs, seed 0); the table is saved to benchmarks/tables/<space>.csv and built only
   once. An existing table must list exactly the space's architectures (else the script stops:
   delete the file to rebuild it).
2. Each problem (``PROBLEMS``) is a table with a set of objectives, so that one training run gives
   several problems: accuracy vs MACs, accuracy vs params, and accuracy vs MACs vs params.
3. For every problem, sampler and seed, ``nasconv search SPACE --table TABLE --workers 1`` runs (the
   real searcher, dedupe, sampler, Ray and study), and the hypervolume is followed after each
   *trained* architecture (what the budget counts: ``record.counts_toward_budget``; repeats and
   infeasible proposals are free), objectives scaled to the table's range, reference point 1.1
   (``multi_objective.scaled_hypervolume``).
4. Printed per problem and sampler: the median number of trained architectures to reach 90 / 95 /
   99% of the true front's hypervolume (">T" where a seed never reaches it; the count of seeds that
   did in brackets), the median hypervolume fraction at 25 / 50 / 100, proposals answered as
   repeats, and runs that failed three times (left out, the benchmark goes on). Then, per sampler,
   trials to 95% as a multiple of random's on each problem and their median (goal <= 0.33).
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
GOAL = 1 / 3  # the default must reach 95% of the true hypervolume in a third of random's trials
ATTEMPTS = 3

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


PROBLEMS: dict[str, tuple[str, list[str]]] = {
    # problem -> (the table it is read from, its objectives): no new training for a new problem
    "kinds": ("kinds", ["accuracy", "macs"]),
    "widths": ("widths", ["accuracy", "macs"]),
    "kinds-params": ("kinds", ["accuracy", "params"]),
    "widths-params": ("widths", ["accuracy", "params"]),
    "kinds-3d": ("kinds", ["accuracy", "macs", "params"]),
    "widths-3d": ("widths", ["accuracy", "macs", "params"]),
}


def problem_space(problem: str) -> dict[str, Any]:
    table, objectives = PROBLEMS[problem]
    return {**SPACES[table], "name": f"bench-{problem}", "objectives": objectives}


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
    """The table of benchmark space ``name``: every architecture trained once, built only once. An
    existing file must list exactly the space's architectures, or the script stops."""
    import pandas as pd

    from nasconv.search.space import parse_space
    from nasconv.search.tabular import canonical

    path = TABLES / f"{name}.csv"
    space = parse_space(SPACES[name])
    archs = sorted({space.decode(genes).to_json() for genes in space.enumerate()})
    if path.is_file():
        listed = {canonical(a) for a in pd.read_csv(path)["arch"]}
        if listed != set(archs):
            missing, extra = len(set(archs) - listed), len(listed - set(archs))
            raise SystemExit(
                f"{path}: does not match SPACES[{name!r}] ({len(listed)} architectures listed, the space has "
                f"{len(archs)}: {missing} missing, {extra} not in it); delete the file to rebuild it "
                f"(every architecture is trained again)"
            )
        return path
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
    """One search in a fresh process (its own private Ray): the trained sequence and repeats, or,
    after three failed attempts, the failure (the benchmark goes on without this run)."""
    problem, sampler, seed, trials, table = job
    script = (
        "import json, sys\n"
        "from nasconv.experiment import resolve_options, run_search\n"
        "from nasconv.search.record import REPEAT, counts_toward_budget, trial_state\n"
        "from nasconv.search.space import parse_space\n"
        "from nasconv.search.study import open_study\n"
        f"space = parse_space(json.loads({json.dumps(json.dumps(problem_space(problem)))}))\n"
        f"opts = resolve_options(space, out=sys.argv[1], trials={trials}, workers=1, seed={seed},"
        f" sampler={sampler!r}, table={table!r})\n"
        "run_search(space, opts, progress=False)\n"
        "trials = sorted(open_study(sys.argv[1]).get_trials(deepcopy=False), key=lambda t: t.number)\n"
        "print(json.dumps({'trained': [t.user_attrs.get('arch') for t in trials if counts_toward_budget(t)],"
        " 'repeats': sum(trial_state(t) == REPEAT for t in trials)}))\n"
    )
    start = time.perf_counter()
    error = ""
    for attempt in range(ATTEMPTS):  # a Ray worker lost on a loaded machine is retried, not fatal to the benchmark
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
            record = json.loads(out.stdout.strip().splitlines()[-1])
            return {"name": problem, "sampler": sampler, "seed": seed, "trained": record["trained"],
                    "repeats": record["repeats"], "seconds": time.perf_counter() - start}  # fmt: skip
        log = Path(tempfile.gettempdir()) / f"search_quality-{problem}-{sampler}-{seed}-{attempt}.log"
        log.write_text(out.stderr)
        lines = out.stderr.strip().splitlines()
        error = lines[-1] if lines else f"exit {out.returncode}"
        print(
            f"{problem}/{sampler}/{seed}: attempt {attempt + 1} failed (exit {out.returncode}, log {log})", flush=True
        )
    print(f"{problem}/{sampler}/{seed}: failed {ATTEMPTS} times, left out: {error}", flush=True)
    return {"name": problem, "sampler": sampler, "seed": seed, "failed": True, "error": error}


def hv_curve(trained: list[str], table: Any, objectives: list[str]) -> tuple[list[float], float, int]:
    """Hypervolume (scaled to the table's range, reference 1.1) after each trained architecture, the
    true front's, and how many trained architectures the table does not list (their trials failed
    "not in table": they add nothing to the curve, and are counted so that none goes unseen)."""
    from nasconv.search.multi_objective import minimised, non_dominated, scaled_hypervolume
    from nasconv.search.tabular import canonical

    points = minimised(table, objectives)
    low, high = points.min(axis=0), points.max(axis=0)
    index = {canonical(a): i for i, a in enumerate(table["arch"])}
    true = scaled_hypervolume(points[non_dominated(points)], low, high)
    curve: list[float] = []
    front = np.zeros((0, len(objectives)))
    missing = 0
    for arch in trained:
        i = index.get(arch) if arch else None  # the study writes canonical JSON
        if i is None and arch:
            try:
                i = index.get(canonical(arch))
            except ValueError:
                i = None
        if i is None:
            missing += 1
        else:
            front = np.vstack([front, points[i]])
            front = front[non_dominated(front)]
        curve.append(scaled_hypervolume(front, low, high) if len(front) else 0.0)
    return curve, true, missing


def reach(curve: list[float], target: float) -> float:
    return next((i + 1 for i, v in enumerate(curve) if v >= target), math.inf)


def ratio(mine: float, random: float, trials: int) -> tuple[float, str]:
    """Trials to a target as a multiple of random's, and how to print it: a bound where a median
    is beyond the run (">" when this sampler's is, "<" when random's is), nan when both are."""
    if math.isinf(mine) and math.isinf(random):
        return math.nan, f"n/a (neither within {trials})"
    if math.isinf(mine):
        return trials / random, f">{trials / random:.2f}"
    if math.isinf(random):
        return mine / trials, f"<{mine / trials:.2f}"
    return mine / random, f"{mine / random:.2f}"


def _median_text(values: list[float], trials: int) -> str:
    median = statistics.median(values)
    reached = sum(math.isfinite(v) for v in values)
    text = f"{median:g}" if math.isfinite(median) else f">{trials}"
    return f"{text} ({reached})" if reached < len(values) else text


def report(runs: list[dict[str, Any]], problems: list[str], samplers: list[str], seeds: int, trials: int) -> None:
    import pandas as pd

    tables: dict[str, Any] = {}
    to95: dict[tuple[str, str], float] = {}
    for problem in problems:
        table_name, objectives = PROBLEMS[problem]
        if table_name not in tables:
            tables[table_name] = pd.read_csv(TABLES / f"{table_name}.csv")
        table = tables[table_name]
        print(
            f"\n{problem}: {', '.join(objectives)}; {len(table)} architectures, {seeds} seeds, {trials} trained "
            f"architectures per run, accuracy {table['accuracy'].min():.3f}-{table['accuracy'].max():.3f}"
        )
        head = f"{'sampler':<8}{'to 90%':>11}{'to 95%':>11}{'to 99%':>11}{'HV@25':>8}{'HV@50':>8}{'HV@100':>8}"
        print(head + f"{'repeats':>9}{'s/run':>7}{'failed':>8}")
        for sampler in samplers:
            mine = [r for r in runs if r["name"] == problem and r["sampler"] == sampler]
            ok = [r for r in mine if not r.get("failed")]
            failed = len(mine) - len(ok)
            if not ok:
                print(f"{sampler:<8}{'-':>11}{'-':>11}{'-':>11}{'-':>8}{'-':>8}{'-':>8}{'-':>9}{'-':>7}{failed:>8}")
                continue
            curves, missing = [], 0
            for r in ok:
                curve, true, lost = hv_curve(r["trained"], table, objectives)
                curves.append([v / true for v in curve] or [0.0])
                missing += lost
            cells = []
            for frac in (0.90, 0.95, 0.99):
                hits = [reach(c, frac) for c in curves]
                if frac == 0.95:
                    to95[(problem, sampler)] = statistics.median(hits)
                cells.append(_median_text(hits, trials))
            at = [
                f"{statistics.median(c[min(k, len(c)) - 1] for c in curves):.3f}" if k <= trials else "-"
                for k in (25, 50, 100)
            ]  # the fraction after k trained architectures ("-": beyond the run)
            repeats = statistics.median(r["repeats"] for r in ok)
            seconds = statistics.median(r["seconds"] for r in ok)
            print(
                f"{sampler:<8}{cells[0]:>11}{cells[1]:>11}{cells[2]:>11}"
                + "".join(f"{v:>8}" for v in at)
                + f"{repeats:>9g}{seconds:>7.0f}{failed:>8}"
            )
            if missing:
                print(f"  {sampler}: {missing} trained architectures (all runs) are not in the table: no hypervolume")
        if (problem, "random") in to95:
            for sampler in samplers:
                if sampler != "random" and (problem, sampler) in to95:
                    mine, random = to95[(problem, sampler)], to95[(problem, "random")]
                    value, text = ratio(mine, random, trials)
                    if math.isnan(value):
                        print(f"  {sampler}: neither it nor random reached 95% within {trials} trials (median)")
                        continue
                    shown = [f"{v:g}" if math.isfinite(v) else f">{trials}" for v in (mine, random)]
                    print(
                        f"  {sampler}: trials to 95% = {text} x random's ({shown[0]} vs {shown[1]}; goal <= {GOAL:.2f})"
                    )

    if "random" not in samplers:
        return
    print(
        f"\nsummary: trials to 95% of the true hypervolume as a multiple of random's (goal <= {GOAL:.2f}); '<' and '>'"
        f" mark bounds where a median lies beyond {trials} trials, and the median takes a bound as its value"
    )
    for sampler in samplers:
        if sampler == "random":
            continue
        values, texts = [], []
        for problem in problems:
            if (problem, sampler) in to95 and (problem, "random") in to95:
                value, text = ratio(to95[(problem, sampler)], to95[(problem, "random")], trials)
                texts.append(f"{problem} {text}")
                if not math.isnan(value):
                    values.append(value)
        if not texts:
            print(f"  {sampler:<8} no successful runs")
            continue
        median = f"{statistics.median(values):.2f}" if values else "n/a"
        met = sum(v <= GOAL for v in values)
        print(f"  {sampler:<8} median {median} (goal met on {met} of {len(texts)}): {'; '.join(texts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument(
        "--samplers",
        default="random,ehvi,nsga2,tpe",
        help="of the --sampler names (gp: a GP fit per proposal, and it re-proposes known points: hours)",
    )
    parser.add_argument("--spaces", default=",".join(PROBLEMS), help=f"problems, of {', '.join(PROBLEMS)}")
    parser.add_argument("--jobs", type=int, default=2, help="searches (and table trainings) run at once")
    parser.add_argument("--save", help="append every run to this JSON-lines file (and resume from it)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    samplers = args.samplers.split(",")
    problems = args.spaces.split(",")
    unknown = [p for p in problems if p not in PROBLEMS]
    if unknown:
        raise SystemExit(f"--spaces: unknown {unknown[0]!r}; known: {', '.join(PROBLEMS)}")
    runs: list[dict[str, Any]] = []
    saved = Path(args.save) if args.save else None
    if saved and saved.is_file():  # resume an interrupted benchmark: runs already saved are kept, failures retried
        runs = [json.loads(line) for line in saved.read_text().splitlines() if line.strip()]
        runs = [r for r in runs if not r.get("failed")]
    done = {(r["name"], r["sampler"], r["seed"]) for r in runs}
    tables = {name: build_table(name, args.jobs) for name in dict.fromkeys(PROBLEMS[p][0] for p in problems)}
    jobs = [
        (problem, s, seed, args.trials, str(tables[PROBLEMS[problem][0]]))
        for problem in problems
        for seed in range(args.seeds)
        for s in samplers
        if (problem, s, seed) not in done
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        for run in pool.map(_run, jobs):
            runs.append(run)
            if saved:
                with saved.open("a") as f:
                    f.write(json.dumps(run) + "\n")
    runs = [r for r in runs if r["name"] in problems and r["sampler"] in samplers and r["seed"] < args.seeds]
    report(runs, problems, samplers, args.seeds, args.trials)


if __name__ == "__main__":
    main()
