from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"


def tiny_space_dict(**overrides: object) -> dict:
    """A space small enough to search in seconds: synthetic data, 8x8 input."""
    space = {
        "name": "tiny",
        "input": {"channels": 1, "size": 8},
        "classes": 3,
        "dataset": {"name": "synthetic", "samples": 120},
        "stem": {"channels": [4, 8]},
        "stages": [
            {
                "stride": 2,
                "channels": [8, 16],
                "conv": {
                    "standard": {"kernel": [1, 3]},
                    "dsc": {"kernel": 3},
                    "het": {"p": [2, 4]},
                    "ghost": {"ratio": 2},
                    "group": {"groups": [2, 4]},
                    "cond": {"experts": 2},
                },
            }
        ],
        "objectives": ["accuracy", "macs"],
        "search": {"trials": 4, "population": 2, "seed": 0},
        "training": {"epochs": 1, "batch_size": 32},
    }
    space.update(overrides)
    return space


@pytest.fixture
def write_space(tmp_path: Path):
    def write(data: dict, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def search_in_process(space, out: Path, trials: int, sampler: str = "random", seed: int = 0, stop_every: int = 0):
    """A search through the real searcher and study bookkeeping, with each trial evaluated in this
    process one after another instead of on Ray: what report/export tests read is what a search stores.
    ``stop_every`` N > 0: every N-th trained trial ends after its first epoch, as an early-stopping
    scheduler would, so the study holds STOPPED trials too."""
    from nasconv.experiment import resolve_options
    from nasconv.search.evaluation import evaluate_trial
    from nasconv.search.protocol import EvaluationContext, TrialReport, TrialRequest
    from nasconv.search.samplers import SamplerContext, make_sampler
    from nasconv.search.searcher import StudySearcher
    from nasconv.search.study import open_or_create_study

    opts = resolve_options(space, out=out, trials=trials, sampler=sampler, seed=seed)
    study = open_or_create_study(
        space,
        out,
        storage=None,
        resume=False,
        sampler=lambda n: make_sampler(sampler, SamplerContext(space=space, seed=seed + n, population=4)),
    ).study
    searcher = StudySearcher(
        study, space, budget=opts.trials, epochs=space.spec.training.epochs, on_change=lambda: None
    )
    context = EvaluationContext(space=space.spec.model_dump_json(), threads=1)
    trained = 0
    for index in range(10 * trials):
        config = searcher.suggest(f"t{index}")
        if config == "FINISHED" or config is None and searcher.finished_reason:
            break
        if config is None:
            continue
        reports: list[TrialReport] = []
        evaluate_trial(TrialRequest.from_config(config), context, reports.append)
        if stop_every and len(reports) > 1 and reports[-1].epoch:
            trained += 1
            if trained % stop_every == 0:
                reports = reports[:1]
        for report in reports:
            searcher.on_trial_result(f"t{index}", report.to_metrics())
        searcher.on_trial_complete(f"t{index}", reports[-1].to_metrics())
    return study


# ---------------------------------------------------------------- a Ray cluster of a test's own


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayCluster:
    """A `ray start` cluster on loopback that belongs to one test: its own temp dir, its own port."""

    temp: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    """The environment to run nasconv in: Ray finds this cluster's files (and only these) here."""

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start_node(self, *args: str, head: bool = False) -> subprocess.CompletedProcess:
        ray = str(Path(sys.executable).with_name("ray"))
        where = [f"--port={self.port}", "--include-dashboard=false"] if head else [f"--address={self.address}"]
        return subprocess.run(
            [ray, "start", *(["--head"] if head else []), *where, f"--node-ip-address={LOOPBACK}",
             "--disable-usage-stats", f"--temp-dir={self.temp}/ray", *args],
            capture_output=True, text=True, env=self.env, timeout=120,
        )  # fmt: skip

    def processes(self) -> set[int]:
        """The processes of this cluster: those whose command line names its temp dir or its GCS
        address, and everything they started (Ray's agents and workers retitle themselves)."""
        parents: dict[int, int] = {}
        roots: set[int] = set()
        marks = (self.temp.encode(), self.address.encode())
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if any(mark in cmdline for mark in marks):
                roots.add(int(entry.name))
        found, frontier = set(roots), set(roots)
        while frontier:
            frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
            found |= frontier
        return found

    def stop(self, grace_s: float = 10.0) -> set[int]:
        """Ends this cluster's processes (never another Ray on the machine); returns any left alive."""
        pids = self.processes()
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                pids = {pid for pid in pids if _alive(pid)}
                time.sleep(0.2)
            pids |= self.processes()  # anything started meanwhile
            if not pids:
                break
        return pids


LOOPBACK = "127.0.0.2"  # Ray rewrites 127.0.0.1 to the machine's outward address; this keeps every byte local


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@contextlib.contextmanager
def ray_cluster(*args: str, workers: int = 0, env: dict[str, str] | None = None) -> Iterator[RayCluster]:
    """A loopback Ray cluster for one test: a head node started with ``args`` (``--num-cpus=1``, ...)
    and ``workers`` more nodes like it. Its files live in a short temp dir of its own (Unix socket
    paths must stay under 107 characters), also set as ``RAY_TMPDIR`` in ``cluster.env`` so that a
    plain ``ray.init()`` run there finds this cluster as it would find one ``ray start`` left on a
    machine. On exit only this cluster's processes are ended (``ray stop`` would end every Ray on
    the machine, other people's included) and the temp dir is removed."""
    temp = tempfile.mkdtemp(prefix="nr", dir="/tmp")
    cluster = RayCluster(temp, free_port(), {**os.environ, **(env or {}), "RAY_TMPDIR": temp})
    cluster.env.pop("RAY_ADDRESS", None)
    try:
        head = cluster.start_node(*args, head=True)
        assert head.returncode == 0, head.stderr[-2000:]
        for _ in range(workers):
            node = cluster.start_node(*args)
            assert node.returncode == 0, node.stderr[-2000:]
        yield cluster
    finally:
        left = cluster.stop()
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"processes of the test's Ray cluster still alive: {sorted(left)}"
