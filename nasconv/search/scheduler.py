"""The Ray Tune side of multi-objective early stopping (see :mod:`nasconv.search.promotion`).

Ray is imported at module level: only the driver imports this module, when mo-asha is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from .promotion import RungPromotion
from .protocol import TrialReport


class MultiObjectiveASHA(FIFOScheduler):
    """Ray Tune scheduler applying :class:`RungPromotion` to every trial's reports."""

    def __init__(self, objectives: Sequence[str], max_epochs: int, grace: int = 1, reduction: int = 3) -> None:
        super().__init__()
        self.rule = RungPromotion(objectives, max_epochs, grace, reduction)
        self.stopped = 0

    def set_search_properties(self, metric: Any, mode: Any, **spec: Any) -> bool:
        return True

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        report = TrialReport.from_metrics(result)
        if report.failed or report.infeasible:
            return TrialScheduler.CONTINUE
        values = [report.value(o) for o in self.rule.objectives]
        if any(v is None for v in values) or self.rule.decide(report.epoch, values):  # type: ignore[arg-type]
            return TrialScheduler.CONTINUE
        self.stopped += 1
        return TrialScheduler.STOP

    def debug_string(self) -> str:
        return f"MultiObjectiveASHA: rungs {list(self.rule.recorded)}, {self.stopped} stopped"
