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

REFERENCE = 1.1
"""The reference point of a hypervolume over objectives scaled to [0, 1], in every axis."""


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
    """Exact hypervolume dominated by ``points`` up to ``reference`` (minimisation): the staircase in
    two dimensions, the sum of :func:`dominated_boxes` in more."""
    points = np.asarray(points, dtype=float)
    reference = np.asarray(reference, dtype=float)
    points = points[np.all(points < reference, axis=1)]
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(reference[0] - points[:, 0].min())
    low, high = dominated_boxes(points, reference)
    return float(np.sum(np.prod(high - low, axis=1)))


def scaled_hypervolume(points: np.ndarray, low: np.ndarray, high: np.ndarray, reference: float = REFERENCE) -> float:
    """Hypervolume of ``points`` (minimisation form) with each objective scaled to [0, 1] by ``low``
    and ``high`` (an axis where ``high <= low`` keeps a span of 1), reference point ``reference``
    (1.1) in every axis: the one definition the benchmarks and the report compare searches by."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    points = np.asarray(points, dtype=float).reshape(-1, len(low))
    scaled = (points - low) / np.where(high > low, high - low, 1.0)
    return hypervolume(scaled, np.full(len(low), reference))


def dominated_boxes(points: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint boxes whose union is the region the points dominate up to ``reference``
    (minimisation): (lower corners, upper corners), each of shape (boxes, objectives).

    Slices along the last axis: between the i-th and the next smallest last coordinate, the region
    is the one the first i points dominate in the other axes. The staircase in two dimensions; about
    F^(m-1) / (m-1)! boxes for a front of F points in m dimensions (F = 30, m = 4: about 4,500)."""
    points = np.asarray(points, dtype=float)
    reference = np.asarray(reference, dtype=float)
    m = len(reference)
    points = points.reshape(-1, m)
    points = points[np.all(points < reference, axis=1)]
    if len(points) == 0:
        return np.zeros((0, m)), np.zeros((0, m))
    if m == 1:
        return points[:, :1].min(axis=0, keepdims=True), reference[None, :].copy()
    if m == 2:  # the staircase: sweep along x, keep each point that lowers the best y so far
        points = points[np.lexsort((points[:, 1], points[:, 0]))]
        best = np.minimum.accumulate(points[:, 1])
        keep = np.concatenate([[True], points[1:, 1] < best[:-1]])
        steps = points[keep]
        right = np.append(steps[1:, 0], reference[0])
        low = steps
        high = np.column_stack([right, np.full(len(steps), reference[1])])
        wide = high[:, 0] > low[:, 0]
        return low[wide], high[wide]
    if len(points) > 1:
        points = points[non_dominated(points)]
    points = points[np.argsort(points[:, -1], kind="stable")]
    lows, highs = [], []
    for i in range(len(points)):
        z0 = points[i, -1]
        z1 = points[i + 1, -1] if i + 1 < len(points) else reference[-1]
        if z1 <= z0:
            continue
        low, high = dominated_boxes(points[: i + 1, :-1], reference[:-1])
        lows.append(np.column_stack([low, np.full(len(low), z0)]))
        highs.append(np.column_stack([high, np.full(len(high), z1)]))
    if not lows:
        return np.zeros((0, m)), np.zeros((0, m))
    return np.vstack(lows), np.vstack(highs)


def hypervolume_improvement(
    points: np.ndarray,
    front: np.ndarray,
    reference: np.ndarray,
    *,
    boxes: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The hypervolume each point (a row) would add to ``front`` up to ``reference``, exact and
    vectorised over the points: its box up to the reference less the part of it the front's
    :func:`dominated_boxes` (given as ``boxes`` when already computed) cover."""
    points = np.asarray(points, dtype=float)
    reference = np.asarray(reference, dtype=float)
    low, high = boxes if boxes is not None else dominated_boxes(front, reference)
    return np.clip(_box_volume(points, reference) - _covered(points, low, high), 0, None)


def _box_volume(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.prod(np.clip(reference - points, 0, None), axis=1)


def _covered(points: np.ndarray, low: np.ndarray, high: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """For each point p, the volume of the union of the disjoint boxes [low, high) inside [p, inf)."""
    out = np.zeros(len(points))
    if len(low) == 0 or len(points) == 0:
        return out
    step = max(1, chunk // len(low))
    for start in range(0, len(points), step):
        p = points[start : start + step, None, :]
        overlap = np.prod(np.clip(high[None] - np.maximum(low[None], p), 0, None), axis=2)
        out[start : start + step] = overlap.sum(axis=1)
    return out


def knee_index(points: np.ndarray) -> int:
    """The knee of a front: the point nearest the ideal point once each objective is scaled to [0, 1]."""
    points = np.asarray(points, dtype=float)
    low, high = points.min(axis=0), points.max(axis=0)
    scaled = (points - low) / np.where(high > low, high - low, 1.0)
    return int(np.argmin(np.linalg.norm(scaled, axis=1)))


__all__ = [
    "COST_OBJECTIVES",
    "OBJECTIVES",
    "REFERENCE",
    "as_minimised",
    "crowding_distance",
    "direction",
    "dominated_boxes",
    "dominates",
    "hypervolume",
    "hypervolume_improvement",
    "knee_index",
    "minimised",
    "non_dominated",
    "non_dominated_ranks",
    "scaled_hypervolume",
    "selection_order",
]
