"""The CLI contract for every file nasconv reads: a broken space, study, results folder,
architecture, latency table or lookup table ends with exit 2 and one line naming the file (and the
trial), no traceback, and nothing stored changed."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nasconv.search.space import parse_space

from .conftest import SPACES, search_in_process, tiny_space_dict

NASCONV = [sys.executable, "-m", "nasconv.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NASCONV, *args], capture_output=True, text=True, timeout=300)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def assert_one_line(result: subprocess.CompletedProcess, *names: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nasconv: error: "), result.stderr[-2000:]
    for name in names:
        assert name in lines[0], (name, lines[0])


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    search_in_process(parse_space(tiny_space_dict(), source="tiny.yaml"), folder, trials=3)
    return folder


@pytest.fixture
def copy_of(study_folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "results"
    shutil.copytree(study_folder, target)
    return target


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name: x\n\xff\xfe\x80 bad bytes\n", "is not UTF-8 text"),
        (b"x" * (300 << 10), "at most 262,144 are read"),
        (b"name: [unclosed\n", "not valid YAML"),
        (b"- a list\n", "must be a YAML mapping"),
    ],
)
def test_broken_space_files(tmp_path: Path, content: bytes, message: str) -> None:
    space = tmp_path / "space.yaml"
    space.write_bytes(content)
    for command in (
        ["search", str(space), "--out", str(tmp_path / "o")],
        ["profile-device", str(space), "--out", "t.json"],
    ):
        assert_one_line(run(*command), str(space), message)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty-sqlite"])
def test_damaged_study_is_named_and_left_alone(copy_of: Path, damage: str, tmp_path: Path) -> None:
    db = copy_of / "study.db"
    if damage == "garbage":
        db.write_bytes(b"this is not a database at all" * 100)
    elif damage == "truncated":
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 2])
    else:
        db.unlink()
        sqlite3.connect(db).execute("create table other (x)").connection.commit()
    before = digest(copy_of)
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(tiny_space_dict()))
    for command in (
        ["report", str(copy_of)],
        ["export", str(copy_of), "--knee", "--format", "arch"],
        ["search", str(space), "--out", str(copy_of), "--resume"],
    ):
        assert_one_line(run(*command), "study.db")
    assert digest(copy_of) == before


def test_folder_without_a_study(tmp_path: Path) -> None:
    assert_one_line(run("report", str(tmp_path)), str(tmp_path), "no study here")
    assert_one_line(run("export", str(tmp_path / "nope"), "--knee"), "no such results folder")


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ('{"stages": [{"kind": "het"', "not valid JSON"),
        ("[1, 2, 3]", "not a nasconv architecture"),
        ("UNKNOWN", "unknown conv kind 'nope'"),
    ],
)
def test_stored_architecture_that_is_broken_names_the_trial(copy_of: Path, stored: str, message: str) -> None:
    with sqlite3.connect(copy_of / "study.db") as con:  # damage the record as a disk or an old bug might
        number, trial_id, value = con.execute(
            "select t.number, t.trial_id, a.value_json from trials t join trial_user_attributes a"
            " on a.trial_id = t.trial_id where a.key = 'arch' and t.state = 'COMPLETE' order by t.number limit 1"
        ).fetchone()
        if stored == "UNKNOWN":
            arch = json.loads(json.loads(value))
            arch["stages"][0]["kind"] = "nope"
            stored = json.dumps(arch)
        con.execute(
            "update trial_user_attributes set value_json = ? where trial_id = ? and key = 'arch'",
            (json.dumps(stored), trial_id),
        )
    with sqlite3.connect(copy_of / "study.db") as con:
        con.execute("pragma wal_checkpoint(truncate)")
    before = digest(copy_of)
    result = run("export", str(copy_of), "--trial", str(number), "--format", "arch", "--to", str(copy_of / "x"))
    assert_one_line(result, f"trial {number}", message)
    assert digest(copy_of) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"stages": [', "not valid YAML"),
        ("[1, 2]", "not a nasconv architecture"),
        ("stages: [{kind: nope, channels: 8}]\ninput_channels: 1\ninput_size: 16\nclasses: 10\nstem_channels: 8\n",
         "unknown conv kind 'nope'"),
        ("stages: [{kind: het, channels: 6, options: {p: 4}}]\ninput_channels: 1\ninput_size: 16\nclasses: 10\n"
         "stem_channels: 6\n", "cannot build"),
    ],
)  # fmt: skip
def test_broken_architecture_file(tmp_path: Path, content: str, message: str) -> None:
    arch = tmp_path / "arch.yaml"
    arch.write_text(content)
    assert_one_line(
        run("train", str(arch), "--space", str(SPACES / "digits.yaml"), "--epochs", "1"), str(arch), message
    )


def test_broken_latency_table(tmp_path: Path) -> None:
    table = tmp_path / "device.json"
    table.write_text('{"settings": {"backend": ')
    data = tiny_space_dict(objectives=["accuracy", "latency_ms"], latency={"table": str(table)})
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(data))
    assert_one_line(run("search", str(space), "--out", str(tmp_path / "o")), "device.json", "latency table")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("arch,macs\n{},3\n", "needs columns 'arch' and 'accuracy'"),
        ('arch,accuracy\n"{""a"": 1}",high\n', "line 2"),
        ("arch,accuracy\n", "has no rows"),
    ],
)
def test_broken_lookup_table(tmp_path: Path, content: str, message: str) -> None:
    table = tmp_path / "table.csv"
    table.write_text(content)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space_dict()))
    result = run("search", str(space), "--out", str(tmp_path / "o"), "--table", str(table))
    assert_one_line(result, "table.csv", message)
    assert not (tmp_path / "o").exists()
