"""What crosses between the searcher (driver) and a trial (worker), typed once.

Ray Tune carries both as plain dicts (a trial's ``config`` and each ``tune.report``); these classes
are the only place their keys are spelled. Kept free of heavy imports: a worker imports it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class TrialRequest:
    """One architecture to evaluate: sent as the Ray trial's config."""

    number: int
    arch: str
    """The architecture as JSON (``Arch.to_json``)."""
    costs: dict[str, float] = field(default_factory=dict)
    """Costs the driver already knows (params, MACs, FLOPs, table latency)."""

    def to_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrialRequest:
        return cls(number=int(config["number"]), arch=str(config["arch"]), costs=dict(config.get("costs") or {}))


@dataclass(frozen=True, kw_only=True)
class TrialReport:
    """What a trial reports after each epoch, and once more if it fails or is infeasible.

    Every objective is present in every report (cost objectives are known before training), so a
    scheduler or searcher can read any report alone.
    """

    accuracy: float = 0.0
    epoch: int = 0
    train_seconds: float = 0.0
    val_loss: float | None = None
    params: float | None = None
    macs: float | None = None
    flops: float | None = None
    latency_ms: float | None = None
    failed: bool = False
    infeasible: bool = False
    reason: str | None = None
    node: str | None = None
    pid: int | None = None
    gpu_ids: tuple[str, ...] = ()
    weights: bytes | None = None
    """The trained state_dict (``torch.save`` bytes), in the last report of a trial whose weights are kept."""

    @classmethod
    def with_costs(cls, costs: dict[str, float], **fields: Any) -> TrialReport:
        """A report carrying the known costs (params, MACs, FLOPs, latency) and ``fields``."""
        known: dict[str, Any] = {name: float(costs[name]) for name in COST_FIELDS if costs.get(name) is not None}
        return cls(**known, **fields)

    def value(self, objective: str) -> float | None:
        """The reported value of an objective (``accuracy``, ``macs``, ...), None if absent."""
        value = getattr(self, objective, None)
        return None if value is None else float(value)

    def replace(self, **changes: Any) -> TrialReport:
        return dataclasses.replace(self, **changes)

    def to_metrics(self) -> dict[str, Any]:
        """The dict handed to ``tune.report`` (absent values left out)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and value != ():
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any] | None) -> TrialReport:
        """Read a report back from the dict Ray delivers (which adds keys of its own: ignored)."""
        metrics = metrics or {}
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in metrics.items() if k in known}
        if "gpu_ids" in values:
            values["gpu_ids"] = tuple(str(g) for g in values["gpu_ids"])
        return cls(**values)


COST_FIELDS = ("params", "macs", "flops", "latency_ms")


@dataclass(frozen=True, kw_only=True)
class EvaluationContext:
    """What every trial of a search shares: the space (as JSON), the worker's threads, the optional
    lookup table that replaces training, and where kept weights go."""

    space: str
    threads: int = 1
    table: str | None = None
    keep_weights: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationContext:
        return cls(**data)
