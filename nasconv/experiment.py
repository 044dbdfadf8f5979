"""``nasconv search`` end to end: the one place where the space, the study, the searcher, Ray Tune
and the results folder are joined (NNI's ``NasExperiment`` idea).

Resume is a fresh run on the persistent study: trials left RUNNING by a killed driver are marked
failed and the remaining budget is run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import NasconvError, brief
from .model.arch import Arch
from .model.cost import static_costs
from .model.latency import space_latency_table
from .results.folder import write_results
from .results.front import pareto
from .results.weights import prune_weights, save_weights
from .search.data import check_available, prepare_data
from .search.evaluation import ray_trial
from .search.protocol import EvaluationContext
from .search.record import counts_toward_budget
from .search.samplers import DEFAULT_SAMPLER, SamplerContext, make_sampler
from .search.space import KeepWeights, SearchSpec, Space
from .search.study import check_study, open_or_create_study
from .search.tabular import check_covers, load_table
from .search.training import check_search_devices


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """How one search runs; ``resolve_options`` fills it from the space and the command line."""

    out: Path
    trials: int
    workers: int | None = None
    seed: int = 0
    sampler: str = DEFAULT_SAMPLER
    population: int = 10
    storage: str | None = None
    resume: bool = False
    address: str | None = None
    early_stopping: str = SearchSpec.model_fields["early_stopping"].default
    time_budget_s: float | None = None
    table: Path | None = None
    """Tabular mode: evaluate by lookup in this CSV instead of training (see nasconv.search.tabular)."""
    cpus_per_trial: int = 1
    gpus_per_trial: float = 0.0
    keep_weights: KeepWeights = SearchSpec.model_fields["keep_weights"].default


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
    table: str | Path | None = None,
    cpus_per_trial: int | None = None,
    gpus_per_trial: float | None = None,
) -> SearchOptions:
    """The space's ``search:`` settings, overridden by whatever the command line gives."""
    s = space.spec.search
    return SearchOptions(
        out=Path(out) if out else Path("results") / space.name,
        trials=trials or s.trials,
        workers=workers or s.workers,
        seed=s.seed if seed is None else seed,
        sampler=sampler or s.sampler,
        population=s.population,
        storage=storage,
        resume=resume,
        address=address or os.environ.get("RAY_ADDRESS") or None,
        early_stopping=early_stopping or s.early_stopping,
        time_budget_s=time_budget_s,
        table=Path(table).resolve() if table else None,
        cpus_per_trial=cpus_per_trial or s.cpus_per_trial,
        gpus_per_trial=s.gpus_per_trial if gpus_per_trial is None else gpus_per_trial,
        keep_weights=s.keep_weights,
    )


# quiet, lean Tune: our own progress display, no per-trial result files, no config-named folders
_RAY_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_DEDUP_LOGS": "0"}


def start_ray(address: str | None) -> None:
    """Join the cluster at ``address``; without one, start a private local Ray sized to this machine
    (never join a cluster that ``ray start`` left running here)."""
    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)

    import ray

    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise NasconvError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {exc}") from None


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A HOST:PORT address must accept a connection at once: Ray itself retries an unreachable GCS
    for minutes before it gives up. Other forms (``auto``, ``ray://``) are left to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not host or "/" in address or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise NasconvError(f"Ray address {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def cluster_resources() -> dict[str, float]:
    import ray

    return dict(ray.cluster_resources())


def reserve(space: Space, opts: SearchOptions) -> dict[str, float]:
    """Start (or join) Ray and check that it can run the trials; the resources of one trial."""
    start_ray(opts.address)
    return trial_resources(opts, cluster_resources(), space.spec.training.device)


def trial_resources(opts: SearchOptions, cluster: dict[str, float], device: str) -> dict[str, float]:
    """Ray resources of one trial, checked against the cluster before any trial starts: a request the
    cluster cannot meet would leave trials pending forever."""
    resources: dict[str, float] = {"cpu": float(opts.cpus_per_trial)}
    if opts.cpus_per_trial > cluster.get("CPU", 0):
        raise NasconvError(
            f"search.cpus_per_trial: {opts.cpus_per_trial}, but the Ray cluster has {cluster.get('CPU', 0):g} CPUs"
        )
    check_search_devices(device, opts.gpus_per_trial, cluster.get("GPU", 0))
    if opts.gpus_per_trial > 0:
        resources["gpu"] = float(opts.gpus_per_trial)
    return resources


def max_concurrent(resources: dict[str, float], cluster: dict[str, float]) -> int:
    """How many trials the cluster runs at once with these per-trial resources."""
    fits = [cluster.get(name.upper(), 0) / need for name, need in resources.items() if need > 0]
    return max(1, int(min(fits)))


def _trial_name(trial: Any) -> str:
    return f"trial-{trial.config.get('number', trial.trial_id)}"


def known_costs(space: Space, opts: SearchOptions) -> Callable[[Arch], dict[str, float]]:
    """What every architecture costs before it is trained: params, MACs and FLOPs, latency from the
    space's lookup table, and in tabular mode whatever costs the table gives."""
    latency_table = space_latency_table(space)
    lookup = load_table(opts.table) if opts.table else None
    if lookup is not None:
        check_covers(lookup, space)

    def costs(arch: Arch) -> dict[str, float]:
        known = static_costs(arch, latency_table)
        row = lookup.get(arch.to_json()) if lookup is not None else None
        if row:
            known.update({k: row[k] for k in ("params", "macs", "flops", "latency_ms") if k in row})
        return known

    return costs


class ResultsKeeper:
    """Keeps the results folder current while the search runs. The driver shares the CPUs with the
    trials: CSVs after every finished trial (cheap), plots at most once a minute, kept weights
    pruned to the front, nothing when a trial merely starts."""

    def __init__(self, study: Any, opts: SearchOptions, counters: Any, progress: bool) -> None:
        from .search.progress import Progress

        self.study, self.opts, self.counters = study, opts, counters
        self.status = Progress(counters, progress)
        self.last_plots = time.monotonic()
        self.finished = 0

    def update(self) -> None:
        c = self.counters
        finished = c.done + c.infeasible + c.repeats
        if finished != self.finished:
            self.finished = finished
            plots = time.monotonic() - self.last_plots > 60
            df = write_results(self.study, self.opts.out, plots=plots)
            if plots:
                self.last_plots = time.monotonic()
            front = pareto(df)
            c.pareto = len(front)
            if self.opts.keep_weights == "front":
                prune_weights(self.opts.out, keep={*front["number"], *self.running()})
        self.status.update()

    def running(self) -> list[int]:
        """Trials not yet told: their weights arrive with their last epoch's report, before the trial
        completes and can join the front, and must outlive a prune that runs in between."""
        from optuna.trial import TrialState

        return [t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def make_tuner(space: Space, opts: SearchOptions, searcher: Any, resources: dict[str, float], workers: int) -> Any:
    """The Ray Tune run: our searcher, the mo-asha scheduler if asked for, each trial with its resources."""
    from ray import tune

    context = EvaluationContext(
        space=space.spec.model_dump_json(),
        threads=opts.cpus_per_trial,
        table=str(opts.table) if opts.table else None,
        keep_weights=opts.keep_weights != "none" and opts.table is None,
    )
    scheduler = None
    if opts.early_stopping == "mo-asha":
        from .search.scheduler import MultiObjectiveASHA

        s = space.spec.search
        scheduler = MultiObjectiveASHA(space.objectives, space.spec.training.epochs, s.grace_epochs, s.reduction)
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(workers)
    trainable = tune.with_resources(tune.with_parameters(ray_trial, context=context.to_dict()), resources)
    return tune.Tuner(
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


def as_run(space: Space, opts: SearchOptions) -> Space:
    """``space`` with its ``search:`` settings as this run uses them (the command line's overrides),
    checked against the space schema's limits: a worker rebuilds the space from this record, and a
    resume compares against it, so a value the schema refuses is one line naming its flag here."""
    from pydantic import ValidationError

    # every run option that is also a search: setting (trials, workers, seed, sampler, population, ...)
    updates = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts) if f.name in SearchSpec.model_fields}
    try:
        search = SearchSpec.model_validate({**space.spec.search.model_dump(), **updates})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "search"
        raise NasconvError(f"--{field.replace('_', '-')}: {error['msg']} (got {brief(error.get('input'))})") from None
    return dataclasses.replace(space, spec=space.spec.model_copy(update={"search": search}))


def run_search(space: Space, opts: SearchOptions, *, progress: bool = True) -> pd.DataFrame:
    """Run (or resume) a search; returns the trials DataFrame. Result files are kept current."""
    from .search.progress import status_line
    from .search.searcher import Counters, StudySearcher
    from .search.training import check_device_request

    # the settings, and `cuda` on a local machine without it, are refused before data or Ray is prepared
    ray = sys.modules.get("ray")
    local = opts.address is None and not (ray is not None and ray.is_initialized())  # a private Ray, to start
    check_device_request(space.spec.training.device, opts.gpus_per_trial, local=local)
    space = as_run(space, opts)  # the study records (and a resume compares) the settings that run
    costs = known_costs(space, opts)
    # everything that can refuse the search is checked before anything is written or decoded
    done_before = check_study(space, opts.out, storage=opts.storage, resume=opts.resume, table=opts.table)
    if opts.table is None:
        check_available(space.spec.dataset)
        prepare_data(space.spec, progress=progress)  # decode once on this node, before the trials map it
    resources = reserve(space, opts) if opts.trials > done_before else {}
    opened = open_or_create_study(
        space,
        opts.out,
        storage=opts.storage,
        resume=opts.resume,
        table=opts.table,
        sampler=lambda n: make_sampler(
            opts.sampler, SamplerContext(space=space, seed=opts.seed + n, population=opts.population, costs=costs)
        ),
    )
    study = opened.study
    if opened.notes and progress:
        print("nasconv: note: resuming with " + "; ".join(opened.notes), file=sys.stderr)
    budget = max(0, opts.trials - sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False)))
    if budget == 0:
        return write_results(study, opts.out)

    keeper = ResultsKeeper(study, opts, Counters(target=budget), progress)
    searcher = StudySearcher(
        study,
        space,
        budget=budget,
        epochs=space.spec.training.epochs,
        on_change=keeper.update,
        costs=costs,
        on_weights=lambda number, data: save_weights(opts.out, number, data),
        counters=keeper.counters,
    )
    workers = opts.workers or max_concurrent(resources, cluster_resources())
    try:
        make_tuner(space, opts, searcher, resources, workers).fit()
    except KeyboardInterrupt:
        pass
    finally:
        searcher.mark_interrupted()
        keeper.status.close()
        df = write_results(study, opts.out)
    if searcher.error:
        raise NasconvError(f"{opts.out}: {searcher.error} (finished trials are kept)")
    if progress:
        print("nasconv: " + status_line(searcher.counters), file=sys.stderr)
        if searcher.finished_reason:
            print(f"nasconv: stopped early: {searcher.finished_reason}", file=sys.stderr)
    return df


def summarise(df: pd.DataFrame) -> str:
    front = pareto(df)
    counts = df["state"].value_counts().to_dict()
    parts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    return f"{len(df)} trials ({parts}); {len(front)} on the Pareto front"


__all__ = ["SearchOptions", "resolve_options", "run_search", "start_ray", "summarise"]
