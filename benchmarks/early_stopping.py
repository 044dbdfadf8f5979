"""Multi-objective early stopping against none, at the same wall-clock budget.

    python benchmarks/early_stopping.py [--budget 75] [--repeats 3] [--epochs 6]

Runs the digits search (accuracy vs MACs) with a time budget, with and without mo-asha, for
several seeds, and prints the hypervolume reached (objectives scaled on the union of all runs,
reference 1.1) as mean +- spread, and hypervolume per CPU-minute.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from nasconv.experiment import resolve_options, run_search
from nasconv.results.front import full_budget
from nasconv.search.multi_objective import minimised, scaled_hypervolume
from nasconv.search.space import load_space

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=75.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    base = load_space(ROOT / "search_spaces" / "digits.yaml")
    spec = base.spec.model_copy(update={"training": base.spec.training.model_copy(update={"epochs": args.epochs})})
    space = type(base)(spec=spec, source=base.source)
    runs: dict[str, list[tuple[pd.DataFrame, float]]] = {"none": [], "mo-asha": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.repeats):
            for mode in runs:
                opts = resolve_options(
                    space,
                    out=Path(tmp) / f"{mode}-{seed}",
                    trials=10_000,
                    workers=args.workers,
                    seed=seed,
                    early_stopping=mode,
                    time_budget_s=args.budget,
                )
                start = time.perf_counter()
                df = run_search(space, opts, progress=False)
                runs[mode].append((df, time.perf_counter() - start))
    objectives = space.objectives
    union = minimised(
        full_budget(pd.concat([df for results in runs.values() for df, _ in results]), objectives), objectives
    )
    if len(union) == 0:
        raise SystemExit("no search trained an architecture for the full budget: raise --budget")
    low, high = union.min(axis=0), union.max(axis=0)  # scaled on the union of all runs' full-budget trials
    print(f"digits, {args.epochs}-epoch proxy, {args.workers} workers, {args.budget:.0f}s budget, {args.repeats} seeds")
    print(f"{'scheduler':<10}{'trials':>8}{'stopped':>9}{'hypervolume':>20}{'HV / CPU-min':>16}")
    for mode, results in runs.items():
        hvs = [scaled_hypervolume(minimised(full_budget(df, objectives), objectives), low, high) for df, _ in results]
        per_min = [h / (wall * args.workers / 60) for h, (_, wall) in zip(hvs, results)]
        n = statistics.mean(len(df[df["state"].isin(["COMPLETE", "STOPPED"])]) for df, _ in results)
        stopped = statistics.mean((df["state"] == "STOPPED").sum() for df, _ in results)
        spread = statistics.stdev(hvs) if len(hvs) > 1 else 0.0
        print(
            f"{mode:<10}{n:>8.1f}{stopped:>9.1f}{statistics.mean(hvs):>12.4f} +- {spread:.4f}"
            f"{statistics.mean(per_min):>16.5f}"
        )


if __name__ == "__main__":
    main()
