"""How nasconv reads a trial of the record (an Optuna trial and its user attributes): its state as
listed everywhere, and whether it counts toward the budget. Free of heavy imports."""

from __future__ import annotations

from typing import Any

INTERRUPTED = "interrupted: the search stopped before this trial finished"
CANNOT_BUILD = "cannot build"
PROPOSAL_FAILED = "the proposal failed"
NEVER_SCHEDULED = (CANNOT_BUILD, PROPOSAL_FAILED)
"""How the reason of a FAIL trial the driver ended before any worker took it begins."""

# the states a trial is listed with (Optuna's own, refined by nasconv's user attributes)
COMPLETE, STOPPED, INFEASIBLE, REPEAT, FAIL, RUNNING = "COMPLETE", "STOPPED", "INFEASIBLE", "REPEAT", "FAIL", "RUNNING"


def trial_state(trial: Any) -> str:
    """How nasconv lists a trial: COMPLETE (trained the full budget), STOPPED (early-stopped),
    INFEASIBLE (over a limit, never trained), REPEAT (an architecture already evaluated, answered
    from the record), FAIL, RUNNING, or another Optuna state."""
    state = trial.state.name
    attrs = trial.user_attrs
    if attrs.get("repeat_of") is not None and state in (COMPLETE, FAIL):
        return REPEAT
    if state == COMPLETE and attrs.get("infeasible"):
        return INFEASIBLE
    if state == COMPLETE and attrs.get("early_stopped"):
        return STOPPED
    return state


def never_scheduled(trial: Any) -> bool:
    """A FAIL trial the driver ended before any worker took it (its architecture cannot be built or
    costed, or the sampler's proposal raised)."""
    reason = trial.user_attrs.get("reason")
    return trial.state.name == FAIL and isinstance(reason, str) and reason.startswith(NEVER_SCHEDULED)


def counts_toward_budget(trial: Any) -> bool:
    """Trials a budget counts: distinct architectures that took a worker and were trained, stopped
    early or failed there; never infeasible ones, repeats, interrupted ones, or failures in the driver
    before a worker took the trial (see :func:`never_scheduled`). Live and on resume alike."""
    state = trial_state(trial)
    if state in (COMPLETE, STOPPED):
        return True
    return state == FAIL and trial.user_attrs.get("reason") != INTERRUPTED and not never_scheduled(trial)
