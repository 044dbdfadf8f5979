"""The dataset formats nasconv reads from local files: which files a dataset is made of (cheap, for
the pre-flight check and the cache key) and its splits as arrays or as image files to decode.

A split is ``train`` (the pool the training and validation samples are drawn from), ``test`` (the
dataset's own test split, never seen by the search) and, for an image folder with both ``val/`` and
``test/``, ``val``. Every unreadable or malformed file is a :class:`NasconvError` naming it.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import NasconvError
from ..space import DATASETS, EMBEDDED_DATASETS, DatasetSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
FILE_DATASETS = tuple(name for name in DATASETS if name not in EMBEDDED_DATASETS)

# what a broken file raises while it is read: each becomes a NasconvError naming the file
_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    struct.error,
    zlib.error,
    zipfile.BadZipFile,
)


@dataclass(frozen=True)
class ArraySplit:
    """Images already in memory at their native size: x is (N, C, H, W), uint8 or float32."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class FolderSplit:
    """Image files to decode, one label each."""

    files: tuple[Path, ...]
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


SplitSource = ArraySplit | FolderSplit


@dataclass(frozen=True)
class Source:
    """A dataset on disk: its files (whose sizes and times key the cache) and how to read its splits."""

    name: str
    path: Path
    files: tuple[Path, ...]
    read: Callable[[], dict[str, SplitSource]]
    classes: tuple[str, ...] | None = None


def _unreadable(path: Path, exc: BaseException) -> NasconvError:
    detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return NasconvError(f"{path}: cannot read this dataset file ({type(exc).__name__}: {detail})")


# ---------------------------------------------------------------- CIFAR-10 (python batches)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickles: allow numpy arrays and builtin containers, nothing else."""

    def find_class(self, module: str, name: str) -> type:
        if module.split(".")[0] == "numpy" or (module == "builtins" and name in {"dict", "list", "bytes", "str"}):
            return super().find_class(module, name)  # type: ignore[no-any-return]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise NasconvError(f"{path}: {exc}") from None
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from None
    if not isinstance(batch, dict):
        raise NasconvError(f"{path}: not a CIFAR-10 python batch (a pickled dict with data and labels)")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    try:
        x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (ValueError, TypeError):
        raise NasconvError(f"{path}: 'data' must be N x 3072 bytes and 'labels' N integers") from None
    if len(x) != len(y):
        raise NasconvError(f"{path}: {len(x)} images but {len(y)} labels")
    return x, y


def _cifar10(root: Path) -> Source:
    folder = root
    if not sorted(root.glob("data_batch_*")) and (root / "cifar-10-batches-py").is_dir():
        folder = root / "cifar-10-batches-py"
    batches = tuple(sorted(folder.glob("data_batch_*")))
    if not batches:
        raise NasconvError(f"cifar10: no data_batch_* files in {root} (expected the python-batches format)")
    test = folder / "test_batch"

    def read() -> dict[str, SplitSource]:
        parts = [_cifar_batch(p) for p in batches]
        splits: dict[str, SplitSource] = {
            "train": ArraySplit(np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
        }
        if test.is_file():
            splits["test"] = ArraySplit(*_cifar_batch(test))
        return splits

    return Source("cifar10", root, batches + ((test,) if test.is_file() else ()), read)


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise NasconvError(f"{path}: not an unsigned-byte IDX file")
        dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from None


def _find_idx(root: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def _idx_pair(root: Path, prefix: str, *, required: bool) -> tuple[Path, Path] | None:
    images = _find_idx(root, f"{prefix}-images-idx3-ubyte")
    labels = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    if images and labels:
        return images, labels
    if images or labels or required:
        missing = f"{prefix}-labels-idx1-ubyte" if images else f"{prefix}-images-idx3-ubyte"
        raise NasconvError(f"expected {missing}[.gz] in {root}")
    return None


def _idx_split(images: Path, labels: Path) -> ArraySplit:
    x, y = _read_idx(images), _read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise NasconvError(f"{images}: images {x.shape} and labels {y.shape} in {labels.name} do not match")
    return ArraySplit(x[:, None], y.astype(np.int64))


def _idx(name: str, root: Path) -> Source:
    train = _idx_pair(root, "train", required=True)
    test = _idx_pair(root, "t10k", required=False)
    assert train is not None

    def read() -> dict[str, SplitSource]:
        splits: dict[str, SplitSource] = {"train": _idx_split(*train)}
        if test:
            splits["test"] = _idx_split(*test)
        return splits

    return Source(name, root, train + (test or ()), read)


# ---------------------------------------------------------------- image folders


def _images_under(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found += [Path(dirpath) / n for n in sorted(filenames) if Path(n).suffix.lower() in IMAGE_SUFFIXES]
    return found


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def _imagefolder(root: Path) -> Source:
    if not root.is_dir():
        raise NasconvError(f"imagefolder: {root} is not a folder")
    layout = {name: root / name for name in ("train", "val", "test") if (root / name).is_dir()}
    others = [p for p in _class_folders(root) if p.name not in layout and not p.name.startswith(".")]
    if "train" in layout and ("val" in layout or "test" in layout or not others):
        # train/ with val/ and test/: the three splits; with only one of them, that one is the test split;
        # train/ alone: no test split (a ROOT holding train/ beside other folders is a folder per class)
        roles = {"train": layout["train"]}
        if "val" in layout or "test" in layout:
            roles["test"] = layout["test"] if "test" in layout else layout["val"]
        if "val" in layout and "test" in layout:
            roles["val"] = layout["val"]
    else:
        roles = {"train": root}
    classes = [p.name for p in _class_folders(roles["train"])]
    if len(classes) < 2:
        raise NasconvError(f"imagefolder: {roles['train']} needs one sub-folder per class (found {len(classes)})")
    label_of = {name: i for i, name in enumerate(classes)}
    listing: dict[str, tuple[tuple[Path, ...], np.ndarray]] = {}
    for role, folder in roles.items():
        files: list[Path] = []
        labels: list[int] = []
        for sub in _class_folders(folder):
            if sub.name not in label_of:
                raise NasconvError(f"imagefolder: {sub} is not a class of {roles['train']} ({', '.join(classes)})")
            images = _images_under(sub)
            files += images
            labels += [label_of[sub.name]] * len(images)
        if not files:
            raise NasconvError(f"imagefolder: no images under {folder}")
        listing[role] = (tuple(files), np.asarray(labels, dtype=np.int64))

    def read() -> dict[str, SplitSource]:
        return {role: FolderSplit(files, y) for role, (files, y) in listing.items()}

    every = tuple(f for files, _ in listing.values() for f in files)
    return Source("imagefolder", root, every, read, classes=tuple(classes))


def decode_image(path: Path, channels: int, size: int) -> np.ndarray:
    """One image file as (channels, size, size) uint8, channels 1 (grey) or 3 (RGB), resized with
    antialiasing (the whole image: no crop)."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as image:
            image.draft(mode, (size, size))  # JPEG: decode at the smallest DCT scale still >= size
            resized = image.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(resized, dtype=np.uint8)
    except (*_READ_ERRORS, SyntaxError, Image.DecompressionBombError) as exc:
        raise NasconvError(f"{path}: cannot decode this image ({type(exc).__name__}: {exc})") from None
    return np.ascontiguousarray(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))


# ---------------------------------------------------------------- npz


def _npz_images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4:
        raise NasconvError(f"{path}: {key} must be (N, H, W), (N, C, H, W) or (N, H, W, C), not {x.shape}")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer) and x.size and x.min() >= 0 and x.max() <= 255:
        return x.astype(np.uint8)
    return x.astype(np.float32)  # arbitrary values (already normalised, not images): kept as they are


def _npz(path: Path) -> Source:
    if not path.is_file():
        raise NasconvError(f"npz: {path} is not a file")

    def read() -> dict[str, SplitSource]:
        try:
            with np.load(path, allow_pickle=False) as f:
                files = set(f.files)
                if not {"x", "y"} <= files:
                    raise NasconvError(f"{path}: an npz dataset needs arrays 'x' and 'y' (found {', '.join(f.files)})")
                if ("x_test" in files) != ("y_test" in files):
                    raise NasconvError(f"{path}: x_test and y_test come together (found only one of them)")
                arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test") if k in files}
        except NasconvError:
            raise
        except ValueError as exc:
            if "pickled" in str(exc):  # numpy's answer to a file that is neither npz nor npy
                raise NasconvError(f"{path}: not an npz archive (numpy.savez writes one)") from None
            raise _unreadable(path, exc) from None
        except _READ_ERRORS as exc:
            raise _unreadable(path, exc) from None
        splits: dict[str, SplitSource] = {}
        for split, (xk, yk) in {"train": ("x", "y"), "test": ("x_test", "y_test")}.items():
            if xk not in arrays:
                continue
            x = _npz_images(path, xk, arrays[xk])
            y = arrays[yk]
            if y.ndim != 1 or len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
                raise NasconvError(f"{path}: {yk} must hold one integer label per image of {xk} ({len(x)})")
            splits[split] = ArraySplit(x, y.astype(np.int64))
        return splits

    return Source("npz", path, (path,), read)


def locate(spec: DatasetSpec) -> Source:
    """The files of a dataset read from disk, checked to exist (nothing is decoded yet)."""
    if spec.name not in FILE_DATASETS:
        raise NasconvError(f"dataset {spec.name} is not read from files")
    path = Path(spec.path or "").expanduser()
    if not path.exists():
        raise NasconvError(f"dataset {spec.name}: {path} does not exist (nasconv reads local files only)")
    path = path.resolve()
    if spec.name == "cifar10":
        return _cifar10(path)
    if spec.name in ("mnist", "fashion-mnist"):
        return _idx(spec.name, path)
    if spec.name == "imagefolder":
        return _imagefolder(path)
    return _npz(path)


# ---------------------------------------------------------------- to the space's input


def fit_images(x: np.ndarray, channels: int, size: int, dtype: type[np.generic] = np.uint8) -> np.ndarray:
    """Images (N, C, H, W) as the space's input: ``channels`` (grey replicated, or colour averaged to
    grey), ``size`` x ``size`` (bilinear, antialiased), stored as ``dtype`` (uint8 rounds once, at the
    end). Images already in shape and type are passed through untouched."""
    import torch
    import torch.nn.functional as F

    if x.shape[1] not in (1, channels) and channels != 1:
        raise NasconvError(f"dataset has {x.shape[1]} channels; the space's input wants {channels}")
    if x.shape[1:] == (channels, size, size) and x.dtype == dtype:
        return x
    x = np.ascontiguousarray(x) if x.flags.writeable else x.copy()  # torch refuses read-only buffers
    t = torch.from_numpy(x).float()
    if t.shape[1] != channels:
        t = t.expand(-1, channels, -1, -1) if t.shape[1] == 1 else t.mean(1, keepdim=True)
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if dtype == np.uint8:
        t = t.round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(t.numpy().astype(dtype, copy=False))
