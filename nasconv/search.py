"""``nasconv search``: Optuna chooses architectures, Ray Tune runs the trials.

The Optuna study (SQLite ``study.db`` in the results folder, or any RDB URL) is the record of
every trial. :class:`StudySearcher` is a Ray Tune ``Searcher`` that drives the study with
ask/tell from the driver process only (one writer, so SQLite never locks), costs each drawn
architecture before it is scheduled (an architecture over a MACs/params limit is told to
Optuna as infeasible through ``Trial.set_constraint`` and never trained), and records the
failure reason of every failed trial. Resume is a fresh run on the persistent study: trials
left RUNNING by a killed driver are marked failed and the remaining count is run.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from .arch import Arch, build_model, input_shape
from .cost import profile
from .data import check_available
from .errors import NasconvError
from .latency import LatencyTable
from .results import STORAGE_FILE, STUDY_FILE, pareto, storage_url, trials_frame, write_results
from .space import Space
from .trial import measured_latency, needs_latency, ray_trial, violations

INTERRUPTED = "interrupted: the search stopped before this trial finished"


def make_sampler(name: str, *, seed: int, population: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a space or ``--sampler`` names."""
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "nsga3":
        return optuna.samplers.NSGAIIISampler(population_size=population, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise NasconvError(f"unknown sampler {name!r}; known: nsga2, nsga3, tpe, random")


def static_costs(arch: Arch, table: LatencyTable | None = None) -> dict[str, float]:
    """Costs known before training: params, MACs, FLOPs, and latency when a lookup table predicts it."""
    prof = profile(build_model(arch), input_shape(arch))
    costs: dict[str, float] = {"params": prof.params, "macs": prof.macs, "flops": prof.flops}
    if table is not None:
        costs["latency_ms"] = table.predict(arch)
    return costs


def latency_table(space: Space) -> LatencyTable | None:
    """The space's lookup table (path relative to the space file), checked to cover every block."""
    name = space.spec.latency.table
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


# ---------------------------------------------------------------- the searcher (runs in the driver)


@dataclass
class Counters:
    target: int
    done: int = 0
    complete: int = 0
    failed: int = 0
    infeasible: int = 0
    stopped: int = 0
    running: int = 0
    pareto: int = 0
    started: float = field(default_factory=time.monotonic)


def _make_searcher_class() -> type:
    from ray.tune.search import Searcher

    class StudySearcher(Searcher):
        """Ray Tune searcher over a persistent Optuna study (ask/tell in the driver)."""

        def __init__(
            self,
            study: optuna.Study,
            space: Space,
            budget: int,
            epochs: int,
            on_change: Callable[[], None],
            table: LatencyTable | None = None,
        ) -> None:
            super().__init__(metric=None, mode=None)
            self.table = table
            self.study = study
            self.space = space
            self.budget = budget
            self.asked = 0
            self.epochs = epochs
            self.live: dict[str, optuna.Trial] = {}
            self.last: dict[str, dict[str, Any]] = {}
            self.on_change = on_change
            self.counters = Counters(target=budget)

        def set_search_properties(self, metric: Any, mode: Any, config: Any, **spec: Any) -> bool:
            return True

        def save(self, checkpoint_path: str) -> None:  # the Optuna study is the record; resume reads it
            return None

        def restore(self, checkpoint_path: str) -> None:
            return None

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            while self.asked < self.budget:
                self.asked += 1
                trial = self.study.ask()
                arch = self.space.suggest(trial)
                costs = static_costs(arch, self.table)
                trial.set_user_attr("arch", arch.to_json())
                trial.set_user_attr("short", arch.short())
                for key, value in costs.items():
                    trial.set_user_attr(key, value)
                broken = {k: v for k, v in violations(self.space, costs).items() if v > 0}
                if broken:  # over a static limit: record, never schedule
                    if needs_latency(self.space) and "latency_ms" not in costs:
                        costs["latency_ms"] = measured_latency(self.space, arch)
                    self._tell(
                        trial, {**costs, "accuracy": 0.0, "infeasible": True, "reason": ", ".join(sorted(broken))}
                    )
                    continue
                self.live[trial_id] = trial
                self.counters.running += 1
                self.on_change()
                return {"arch": arch.to_json(), "costs": costs, "number": trial.number}
            return Searcher.FINISHED

        def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
            self.last[trial_id] = result

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            trial = self.live.pop(trial_id, None)
            if trial is None:
                return
            self.counters.running -= 1
            result = result or self.last.get(trial_id) or {}
            self.last.pop(trial_id, None)
            if error:
                result = {
                    **result,
                    "failed": True,
                    "reason": result.get("reason") or "the trial's process crashed (see the Ray logs)",
                }
            self._tell(trial, result)

        def _tell(self, trial: optuna.Trial, result: dict[str, Any]) -> None:
            c = self.counters
            c.done += 1
            for key in ("latency_ms", "train_seconds", "epoch", "node", "pid"):
                if result.get(key) is not None:
                    trial.set_user_attr("epochs" if key == "epoch" else key, result[key])
            if result.get("reason"):
                trial.set_user_attr("reason", str(result["reason"]))
            values = [result.get(name) for name in self.space.objectives]
            if result.get("failed") or any(v is None or not math.isfinite(float(v)) for v in values):
                if not result.get("reason"):
                    trial.set_user_attr("reason", f"objective missing or not finite: {values}")
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                c.failed += 1
            else:
                for key, value in violations(self.space, result).items():
                    trial.set_constraint(key, value)
                if result.get("infeasible"):
                    trial.set_user_attr("infeasible", True)
                    c.infeasible += 1
                elif result.get("epoch", 0) < self.epochs:
                    trial.set_user_attr("early_stopped", True)
                    c.stopped += 1
                else:
                    c.complete += 1
                self.study.tell(trial, [float(v) for v in values])
            self.on_change()

        def mark_interrupted(self) -> None:
            for trial_id in list(self.live):
                trial = self.live.pop(trial_id)
                trial.set_user_attr("reason", INTERRUPTED)
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    return StudySearcher


# ---------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class SearchOptions:
    trials: int
    workers: int | None
    seed: int
    sampler: str
    population: int
    out: Path
    storage: str | None
    resume: bool
    address: str | None
    cpus_per_trial: int = 1
    early_stopping: str = "none"
    time_budget_s: float | None = None


def resolve_options(
    space: Space,
    *,
    out: str | Path | None = None,
    trials: int | None = None,
    workers: int | None = None,
    seed: int | None = None,
    sampler: str | None = None,
    resume: bool = False,
    address: str | None = None,
    storage: str | None = None,
    early_stopping: str | None = None,
    time_budget_s: float | None = None,
) -> SearchOptions:
    s = space.spec.search
    return SearchOptions(
        trials=trials or s.trials,
        workers=workers or s.workers,
        seed=s.seed if seed is None else seed,
        sampler=sampler or s.sampler,
        population=s.population,
        out=Path(out) if out else Path("results") / space.name,
        storage=storage,
        resume=resume,
        address=address or os.environ.get("RAY_ADDRESS") or None,
        early_stopping=early_stopping or s.early_stopping,
        time_budget_s=time_budget_s,
    )


def _counts_toward_budget(trial: optuna.trial.FrozenTrial) -> bool:
    if trial.state == optuna.trial.TrialState.COMPLETE:
        return True
    return trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs.get("reason") != INTERRUPTED


def open_or_create_study(space: Space, opts: SearchOptions) -> tuple[optuna.Study, int]:
    """The study to search in, and how many trials it already counts. Refuses to overwrite."""
    import json

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    existing = storage_url(opts.out)
    url = opts.storage or existing or f"sqlite:///{(opts.out / STUDY_FILE).resolve()}"
    if opts.storage and existing and existing != opts.storage:
        raise NasconvError(f"{opts.out}: already holds a study stored at {existing}, not {opts.storage}")
    storage = optuna.storages.RDBStorage(url) if (existing or opts.storage) else None
    present = storage is not None and space.name in optuna.get_all_study_names(storage)
    if present and not opts.resume:
        n = len(optuna.load_study(study_name=space.name, storage=storage).trials)
        raise NasconvError(
            f"{opts.out}: already holds study '{space.name}' with {n} trials; "
            f"use --resume to continue it, or --out DIR for a new search"
        )
    if opts.resume and not present:
        raise NasconvError(f"{opts.out}: no study '{space.name}' to resume (run without --resume to start one)")
    genes = json.dumps(space.genes(), default=list)
    if present:
        study = optuna.load_study(study_name=space.name, storage=storage)
        if study.user_attrs.get("genes") not in (None, genes):
            raise NasconvError(
                f"{opts.out}: the space's genes changed since this study began; resume needs the "
                f"same space (or start a new search with --out)"
            )
        assert storage is not None
        study_id = storage.get_study_id_from_name(space.name)
        stale = [optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING]
        for t in study.get_trials(deepcopy=False, states=stale):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_user_attr(trial_id, "reason", INTERRUPTED)
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        done = sum(_counts_toward_budget(t) for t in study.get_trials(deepcopy=False))
        # a resumed sampler must not replay the random stream of the first run
        study.sampler = make_sampler(opts.sampler, seed=opts.seed + len(study.trials), population=opts.population)
        return study, done
    opts.out.mkdir(parents=True, exist_ok=True)
    if not opts.storage:  # write-ahead log: cheaper commits, and readers (dashboard, report) never block us
        engine = optuna.storages.RDBStorage(url).engine
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        engine.dispose()
    study = optuna.create_study(
        study_name=space.name,
        storage=url,
        directions=space.directions,
        sampler=make_sampler(opts.sampler, seed=opts.seed, population=opts.population),
    )
    study.set_user_attr("objectives", space.objectives)
    study.set_user_attr("genes", genes)
    study.set_user_attr("space", space.spec.model_dump(mode="json"))
    if opts.storage:
        (opts.out / STORAGE_FILE).write_text(opts.storage + "\n")
    return study, 0


# quiet, lean Tune: our own progress display, no per-trial result files, no config-named folders
_RAY_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_DEDUP_LOGS": "0"}


def _start_ray(address: str | None) -> None:
    import logging

    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)

    import ray

    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise NasconvError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {exc}") from None


class _Status:
    """Live bar and status line on a terminal; a plain line now and then otherwise."""

    def __init__(self, counters: Counters, enabled: bool) -> None:
        self.c = counters
        self.tty = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self.last_plain = 0.0
        self.progress: Any = None
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("search"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                transient=False,
            )
            self.task = self.progress.add_task("", total=counters.target)
            self.progress.start()

    def line(self) -> str:
        c = self.c
        elapsed = time.monotonic() - c.started
        eta = f"{elapsed / c.done * (c.target - c.done):.0f}s" if c.done else "?"
        return (
            f"{c.done}/{c.target} done, {c.running} running, {c.failed} failed, {c.infeasible} infeasible, "
            f"{c.stopped} stopped early, Pareto {c.pareto}, elapsed {elapsed:.0f}s, ETA {eta}"
        )

    def update(self) -> None:
        if self.progress is not None:
            c = self.c
            self.progress.update(
                self.task,
                completed=c.done,
                description=f"run {c.running} fail {c.failed} infeas {c.infeasible} pareto {c.pareto}",
            )
        elif self.enabled and time.monotonic() - self.last_plain > 15:
            self.last_plain = time.monotonic()
            print("nasconv: " + self.line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _trial_name(trial: Any) -> str:
    return f"trial-{trial.config.get('number', trial.trial_id)}"


def run_search(space: Space, opts: SearchOptions, *, progress: bool = True) -> Any:
    """Run (or resume) a search; returns the trials DataFrame. Result files are kept current."""
    check_available(space.spec.dataset)
    table = latency_table(space)
    study, done_before = open_or_create_study(space, opts)
    source = Path(space.source)
    (opts.out / "space.yaml").write_text(source.read_text() if source.is_file() else space.to_yaml())
    (opts.out / "study.name").write_text(space.name + "\n")
    budget = max(0, opts.trials - done_before)
    if budget == 0:
        return write_results(study, opts.out)

    _start_ray(opts.address)
    import ray
    from ray import tune

    cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
    cpus = opts.cpus_per_trial
    workers = opts.workers or max(1, cluster_cpus // cpus)
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(workers)

    last_plots = [time.monotonic()]
    status: _Status
    told = [0]

    def on_change() -> None:
        # the driver shares the CPUs with the trials: CSVs after every finished trial (cheap),
        # plots at most once a minute, nothing when a trial merely starts
        if searcher.counters.done != told[0]:
            told[0] = searcher.counters.done
            plots = time.monotonic() - last_plots[0] > 60
            df = write_results(study, opts.out, plots=plots)
            if plots:
                last_plots[0] = time.monotonic()
            searcher.counters.pareto = len(pareto(df))
        status.update()

    searcher = _make_searcher_class()(study, space, budget, space.spec.training.epochs, on_change, table)
    status = _Status(searcher.counters, progress)
    import json

    context = {"space": json.dumps(space.spec.model_dump(mode="json")), "threads": cpus}
    scheduler = None
    if opts.early_stopping == "mo-asha":
        from .schedulers import make_mo_asha

        s = space.spec.search
        scheduler = make_mo_asha(space.objectives, space.spec.training.epochs, s.grace_epochs, s.reduction)
    trainable = tune.with_resources(tune.with_parameters(ray_trial, context=context), {"cpu": cpus})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=-1,
            max_concurrent_trials=workers,
            reuse_actors=True,
            scheduler=scheduler,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
            time_budget_s=opts.time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str((opts.out / "ray").resolve()),
            verbose=0,
            progress_reporter=None,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    try:
        tuner.fit()
    except KeyboardInterrupt:
        pass
    finally:
        searcher.mark_interrupted()
        status.close()
        df = write_results(study, opts.out)
    if progress:
        print("nasconv: " + status.line(), file=sys.stderr)
    return df


def summarise(df: Any) -> str:
    front = pareto(df)
    counts = df["state"].value_counts().to_dict()
    parts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    return f"{len(df)} trials ({parts}); {len(front)} on the Pareto front"


__all__ = [
    "SearchOptions",
    "make_sampler",
    "open_or_create_study",
    "resolve_options",
    "run_search",
    "summarise",
    "trials_frame",
]
