"""Datasets as nasconv trains on them: stored small, split three ways, normalised per batch.

``load_data(spec, classes, channels, size, val_fraction, seed)`` returns a :class:`Data` whose
images are stored at the space's input size as uint8 (float32 only for synthetic data and for an
npz of values that are not uint8): a quarter of float32. Datasets read from files are memory-mapped
from the node's dataset cache (:mod:`nasconv.search.data.cache`), so every worker process of a node
shares one copy; the small embedded ones (digits, synthetic) are built in memory.

Splits: ``train`` and ``val`` are a fixed, seeded partition of the training pool (search accuracy is
always validation accuracy); ``test`` is the dataset's own test split where it has one (CIFAR-10
``test_batch``, MNIST ``t10k-*``, an image folder's ``test/`` or ``val/``, an npz's ``x_test``),
never seen by a search. Nothing is copied when splitting: a split is positions into its pool.

Batches are converted to float and normalised per channel, with statistics of the training split,
on the training device. Loaded data is cached per process.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import NasconvError
from ..space import DatasetSpec, SpaceSpec
from .cache import CacheEntry, open_cache
from .sources import FILE_DATASETS, fit_images, locate

STATS_SAMPLES = 10_000
"""Normalisation statistics are taken over at most this many training images (evenly spaced)."""
SPLITS = ("train", "val", "test")


@dataclass(frozen=True, kw_only=True)
class Split:
    """The samples of one split: rows ``index`` of a pool of stored images ``x`` (N, C, H, W) and
    labels ``y`` (N,); all rows when ``index`` is None. Pools are shared, never copied per split."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.y) if self.index is None else len(self.index)

    def positions(self) -> torch.Tensor:
        """The split's rows in its pool."""
        return torch.arange(len(self.y)) if self.index is None else self.index

    @property
    def labels(self) -> torch.Tensor:
        return self.y if self.index is None else self.y[self.index]

    def images(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Stored images of the split's samples ``rows`` (all by default): a copy of those rows only."""
        positions = self.positions() if rows is None else self.positions()[rows]
        return self.x[positions]


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Stored pixel values (any dtype) as normalised float32, on ``x``'s device; ``mean`` and ``std``
    are per channel, already there. The one formula for every storage type."""
    c = x.shape[1]
    return (x.float() - mean.view(1, c, 1, 1)) / std.view(1, c, 1, 1)


@dataclass(frozen=True, kw_only=True)
class Data:
    """A dataset split for training: training, validation and (where the dataset has one) test
    samples, stored compactly; ``mean`` and ``std`` (per channel, in stored units) normalise them."""

    train: Split
    val: Split
    test: Split | None
    classes: int
    name: str
    mean: torch.Tensor
    std: torch.Tensor
    cache: Path | None = None
    """The cache folder the images are memory-mapped from (None: held in this process's memory)."""

    @property
    def dtype(self) -> torch.dtype:
        return self.train.x.dtype

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    def split(self, name: str) -> Split:
        if name == "test" and self.test is None:
            raise NasconvError(f"dataset {self.name} has no test split")
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; known: {', '.join(SPLITS)}")
        return getattr(self, name)  # type: ignore[no-any-return]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(x, self.mean.to(x.device), self.std.to(x.device))

    def batch(
        self, split: str, rows: torch.Tensor, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images and labels of ``rows`` of a split, on ``device``."""
        s = self.split(split)
        positions = s.positions()[rows]
        return self.normalise(s.x[positions].to(device)), s.y[positions].to(device)

    def stored_bytes(self) -> int:
        """Bytes of the stored images (each pool once)."""
        pools = {id(s.x): s.x for s in (self.train, self.val, self.test) if s is not None}
        return sum(x.numel() * x.element_size() for x in pools.values())

    def describe(self) -> str:
        c, h, w = self.input_shape
        counts = f"{len(self.train):,} train / {len(self.val):,} val / " + (
            f"{len(self.test):,} test" if self.test is not None else "no test split"
        )
        where = f"memory-mapped from {self.cache}" if self.cache else "in memory"
        dtype = str(self.dtype).removeprefix("torch.")
        return f"{self.name}: {counts}, {dtype} {c}x{h}x{w} ({self.stored_bytes() / 2**20:,.1f} MiB, {where})"


# ---------------------------------------------------------------- the embedded datasets


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (values 0..16), read from its bundled file: importing sklearn costs
    a worker process over a second."""
    package = importlib.util.find_spec("sklearn")
    path = Path(package.origin).parent / "datasets" / "data" / "digits.csv.gz" if package and package.origin else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        return table[:, :-1].reshape(-1, 1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32)[:, None], bunch.target.astype(np.int64)


def _synthetic(samples: int, classes: int, channels: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable toy data: one smooth random template per class plus noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(classes, channels, 4, 4)).astype(np.float32)
    templates = F.interpolate(torch.from_numpy(coarse), size=(size, size), mode="bilinear", align_corners=False)
    y = rng.integers(0, classes, size=samples)
    noise = rng.normal(scale=0.8, size=(samples, channels, size, size)).astype(np.float32)
    return templates.numpy()[y] + noise, y.astype(np.int64)


# ---------------------------------------------------------------- loading


def check_available(spec: DatasetSpec) -> None:
    """Fail fast (before any trial starts) if a dataset's local files are missing; decodes nothing."""
    if spec.name in FILE_DATASETS:
        locate(spec)


def prepare_data(spec: SpaceSpec, *, progress: bool = True) -> CacheEntry | None:
    """Build the space's dataset cache on this node now (with a progress bar for a long decode), so
    that trials only map it. None for the embedded datasets, which have no cache."""
    if spec.dataset.name not in FILE_DATASETS:
        return None
    return open_cache(locate(spec.dataset), spec.input.channels, spec.input.size, progress=progress)


def _pools(
    spec: DatasetSpec, classes: int, channels: int, size: int, seed: int
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], Path | None]:
    if spec.name == "digits":
        x, y = _digits()
        stored = fit_images(x * np.float32(255 / 16), channels, size, np.uint8)
        return {"train": (torch.from_numpy(stored), torch.from_numpy(y))}, None
    if spec.name == "synthetic":
        x, y = _synthetic(spec.samples, classes, channels, size, seed)
        return {"train": (torch.from_numpy(fit_images(x, channels, size, np.float32)), torch.from_numpy(y))}, None
    entry = open_cache(locate(spec), channels, size)
    pools = {name: (torch.from_numpy(s.x), torch.from_numpy(s.y)) for name, s in entry.splits.items()}
    return pools, entry.folder


def channel_stats(split: Split, samples: int = STATS_SAMPLES, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of a split's stored values (float32, shape (C,)), over
    at most ``samples`` evenly spaced samples. Sums in float64: exact for uint8 values, so a uint8
    pool and its float32 copy get identical statistics."""
    positions = split.positions()
    if len(positions) > samples:
        positions = positions[torch.linspace(0, len(positions) - 1, samples).long()]
    positions = positions.sort().values  # read a memory-mapped pool front to back
    channels = split.x.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for begin in range(0, len(positions), chunk):
        x = split.x[positions[begin : begin + chunk]].to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = len(positions) * split.x.shape[2] * split.x.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.float().clamp_min(1e-6)


def _check_labels(name: str, split: str, y: torch.Tensor, classes: int) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        which = "labels" if split == "train" else f"{split} labels"
        raise NasconvError(
            f"dataset {name}: {which} span {int(y.min())}..{int(y.max())} but the space says {classes} classes"
        )


@functools.lru_cache(maxsize=4)
def load_data(
    spec: DatasetSpec, classes: int, channels: int, size: int, val_fraction: float = 0.2, seed: int = 0
) -> Data:
    """Load (from the node's cache, building it if needed), split and measure a dataset (cached per process)."""
    pools, cache = _pools(spec, classes, channels, size, seed)
    for split, (_, y) in pools.items():
        _check_labels(spec.name, split, y, classes)
    x, y = pools["train"]
    if "val" in pools:  # an image folder's own val/ beside test/
        train_index = torch.arange(len(y))
        val = Split(x=pools["val"][0], y=pools["val"][1])
    else:
        order = np.random.default_rng(seed).permutation(len(y))
        n_val = max(1, int(round(len(y) * val_fraction)))
        train_index = torch.from_numpy(order[n_val:])
        val = Split(x=x, y=y, index=torch.from_numpy(order[:n_val]))
    if spec.max_samples is not None:
        train_index = train_index[: spec.max_samples]
    if len(train_index) < 1:
        raise NasconvError(f"dataset {spec.name}: too few samples ({len(y)}) for a train/validation split")
    train = Split(x=x, y=y, index=train_index)
    test = Split(x=pools["test"][0], y=pools["test"][1]) if "test" in pools else None
    mean, std = channel_stats(train)
    return Data(train=train, val=val, test=test, classes=classes, name=spec.name, mean=mean, std=std, cache=cache)


def space_data(spec: SpaceSpec) -> Data:
    """The dataset a space names, at its input size, split by its training settings (cached)."""
    return load_data(
        spec.dataset, spec.classes, spec.input.channels, spec.input.size, spec.training.val_fraction, spec.training.seed
    )
