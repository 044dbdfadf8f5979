"""The dataset cache: a dataset read from files is converted once, at the space's input channels
and size, into ``.npy`` files (uint8 images; float32 only for an npz of non-uint8 values) that
every process of a node memory-maps. The page cache then holds one copy, shared by all trial
workers, read batch by batch; no JPEG is decoded again for another trial.

Folder: ``$NASCONV_CACHE``, else ``$XDG_CACHE_HOME/nasconv``, else ``~/.cache/nasconv``. One entry
per dataset path, channels and size, named ``<dataset>-<path digest>-<C>x<S>px-<content digest>``,
where the content digest covers every source file's name, size and modification time: a changed
file gives a new entry, and the stale one is removed. An entry is built in a temporary folder and
renamed into place under a file lock, so processes that race wait for one build and then map it;
the temporary folder of a build that was killed is removed when the cache is next built.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import NasconvError
from .sources import ArraySplit, FolderSplit, Source, decode_image, fit_images

CACHE_ENV = "NASCONV_CACHE"
FORMAT = 1
CHUNK = 1024
"""Images converted at a time while building (bounds the build's memory)."""
PROGRESS_FROM = 2000
"""Builds of fewer images show no progress bar."""


@dataclass(frozen=True)
class CachedSplit:
    x: np.ndarray
    """(N, C, H, W) images, memory-mapped copy-on-write: shared with every other process mapping them."""
    y: np.ndarray


@dataclass(frozen=True)
class CacheEntry:
    folder: Path
    splits: dict[str, CachedSplit]
    classes: tuple[str, ...] | None
    built_seconds: float | None
    """Seconds this call spent building the entry; None when it mapped an existing one."""


class _Corrupt(Exception):
    pass


def cache_root() -> Path:
    """Where dataset caches live (``NASCONV_CACHE`` moves it)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nasconv"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _fingerprint(source: Source) -> list[tuple[str, int, int]]:
    out = []
    for path in source.files:
        try:
            st = path.stat()
        except OSError as exc:
            raise NasconvError(f"{path}: cannot read this dataset file ({exc.strerror})") from None
        name = str(path.relative_to(source.path)) if source.path.is_dir() else path.name
        out.append((name, st.st_size, st.st_mtime_ns))
    return out


def entry_prefix(source: Source, channels: int, size: int) -> str:
    return f"{source.name}-{_digest(str(source.path))[:8]}-{channels}x{size}px-"


def entry_name(source: Source, channels: int, size: int) -> str:
    """The entry's folder name: changes whenever a source file's size or modification time does."""
    content = _digest([FORMAT, source.name, str(source.path), channels, size, _fingerprint(source)])
    return entry_prefix(source, channels, size) + content[:16]


def _open(folder: Path) -> CacheEntry | None:
    meta_path = folder / "meta.json"
    if not folder.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise _Corrupt(f"format {meta.get('format')}")
        splits = {}
        for name, info in meta["splits"].items():
            x = np.load(folder / f"{name}_x.npy", mmap_mode="c")
            y = np.load(folder / f"{name}_y.npy")
            if len(x) != info["count"] or len(y) != info["count"] or x.dtype.name != info["dtype"]:
                raise _Corrupt(f"{name} does not match meta.json")
            splits[name] = CachedSplit(x, y)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _Corrupt(str(exc)) from None
    classes = meta.get("classes")
    return CacheEntry(folder, splits, tuple(classes) if classes else None, None)


@contextlib.contextmanager
def _bar(total: int, enabled: bool, what: str) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def _decode_all(
    files: tuple[Path, ...], out: np.ndarray, channels: int, size: int, step: Callable[[int], None]
) -> None:
    """Decode every file into ``out`` in order, on threads (Pillow releases the GIL while decoding)."""
    pool = ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1))
    try:
        for i, image in enumerate(pool.map(decode_image, files, repeat(channels), repeat(size))):
            out[i] = image
            step(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _build(source: Source, channels: int, size: int, into: Path, progress: bool) -> None:
    splits = source.read()
    if any(isinstance(s, FolderSplit) for s in splits.values()) and channels not in (1, 3):
        raise NasconvError(f"{source.name}: images decode as grey or RGB; the space's input wants {channels} channels")
    total = sum(len(s) for s in splits.values())
    info: dict[str, dict[str, Any]] = {}
    what = f"caching {source.name} at {channels}x{size}x{size}"
    with _bar(total, progress and total >= PROGRESS_FROM, what) as step:
        for name, split in splits.items():
            if len(split) == 0:
                raise NasconvError(f"{source.path}: the {name} split holds no images")
            as_float = isinstance(split, ArraySplit) and split.x.dtype != np.uint8
            dtype = np.float32 if as_float else np.uint8
            shape = (len(split), channels, size, size)
            out = np.lib.format.open_memmap(into / f"{name}_x.npy", mode="w+", dtype=dtype, shape=shape)
            if isinstance(split, ArraySplit):
                for begin in range(0, len(split), CHUNK):
                    chunk = split.x[begin : begin + CHUNK]
                    out[begin : begin + len(chunk)] = fit_images(chunk, channels, size, dtype)
                    step(len(chunk))
            else:
                _decode_all(split.files, out, channels, size, step)
            out.flush()
            del out
            np.save(into / f"{name}_y.npy", np.ascontiguousarray(split.y, dtype=np.int64))
            info[name] = {"count": len(split), "dtype": np.dtype(dtype).name}
    meta = {
        "format": FORMAT,
        "dataset": source.name,
        "path": str(source.path),
        "channels": channels,
        "size": size,
        "files": len(source.files),
        "splits": info,
        "classes": list(source.classes) if source.classes else None,
    }
    (into / "meta.json").write_text(json.dumps(meta, indent=1))


BUILD_PREFIX = ".build-"


def _remove_abandoned_builds(root: Path, holding: str) -> list[Path]:
    """Delete the temporary folders of builds that no process is running any more (a build killed
    before its rename leaves one behind, as large as the entry). A build holds its entry's lock
    while its folder exists, and the lock is released when its process dies: a folder whose lock
    can be taken at once is abandoned. ``holding`` is the entry whose lock the caller holds."""
    from filelock import FileLock, Timeout

    removed = []
    for folder in root.glob(BUILD_PREFIX + "*"):
        parts = folder.name[len(BUILD_PREFIX) :].rsplit("-", 2)
        if len(parts) != 3 or not folder.is_dir():
            continue
        entry = parts[0]
        if entry == holding:  # the caller holds this entry's lock: nobody else is building it
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            continue
        try:
            with FileLock(str(root / f".{entry}.lock"), timeout=0):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        except (Timeout, OSError):  # being built now (or the lock cannot be taken here): leave it
            continue
    return removed


def open_cache(source: Source, channels: int, size: int, *, progress: bool = False) -> CacheEntry:
    """Map the cache entry of ``source`` at ``channels`` x ``size``, building it first if it is
    missing, stale or damaged (once per node: concurrent callers wait on a file lock)."""
    from filelock import FileLock

    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NasconvError(f"dataset cache {root}: cannot create it ({exc.strerror}); set {CACHE_ENV}") from None
    name = entry_name(source, channels, size)
    folder = root / name
    with contextlib.suppress(_Corrupt):
        entry = _open(folder)
        if entry is not None:
            return entry
    try:
        with FileLock(str(root / f".{name}.lock")):
            try:
                entry = _open(folder)
            except _Corrupt:
                entry = None
                shutil.rmtree(folder, ignore_errors=True)
            if entry is not None:
                return entry
            start = time.perf_counter()
            _remove_abandoned_builds(root, name)
            building = root / f".build-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            building.mkdir()
            try:
                _build(source, channels, size, building, progress)
                os.rename(building, folder)
            finally:
                shutil.rmtree(building, ignore_errors=True)
            prefix = entry_prefix(source, channels, size)
            for stale in root.glob(prefix + "*"):
                if stale.name != name and stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
            seconds = time.perf_counter() - start
    except OSError as exc:
        raise NasconvError(f"dataset cache {root}: {exc.strerror or exc} (set {CACHE_ENV} to move it)") from None
    try:
        entry = _open(folder)
    except _Corrupt as exc:
        raise NasconvError(f"dataset cache {folder}: unreadable right after building it ({exc})") from None
    assert entry is not None
    return CacheEntry(entry.folder, entry.splits, entry.classes, seconds)
