from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from nasconv.errors import NasconvError
from nasconv.search.data import load_data
from nasconv.search.space import DatasetSpec, TrainingSpec, load_space, parse_space
from nasconv.search.training import train

from .conftest import SPACES, tiny_space_dict


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NASCONV_CACHE", str(tmp_path_factory.getbasetemp() / "nasconv-cache"))


def test_digits_is_embedded_resized_and_split() -> None:
    data = load_data(DatasetSpec(name="digits"), 10, 1, 16, 0.2, 0)
    assert data.input_shape == (1, 16, 16) and data.dtype == torch.uint8
    assert len(data.train) + len(data.val) == 1797 and data.test is None
    assert abs(len(data.val) - 359) <= 1
    assert int(data.train.images().max()) == 255  # 0..16 scaled to the full uint8 range
    again = load_data(DatasetSpec(name="digits"), 10, 1, 16, 0.2, 0)
    assert again is data  # cached per process
    other = load_data(DatasetSpec(name="digits"), 10, 1, 16, 0.2, 1)
    assert not torch.equal(other.val.labels, data.val.labels)


def test_npz_and_channel_conversion(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 255, size=(50, 12, 12, 3)).astype(np.uint8)
    y = np.arange(50) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_data(DatasetSpec(name="npz", path=str(tmp_path / "d.npz")), 5, 1, 8, 0.2, 0)
    assert data.train.images().shape == (40, 1, 8, 8) and data.dtype == torch.uint8
    with pytest.raises(NasconvError, match="labels span 0..4 but the space says 3 classes"):
        load_data(DatasetSpec(name="npz", path=str(tmp_path / "d.npz")), 3, 1, 8, 0.2, 0)


def test_cifar10_python_batches(tmp_path: Path) -> None:
    import pickle

    rng = np.random.default_rng(0)
    for i in (1, 2):
        batch = {
            b"data": rng.integers(0, 255, size=(20, 3072)).astype(np.uint8),
            b"labels": list(rng.integers(0, 10, 20)),
        }
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    data = load_data(DatasetSpec(name="cifar10", path=str(tmp_path)), 10, 3, 32, 0.25, 0)
    assert data.train.images().shape == (30, 3, 32, 32) and data.val.images().shape == (10, 3, 32, 32)


def test_cifar10_refuses_pickled_code(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Path("x"), b"labels": []}))
    with pytest.raises(Exception, match="refusing to load"):
        load_data(DatasetSpec(name="cifar10", path=str(tmp_path)), 10, 3, 32, 0.25, 0)


def test_mnist_idx_files(tmp_path: Path) -> None:
    import gzip
    import struct

    images = np.random.default_rng(0).integers(0, 255, size=(30, 28, 28)).astype(np.uint8)
    labels = (np.arange(30) % 10).astype(np.uint8)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBB3I", 0, 8, 3, 30, 28, 28) + images.tobytes())
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(struct.pack(">HBBI", 0, 8, 1, 30) + labels.tobytes())
    data = load_data(DatasetSpec(name="mnist", path=str(tmp_path)), 10, 1, 16, 0.2, 0)
    assert data.train.images().shape == (24, 1, 16, 16)


def test_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(4):
            Image.new("RGB", (10, 10), color=(i * 40, 0, 0)).save(tmp_path / label / f"{i}.png")
    data = load_data(DatasetSpec(name="imagefolder", path=str(tmp_path)), 2, 3, 8, 0.25, 0)
    assert len(data.train) == 6 and set(data.train.labels.tolist()) | set(data.val.labels.tolist()) == {0, 1}


def test_missing_dataset_path_says_where(tmp_path: Path) -> None:
    spec = DatasetSpec(name="cifar10", path=str(tmp_path / "nowhere"))
    with pytest.raises(NasconvError, match=r"nowhere does not exist \(nasconv reads local files only\)"):
        load_data(spec, 10, 3, 32, 0.2, 0)


def test_training_learns_and_is_deterministic() -> None:
    space = load_space(SPACES / "digits.yaml")
    spec = space.spec
    data = load_data(spec.dataset, 10, 1, 16, 0.2, 0)
    arch = space.sample(3)
    torch.set_num_threads(1)
    seen = []
    first, _ = train(arch, data, spec.training, epochs=2, on_epoch=seen.append)
    second, _ = train(arch, data, spec.training, epochs=2)
    assert [e.epoch for e in seen] == [1, 2]
    assert first.accuracy > 0.5  # ten classes: chance is 0.1
    assert first.accuracy == second.accuracy and first.loss == second.loss
    assert first.train_seconds > 0 and not first.failed


def test_diverging_run_fails_with_reason_instead_of_raising() -> None:
    space = parse_space(tiny_space_dict())
    data = load_data(space.spec.dataset, 3, 1, 8, 0.2, 0)
    settings = TrainingSpec(lr=1e30, epochs=3, momentum=0.0)
    result, _ = train(space.sample(0), data, settings)
    assert result.failed
    assert "became" in result.reason and "epoch 1" in result.reason


def test_callback_can_stop_training() -> None:
    space = parse_space(tiny_space_dict())
    data = load_data(space.spec.dataset, 3, 1, 8, 0.2, 0)
    result, _ = train(space.sample(0), data, TrainingSpec(epochs=4), on_epoch=lambda e: e.epoch == 2)
    assert result.epochs == 2 and result.stopped


@pytest.mark.parametrize(("samples", "batch"), [(100, 32), (97, 32), (65, 32), (33, 32), (5, 2), (2, 32)])
def test_every_sample_is_trained_once_per_epoch(samples: int, batch: int) -> None:
    from nasconv.search.training import batch_bounds

    bounds = batch_bounds(samples, batch)
    assert bounds[0][0] == 0 and bounds[-1][1] == samples
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous: each sample once
    assert all(end - begin >= 2 for begin, end in bounds)  # no batch of one for BatchNorm


def test_batch_size_one_is_refused_with_the_reason() -> None:
    # issue 9: batch_size 1 used to train a single sample per epoch
    with pytest.raises(NasconvError, match=r"training\.batch_size: must be at least 2 \(BatchNorm"):
        parse_space(tiny_space_dict(training={"batch_size": 1}))


def test_trains_on_every_sample_with_an_odd_remainder() -> None:
    space = parse_space(tiny_space_dict(dataset={"name": "synthetic", "samples": 85}, training={"batch_size": 67}))
    from nasconv.search.data import space_data

    data = space_data(space.spec)
    seen: list[int] = []
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    model.register_forward_pre_hook(lambda m, inputs: seen.append(len(inputs[0])) if m.training else None)
    train(model, data, space.spec.training, epochs=1)
    assert len(data.train) % 67 == 1 and sum(seen) == len(data.train) and min(seen) >= 2


# ---------------------------------------------------------------- files the tests write


def write_cifar(root: Path, batches: int = 2, per_batch: int = 20, test: int = 10) -> Path:
    import pickle

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, batches + 1)] + (["test_batch"] if test else [])
    for name in names:
        n = test if name == "test_batch" else per_batch
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072)).astype(np.uint8),
            b"labels": list(rng.integers(0, 10, n)),
        }
        (root / name).write_bytes(pickle.dumps(batch))
    return root


def write_idx(root: Path, prefix: str, n: int, size: int = 28) -> None:
    import gzip
    import struct

    root.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(n).integers(0, 256, size=(n, size, size)).astype(np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBB3I", 0, 8, 3, n, size, size) + images.tobytes())
    (root / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">HBBI", 0, 8, 1, n) + labels.tobytes())


def write_imagefolder(root: Path, counts: dict[str, int], classes: tuple[str, ...] = ("cat", "dog")) -> Path:
    from PIL import Image

    for split, count in counts.items():
        for label, name in enumerate(classes):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.new("RGB", (12, 10), color=(i * 40, label * 200, 7)).save(folder / f"{i}.png")
    return root


def write_npz(path: Path, n: int = 50, test: int = 0, dtype: type = np.uint8) -> Path:
    rng = np.random.default_rng(1)
    arrays = {"x": rng.integers(0, 256, size=(n, 3, 8, 8)).astype(dtype), "y": np.arange(n) % 4}
    if test:
        arrays |= {"x_test": rng.integers(0, 256, size=(test, 3, 8, 8)).astype(dtype), "y_test": np.arange(test) % 4}
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------- test splits


def test_cifar10_uses_its_test_batch(tmp_path: Path) -> None:
    root = write_cifar(tmp_path / "cifar", test=12)
    data = load_data(DatasetSpec(name="cifar10", path=str(root)), 10, 3, 32, 0.25, 0)
    assert len(data.train) == 30 and len(data.val) == 10 and data.test is not None and len(data.test) == 12
    assert data.dtype == torch.uint8 and data.test.images().dtype == torch.uint8
    no_test = write_cifar(tmp_path / "no-test", test=0)
    assert load_data(DatasetSpec(name="cifar10", path=str(no_test)), 10, 3, 32, 0.25, 0).test is None


def test_idx_uses_t10k_files(tmp_path: Path) -> None:
    write_idx(tmp_path, "train", 30)
    write_idx(tmp_path, "t10k", 8)
    data = load_data(DatasetSpec(name="fashion-mnist", path=str(tmp_path)), 10, 1, 14, 0.2, 0)
    assert len(data.train) == 24 and data.test is not None and data.test.images().shape == (8, 1, 14, 14)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(NasconvError, match="expected t10k-labels-idx1-ubyte"):
        load_data(DatasetSpec(name="mnist", path=str(tmp_path)), 10, 1, 14, 0.2, 0)


def test_imagefolder_train_and_test_folders(tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path / "tt", {"train": 5, "test": 2})
    data = load_data(DatasetSpec(name="imagefolder", path=str(root)), 2, 3, 8, 0.2, 0)
    assert len(data.train) + len(data.val) == 10 and data.test is not None and len(data.test) == 4
    assert sorted(data.test.labels.tolist()) == [0, 0, 1, 1]
    # train/ + val/ only: val/ is the test split, validation is carved from train/
    root = write_imagefolder(tmp_path / "tv", {"train": 5, "val": 3})
    data = load_data(DatasetSpec(name="imagefolder", path=str(root)), 2, 3, 8, 0.2, 0)
    assert data.test is not None and len(data.test) == 6 and len(data.train) + len(data.val) == 10
    # train/ + val/ + test/: the folder's own validation split is used as it is
    root = write_imagefolder(tmp_path / "tvt", {"train": 5, "val": 3, "test": 2})
    data = load_data(DatasetSpec(name="imagefolder", path=str(root)), 2, 1, 8, 0.2, 0)
    assert (len(data.train), len(data.val), len(data.test or [])) == (10, 6, 4)
    assert data.input_shape == (1, 8, 8)


def test_imagefolder_test_class_unknown_to_train(tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path, {"train": 2, "test": 1})
    write_imagefolder(tmp_path, {"test": 1}, classes=("cow",))
    with pytest.raises(NasconvError, match=r"test/cow is not a class of"):
        load_data(DatasetSpec(name="imagefolder", path=str(root)), 2, 3, 8, 0.2, 0)


def test_npz_uses_x_test(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "d.npz", test=6)
    data = load_data(DatasetSpec(name="npz", path=str(path)), 4, 3, 8, 0.2, 0)
    assert data.test is not None and len(data.test) == 6 and data.dtype == torch.uint8
    np.savez(tmp_path / "half.npz", x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) % 2, x_test=np.zeros((2, 8, 8)))
    with pytest.raises(NasconvError, match="half.npz: x_test and y_test come together"):
        load_data(DatasetSpec(name="npz", path=str(tmp_path / "half.npz")), 2, 1, 8, 0.2, 0)


@pytest.mark.parametrize("kind", ["gz", "pickle", "png", "npz"])
def test_corrupt_files_are_named(tmp_path: Path, kind: str) -> None:
    if kind == "gz":
        write_idx(tmp_path, "train", 10)
        gz = tmp_path / "train-images-idx3-ubyte.gz"
        gz.write_bytes(gz.read_bytes()[:40])
        spec, bad = DatasetSpec(name="mnist", path=str(tmp_path)), gz
    elif kind == "pickle":
        write_cifar(tmp_path)
        bad = tmp_path / "data_batch_2"
        bad.write_bytes(b"\x80\x04garbage")
        spec = DatasetSpec(name="cifar10", path=str(tmp_path))
    elif kind == "png":
        write_imagefolder(tmp_path, {"": 3})
        bad = tmp_path / "dog" / "1.png"
        bad.write_bytes(b"not an image")
        spec = DatasetSpec(name="imagefolder", path=str(tmp_path))
    else:
        bad = tmp_path / "d.npz"
        bad.write_bytes(b"PK\x03\x04 truncated zip")
        spec = DatasetSpec(name="npz", path=str(bad))
    with pytest.raises(NasconvError, match=str(bad.name)) as caught:
        load_data(spec, 10, 3, 8, 0.2, 0)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- the cache


def test_cache_is_built_once_mapped_after_and_rebuilt_when_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from nasconv.search.data import locate, open_cache

    monkeypatch.setenv("NASCONV_CACHE", str(tmp_path / "cache"))
    root = write_cifar(tmp_path / "cifar", test=4)
    spec = DatasetSpec(name="cifar10", path=str(root))
    first = open_cache(locate(spec), 3, 16)
    assert first.built_seconds is not None and first.folder.parent == tmp_path / "cache"
    x = first.splits["train"].x
    assert isinstance(x, np.memmap) and x.dtype == np.uint8 and x.shape == (40, 3, 16, 16)
    stamp = (first.folder / "train_x.npy").stat().st_mtime_ns
    second = open_cache(locate(spec), 3, 16)
    assert second.built_seconds is None and second.folder == first.folder  # mapped, not rebuilt
    assert (second.folder / "train_x.npy").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(second.splits["train"].x, x)
    # a changed file (same size, new time) gives a new entry; the stale one is removed
    batch = root / "data_batch_1"
    os.utime(batch, ns=(batch.stat().st_atime_ns, batch.stat().st_mtime_ns + 10**9))
    third = open_cache(locate(spec), 3, 16)
    assert third.built_seconds is not None and third.folder != first.folder and not first.folder.exists()
    # so does a new size
    write_cifar(root, per_batch=21, test=4)
    fourth = open_cache(locate(spec), 3, 16)
    assert fourth.folder != third.folder and len(fourth.splits["train"].x) == 42
    # another input size is another entry, beside it
    assert open_cache(locate(spec), 3, 8).folder != fourth.folder and fourth.folder.exists()


def test_damaged_cache_entry_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nasconv.search.data import locate, open_cache

    monkeypatch.setenv("NASCONV_CACHE", str(tmp_path / "cache"))
    source = locate(DatasetSpec(name="npz", path=str(write_npz(tmp_path / "d.npz"))))
    entry = open_cache(source, 3, 8)
    (entry.folder / "train_x.npy").write_bytes(b"junk")
    again = open_cache(source, 3, 8)
    assert again.built_seconds is not None and again.splits["train"].x.shape == (50, 3, 8, 8)


def test_racing_processes_build_one_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from nasconv.search.data import locate, open_cache

    monkeypatch.setenv("NASCONV_CACHE", str(tmp_path / "cache"))
    source = locate(DatasetSpec(name="imagefolder", path=str(write_imagefolder(tmp_path / "img", {"": 20}))))
    with ThreadPoolExecutor(4) as pool:
        entries = list(pool.map(lambda _: open_cache(source, 3, 8), range(4)))
    assert len({e.folder for e in entries}) == 1
    assert sum(e.built_seconds is not None for e in entries) == 1
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == [entries[0].folder.name]


def test_file_datasets_share_one_memory_mapped_pool(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "d.npz", n=40, test=5)
    data = load_data(DatasetSpec(name="npz", path=str(path)), 4, 3, 8, 0.25, 0)
    assert data.cache is not None and data.cache.is_dir()
    assert data.train.x.data_ptr() == data.val.x.data_ptr()  # one pool, split by positions, never copied
    assert data.stored_bytes() == 45 * 3 * 8 * 8  # uint8: one byte a value
    assert "memory-mapped" in data.describe()


# ---------------------------------------------------------------- uint8 storage, normalisation


def test_uint8_path_equals_float_path(tmp_path: Path) -> None:
    from nasconv.search.data import fit_images

    as_bytes = load_data(DatasetSpec(name="npz", path=str(write_npz(tmp_path / "u.npz"))), 4, 3, 8, 0.2, 0)
    as_float = load_data(DatasetSpec(name="npz", path=str(write_npz(tmp_path / "f.npz", dtype=np.float32))), 4, 3, 8)
    assert as_bytes.dtype == torch.uint8 and as_float.dtype == torch.float32
    assert torch.equal(as_bytes.mean, as_float.mean) and torch.equal(as_bytes.std, as_float.std)
    rows = torch.arange(len(as_bytes.train))
    xb, yb = as_bytes.batch("train", rows)
    xf, yf = as_float.batch("train", rows)
    assert xb.dtype == torch.float32 and torch.equal(xb, xf) and torch.equal(yb, yf)  # the same formula, exactly
    assert xb.mean(dim=(0, 2, 3)).abs().max() < 1e-5 and (xb.std(dim=(0, 2, 3)) - 1).abs().max() < 0.02
    # quantising a resized image to uint8 costs at most half a level
    x = np.random.default_rng(0).uniform(0, 255, size=(6, 3, 8, 8)).astype(np.float32)
    error = fit_images(x, 3, 13, np.uint8).astype(np.float32) - fit_images(x, 3, 13, np.float32)
    assert np.abs(error).max() <= 0.5 + 1e-4
    # and training on either is the same run
    space = parse_space(tiny_space_dict(input={"channels": 3, "size": 8}, classes=4))
    first, _ = train(space.sample(1), as_bytes, space.spec.training, epochs=1)
    second, _ = train(space.sample(1), as_float, space.spec.training, epochs=1)
    assert first.accuracy == second.accuracy and first.loss == second.loss


# ---------------------------------------------------------------- augmentation


def test_augmentation_is_seeded_and_flips_and_crops() -> None:
    from nasconv.search.data import Draws, augment, draw

    assert draw("none", 8, torch.Generator().manual_seed(0)) is None
    a = draw("crop-flip", 64, torch.Generator().manual_seed(3))
    b = draw("crop-flip", 64, torch.Generator().manual_seed(3))
    c = draw("crop-flip", 64, torch.Generator().manual_seed(4))
    assert a is not None and b is not None and c is not None and a.shift is not None and b.shift is not None
    assert torch.equal(a.flip, b.flip) and torch.equal(a.shift, b.shift) and not torch.equal(a.flip, c.flip)
    assert 0 < int(a.flip.sum()) < 64 and int(a.shift.min()) == 0 and int(a.shift.max()) == 8
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.uint8).reshape(2, 3, 5, 6)
    flips = torch.tensor([True, False])
    flipped = augment(x, Draws(flips))
    assert torch.equal(flipped[0], x[0].flip(2)) and torch.equal(flipped[1], x[1])
    centre = augment(x, Draws(torch.tensor([False, True]), torch.tensor([[4, 4], [4, 4]])))
    assert torch.equal(centre[0], x[0]) and torch.equal(centre[1], x[1].flip(2))  # no offset: flip only
    corner = augment(x, Draws(torch.tensor([False, False]), torch.tensor([[0, 0], [8, 8]])))
    assert corner.dtype == torch.uint8 and corner.shape == x.shape
    assert torch.equal(corner[0, :, 4:, 4:], x[0, :, :1, :2]) and int(corner[0, :, :4].max()) == 0  # black padding
    assert torch.equal(corner[1, :, :1, :2], x[1, :, 4:, 4:]) and int(corner[1, :, 1:].max()) == 0


def test_augmented_training_is_reproducible_per_seed() -> None:
    space = parse_space(tiny_space_dict(training={"epochs": 1, "batch_size": 16, "augment": "crop-flip"}))
    from nasconv.search.data import space_data

    data = space_data(space.spec)
    arch = space.sample(2)
    torch.set_num_threads(1)
    first, _ = train(arch, data, space.spec.training)
    again, _ = train(arch, data, space.spec.training)
    other, _ = train(arch, data, space.spec.training, seed=1)
    plain, _ = train(arch, data, space.spec.training.model_copy(update={"augment": "none"}))
    assert first.loss == again.loss and first.history[0].train_loss == again.history[0].train_loss
    assert first.history[0].train_loss != other.history[0].train_loss
    assert first.history[0].train_loss != plain.history[0].train_loss


# ---------------------------------------------------------------- devices and precision


def test_device_resolution_on_a_machine_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from nasconv.search.training import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("auto") == torch.device("cpu")
    for setting in ("cuda", "cuda:1"):
        with pytest.raises(NasconvError, match=rf"^training.device: {setting}, but "):
            resolve_device(setting)
    with pytest.raises(NasconvError, match="'gpu' is not one of auto, cpu, cuda, cuda:N"):
        resolve_device("gpu")
    # Ray assigned a GPU this process cannot use (declared with ray start --num-gpus, not present)
    assert resolve_device("auto", gpu_ids=["1"]) == torch.device("cpu")
    with pytest.raises(NasconvError, match=r"Ray assigned GPU 1"):
        resolve_device("cuda", gpu_ids=["1"])


def test_device_resolution_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from nasconv.search.training import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(NasconvError, match=r"cuda:2, but 2 CUDA device\(s\) are visible \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")
    assert resolve_device("cpu", gpu_ids=["1"]) == torch.device("cpu")
    assert resolve_device("auto", gpu_ids=[]) == torch.device("cpu")  # a trial Ray gave no GPU trains on CPUs
    # a trial's GPU is found among the visible devices Ray set, never taken as a physical index
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert resolve_device("auto", gpu_ids=["3"]) == torch.device("cuda:0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert resolve_device("cuda", gpu_ids=[3]) == torch.device("cuda:1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert resolve_device("auto", gpu_ids=["1"]) == torch.device("cuda:1")


@pytest.mark.parametrize(
    ("device", "gpus", "cluster", "message"),
    [
        ("auto", 0.25, 0, "gpus_per_trial: 0.25, but the Ray cluster has no GPUs"),
        ("auto", 3, 2, "has 2 GPU(s) in all: no trial could start"),
        ("auto", 1.5, 4, "above 1 it must be a whole number"),
        ("cpu", 0.5, 2, "training.device is cpu, but search.gpus_per_trial reserves"),
        ("cuda", 0, 2, "search.gpus_per_trial is 0 so trials get no GPU"),
        ("cuda:1", 1, 2, "Ray chooses each trial's GPU: use cuda or auto"),
        ("auto", 0, 0, None),
        ("auto", 0.25, 1, None),
        ("cuda", 2, 2, None),
        ("cpu", 0, 8, None),
    ],
)
def test_search_device_preflight(device: str, gpus: float, cluster: float, message: str | None) -> None:
    from nasconv.search.training import check_search_devices

    if message is None:
        check_search_devices(device, gpus, cluster)
    else:
        with pytest.raises(NasconvError, match=re.escape(message)):
            check_search_devices(device, gpus, cluster)


@pytest.mark.parametrize(("precision", "channels_last"), [("bf16", False), ("fp16", False), ("fp32", True)])
def test_precision_and_channels_last_train_on_cpu(precision: str, channels_last: bool) -> None:
    space = parse_space(
        tiny_space_dict(
            dataset={"name": "synthetic", "samples": 400},
            training={"epochs": 3, "precision": precision, "channels_last": channels_last, "lr": 0.05},
        )
    )
    from nasconv.search.data import space_data

    data = space_data(space.spec)
    torch.set_num_threads(1)
    result, model = train(space.sample(0), data, space.spec.training)
    assert not result.failed and result.device == "cpu" and result.accuracy > 0.6, result  # chance: 1/3
    assert result.precision == ("fp32" if precision == "fp16" else precision)  # fp16 is a GPU setting
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast keeps fp32 master weights


def test_train_reports_test_accuracy_where_there_is_a_test_split(tmp_path: Path) -> None:
    space = parse_space(
        tiny_space_dict(
            input={"channels": 3, "size": 8},
            classes=4,
            dataset={"name": "npz", "path": str(write_npz(tmp_path / "d.npz", test=12))},
        )
    )
    from nasconv.search.data import space_data
    from nasconv.search.training import evaluate

    data = space_data(space.spec)
    result, model = train(space.sample(0), data, space.spec.training, test=True)
    assert result.test_accuracy is not None and 0 <= result.test_accuracy <= 1
    assert (result.test_accuracy, result.test_loss) == evaluate(model, data, "test")
    assert result.accuracy == evaluate(model, data, "val")[0]
    synthetic = parse_space(tiny_space_dict())
    plain, _ = train(synthetic.sample(0), space_data(synthetic.spec), synthetic.spec.training, test=True)
    assert plain.test_accuracy is None


def test_latency_tables_name_their_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nasconv.model.latency import LatencyTable, measure, measure_latency_table

    space = parse_space(tiny_space_dict())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(NasconvError, match="latency on cuda: torch finds no CUDA device"):
        measure_latency_table(space, tmp_path / "t.json", device="cuda", progress=False)
    with pytest.raises(NasconvError, match="onnxruntime latency backend measures on the CPU"):
        measure(torch.nn.Conv2d(1, 1, 1), (1, 1, 4, 4), backend="onnxruntime", device="cuda")
    table = measure_latency_table(
        space, tmp_path / "t.json", rounds=1, repeats=2, warmup=0, calibrate=0, progress=False
    )
    assert table.settings["device"] == "cpu" and LatencyTable.load(tmp_path / "t.json").settings["device"] == "cpu"


# ---------------------------------------------------------------- audit of issue 11


def test_imagefolder_train_folder_alone(tmp_path: Path) -> None:
    # ROOT/train/<class>/ without val/ or test/: a training layout, with no test split
    root = write_imagefolder(tmp_path / "t", {"train": 5})
    data = load_data(DatasetSpec(name="imagefolder", path=str(root)), 2, 3, 8, 0.2, 0)
    assert len(data.train) + len(data.val) == 10 and data.test is None
    assert set(data.train.labels.tolist()) | set(data.val.labels.tolist()) == {0, 1}
    # a folder per class that happens to be called train, beside other classes, stays a class
    root = write_imagefolder(tmp_path / "c", {"": 3}, classes=("train", "zebra"))
    data = load_data(DatasetSpec(name="imagefolder", path=str(root)), 2, 3, 8, 0.2, 0)
    assert len(data.train) + len(data.val) == 6 and data.test is None


def test_abandoned_build_folders_are_removed_when_the_cache_is_next_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from filelock import FileLock

    from nasconv.search.data import locate, open_cache
    from nasconv.search.data.cache import entry_name

    cache = tmp_path / "cache"
    monkeypatch.setenv("NASCONV_CACHE", str(cache))
    source = locate(DatasetSpec(name="npz", path=str(write_npz(tmp_path / "d.npz"))))
    # what killed builds leave behind: of this entry, of another one, and one being built right now
    own = cache / f".build-{entry_name(source, 3, 8)}-4242-0badf00d"
    other = cache / ".build-npz-12345678-1x8px-0123456789abcdef-4343-deadbeef"
    live = cache / ".build-npz-87654321-1x8px-fedcba9876543210-4444-cafecafe"
    for folder in (own, other, live):
        folder.mkdir(parents=True)
        (folder / "train_x.npy").write_bytes(b"\0" * 1000)
    with FileLock(str(cache / ".npz-87654321-1x8px-fedcba9876543210.lock")):
        entry = open_cache(source, 3, 8)
        assert entry.built_seconds is not None
        assert not own.exists() and not other.exists()
        assert live.exists()  # its lock is held: a build in progress is left alone
    # mapping an entry that exists builds nothing and removes nothing
    live_again = cache / f".build-{entry_name(source, 3, 8)}-4545-feedbeef"
    live_again.mkdir()
    assert open_cache(source, 3, 8).built_seconds is None and live_again.exists()


def test_streamed_batches_equal_resident_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    # the path a GPU takes for a dataset too large to copy there: batches gathered on the host
    from nasconv.search import training
    from nasconv.search.data import space_data

    space = parse_space(tiny_space_dict(training={"epochs": 2, "augment": "crop-flip"}))
    data = space_data(space.spec)
    torch.set_num_threads(1)
    resident, _ = train(space.sample(0), data, space.spec.training, test=True)
    monkeypatch.setattr(training, "_fits_on", lambda x, device: False)
    streamed, _ = train(space.sample(0), data, space.spec.training, test=True)
    assert (streamed.accuracy, streamed.loss) == (resident.accuracy, resident.loss)
    assert [e.train_loss for e in streamed.history] == [e.train_loss for e in resident.history]


def test_an_assigned_gpu_that_is_not_visible_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from nasconv.search.training import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    for setting in ("auto", "cuda"):
        with pytest.raises(NasconvError, match=rf"^training.device: {setting}: Ray assigned GPU 1, but "):
            resolve_device(setting, gpu_ids=["1"])
    with pytest.raises(NasconvError, match=r"CUDA_VISIBLE_DEVICES='0' does not list it$"):
        resolve_device("cuda", gpu_ids=["1"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-0f3a,GPU-77c1")  # listed, but torch sees one device
    assert resolve_device("cuda", gpu_ids=["GPU-0f3a"]) == torch.device("cuda:0")
    with pytest.raises(NasconvError, match=r"torch finds only 1 CUDA device"):
        resolve_device("cuda", gpu_ids=["GPU-77c1"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(NasconvError, match=r"CUDA_VISIBLE_DEVICES is unset and 1 CUDA device\(s\) are visible"):
        resolve_device("cuda", gpu_ids=["3"])
    with pytest.raises(NasconvError, match=r"Ray assigned GPU GPU-0f3a, but CUDA_VISIBLE_DEVICES is unset"):
        resolve_device("auto", gpu_ids=["GPU-0f3a"])
    assert resolve_device("cuda", gpu_ids=["0"]) == torch.device("cuda:0")
    with pytest.raises(NasconvError) as caught:
        resolve_device("cuda", gpu_ids=["7"])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("device", "gpus", "address", "message"),
    [
        ("cuda", 1, None, "training.device: cuda, but "),
        ("cuda:0", 0, None, "training.device: cuda:0, but "),
        ("cuda", 0, "10.0.0.9:6379", "search.gpus_per_trial is 0 so trials get no GPU"),
        ("cuda:1", 1, "10.0.0.9:6379", "Ray chooses each trial's GPU: use cuda or auto"),
        ("cpu", 0.5, None, "training.device is cpu, but search.gpus_per_trial reserves"),
        ("auto", 1.5, None, "above 1 it must be a whole number"),
        # on a cluster the driver may have no GPU: `cuda` is left to the cluster's own check
        ("cuda", 1, "10.0.0.9:6379", None),
    ],
)
def test_search_refuses_device_settings_before_data_or_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, gpus: float, address: str | None, message: str | None
) -> None:
    from nasconv import experiment

    def not_yet(what: str):
        def fail(*args: object, **kwargs: object) -> None:
            raise AssertionError(what)

        return fail

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(experiment, "prepare_data", not_yet("the dataset was prepared"))
    monkeypatch.setattr(experiment, "start_ray", not_yet("Ray was started"))
    space = parse_space(tiny_space_dict(training={"epochs": 1, "device": device}))
    opts = experiment.resolve_options(space, out=tmp_path / "out", address=address, gpus_per_trial=gpus)
    if message is None:
        with pytest.raises(AssertionError, match="the dataset was prepared"):
            experiment.run_search(space, opts, progress=False)
    else:
        with pytest.raises(NasconvError, match=re.escape(message)):
            experiment.run_search(space, opts, progress=False)
    assert not (tmp_path / "out").exists()


def test_train_command_prints_the_precision_it_runs(tmp_path: Path, write_space, capsys: pytest.CaptureFixture) -> None:
    from nasconv.cli import main

    space = write_space(tiny_space_dict(training={"epochs": 1, "precision": "fp16"}))
    arch = load_space(space).sample(0).save(tmp_path / "arch.yaml")
    assert main(["train", str(arch), "--space", str(space), "--epochs", "1", "--device", "cpu"]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("training "))
    assert "on cpu (" in header and ", fp32 (fp16 is a GPU setting)," in header, header


def test_profile_device_names_its_flag_in_errors(
    tmp_path: Path, write_space, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nasconv.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    space = write_space(tiny_space_dict())
    code = main(["profile-device", str(space), "--out", str(tmp_path / "t.json"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("nasconv: error: --device: cuda, but ") and err.count("\n") == 1, err
    assert "training.device" not in err and not (tmp_path / "t.json").exists()
