from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nasconv.model.latency import LatencyTable
from nasconv.ops import CONV_KINDS
from nasconv.search.space import load_space

from .conftest import SPACES, tiny_space_dict

NASCONV = [sys.executable, "-m", "nasconv.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NASCONV, *args], capture_output=True, text=True, timeout=300)


def test_ops_table_lists_every_kind_with_its_cost() -> None:
    out = run("ops", "--in", "6", "--out", "8", "--size", "5", "--opt", "groups=2", "--opt", "p=3")
    assert out.returncode == 0, out.stderr
    for kind in CONV_KINDS:
        assert kind in out.stdout
    assert "432" in out.stdout and "216" in out.stdout and "10,800" in out.stdout  # 432 x 25 positions


def test_ops_bad_arguments_exit_2_with_one_line() -> None:
    for args, message in (
        (["--kernel", "4"], "kernel_size must be odd"),
        (["--in", "x"], "is not an integer"),
        (["--bogus"], "unrecognized arguments"),
        (["--opt", "groups"], "is not NAME=VALUE"),
        (["--opt", "bogus=2"], "no conv kind has an option 'bogus'"),
        (["--kind", "hett"], "unknown conv kind 'hett'"),
    ):
        out = run("ops", *args)
        assert out.returncode == 2 and message in out.stderr
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_train_command_trains_an_exported_arch(tmp_path: Path) -> None:
    space = load_space(SPACES / "digits.yaml")
    arch = space.sample(0).save(tmp_path / "arch.yaml")
    out = run("train", str(arch), "--space", str(SPACES / "digits.yaml"), "--epochs", "2", "--threads", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "epoch   2" in out.stdout and "validation accuracy" in out.stdout
    wrong = run("train", str(arch), "--space", str(SPACES / "cifar10.yaml"), "--epochs", "1")
    assert wrong.returncode == 2 and "architecture takes 1x16px" in wrong.stderr


def test_profile_device_command(tmp_path: Path, write_space) -> None:
    space = write_space(tiny_space_dict())
    table = tmp_path / "device.json"
    out = run(
        "profile-device",
        str(space),
        "--out",
        str(table),
        "--repeats",
        "3",
        "--warmup",
        "1",
        "--calibrate",
        "4",
        "--quiet",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "blocks (torch, 1 thread(s), batch 1)" in out.stdout and "calibration on 4 models" in out.stdout
    assert LatencyTable.load(table).entries
    bad = run("profile-device", str(space), "--out", str(table), "--backend", "tflite")
    assert bad.returncode == 2
