from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nasconv.errors import NasconvError
from nasconv.search.data import load_data
from nasconv.search.space import DatasetSpec, TrainingSpec, load_space, parse_space
from nasconv.search.training import train

from .conftest import SPACES, tiny_space_dict


def test_digits_is_embedded_resized_and_split() -> None:
    data = load_data(DatasetSpec(name="digits"), 10, 1, 16, 0.2, 0)
    assert data.x_train.shape[1:] == (1, 16, 16)
    assert len(data.y_train) + len(data.y_val) == 1797
    assert abs(len(data.y_val) - 359) <= 1
    again = load_data(DatasetSpec(name="digits"), 10, 1, 16, 0.2, 0)
    assert again is data  # cached per process
    other = load_data(DatasetSpec(name="digits"), 10, 1, 16, 0.2, 1)
    assert not torch.equal(other.y_val, data.y_val)


def test_npz_and_channel_conversion(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 255, size=(50, 12, 12, 3)).astype(np.uint8)
    y = np.arange(50) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_data(DatasetSpec(name="npz", path=str(tmp_path / "d.npz")), 5, 1, 8, 0.2, 0)
    assert data.x_train.shape == (40, 1, 8, 8)
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
    assert data.x_train.shape == (30, 3, 32, 32) and data.x_val.shape == (10, 3, 32, 32)


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
    assert data.x_train.shape == (24, 1, 16, 16)


def test_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(4):
            Image.new("RGB", (10, 10), color=(i * 40, 0, 0)).save(tmp_path / label / f"{i}.png")
    data = load_data(DatasetSpec(name="imagefolder", path=str(tmp_path)), 2, 3, 8, 0.25, 0)
    assert len(data.y_train) == 6 and set(data.y_train.tolist()) | set(data.y_val.tolist()) == {0, 1}


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
    assert len(data.y_train) % 67 == 1 and sum(seen) == len(data.y_train) and min(seen) >= 2
