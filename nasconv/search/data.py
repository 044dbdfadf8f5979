"""Datasets, all read from local files or from packages (nothing is downloaded).

``load_data(spec, channels, size)`` returns in-memory tensors already resized to the space's
input, normalised, and split into a fixed, seeded train/validation split: search accuracy is
always validation accuracy. Loaded data is cached per process, so a Ray worker that runs many
trials loads its dataset once.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import NasconvError
from .space import DatasetSpec, SpaceSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: int
    name: str


def _digits(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    # read scikit-learn's bundled file directly: importing sklearn costs a worker process over a second
    package = importlib.util.find_spec("sklearn")
    path = Path(package.origin).parent / "datasets" / "data" / "digits.csv.gz" if package and package.origin else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        return table[:, :-1].reshape(-1, 1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32)[:, None], bunch.target.astype(np.int64)


def _synthetic(spec: DatasetSpec, classes: int, channels: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable toy data: one smooth random template per class plus noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(classes, channels, 4, 4)).astype(np.float32)
    templates = F.interpolate(torch.from_numpy(coarse), size=(size, size), mode="bilinear", align_corners=False)
    y = rng.integers(0, classes, size=spec.samples)
    noise = rng.normal(scale=0.8, size=(spec.samples, channels, size, size)).astype(np.float32)
    return templates.numpy()[y] + noise, y.astype(np.int64)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickles: allow numpy arrays and builtin containers, nothing else."""

    def find_class(self, module: str, name: str) -> type:
        if module.split(".")[0] == "numpy" or (module == "builtins" and name in {"dict", "list", "bytes", "str"}):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _cifar10(root: Path) -> tuple[np.ndarray, np.ndarray]:
    batches = sorted(root.glob("data_batch_*"))
    if not batches:
        sub = root / "cifar-10-batches-py"
        batches = sorted(sub.glob("data_batch_*"))
    if not batches:
        raise NasconvError(f"cifar10: no data_batch_* files in {root} (expected the python-batches format)")
    xs, ys = [], []
    for path in batches:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise NasconvError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    raise NasconvError(f"expected {stem}[.gz] in {root}")


def _idx(root: Path) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(_find(root, "train-images-idx3-ubyte"))
    labels = _read_idx(_find(root, "train-labels-idx1-ubyte"))
    return images.astype(np.float32)[:, None], labels.astype(np.int64)


def _imagefolder(root: Path, channels: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise NasconvError(f"imagefolder: {root} needs one sub-folder per class (found {len(classes)})")
    xs, ys = [], []
    for label, folder in enumerate(classes):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(path) as image:
                    converted = image.convert("L" if channels == 1 else "RGB").resize((size, size))
                    arr = np.asarray(converted, dtype=np.float32)
                xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
                ys.append(label)
    if not xs:
        raise NasconvError(f"imagefolder: no images under {root}")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        if "x" not in f or "y" not in f:
            raise NasconvError(f"{path}: an npz dataset needs arrays 'x' and 'y' (found {', '.join(f.files)})")
        x, y = f["x"].astype(np.float32), f["y"].astype(np.int64)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or len(x) != len(y):
        raise NasconvError(f"{path}: x must be (N, H, W), (N, C, H, W) or (N, H, W, C) with len(y) == N")
    return x, y


def _to_input(x: np.ndarray, channels: int, size: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.shape[1] != channels:
        if t.shape[1] == 1:
            t = t.expand(-1, channels, -1, -1)
        elif channels == 1:
            t = t.mean(1, keepdim=True)
        else:
            raise NasconvError(f"dataset has {t.shape[1]} channels; the space's input wants {channels}")
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t.contiguous()


def check_available(spec: DatasetSpec) -> None:
    """Fail fast (before any trial starts) if a dataset's local files are missing."""
    if spec.name not in ("digits", "synthetic"):
        path = Path(spec.path or "").expanduser()
        if not path.exists():
            raise NasconvError(f"dataset {spec.name}: {path} does not exist (nasconv reads local files only)")


def _raw(spec: DatasetSpec, classes: int, channels: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if spec.name == "digits":
        return _digits(spec)
    if spec.name == "synthetic":
        return _synthetic(spec, classes, channels, size, seed)
    check_available(spec)
    path = Path(spec.path or "").expanduser()
    if spec.name == "cifar10":
        return _cifar10(path)
    if spec.name in ("mnist", "fashion-mnist"):
        return _idx(path)
    if spec.name == "imagefolder":
        return _imagefolder(path, channels, size)
    return _npz(path)


@functools.lru_cache(maxsize=4)
def load_data(
    spec: DatasetSpec, classes: int, channels: int, size: int, val_fraction: float = 0.2, seed: int = 0
) -> Data:
    """Load, resize, normalise and split a dataset (cached per process)."""
    x, y = _raw(spec, classes, channels, size, seed)
    if y.min() < 0 or y.max() >= classes:
        raise NasconvError(
            f"dataset {spec.name}: labels span {y.min()}..{y.max()} but the space says {classes} classes"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_val = max(1, int(round(len(y) * val_fraction)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if spec.max_samples is not None:
        train_idx = train_idx[: spec.max_samples]
    if len(train_idx) < 1:
        raise NasconvError(f"dataset {spec.name}: too few samples ({len(y)}) for a train/validation split")
    xt = _to_input(x, channels, size)
    mean, std = xt[train_idx].mean(), xt[train_idx].std().clamp_min(1e-6)
    xt = (xt - mean) / std
    yt = torch.from_numpy(y)
    tr, va = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return Data(xt[tr].contiguous(), yt[tr], xt[va].contiguous(), yt[va], classes, spec.name)


def space_data(spec: SpaceSpec) -> Data:
    """The dataset a space names, at its input size, split by its training settings (cached)."""
    return load_data(
        spec.dataset, spec.classes, spec.input.channels, spec.input.size, spec.training.val_fraction, spec.training.seed
    )
