"""How much of the search budget the framework eats, and what 2 Ray workers buy.

    python benchmarks/search_overhead.py [--trials 40] [--workers 2]

Runs one search of search_spaces/digits.yaml through Ray Tune (the real `nasconv search` path,
wall time including Ray start-up), then the very same architectures in a plain in-process
Optuna loop, at 1 and at 2 torch threads. Prints
  overhead   = 1 - sum(train_seconds) / (wall x workers)     (target <= 15%)
  throughput = trials per second with Ray / in the loop       (target >= 1.7x)
  busy       = mean number of trials running over the search (both workers busy -> ~2)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna
import torch

from nasconv.experiment import resolve_options, run_search
from nasconv.model.cost import static_costs
from nasconv.search.evaluation import evaluate_trial
from nasconv.search.protocol import EvaluationContext, TrialReport, TrialRequest
from nasconv.search.record import trial_state
from nasconv.search.space import load_space

ROOT = Path(__file__).resolve().parents[1]


def loop(space, archs, threads: int) -> tuple[float, float]:
    """The same architectures, one after another in this process; (wall, sum of train seconds)."""
    context = EvaluationContext(space=space.spec.model_dump_json(), threads=threads)
    torch.set_num_threads(threads)
    study = optuna.create_study(directions=space.directions)
    train_seconds = 0.0
    start = time.perf_counter()
    for arch in archs:
        trial = study.ask()
        reports: list[TrialReport] = []
        request = TrialRequest(number=trial.number, arch=arch.to_json(), costs=static_costs(arch))
        evaluate_trial(request, context, reports.append)
        last = reports[-1]
        train_seconds += last.train_seconds
        study.tell(trial, [last.value(o) or 0.0 for o in space.objectives])
    return time.perf_counter() - start, train_seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "digits.yaml"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space)
    with tempfile.TemporaryDirectory() as tmp:
        opts = resolve_options(space, out=Path(tmp) / "out", trials=args.trials, workers=args.workers)
        start = time.perf_counter()
        df = run_search(space, opts, progress=False)
        wall = time.perf_counter() - start
        study = optuna.load_study(study_name=space.name, storage=f"sqlite:///{opts.out / 'study.db'}")
    trials = [t for t in study.trials if trial_state(t) == "COMPLETE"]  # trained ones, not repeats
    train_total = float(df["train_seconds"].fillna(0).sum())
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    span = (last - first).total_seconds()
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials) / span
    from nasconv.model.arch import Arch

    archs = [Arch.from_json(t.user_attrs["arch"]) for t in trials]
    loop1_wall, loop1_train = loop(space, archs, 1)
    loop2_wall, loop2_train = loop(space, archs, 2)

    print(f"{len(trials)} trials of {Path(args.space).name}, {args.workers} Ray workers vs an in-process loop")
    print(f"{'run':<28}{'wall s':>9}{'train s':>9}{'trials/s':>10}{'overhead':>10}")
    rows = [
        (f"ray tune, {args.workers} workers", wall, train_total, args.workers),
        ("in-process loop, 1 thread", loop1_wall, loop1_train, 1),
        ("in-process loop, 2 threads", loop2_wall, loop2_train, 1),
    ]
    for name, w, t, workers in rows:
        print(f"{name:<28}{w:>9.1f}{t:>9.1f}{len(trials) / w:>10.3f}{1 - t / (w * workers):>10.1%}")
    print()
    print(f"overhead (ray, whole run incl. start-up): {1 - train_total / (wall * args.workers):.1%} (target <= 15%)")
    print(f"overhead (ray, first to last trial):      {1 - train_total / (span * args.workers):.1%}")
    print(f"mean trials running:                      {busy:.2f} of {args.workers}")
    print(f"throughput vs loop at 1 thread:           {loop1_wall / wall:.2f}x (target >= 1.7x)")
    print(f"throughput vs loop at 2 threads:          {loop2_wall / wall:.2f}x")


if __name__ == "__main__":
    main()
