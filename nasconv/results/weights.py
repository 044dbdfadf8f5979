"""Kept weights of a search: ``<results>/weights/trial-<N>.pt``, one ``torch.save``d state_dict per
trial, written as trials finish and pruned to the Pareto front as the search goes
(``search.keep_weights``; a trial still running keeps the weights its last report brought until
it is told and ranked). A kept trial costs about 4 bytes per parameter on disk (float32
state_dict, BatchNorm statistics included). ``nasconv export --trial N`` exports them.

Light on purpose (torch is imported only to load): the driver writes and prunes through it.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import NasconvError
from ..files import atomic_write

WEIGHTS_DIR = "weights"
_NAME = re.compile(r"^trial-(\d+)\.pt$")


def weights_path(folder: str | Path, number: int) -> Path:
    """Where trial ``number``'s kept weights are (or would be) in the results ``folder``."""
    return Path(folder) / WEIGHTS_DIR / f"trial-{int(number)}.pt"


def save_weights(folder: str | Path, number: int, data: bytes) -> Path:
    """Write a trial's state_dict bytes (``TrialReport.weights``) atomically; returns the path."""
    path = weights_path(folder, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        f.write(data)
    return path


def kept_trials(folder: str | Path) -> list[int]:
    """Numbers of the trials whose weights are kept in ``folder``, ascending."""
    directory = Path(folder) / WEIGHTS_DIR
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name)))


def prune_weights(folder: str | Path, keep: Iterable[int]) -> list[int]:
    """Delete the kept weights of every trial not in ``keep`` (e.g. the current front); returns those removed."""
    keep = {int(n) for n in keep}
    removed = [n for n in kept_trials(folder) if n not in keep]
    for number in removed:
        weights_path(folder, number).unlink(missing_ok=True)
    return removed


def load_weights(folder: str | Path, number: int) -> dict[str, Any] | None:
    """Trial ``number``'s kept state_dict (``torch.load(weights_only=True)``), None if none is kept."""
    import torch

    path = weights_path(folder, number)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        # torch's own message advises weights_only=False, which would run whatever code the file holds
        text = str(exc)
        if isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in text:  # names a class or function to call
            why = "it holds more than tensors, and loading it could run code"
        elif isinstance(exc, pickle.UnpicklingError):
            why = "the file is damaged or not a torch state_dict"
        else:
            why = f"{type(exc).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}"
        raise NasconvError(
            f"{path}: cannot load these kept weights safely ({why}); delete the file, or export with --epochs N"
        ) from None
    if not isinstance(state, dict):
        raise NasconvError(f"{path}: not a state_dict")
    return state
