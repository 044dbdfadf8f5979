"""One trial, as it runs inside a Ray worker: cost, check and proxy-train an architecture.

Kept apart from the driver's modules so that a worker process imports only what a trial needs
(torch, the space schema, the trainer) and not Optuna, pandas or the plotting stack.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from ..model.arch import Arch, build_model, input_shape
from ..model.cost import measure_latency
from .multi_objective import CONSTRAINTS
from .protocol import EvaluationContext, TrialReport, TrialRequest
from .space import Space, parse_space


def needs_latency(space: Space) -> bool:
    return "latency_ms" in space.objectives or space.spec.constraints.max_latency_ms is not None


def violations(space: Space, costs: dict[str, float]) -> dict[str, float]:
    """Constraint values in Optuna's convention (<= 0 feasible): value / limit - 1."""
    out = {}
    for key, metric in CONSTRAINTS.items():
        limit = getattr(space.spec.constraints, key)
        if limit is not None and costs.get(metric) is not None:
            out[key] = costs[metric] / limit - 1.0
    return out


def measured_latency(space: Space, arch: Arch, model: Any = None) -> float:
    lat = space.spec.latency
    model = model if model is not None else build_model(arch)
    return measure_latency(
        model, input_shape(arch, lat.batch), threads=lat.threads, warmup=lat.warmup, repeats=lat.repeats
    ).median_ms


_INTEROP_SET = False


def _set_threads(threads: int) -> None:
    import torch

    global _INTEROP_SET
    torch.set_num_threads(threads)
    if not _INTEROP_SET:
        with contextlib.suppress(RuntimeError):  # already set, or parallel work has started in this process
            torch.set_num_interop_threads(1)
        _INTEROP_SET = True


@functools.lru_cache(maxsize=8)
def _space_from_json(text: str) -> Space:
    return parse_space(json.loads(text))


def evaluate_trial(
    request: TrialRequest,
    context: EvaluationContext,
    report: Callable[[TrialReport], None],
    *,
    gpu_ids: Sequence[str] | None = None,
) -> None:
    """Cost, check and proxy-train one architecture, reporting every objective at every epoch.

    ``gpu_ids`` are the GPUs Ray assigned to the trial (None outside Ray): the trial trains on one of
    them as ``training.device`` allows (see :func:`resolve_device`) and every report names them. With
    ``context.keep_weights``, the report of the last epoch of a full-budget run carries the trained
    state_dict. Never raises: a failure is reported as ``failed`` with its reason.
    """
    assigned = tuple(str(g) for g in gpu_ids or ())
    try:
        import torch

        from .data import space_data
        from .training import resolve_device, state_bytes, train

        space = _space_from_json(context.space)
        spec = space.spec
        _set_threads(context.threads)
        arch = Arch.from_json(request.arch)
        costs = dict(request.costs)
        if needs_latency(space) and "latency_ms" not in costs:
            costs["latency_ms"] = measured_latency(space, arch)
        base = TrialReport.with_costs(costs, gpu_ids=assigned)
        broken = {k: v for k, v in violations(space, costs).items() if v > 0}
        if broken:
            report(base.replace(infeasible=True, reason=", ".join(sorted(broken))))
            return
        if context.table:
            report(_look_up(request, context.table, base, spec.training.epochs))
            return
        device = resolve_device(spec.training.device, gpu_ids=None if gpu_ids is None else assigned)
        data = space_data(spec)
        torch.manual_seed(spec.training.seed)  # as train() seeds before it builds: the same initial weights
        model = build_model(arch)
        epochs = spec.training.epochs

        def on_epoch(e: Any) -> None:
            epoch = base.replace(accuracy=e.accuracy, val_loss=e.loss, epoch=e.epoch, train_seconds=e.train_seconds)
            if context.keep_weights and e.epoch == epochs:
                # the weights travel in a report of their own, and the same report follows without them:
                # the searcher saves them at once, and Ray Tune's remembered last result stays small
                report(epoch.replace(weights=state_bytes(model)))
            report(epoch)

        result, _ = train(model, data, spec.training, on_epoch=on_epoch, device=device)
        if result.failed:
            report(
                base.replace(epoch=result.epochs, train_seconds=result.train_seconds, failed=True, reason=result.reason)
            )
    except Exception as exc:  # noqa: BLE001 - a trial's failure is data, not a crash of the search
        report(TrialReport(failed=True, reason=f"{type(exc).__name__}: {exc}"[:500], gpu_ids=assigned))


def _look_up(request: TrialRequest, table: str, base: TrialReport, epochs: int) -> TrialReport:
    """Tabular mode: the table's metrics stand for a full-budget training run."""
    from .tabular import load_table

    row = load_table(table).get(request.arch)
    if row is None:
        return base.replace(failed=True, reason="not in table")
    return base.replace(
        accuracy=row["accuracy"],
        epoch=epochs,
        train_seconds=row.get("train_seconds", 0.0),
        **{k: row[k] for k in ("params", "macs", "flops", "latency_ms") if k in row},
    )


def ray_trial(config: dict[str, Any], context: dict[str, Any]) -> None:
    """The Ray Tune trainable: one trial in a worker, on the GPU Ray assigned it (if any), each report
    passed to ``tune.report``."""
    import ray
    from ray import tune

    runtime = ray.get_runtime_context()
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    where = {"node": runtime.get_node_id(), "pid": os.getpid()}
    evaluate_trial(
        TrialRequest.from_config(config),
        EvaluationContext.from_dict(context),
        lambda r: tune.report(r.replace(**where).to_metrics()),
        gpu_ids=gpu_ids,
    )
