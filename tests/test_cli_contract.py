"""The CLI contract for every file nasconv reads: a broken space, study, results folder,
architecture, latency table or lookup table ends with exit 2 and one line naming the file (and the
trial), no traceback, and nothing stored changed."""

from __future__ import annotations

import hashlib
import importlib.util
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


def _commands_reading(folder: Path, tmp_path: Path) -> list[list[str]]:
    """Every command that opens a results folder's study: report, export, and search --resume."""
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(tiny_space_dict()))
    return [
        ["report", str(folder)],
        ["export", str(folder), "--knee", "--format", "arch"],
        ["search", str(space), "--out", str(folder), "--resume"],
    ]


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
    for command in _commands_reading(copy_of, tmp_path):
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
    report = copy_of.parent / "report-copy"  # a plain report rewrites its files: run it on a copy
    shutil.copytree(copy_of, report)
    assert_one_line(run("report", str(report)), str(report), f"trial {number}", message)


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


@pytest.mark.parametrize("seed", ["-5", "4294967296", "99999999999999999999999"])
def test_seed_out_of_range_is_refused_before_anything_is_written(tmp_path: Path, copy_of: Path, seed: str) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space_dict()))
    before = digest(copy_of)
    for result in (
        run("search", str(space), "--out", str(tmp_path / "o"), "--seed", seed),
        run("export", str(copy_of), "--knee", "--epochs", "1", "--seed", seed, "--to", str(tmp_path / "x")),
    ):  # argparse's own one-line form: "nasconv search: error: argument --seed: ..."
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0 and "argument --seed" in result.stderr
    assert not (tmp_path / "o").exists()
    assert digest(copy_of) == before and not (tmp_path / "x").exists()


def test_output_paths_that_cannot_be_written_are_named(tmp_path: Path, copy_of: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space_dict()))
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    assert_one_line(run("search", str(space), "--out", str(a_file), "--trials", "1"), str(a_file))
    before = digest(copy_of)
    assert_one_line(run("export", str(copy_of), "--knee", "--format", "arch", "--to", str(a_file)), str(a_file))
    assert a_file.read_text() == "mine" and digest(copy_of) == before


# ---------------------------------------------------------------- issue 9 audit: what still escaped


def _store_arch(folder: Path, mutate) -> int:
    """Change the architecture stored for the first complete trial (as a disk, an old bug or a hand
    edit might); returns its number."""
    with sqlite3.connect(folder / "study.db") as con:
        number, trial_id, value = con.execute(
            "select t.number, t.trial_id, a.value_json from trials t join trial_user_attributes a"
            " on a.trial_id = t.trial_id where a.key = 'arch' and t.state = 'COMPLETE' order by t.number limit 1"
        ).fetchone()
        arch = json.loads(json.loads(value))
        mutate(arch)
        con.execute(
            "update trial_user_attributes set value_json = ? where trial_id = ? and key = 'arch'",
            (json.dumps(json.dumps(arch)), trial_id),
        )
    with sqlite3.connect(folder / "study.db") as con:
        con.execute("pragma wal_checkpoint(truncate)")
    return number


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.update(stages=[]), "stages: 0 stages"),
        (lambda a: a.update(input_size=10**30), "input_size: "),
        (lambda a: a["stages"][0].update(activation=["relu"]), "stages[0].activation: ['relu']"),
    ],
)
def test_stored_architecture_out_of_limits_is_refused_before_anything_is_written(
    copy_of: Path, tmp_path: Path, mutate, message: str
) -> None:
    number = _store_arch(copy_of, mutate)
    before = digest(copy_of)
    to = tmp_path / "out" / "export"
    result = run("export", str(copy_of), "--trial", str(number), "--to", str(to))
    assert_one_line(result, f"trial {number}", message)
    assert not (tmp_path / "out").exists() and digest(copy_of) == before
    assert_one_line(run("report", str(copy_of), "--trial", str(number)), f"trial {number}", message)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("stem_channels: 100000\n", "stem_channels: 100000 is not between 1 and 16384"),
        ("input_size: 1000000000000000000000000000000\n", "input_size: "),
        ("stages: []\n", "stages: 0 stages"),
    ],
)
def test_architecture_file_for_train_has_the_limits(tmp_path: Path, change: str, message: str) -> None:
    # a valid architecture for digits.yaml (16 px, 1 channel, 10 classes), then one change
    data = {"input_channels": 1, "input_size": 16, "classes": 10, "stem_channels": 8,
            "stages": [{"kind": "standard", "channels": 8}], **yaml.safe_load(change)}  # fmt: skip
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run("train", str(path), "--space", str(SPACES / "digits.yaml"), "--epochs", "1")
    assert_one_line(result, str(path), message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--opt", "experts=99999999999", "--kind", "cond"], "--opt experts: 99999999999 is not between"),
        (["--opt", "experts=4096", "--kind", "cond"], "--opt experts=4096: a 64->64 cond layer has 151,261,184 param"),
        (["--opt", "experts=true"], "--opt experts: True is not an integer (cond)"),
        (["--opt", "kernels=[2]", "--kind", "inception"], "--opt kernels: 2 must be odd"),
        (["--in", "100000"], "--in: 100000 is not between 1 and 16384"),
        (["--size", "1024", "--out", "1024"], "--out/--size: 1,024 channels at 1024x1024 px"),
    ],
)
def test_ops_options_are_validated_by_the_kind_schema_and_layer_limits(args: list[str], message: str) -> None:
    assert_one_line(run("ops", *args), message)


def test_duplicate_key_in_a_space_file_is_named_with_its_line(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space_dict(), sort_keys=False) + "classes: 5\n")
    result = run("search", str(space), "--out", str(tmp_path / "o"))
    assert_one_line(result, str(space), "not valid YAML (duplicate key 'classes', first on line")
    assert not (tmp_path / "o").exists()


def test_a_failed_export_leaves_no_partial_output(tmp_path: Path) -> None:
    from nasconv.errors import NasconvError
    from nasconv.model.arch import Arch, build_model
    from nasconv.results.export import export, standalone_source

    arch = parse_space(tiny_space_dict(), source="tiny.yaml").sample(0)
    model = build_model(arch)
    model.forward = lambda x: type(model).forward(model, x) + 1  # a model that is not what its arch builds
    to = tmp_path / "new" / "trial-0"
    with pytest.raises(NasconvError, match="output differs from the PyTorch model"):
        export(arch, model, to, ["arch", "pt", "py"])
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "model.pt").write_bytes(b"an earlier export")
    with pytest.raises(NasconvError, match="output differs"):
        export(arch, model, kept, ["arch", "pt", "py"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # no staging folder left either
    assert [p.name for p in kept.iterdir()] == ["model.pt"] and (kept / "model.pt").read_bytes() == b"an earlier export"
    # a network of no stages (stem and head) is valid Python too, even if no space draws one
    empty = Arch(input_channels=1, input_size=8, classes=3, stem_channels=4, stages=())
    compile(standalone_source(empty), "model.py", "exec")


def test_a_results_folder_holds_one_study(tmp_path: Path, copy_of: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(tiny_space_dict(name="other")))
    before = digest(copy_of)
    for flags in ([], ["--resume"]):
        result = run("search", str(other), "--out", str(copy_of), "--trials", "1", *flags)
        assert_one_line(result, str(copy_of), "study 'tiny'", "--out DIR")
    assert digest(copy_of) == before
    # a folder holding a user's files but no study is not written over either
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "space.yaml").write_text("my notes")
    assert_one_line(run("search", str(other), "--out", str(mine), "--trials", "1"), str(mine), "space.yaml")
    assert (mine / "space.yaml").read_text() == "my notes" and sorted(p.name for p in mine.iterdir()) == ["space.yaml"]
    # nor are the kept weights of a folder whose study.db was deleted (a new search prunes weights/)
    kept = tmp_path / "kept"
    (kept / "weights").mkdir(parents=True)
    (kept / "weights" / "trial-3.pt").write_bytes(b"weights")
    assert_one_line(run("search", str(other), "--out", str(kept), "--trials", "1"), str(kept), "weights")
    assert sorted(p.name for p in (kept / "weights").iterdir()) == ["trial-3.pt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"postgresql://user@127.0.0.1:1/db\n", "database driver is not installed"),
        (b"\xff\xfe not utf-8\n", "is not UTF-8 text"),
        (b"\n", "should hold one line"),
    ],
)
def test_broken_storage_url_file(tmp_path: Path, copy_of: Path, content: bytes, message: str) -> None:
    if "driver" in message and importlib.util.find_spec("psycopg2") is not None:
        pytest.skip("psycopg2 is installed here: postgresql:// reaches for a server instead")
    (copy_of / "storage.url").write_bytes(content)
    before = digest(copy_of)
    for command in _commands_reading(copy_of, tmp_path):
        result = run(*command)
        name = "storage.url" if "driver" not in message else "postgresql://"
        assert_one_line(result, name, message)
    assert digest(copy_of) == before


def test_an_unreachable_ray_address_is_one_line_at_once(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space_dict()))
    result = run("search", str(space), "--out", str(tmp_path / "o"), "--address", "127.0.0.1:1")
    assert_one_line(result, "127.0.0.1:1", "no Ray cluster answers")
    assert not (tmp_path / "o").exists()
