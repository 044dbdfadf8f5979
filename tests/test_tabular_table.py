"""Tabular mode's table is checked as a whole when read (issue 10's audit: D1, D12): every problem is
one line naming the file, the line and the column."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nasconv.errors import NasconvError
from nasconv.search.space import parse_space
from nasconv.search.tabular import LookupTable, check_covers, load_table

from .conftest import tiny_space_dict

SPACE = parse_space(tiny_space_dict(), source="tiny.yaml")
ARCHS = sorted({SPACE.decode(genes).to_json() for genes in SPACE.enumerate()})
A, B = ARCHS[0], ARCHS[1]


def _csv(path: Path, header: list[str], *rows: list[object]) -> Path:
    def cell(value: object) -> str:
        text = str(value)
        return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"') else text

    path.write_text("\n".join(",".join(cell(v) for v in line) for line in [header, *rows]) + "\n")
    return path


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["arch", "accuracy", "latency"], [[A, 0.5, 3]], "unknown column 'latency' (did you mean 'latency_ms'?); "
         "a table's columns are arch, accuracy, macs, params, flops, latency_ms, train_seconds"),
        (["arch", "accuracy", "notes"], [[A, 0.5, "x"]], "unknown column 'notes'"),
        (["arch", "acc"], [[A, 0.5]], "unknown column 'acc' (did you mean 'accuracy'?)"),
        (["arch", "accuracy", "accuracy"], [[A, 0.5, 0.9]], "column 'accuracy' appears more than once"),
        (["arch", "accuracy"], [[A, 95]], "line 2: column accuracy: 95 is outside [0, 1]"),
        (["arch", "accuracy"], [[A, -0.1]], "line 2: column accuracy: -0.1 is outside [0, 1]"),
        (["arch", "accuracy", "macs"], [[A, 0.5, 10], [B, 0.5, -5]], "line 3: column macs: -5 is negative"),
        (["arch", "accuracy"], [[A, "nan"]], "line 2: column accuracy: nan is not finite"),
        (["arch", "accuracy", "params"], [[A, 0.5, "inf"]], "line 2: column params: inf is not finite"),
        (["arch", "accuracy"], [[A, "x"]], "line 2: column accuracy: 'x' is not a number"),
        (["arch", "accuracy"], [[A, ""]], "line 2: column accuracy: missing"),
        (["arch", "accuracy"], [[A, 0.5, "extra"]], "line 2: 3 fields, the header has 2"),
        (["arch", "accuracy"], [[A, 0.5], [B, 0.6], [A, 0.7]], "line 4: column arch: the architecture of line 2 again"),
        (["arch", "accuracy"], [["not json", 0.5]], "line 2: column arch: "),
        (["arch", "accuracy"], [], "the table has no rows"),
        (["accuracy"], [[0.5]], "a table needs columns 'arch' and 'accuracy'"),
    ],
)  # fmt: skip
def test_a_bad_table_is_one_line_naming_file_line_and_column(
    tmp_path: Path, header: list[str], rows: list[list[object]], message: str
) -> None:
    path = _csv(tmp_path / "t.csv", header, *rows)
    with pytest.raises(NasconvError) as caught:
        LookupTable.load(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert message in text, text


def test_the_same_architecture_twice_with_the_same_values_is_accepted(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv", ["arch", "accuracy", "macs"], [A, 0.5, 10], [A, 0.5, 10], [B, 0.25, ""])
    table = LookupTable.load(path)
    assert table.get(A) == {"accuracy": 0.5, "macs": 10.0} and table.get(B) == {"accuracy": 0.25}


def test_a_missing_table_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(NasconvError, match=r"missing\.csv: table not found"):
        load_table(tmp_path / "missing.csv")


def test_cli_search_with_a_missing_table_exits_2_in_one_line(tmp_path: Path, write_space) -> None:
    # audit D1: a FileNotFoundError traceback from os.stat in load_table
    space = write_space(tiny_space_dict())
    run = subprocess.run(
        [sys.executable, "-m", "nasconv.cli", "search", str(space), "--table", str(tmp_path / "missing.csv"),
         "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""},
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    assert "missing.csv: table not found" in run.stderr and run.stderr.strip().count("\n") == 0
    assert "Traceback" not in run.stderr and not (tmp_path / "o").exists()


def test_a_table_of_another_space_is_refused(tmp_path: Path) -> None:
    other = parse_space(tiny_space_dict(input={"channels": 1, "size": 16}), source="other.yaml")
    foreign = sorted({other.decode(genes).to_json() for genes in other.enumerate()})
    path = _csv(tmp_path / "t.csv", ["arch", "accuracy"], *[[a, 0.5] for a in foreign])
    with pytest.raises(NasconvError, match=r"lists none of 36 architectures of space 'tiny'"):
        check_covers(LookupTable.load(path), SPACE)
    partial = _csv(tmp_path / "p.csv", ["arch", "accuracy"], [A, 0.5])
    check_covers(LookupTable.load(partial), SPACE)  # some of the space: the rest end "not in table"


def test_a_table_of_another_space_is_refused_in_a_large_space_by_a_sample(tmp_path: Path) -> None:
    data = tiny_space_dict(stem={"channels": [4, 8, 12, 16]})
    data["stages"] = [data["stages"][0], {**data["stages"][0], "stride": 1}, {**data["stages"][0], "stride": 1}]
    large = parse_space(data, source="large.yaml")
    assert large.count() > 200
    path = _csv(tmp_path / "t.csv", ["arch", "accuracy"], [A, 0.5])
    with pytest.raises(NasconvError, match=r"lists none of \d+ architectures of space 'tiny'"):
        check_covers(LookupTable.load(path), large)
