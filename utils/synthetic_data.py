"""Synthetic data sets written in the real on-disk formats (IDX for MNIST, python pickle batches
for CIFAR-10), so that tests and benchmarks exercise the real loaders without the real data."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

# The file names are spelled out here rather than imported from utils.data, so that a wrong
# name in the loader fails the tests instead of being copied into them.
CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                       "ship", "truck"]


def class_images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable images: the brightness encodes the class (22 grey levels a class), plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    noise = rng.integers(0, 30, (n, *shape))
    images = (22 * labels.reshape(-1, *[1] * len(shape)) + noise).astype(np.uint8)
    return images, labels.astype(np.uint8)


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """An IDX file of unsigned bytes (``path`` + ``.gz`` when ``compress``)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, compresslevel=1))
    else:
        path.write_bytes(data)


def write_mnist(root: Path, n_train: int = 240, n_test: int = 120, compress: bool = True) -> Path:
    """``root/MNIST/raw/*-idx?-ubyte[.gz]``, as torchvision downloads them."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = class_images(n, (28, 28), seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", images, compress)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels, compress)
    return Path(root)


def write_cifar10(root: Path, n_per_batch: int = 48, n_test: int = 120) -> Path:
    """``root/cifar-10-batches-py/`` with five training batches, the test batch and the meta file."""
    folder = Path(root) / "cifar-10-batches-py"
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
        pickle.dump({"label_names": CIFAR10_LABEL_NAMES}, f)
    return Path(root)


def write_full_size(root: Path) -> Path:
    """Both data sets at their real sizes (60k/10k MNIST, 50k/10k CIFAR-10): for timing runs."""
    write_mnist(root, 60000, 10000)
    return write_cifar10(root, 10000, 10000)
