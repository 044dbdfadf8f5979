"""Tabular evaluation: look an architecture's metrics up in a table instead of training it.

``nasconv search SPACE --table FILE`` runs the real search (searcher, dedupe, sampler, Ray, study,
results folder) with each trial answered from FILE, a CSV with a column ``arch`` (the architecture
JSON, as trials.csv writes it) and one column per metric: ``accuracy``, and optionally ``macs``,
``params``, ``flops``, ``latency_ms``, ``train_seconds``. Costs the table lacks are counted as
usual. This is how search strategies are benchmarked on a fully known space
(``benchmarks/search_quality.py``).

A table is checked as a whole when it is read: every column known (a misspelled metric would
otherwise be ignored), no column twice, every row as wide as the header, accuracy in [0, 1], no
negative or non-finite metric, and no architecture listed twice with different values. Each
problem is one line naming the file, the line and the column. :func:`check_covers` refuses a table
that lists none of a space's architectures (the table of another space).
"""

from __future__ import annotations

import csv
import difflib
import functools
import hashlib
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NasconvError, brief
from ..model.arch import Arch

if TYPE_CHECKING:
    from .space import Space

METRICS = ("accuracy", "macs", "params", "flops", "latency_ms", "train_seconds")
COLUMNS = ("arch", *METRICS)
MAX_TABLE_BYTES = 1 << 30
COVERAGE_SAMPLE = 200
"""Architectures drawn from the space to check that a table belongs to it."""


def canonical(arch_json: str) -> str:
    """The architecture JSON in nasconv's canonical form (every kind option present, sorted keys, no
    spaces), so a table written by another version or by hand still matches."""
    return Arch.from_json(arch_json, where="table", check=False).to_json()


def _unknown_column(path: Path, name: str) -> NasconvError:
    starts = [c for c in COLUMNS if name and (c.startswith(name.lower()) or name.lower().startswith(c))]
    close = starts or difflib.get_close_matches(name, COLUMNS, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return NasconvError(f"{path}: unknown column {brief(name)}{hint}; a table's columns are {', '.join(COLUMNS)}")


def _check_value(path: Path, line: int, metric: str, value: float) -> None:
    if not math.isfinite(value):
        raise NasconvError(f"{path}: line {line}: column {metric}: {value} is not finite")
    if metric == "accuracy" and not 0.0 <= value <= 1.0:
        raise NasconvError(f"{path}: line {line}: column accuracy: {value:g} is outside [0, 1] (a fraction, not %)")
    if metric != "accuracy" and value < 0:
        raise NasconvError(f"{path}: line {line}: column {metric}: {value:g} is negative")


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
        first_line: dict[str, int] = {}
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM is not part of the header
                reader = csv.reader(f)
                header = next(reader, [])
                for name in header:
                    if name not in COLUMNS:
                        raise _unknown_column(path, name)
                twice = sorted({name for name in header if header.count(name) > 1})
                if twice:
                    raise NasconvError(f"{path}: column {twice[0]!r} appears more than once in the header")
                if "arch" not in header or "accuracy" not in header:
                    raise NasconvError(f"{path}: a table needs columns 'arch' and 'accuracy' (found {brief(header)})")
                metrics = [(header.index(m), m) for m in METRICS if m in header]
                where = header.index("arch")
                for line, fields in enumerate(reader, start=2):
                    if not fields:
                        continue  # a blank line
                    if len(fields) != len(header):
                        raise NasconvError(f"{path}: line {line}: {len(fields)} fields, the header has {len(header)}")
                    values: dict[str, float] = {}
                    for index, metric in metrics:
                        if fields[index].strip() == "":
                            continue
                        try:
                            values[metric] = float(fields[index])
                        except ValueError:
                            raise NasconvError(
                                f"{path}: line {line}: column {metric}: {brief(fields[index])} is not a number"
                            ) from None
                        _check_value(path, line, metric, values[metric])
                    if "accuracy" not in values:
                        raise NasconvError(f"{path}: line {line}: column accuracy: missing")
                    try:
                        key = canonical(fields[where])
                    except ValueError as exc:  # NasconvError is a ValueError
                        raise NasconvError(f"{path}: line {line}: column arch: {exc}") from None
                    if key in rows and rows[key] != values:
                        raise NasconvError(
                            f"{path}: line {line}: column arch: the architecture of line {first_line[key]} again, "
                            f"with other values ({brief(values)} vs {brief(rows[key])})"
                        )
                    first_line.setdefault(key, line)
                    rows[key] = values
        except UnicodeDecodeError:
            raise NasconvError(f"{path}: not UTF-8 text") from None
        except csv.Error as exc:
            raise NasconvError(f"{path}: not a CSV table ({exc})") from None
        except OSError as exc:
            raise NasconvError(f"{path}: cannot read the table ({exc.strerror})") from None
        if not rows:
            raise NasconvError(f"{path}: the table has no rows")
        return cls(str(path), rows)


@functools.lru_cache(maxsize=2)
def _cached(path: str, stamp: tuple[int, int]) -> LookupTable:
    return LookupTable.load(path)


def load_table(path: str | Path) -> LookupTable:
    """The table at ``path``, read once per process (again if the file changes)."""
    try:
        stat = os.stat(path)
    except OSError:
        raise NasconvError(f"{path}: table not found") from None
    return _cached(str(path), (stat.st_size, stat.st_mtime_ns))


def table_digest(path: str | Path) -> str:
    """SHA-256 of the table file's bytes: what a study records to refuse a resume on another table."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise NasconvError(f"{path}: cannot read the table ({exc.strerror})") from None
    return digest.hexdigest()


def check_covers(table: LookupTable, space: Space, sample: int = COVERAGE_SAMPLE) -> None:
    """Refuse a table that lists none of ``sample`` architectures drawn from the space (all of them
    when the space is that small): every trial would end "not in table"."""
    rng = random.Random(0)
    if space.count() <= sample:
        keys = {space.decode(genes).to_json() for genes in space.enumerate()}
    else:
        keys = {space.sample(rng).to_json() for _ in range(sample)}
    if not any(key in table.rows for key in keys):
        raise NasconvError(
            f"{table.path}: lists none of {len(keys)} architectures of space '{space.name}' "
            f"(the table of another space, or another input size or class count?)"
        )
