"""Multi-objective early stopping for Ray Tune: successive halving that promotes by
non-dominated sorting over all objectives, not by accuracy alone.

Cost objectives are known before training and only accuracy grows per epoch, so a
single-metric scheduler would cut a cheap, moderately accurate architecture for being less
accurate than an expensive one. Here, at each rung (epochs grace, grace*eta, ... below the
proxy budget) a trial is compared with every trial recorded at that rung on (accuracy at the
rung, costs); it continues if it is in the best ceil(n / eta) by (non-domination rank, then
crowding distance, larger first), as in NSGA-II's selection. Asynchronous like ASHA: a trial is
judged against the trials that reached the rung before it; the first eta - 1 always continue.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .space import OBJECTIVES


def non_dominated_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Rank 0 = non-dominated, 1 = non-dominated once rank 0 is removed, ... (minimisation)."""
    n = len(points)
    dominated_by = [0] * n
    dominates: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if (
                i != j
                and all(a <= b for a, b in zip(points[i], points[j]))
                and any(a < b for a, b in zip(points[i], points[j]))
            ):
                dominates[i].append(j)
                dominated_by[j] += 1
    ranks = [0] * n
    front = [i for i in range(n) if dominated_by[i] == 0]
    rank = 0
    while front:
        nxt = []
        for i in front:
            ranks[i] = rank
            for j in dominates[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    nxt.append(j)
        front, rank = nxt, rank + 1
    return ranks


def crowding(points: Sequence[Sequence[float]], members: Sequence[int]) -> dict[int, float]:
    distance = {i: 0.0 for i in members}
    if len(members) <= 2:
        return {i: math.inf for i in members}
    for axis in range(len(points[members[0]])):
        ordered = sorted(members, key=lambda i: points[i][axis])
        low, high = points[ordered[0]][axis], points[ordered[-1]][axis]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high > low:
            for a, b, c in zip(ordered, ordered[1:], ordered[2:]):
                distance[b] += (points[c][axis] - points[a][axis]) / (high - low)
    return distance


def promotable(points: Sequence[Sequence[float]], index: int, keep: int) -> bool:
    """Is points[index] among the best ``keep`` by (rank, crowding distance desc)?"""
    ranks = non_dominated_ranks(points)
    order: list[int] = []
    for rank in sorted(set(ranks)):
        members = [i for i, r in enumerate(ranks) if r == rank]
        dist = crowding(points, members)
        order += sorted(members, key=lambda i: -dist[i])
    return index in order[:keep]


def rungs(max_epochs: int, grace: int = 1, reduction: int = 3) -> list[int]:
    out, r = [], grace
    while r < max_epochs:
        out.append(r)
        r *= reduction
    return out


def make_mo_asha(objectives: Sequence[str], max_epochs: int, grace: int = 1, reduction: int = 3) -> Any:
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class MultiObjectiveASHA(FIFOScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.objectives = list(objectives)
            self.reduction = reduction
            self.recorded: dict[int, list[list[float]]] = {r: [] for r in rungs(max_epochs, grace, reduction)}
            self.stopped = 0

        def set_search_properties(self, metric: Any, mode: Any, **spec: Any) -> bool:
            return True

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            epoch = result.get("epoch")
            if epoch not in self.recorded or result.get("failed") or result.get("infeasible"):
                return TrialScheduler.CONTINUE
            point = [-float(result[o]) if OBJECTIVES[o] == "maximize" else float(result[o]) for o in self.objectives]
            at_rung = self.recorded[epoch]
            at_rung.append(point)
            keep = math.ceil(len(at_rung) / self.reduction)
            if len(at_rung) < self.reduction or promotable(at_rung, len(at_rung) - 1, keep):
                return TrialScheduler.CONTINUE
            self.stopped += 1
            return TrialScheduler.STOP

        def debug_string(self) -> str:
            return f"MultiObjectiveASHA: rungs {list(self.recorded)}, {self.stopped} stopped"

    return MultiObjectiveASHA()
