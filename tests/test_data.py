import gzip
import pickle

import numpy as np
import pytest
import torch

from utils.synthetic_data import write_cifar10, write_mnist
from utils.data import (BatchIterator, DataError, load_dataset, random_crop, random_flip,
                        resolve_data_dir)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_raw_and_gz(tmp_path, compress):
    write_mnist(tmp_path, n_train=30, n_test=20, compress=compress)
    train = load_dataset("mnist", "train", tmp_path, download=False)
    test = load_dataset("mnist", "test", tmp_path, download=False)
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.shape == (20,) and test.labels.dtype == torch.int64
    assert int(train.labels.max()) <= 9
    # Brightness encodes the label: images and labels were decoded in the right order.
    means = train.images.float().mean((1, 2, 3))
    assert torch.all((means - 22 * train.labels).abs() < 30)


def test_cifar_pickle(tmp_path):
    write_cifar10(tmp_path, n_per_batch=8, n_test=10)
    train = load_dataset("cifar10", "train", tmp_path, download=False)
    assert train.images.shape == (40, 3, 32, 32)
    assert train.classes[0] == "airplane" and len(train.classes) == 10
    test = load_dataset("cifar10", "test", tmp_path, download=False)
    assert len(test) == 10


def test_truncated_idx_names_the_file(tmp_path):
    write_mnist(tmp_path, n_train=30, n_test=20, compress=False)
    path = tmp_path / "MNIST/raw/train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        load_dataset("mnist", "train", tmp_path, download=False)


def test_corrupt_gzip_names_the_file(tmp_path):
    write_mnist(tmp_path, n_train=30, n_test=20, compress=True)
    path = tmp_path / "MNIST/raw/train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", "train", tmp_path, download=False)


def test_truncated_cifar_batch(tmp_path):
    write_cifar10(tmp_path, n_per_batch=8, n_test=10)
    path = tmp_path / "cifar-10-batches-py/data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", "train", tmp_path, download=False)


def test_missing_data_without_download(tmp_path):
    with pytest.raises(DataError, match="not found.*--no-download"):
        load_dataset("cifar10", "test", tmp_path / "nothing", download=False)


def test_data_dir_resolution(monkeypatch):
    monkeypatch.setenv("HOMEWORK_DATA_DIR", "/some/where")
    assert str(resolve_data_dir(None)) == "/some/where"
    assert str(resolve_data_dir("x")) == "x"
    monkeypatch.delenv("HOMEWORK_DATA_DIR")
    assert str(resolve_data_dir(None)) == "data"


def test_augmentations_preserve_content():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float).view(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    flipped = random_flip(x, g)
    for i in range(2):  # each image is either itself or its mirror image
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    cropped = random_crop(x, padding=2, generator=g)
    assert cropped.shape == x.shape
    # A crop is a translation: the non-zero values form a contiguous block of the original.
    for i in range(2):
        rows = (cropped[i, 0] != 0).any(1).nonzero().flatten()
        assert len(rows) >= 6


def test_batch_iterator_normalises_and_covers_every_example(data_dir):
    data = load_dataset("mnist", "train", data_dir, download=False)
    it = BatchIterator(data, 64, shuffle=True, seed=1)
    labels = torch.cat([y for _, y in it])
    assert sorted(labels.tolist()) == sorted(data.labels.tolist())
    x, _ = next(iter(BatchIterator(data, 1000)))
    expected = (data.images.float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(x, expected, atol=1e-5)
