"""How nasconv reads a trial of the record (an Optuna trial and its user attributes): its state as
listed everywhere, and whether it counts toward the budget. Free of heavy imports."""

from __future__ import annotations

from typing import Any

INTERRUPTED = "interrupted: the search stopped before this trial finished"

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


def counts_toward_budget(trial: Any) -> bool:
    """Trials a budget counts: distinct architectures that took a worker (trained, stopped or failed,
    not interrupted), never infeasible ones or repeats."""
    state = trial_state(trial)
    return state in (COMPLETE, STOPPED) or (state == FAIL and trial.user_attrs.get("reason") != INTERRUPTED)
