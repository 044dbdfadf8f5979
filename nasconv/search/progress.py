"""The search's progress display: a live bar on a terminal, a plain line now and then otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from .searcher import Counters


def status_line(c: Counters) -> str:
    elapsed = time.monotonic() - c.started
    eta = f"{elapsed / c.done * (c.target - c.done):.0f}s" if c.done else "?"
    return (
        f"{c.done}/{c.target} trained, {c.running} running, {c.failed} failed, {c.infeasible} infeasible, "
        f"{c.stopped} stopped early, {c.repeats} repeats answered from the record, Pareto {c.pareto}, "
        f"elapsed {elapsed:.0f}s, ETA {eta}"
    )


class Progress:
    def __init__(self, counters: Counters, enabled: bool, *, interval_s: float = 15.0) -> None:
        self.c = counters
        self.enabled = enabled
        self.interval_s = interval_s
        self.last_plain = 0.0
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("search"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                transient=False,
            )
            self.task = self.bar.add_task("", total=counters.target)
            self.bar.start()

    def update(self) -> None:
        c = self.c
        if self.bar is not None:
            self.bar.update(
                self.task,
                completed=c.done,
                description=f"run {c.running} fail {c.failed} infeas {c.infeasible} repeat {c.repeats} "
                f"pareto {c.pareto}",
            )
        elif self.enabled and time.monotonic() - self.last_plain > self.interval_s:
            self.last_plain = time.monotonic()
            print("nasconv: " + status_line(c), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
