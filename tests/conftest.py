"""Synthetic data sets written in the real on-disk formats, so the real loaders are exercised."""
from __future__ import annotations

import gzip
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)  # tiny models: one thread is as fast, and leaves a core to other work


def class_images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable images: the brightness encodes the class (22 grey levels a class), plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    noise = rng.integers(0, 30, (n, *shape))
    images = (22 * labels.reshape(-1, *[1] * len(shape)) + noise).astype(np.uint8)
    return images, labels.astype(np.uint8)


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist(root: Path, n_train: int = 240, n_test: int = 120, compress: bool = True) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = class_images(n, (28, 28), seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", images, compress)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels, compress)
    return root


def write_cifar10(root: Path, n_per_batch: int = 48, n_test: int = 120) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        n = n_test if name == "test_batch" else n_per_batch
        images, labels = class_images(n, (3, 32, 32), seed=10 + k)
        batch = {"batch_label": name, "labels": labels.astype(int).tolist(),
                 "data": images.reshape(n, -1), "filenames": [f"{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                     "frog", "horse", "ship", "truck"]}, f)
    return root


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """MNIST (.gz IDX) and CIFAR-10 (pickle batches), small and synthetic."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    write_cifar10(root)
    return root
