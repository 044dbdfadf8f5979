"""benchmarks/gpu_check.py runs once on a GPU machine, with no chance to debug it there: its dry run
on the CPU executes every section (all but the CUDA-only lines) so that it cannot stop on a mistake."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def test_gpu_check_dry_run_on_the_cpu(tmp_path) -> None:
    env = {**os.environ, "NASCONV_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    out = run.stdout
    for section in ("vs its reference", "HetConv on cpu", "latency on cpu", "streamed from host memory"):
        assert section in out, section
    # the trial's weights travel in the report before the last: checked, and they load and score
    assert "its kept weights load on the CPU and score" in out
    assert out.rstrip().endswith("GPU CHECK OK on cpu (a dry run)")
