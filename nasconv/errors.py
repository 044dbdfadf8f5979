"""The one exception users see: a mistake in their input, reported in one line."""

from __future__ import annotations


class NasconvError(ValueError):
    """Bad user input (space file, flag, dataset path, results folder). The CLI prints it and exits 2."""
