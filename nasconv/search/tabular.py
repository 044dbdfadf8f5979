"""Tabular evaluation: look an architecture's metrics up in a table instead of training it.

``nasconv search SPACE --table FILE`` runs the real search (searcher, dedupe, sampler, Ray, study,
results folder) with each trial answered from FILE, a CSV with a column ``arch`` (the architecture
JSON, as trials.csv writes it) and one column per metric: ``accuracy``, and optionally ``macs``,
``params``, ``flops``, ``latency_ms``, ``train_seconds``. Costs the table lacks are counted as
usual. This is how search strategies are benchmarked on a fully known space
(``benchmarks/search_quality.py``).
"""

from __future__ import annotations

import csv
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import NasconvError, brief
from ..model.arch import Arch

METRICS = ("accuracy", "macs", "params", "flops", "latency_ms", "train_seconds")
MAX_TABLE_BYTES = 1 << 30


def canonical(arch_json: str) -> str:
    """The architecture JSON in nasconv's canonical form (every kind option present, sorted keys, no
    spaces), so a table written by another version or by hand still matches."""
    return Arch.from_json(arch_json, where="table", check=False).to_json()


@dataclass(frozen=True)
class LookupTable:
    path: str
    rows: dict[str, dict[str, float]]

    def get(self, arch_json: str) -> dict[str, float] | None:
        return self.rows.get(arch_json)

    @classmethod
    def load(cls, path: str | Path) -> LookupTable:
        path = Path(path)
        if not path.is_file():
            raise NasconvError(f"{path}: table not found")
        if path.stat().st_size > MAX_TABLE_BYTES:
            raise NasconvError(f"{path}: table is larger than {MAX_TABLE_BYTES:,} bytes")
        rows: dict[str, dict[str, float]] = {}
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                if "arch" not in header or "accuracy" not in header:
                    raise NasconvError(f"{path}: a table needs columns 'arch' and 'accuracy' (found {brief(header)})")
                metrics = [m for m in METRICS if m in header]
                for line, row in enumerate(reader, start=2):
                    try:
                        key = canonical(row["arch"] or "")
                        values = {m: float(row[m]) for m in metrics if row.get(m) not in (None, "")}
                    except (ValueError, TypeError) as exc:  # NasconvError is a ValueError
                        raise NasconvError(f"{path}: line {line}: {exc}") from None
                    if "accuracy" not in values or not all(math.isfinite(v) for v in values.values()):
                        raise NasconvError(f"{path}: line {line}: accuracy missing or a metric not finite")
                    rows[key] = values
        except UnicodeDecodeError:
            raise NasconvError(f"{path}: not UTF-8 text") from None
        except csv.Error as exc:
            raise NasconvError(f"{path}: not a CSV table ({exc})") from None
        if not rows:
            raise NasconvError(f"{path}: the table has no rows")
        return cls(str(path), rows)


@functools.lru_cache(maxsize=2)
def _cached(path: str, stamp: tuple[int, int]) -> LookupTable:
    return LookupTable.load(path)


def load_table(path: str | Path) -> LookupTable:
    """The table at ``path``, read once per process (again if the file changes)."""
    stat = os.stat(path)
    return _cached(str(path), (stat.st_size, stat.st_mtime_ns))
