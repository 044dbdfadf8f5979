"""The Ray Tune searcher: Optuna proposes, nasconv dedupes and costs, Ray runs the trials.

:class:`StudySearcher` drives a persistent Optuna study with ask/tell from the driver process
only (one writer, so SQLite never locks). For each proposal it

* keys the architecture by its canonical JSON: one already evaluated (finished, failed,
  infeasible) or running is answered from the record (the same values told to Optuna, marked
  ``repeat_of``) without a worker or a unit of the budget, and the searcher moves on;
* costs it before it is scheduled: one over a static limit is told to Optuna as infeasible
  (``Trial.set_constraint``) and never trained;
* schedules the rest on Ray, and tells Optuna each trial's result with its state: complete,
  failed (with its reason), infeasible (over a limit measured in the worker, e.g. latency) or
  early-stopped (with a violated ``early_stopped`` constraint, so that constrained selection ranks
  every full-budget trial above it).

Every trial told COMPLETE carries the same constraint keys (each limit the space sets, and
``early_stopped``; 0 or less when satisfied): samplers that model constraints (GPSampler) require
one set of names for all trials.

The budget counts distinct architectures trained (or failed) in a worker: never repeats, never
infeasible ones (found in the driver or in the worker), never proposals the driver could not build.
A sampler that keeps proposing known or infeasible architectures (the space exhausted) ends the
search with a clear reason.

Ray is imported at module level: only the driver imports this module, at search time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from ray.tune.search import Searcher

from ..model.arch import Arch
from ..model.cost import static_costs
from .evaluation import measured_latency, needs_latency, violations
from .multi_objective import CONSTRAINTS
from .protocol import TrialReport, TrialRequest
from .record import CANNOT_BUILD, INTERRUPTED, PROPOSAL_FAILED
from .space import Space

# a sampler that proposes this many known or infeasible architectures in a row is stuck
STUCK_AFTER = 500
EARLY_STOPPED = "early_stopped"


@dataclass
class Counters:
    """What the progress display shows; ``done`` counts trained architectures (the budget)."""

    target: int
    done: int = 0
    complete: int = 0
    failed: int = 0
    infeasible: int = 0
    stopped: int = 0
    repeats: int = 0
    running: int = 0
    pareto: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass
class _Known:
    """The record of one evaluated (or running) architecture."""

    number: int
    trial: optuna.trial.FrozenTrial | None = None
    waiting: list[optuna.Trial] = field(default_factory=list)


class StudySearcher(Searcher):
    """Ray Tune searcher over a persistent Optuna study (ask/tell in the driver, dedupe by architecture)."""

    def __init__(
        self,
        study: optuna.Study,
        space: Space,
        *,
        budget: int,
        epochs: int,
        on_change: Callable[[], None],
        costs: Callable[[Arch], dict[str, float]] = static_costs,
        on_weights: Callable[[int, bytes], object] | None = None,
        stuck_after: int = STUCK_AFTER,
        counters: Counters | None = None,
    ) -> None:
        super().__init__(metric=None, mode=None)
        self.study = study
        self.space = space
        self.budget = budget
        self.epochs = epochs
        self.costs = costs
        self.on_change = on_change
        self.on_weights = on_weights
        self.stuck_after = stuck_after
        self.counters = counters if counters is not None else Counters(target=budget)
        self.scheduled = 0
        """Trials handed to Ray that count toward the budget (one found infeasible there is given back)."""
        self.idle_proposals = 0
        self.infeasible_in_a_row = 0
        """Trials in a row found over a limit in the worker (a measured latency): none trained."""
        self.limits = [key for key in CONSTRAINTS if getattr(space.spec.constraints, key) is not None]
        self.finished_reason: str | None = None
        self.error: str | None = None
        self.live: dict[str, optuna.Trial] = {}
        self.last: dict[str, TrialReport] = {}
        self.known: dict[str, _Known] = {}
        self.space_count = space.count()
        for t in study.get_trials(deepcopy=False):
            arch = t.user_attrs.get("arch")
            if not isinstance(arch, str) or t.user_attrs.get("repeat_of") is not None or not t.state.is_finished():
                continue
            if t.user_attrs.get("reason") != INTERRUPTED:  # an interrupted one is tried again
                self.known.setdefault(arch, _Known(t.number, t))

    # Ray Tune's Searcher interface -------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its configuration, this searcher included, into the experiment folder for
        # Tuner.restore, which nasconv never uses (resume reads the study). The study and its
        # sampler need not pickle (Optuna's NSGA-II/III samplers hold a lock): keep only plain state.
        live = ("study", "costs", "on_change", "on_weights", "live", "last", "known")
        return {k: (None if k in live else v) for k, v in self.__dict__.items()}

    def set_search_properties(self, metric: Any, mode: Any, config: Any, **spec: Any) -> bool:
        return True

    def save(self, checkpoint_path: str) -> None:  # the Optuna study is the record; resume reads it
        return None

    def restore(self, checkpoint_path: str) -> None:
        return None

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        if self.finished_reason:
            return Searcher.FINISHED
        if self.scheduled >= self.budget:
            # a running trial may yet be found infeasible in its worker and give its unit back
            return None if self.live else Searcher.FINISHED
        if len(self.known) >= self.space_count:
            self.finished_reason = (
                f"the space is exhausted: all {self.space_count:,} of its architectures have been evaluated"
            )
            return Searcher.FINISHED
        for _ in range(100):  # then give Tune its turn; it calls again
            try:
                proposal = self._propose()
            except Exception as exc:  # noqa: BLE001 - end the search with the reason, never a RUNNING orphan
                self.error = f"the searcher failed: {type(exc).__name__}: {exc}"
                self.finished_reason = self.error
                return Searcher.FINISHED
            if proposal is not None:
                self.live[trial_id] = proposal[0]
                self.scheduled += 1
                self.counters.running += 1
                self.on_change()
                return proposal[1].to_config()
            if self.finished_reason:
                return Searcher.FINISHED
        return None

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        report = TrialReport.from_metrics(result)
        if report.weights is not None:  # saved now, never held: a model's weights can be large
            trial = self.live.get(trial_id)
            if trial is not None and self.on_weights is not None:
                self.on_weights(trial.number, report.weights)
            report = report.replace(weights=None)
        self.last[trial_id] = report

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        self.counters.running -= 1
        report = TrialReport.from_metrics(result) if result else self.last.get(trial_id, TrialReport(failed=True))
        self.last.pop(trial_id, None)
        if error:
            report = report.replace(
                failed=True, reason=report.reason or "the trial's process crashed (see the Ray logs)"
            )
        if report.infeasible and not report.failed:  # over a limit measured in the worker: nothing trained
            self.scheduled -= 1
            self.infeasible_in_a_row += 1
            if self.infeasible_in_a_row >= self.stuck_after:
                self.finished_reason = (
                    f"{self.infeasible_in_a_row} architectures in a row were over a limit when measured "
                    f"({report.reason}): the space looks infeasible"
                )
        elif not report.infeasible:
            self.infeasible_in_a_row = 0
        self._tell(trial, report)

    # proposals --------------------------------------------------------------------------------

    def _propose(self) -> tuple[optuna.Trial, TrialRequest] | None:
        """Ask Optuna once. Returns the trial and its request when it must be trained; None when the
        proposal was answered without training (a repeat, infeasible, or not buildable)."""
        trial = self.study.ask()
        try:
            arch = self.space.suggest(trial)
        except Exception as exc:
            trial.set_user_attr("reason", f"{PROPOSAL_FAILED}: {type(exc).__name__}: {exc}"[:500])
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        key = arch.to_json()
        trial.set_user_attr("arch", key)
        trial.set_user_attr("short", arch.short())
        if key in self.known:
            self._answer_repeat(trial, self.known[key])
            self._idle()
            return None
        try:
            costs = self.costs(arch)
        except Exception as exc:  # noqa: BLE001 - record why, never crash the search
            # no worker took it, so it does not count toward the budget (record.counts_toward_budget)
            trial.set_user_attr("reason", f"{CANNOT_BUILD}: {type(exc).__name__}: {exc}"[:500])
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.known[key] = _Known(trial.number, self._frozen(trial.number))
            self.counters.failed += 1
            self._idle()
            return None
        for name, value in costs.items():
            trial.set_user_attr(name, value)
        broken = {k: v for k, v in violations(self.space, costs).items() if v > 0}
        if broken:  # over a static limit: record, never schedule
            if needs_latency(self.space) and "latency_ms" not in costs:
                costs["latency_ms"] = measured_latency(self.space, arch)
            self.known[key] = _Known(trial.number)
            self._tell(trial, TrialReport.with_costs(costs, infeasible=True, reason=", ".join(sorted(broken))))
            self._idle()
            return None
        self.idle_proposals = 0
        self.known[key] = _Known(trial.number)
        return trial, TrialRequest(number=trial.number, arch=key, costs=costs)

    def _idle(self) -> None:
        """Count a proposal that trained nothing; too many in a row means the sampler is stuck."""
        self.idle_proposals += 1
        if self.idle_proposals >= self.stuck_after:
            self.finished_reason = (
                f"the sampler proposed {self.idle_proposals} known or infeasible architectures in a row "
                f"({len(self.known)} distinct evaluated): the space looks exhausted"
            )
        return None

    def _answer_repeat(self, trial: optuna.Trial, original: _Known) -> None:
        trial.set_user_attr("repeat_of", original.number)
        self.counters.repeats += 1
        if original.trial is None:  # still running: answered when it finishes
            original.waiting.append(trial)
            return
        self._copy_outcome(trial, original.trial)

    def _copy_outcome(self, trial: optuna.Trial, original: optuna.trial.FrozenTrial) -> None:
        for name in ("params", "macs", "flops", "latency_ms", "train_seconds", "epochs", "infeasible", "early_stopped"):
            if name in original.user_attrs:
                trial.set_user_attr(name, original.user_attrs[name])
        if original.state == optuna.trial.TrialState.COMPLETE and original.values is not None:
            # the original's constraints, completed to this study's keys (a record from an older nasconv
            # may lack some)
            constraints = self._constraints({}, stopped=bool(original.user_attrs.get("early_stopped")))
            constraints.update({k: v for k, v in original.constraints.items() if k in constraints})
            for key, value in constraints.items():
                trial.set_constraint(key, value)
            self.study.tell(trial, list(original.values))
        else:
            reason = original.user_attrs.get("reason") or original.state.name.lower()
            trial.set_user_attr("reason", f"repeat of trial {original.number} ({reason})"[:500])
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def _constraints(self, costs: dict[str, float], *, stopped: bool) -> dict[str, float]:
        """The constraint values of a trial told COMPLETE: every limit of the space (value / limit - 1,
        0 where the cost is unknown) and ``early_stopped`` (1 if stopped early, else 0)."""
        values = dict.fromkeys(self.limits, 0.0)
        values.update(violations(self.space, costs))
        values[EARLY_STOPPED] = 1.0 if stopped else 0.0
        return values

    def _frozen(self, number: int) -> optuna.trial.FrozenTrial:
        return self.study.get_trials(deepcopy=False)[number]  # numbers are consecutive from 0

    # results ----------------------------------------------------------------------------------

    def _tell(self, trial: optuna.Trial, report: TrialReport) -> None:
        c = self.counters
        attrs = {
            "latency_ms": report.latency_ms,
            "train_seconds": report.train_seconds if report.epoch else None,
            "epochs": report.epoch if report.epoch else None,
            "node": report.node,
            "pid": report.pid,
            "gpu_ids": list(report.gpu_ids) or None,
            "reason": report.reason,
        }
        for key, value in attrs.items():
            if value is not None:
                trial.set_user_attr(key, value)
        if report.weights is not None and self.on_weights is not None:  # a report that was not seen as a result
            self.on_weights(trial.number, report.weights)
        values = [report.value(name) for name in self.space.objectives]
        if report.failed or any(v is None or not math.isfinite(v) for v in values):
            if not report.reason:
                trial.set_user_attr("reason", f"objective missing or not finite: {values}")
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            c.failed += 1
            c.done += 1
        else:
            costs = {name: report.value(name) for name in ("params", "macs", "flops", "latency_ms")}
            # a partial accuracy must never outrank a full-budget one: an early-stopped trial
            # violates a constraint, so constrained dominance puts every complete trial above it
            stopped = not report.infeasible and report.epoch < self.epochs
            measured = {k: v for k, v in costs.items() if v is not None}
            for key, value in self._constraints(measured, stopped=stopped).items():
                trial.set_constraint(key, value)
            if report.infeasible:
                trial.set_user_attr("infeasible", True)
                c.infeasible += 1
            elif stopped:
                trial.set_user_attr("early_stopped", True)
                c.stopped += 1
                c.done += 1
            else:
                c.complete += 1
                c.done += 1
            self.study.tell(trial, [float(v) for v in values])  # type: ignore[arg-type]
        arch = trial.user_attrs.get("arch")
        known = self.known.get(arch) if isinstance(arch, str) else None
        if known is not None and known.number == trial.number:
            known.trial = self._frozen(trial.number)
            for waiting in known.waiting:
                self._copy_outcome(waiting, known.trial)
            known.waiting.clear()
        self.on_change()

    def mark_interrupted(self) -> None:
        """Trials still running (and repeats waiting on them) become FAIL with reason ``INTERRUPTED``."""
        waiting = [w for k in self.known.values() for w in k.waiting]
        for trial in [*self.live.values(), *waiting]:
            trial.set_user_attr("reason", INTERRUPTED)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self.live.clear()
        for k in self.known.values():
            k.waiting.clear()


__all__ = ["Counters", "StudySearcher"]
