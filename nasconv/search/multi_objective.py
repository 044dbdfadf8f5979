"""The multi-objective maths, in one place: objectives and their directions, Pareto dominance,
non-dominated ranks, crowding distance, hypervolume and the knee.

Everything works on points in *minimisation form* (a maximised objective is negated, see
:func:`minimised`), as plain numpy arrays, so that the scheduler, the samplers, the results folder
and the report share one definition (as Optuna keeps its own in ``optuna/study/_multi_objective.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

OBJECTIVES: dict[str, Literal["minimize", "maximize"]] = {
    "accuracy": "maximize",
    "macs": "minimize",
    "flops": "minimize",
    "params": "minimize",
    "latency_ms": "minimize",
}
"""Every objective a space may name, and its direction."""

COST_OBJECTIVES = ("macs", "flops", "params", "latency_ms")

CONSTRAINTS: dict[str, str] = {"max_macs": "macs", "max_params": "params", "max_latency_ms": "latency_ms"}
"""Every limit a space may set, and the cost it bounds."""


def direction(name: str) -> Literal["minimize", "maximize"]:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}") from None


def as_minimised(values: Sequence[float], objectives: Sequence[str]) -> list[float]:
    """One point's values in minimisation form."""
    return [-float(v) if direction(o) == "maximize" else float(v) for v, o in zip(values, objectives)]


def minimised(columns: Mapping[str, Any], objectives: Sequence[str]) -> np.ndarray:
    """(n, len(objectives)) array of ``columns[name]`` in minimisation form (works on a DataFrame)."""
    cols = []
    for name in objectives:
        values = np.asarray(columns[name], dtype=float)
        cols.append(-values if direction(name) == "maximize" else values)
    if not cols:
        return np.zeros((0, 0))
    return np.stack(cols, axis=1)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` Pareto-dominates ``b`` (minimisation): no worse in every objective, better in one."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point dominates. Equal points do not dominate each
    other, so two different trials with identical values are both kept."""
    points = np.asarray(points, dtype=float)
    n = len(points)
    if points.ndim == 2 and points.shape[1] == 2 and n > 64:
        return _non_dominated_2d(points)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated_by = np.all(points <= points[i], axis=1) & np.any(points < points[i], axis=1)
        keep[i] = not dominated_by.any()
    return keep


def _non_dominated_2d(points: np.ndarray) -> np.ndarray:
    """The same mask in O(n log n) for two objectives: sweep along the first, keeping the best second."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    keep = np.zeros(len(points), dtype=bool)
    best_before = np.inf  # the lowest second value among points with a strictly smaller first value
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and points[order[j], 0] == points[order[i], 0]:
            j += 1
        group = order[i:j]  # equal first values, sorted by the second
        lowest = points[group[0], 1]
        for index in group:
            y = points[index, 1]
            keep[index] = y == lowest and y < best_before
        best_before = min(best_before, lowest)
        i = j
    return keep


def non_dominated_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Rank 0 = non-dominated, 1 = non-dominated once rank 0 is removed, ... (minimisation)."""
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    n = len(pts)
    ranks = [-1] * n
    remaining = np.arange(n)
    rank = 0
    while len(remaining):
        mask = non_dominated(pts[remaining])
        for i in remaining[mask]:
            ranks[int(i)] = rank
        remaining = remaining[~mask]
        rank += 1
    return ranks


def crowding_distance(points: Sequence[Sequence[float]], members: Sequence[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of ``members`` (indices into ``points``) among themselves:
    the boundary points of each axis get infinity."""
    distance = {i: 0.0 for i in members}
    if len(members) <= 2:
        return {i: math.inf for i in members}
    for axis in range(len(points[members[0]])):
        ordered = sorted(members, key=lambda i: (points[i][axis], tuple(points[i])))
        low, high = points[ordered[0]][axis], points[ordered[-1]][axis]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high > low:
            for a, b, c in zip(ordered, ordered[1:], ordered[2:]):
                distance[b] += (points[c][axis] - points[a][axis]) / (high - low)
    return distance


def selection_order(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices best first, as NSGA-II selects: by rank, then crowding distance (larger first), then
    the point's values (so that ties never depend on the order the points arrived in)."""
    ranks = non_dominated_ranks(points)
    order: list[int] = []
    for rank in sorted(set(ranks)):
        members = [i for i, r in enumerate(ranks) if r == rank]
        dist = crowding_distance(points, members)
        order += sorted(members, key=lambda i: (-dist[i], tuple(points[i])))
    return order


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact hypervolume dominated by ``points`` up to ``reference`` (minimisation), by slicing
    along the last axis; fine for fronts of hundreds of points."""
    points = np.asarray(points, dtype=float)
    reference = np.asarray(reference, dtype=float)
    points = points[np.all(points < reference, axis=1)]
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(reference[0] - points[:, 0].min())
    if points.shape[1] == 2:  # the staircase, directly
        points = points[np.lexsort((points[:, 1], points[:, 0]))]
        total, best = 0.0, reference[1]
        for x, y in points:
            if y < best:
                total += (reference[0] - x) * (best - y)
                best = y
        return float(total)
    order = np.argsort(points[:, -1])
    points = points[order]
    total = 0.0
    for i in range(len(points)):
        upper = points[i + 1, -1] if i + 1 < len(points) else reference[-1]
        depth = upper - points[i, -1]
        if depth > 0:
            total += depth * hypervolume(points[: i + 1, :-1], reference[:-1])
    return float(total)


def knee_index(points: np.ndarray) -> int:
    """The knee of a front: the point nearest the ideal point once each objective is scaled to [0, 1]."""
    points = np.asarray(points, dtype=float)
    low, high = points.min(axis=0), points.max(axis=0)
    scaled = (points - low) / np.where(high > low, high - low, 1.0)
    return int(np.argmin(np.linalg.norm(scaled, axis=1)))


__all__ = [
    "COST_OBJECTIVES",
    "OBJECTIVES",
    "as_minimised",
    "crowding_distance",
    "direction",
    "dominates",
    "hypervolume",
    "knee_index",
    "minimised",
    "non_dominated",
    "non_dominated_ranks",
    "selection_order",
]
