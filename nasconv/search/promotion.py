"""Multi-objective early stopping for Ray Tune: successive halving that promotes by
non-dominated sorting over all objectives, not by accuracy alone.

Cost objectives are known before training and only accuracy grows per epoch, so a
single-metric scheduler would cut a cheap, moderately accurate architecture for being less
accurate than an expensive one. Here, at each rung (epochs grace, grace*eta, ... below the
proxy budget) a trial is compared with every trial recorded at that rung on (accuracy at the
rung, costs). It continues if it is non-dominated among them, or among the best ceil(n / eta) in
NSGA-II's selection order (rank, then crowding distance, then the values themselves, so the
outcome never depends on arrival order). Asynchronous like ASHA: a trial is judged against the
trials that reached the rung before it; the first eta - 1 always continue.

The Ray Tune scheduler that applies this rule is :class:`nasconv.search.scheduler.MultiObjectiveASHA`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .multi_objective import as_minimised, non_dominated_ranks, selection_order

EARLY_STOPPING = ("none", "mo-asha")
"""The early-stopping schedulers a search may use."""


def rungs(max_epochs: int, grace: int = 1, reduction: int = 3) -> list[int]:
    """The epochs at which trials are compared: grace, grace*reduction, ... below ``max_epochs``."""
    out, r = [], grace
    while r < max_epochs:
        out.append(r)
        r *= reduction
    return out


def promotable(points: Sequence[Sequence[float]], index: int, keep: int) -> bool:
    """Does points[index] (minimisation form) continue? Yes if no point at the rung dominates it,
    or if it is among the first ``keep`` in NSGA-II's selection order."""
    if non_dominated_ranks(points)[index] == 0:
        return True
    return index in selection_order(points)[:keep]


class RungPromotion:
    """The asynchronous promotion rule, free of Ray: feed it each (epoch, values) as reported."""

    def __init__(self, objectives: Sequence[str], max_epochs: int, grace: int = 1, reduction: int = 3) -> None:
        self.objectives = list(objectives)
        self.reduction = reduction
        self.recorded: dict[int, list[list[float]]] = {r: [] for r in rungs(max_epochs, grace, reduction)}

    def decide(self, epoch: int, values: Sequence[float]) -> bool:
        """True to continue, False to stop; records the point at its rung."""
        if epoch not in self.recorded:
            return True
        at_rung = self.recorded[epoch]
        at_rung.append(as_minimised(values, self.objectives))
        keep = math.ceil(len(at_rung) / self.reduction)
        return len(at_rung) < self.reduction or promotable(at_rung, len(at_rung) - 1, keep)
