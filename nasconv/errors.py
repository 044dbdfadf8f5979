"""The one exception users see: a mistake in their input, reported in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class NasconvError(ValueError):
    """Bad user input (space file, flag, dataset path, results folder). The CLI prints it and exits 2."""


def read_yaml(path: str | Path, what: str) -> Any:
    """``yaml.safe_load`` of a user's file (YAML or JSON); a missing or malformed file is a NasconvError
    naming the file and, for a syntax error, the line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise NasconvError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise NasconvError(f"{path}:{where}: not valid YAML ({problem})") from None
