"""Data sets as in-memory uint8 tensors, and batched augmentation on the target device.

Each data set is one :class:`Dataset` record in ``DATASETS``: its folder and files in the layout
torchvision downloads into (MNIST and Fashion-MNIST as IDX files, raw or .gz, under
``<data-dir>/MNIST/raw/`` and ``<data-dir>/FashionMNIST/raw/``; CIFAR-10 as python batches under
``<data-dir>/cifar-10-batches-py/``), its reader, classes, statistics and image shape. A whole
split is decoded once; batches are sliced, normalised and augmented as tensors, so there is no
per-sample Python work and no DataLoader worker competing for the compute threads.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import os
import pickle
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

class DataError(Exception):
    """A data set is missing or unreadable; the message is one line meant for the user."""


@dataclass
class ImageSet:
    """One split of a data set held in memory."""

    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str = ""  # of the files it was read from (see file_fingerprint)
    crop_padding: int = 4  # of the random-crop augmentation (the data set's record says)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, n: int | None, seed: int = 0) -> "ImageSet":
        """A random subset of ``n`` examples (all of them when ``n`` is None or too large)."""
        if n is None or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return replace(self, images=self.images[idx], labels=self.labels[idx])

    def split(self, n_holdout: int) -> tuple["ImageSet", "ImageSet"]:
        """(all but the last ``n_holdout`` examples, the last ``n_holdout``): a validation split
        held out from the training set, so that choices are never made on the test set."""
        if not 0 < n_holdout < len(self):
            raise ValueError(f"cannot hold out {n_holdout} of {len(self)} examples")
        cut = len(self) - n_holdout
        return (replace(self, images=self.images[:cut], labels=self.labels[:cut]),
                replace(self, images=self.images[cut:], labels=self.labels[cut:]))

    def stats(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std on the uint8 scale, shaped to broadcast over NCHW batches."""
        mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1) * 255
        std = torch.tensor(self.std, device=device).view(1, -1, 1, 1) * 255
        return mean, std

    def normalize(self, images: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> torch.Tensor:
        """uint8 images -> float, normalised per channel (``stats`` from :meth:`stats`, if cached)."""
        mean, std = stats if stats is not None else self.stats(images.device)
        return (images.float() - mean) / std


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``--data-dir``, else the environment variable HOMEWORK_DATA_DIR, else ./data."""
    return Path(data_dir or os.environ.get("HOMEWORK_DATA_DIR") or "data")


def file_fingerprint(paths: list[Path], chunk: int = 1 << 16) -> str:
    """A cheap fingerprint of data files: their names, sizes and a hash of their first and last
    64 KiB. Saved with every result, so ``--resume`` never reuses a result made on other data."""
    h = hashlib.blake2b(digest_size=8)
    for path in paths:
        size = path.stat().st_size
        h.update(f"{path.name}:{size}:".encode())
        with open(path, "rb") as f:
            h.update(f.read(chunk))
            f.seek(max(0, size - chunk))
            h.update(f.read(chunk))
    return h.hexdigest()


def _unreadable(path: Path, e: OSError) -> DataError:
    reason = "permission denied" if isinstance(e, PermissionError) else (e.strerror or type(e).__name__)
    return DataError(f"cannot read {path}: {reason}")


def check_split(images: np.ndarray, labels: np.ndarray, shape: tuple[int, ...], classes: int,
                where: Path) -> None:
    """The checks that make training fail late if skipped: counts, image shape, label range."""
    if len(images) == 0 or len(images) != len(labels):
        raise DataError(f"bad data set in {where}: {len(images)} images and {len(labels)} labels")
    if tuple(images.shape[1:]) != shape:
        raise DataError(f"bad data set in {where}: images of shape {tuple(images.shape[1:])}, "
                        f"expected {shape}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise DataError(f"bad data set in {where}: labels from {low} to {high}, expected 0..{classes - 1}")


# ---------------------------------------------------------------------------------------------
# Readers: the files of one split -> uint8 images (N, C, H, W) and integer labels

def _read_maybe_gzip(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (PermissionError, IsADirectoryError) as e:
        raise _unreadable(path, e) from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"corrupted data file {path}: {e}; delete it and download it again") from None


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format): magic, dims as big-endian int32, then uint8 data."""
    raw = _read_maybe_gzip(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"corrupted data file {path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"corrupted data file {path}: truncated header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"corrupted data file {path}: {len(raw)} bytes, expected {expected} "
                        f"for shape {dims} (truncated download?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """An images IDX file (N, H, W) and its labels IDX file (N,)."""
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"corrupted data set in {paths[0].parent}: images {images.shape} and labels "
                        f"{labels.shape} do not match")
    return images[:, None].copy(), labels.astype(np.int64)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (PermissionError, IsADirectoryError) as e:
        raise _unreadable(path, e) from None
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"corrupted data file {path}: {type(e).__name__}: {e}; "
                        "delete it and download it again") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"corrupted data file {path}: data {data.shape}, labels {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_batches(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR's python pickle batches, concatenated."""
    parts = [_read_cifar_batch(p) for p in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ---------------------------------------------------------------------------------------------
# The registry: one record per data set

@dataclass(frozen=True)
class Dataset:
    """Everything the code knows about one data set."""

    name: str                                  # as on the command line
    title: str                                 # as in figures and tables
    folder: str                                # under the data folder, in torchvision's layout
    files: dict[str, tuple[str, ...]]          # per split; an IDX file may also be <name>.gz
    reader: Callable[[list[Path]], tuple[np.ndarray, np.ndarray]]
    classes: tuple[str, ...]
    mean: tuple[float, ...]                    # per channel, of the training split, on [0, 1]
    std: tuple[float, ...]
    shape: tuple[int, int, int]                # (C, H, W)
    crop_padding: int                          # of the random-crop augmentation
    torchvision_class: str                     # the torchvision.datasets class that downloads it

    def paths(self, root: Path, split: str) -> list[Path]:
        """The files of ``split`` under ``root``; FileNotFoundError names the missing ones."""
        folder = root / self.folder
        found = [next((folder / n for n in (name, name + ".gz") if (folder / n).is_file()), None)
                 for name in self.files[split]]
        missing = [str(folder / name) for name, p in zip(self.files[split], found) if p is None]
        if missing:
            raise FileNotFoundError(", ".join(missing))
        return found  # type: ignore[return-value]

    def load(self, root: Path, split: str) -> ImageSet:
        paths = self.paths(root, split)
        images, labels = self.reader(paths)
        check_split(images, labels, self.shape, len(self.classes), root / self.folder)
        return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), self.classes, self.mean,
                        self.std, file_fingerprint(paths), self.crop_padding)


IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

DATASETS = {d.name: d for d in (
    Dataset("mnist", "MNIST", "MNIST/raw", IDX_FILES, read_idx_pair, tuple(str(d) for d in range(10)),
            (0.1307,), (0.3081,), (1, 28, 28), 2, "MNIST"),
    Dataset("fashion_mnist", "Fashion-MNIST", "FashionMNIST/raw", IDX_FILES, read_idx_pair,
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
             "Bag", "Ankle boot"), (0.2860,), (0.3530,), (1, 28, 28), 2, "FashionMNIST"),
    Dataset("cifar10", "CIFAR-10", "cifar-10-batches-py",
            {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
            read_cifar_batches, ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                 "ship", "truck"),
            (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), (3, 32, 32), 4, "CIFAR10"),
)}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]




def _download(dataset: Dataset, root: Path) -> None:
    """Fetch the files with torchvision's own downloader (into the same layout we read).
    A failed download leaves behind no folder it created."""
    from torchvision import datasets  # imported lazily: only needed when data is missing

    cls = getattr(datasets, dataset.torchvision_class)
    missing = [p for p in (root, *root.parents) if not p.exists()]
    before = {Path(d) for d, _, _ in os.walk(root)}
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except BaseException:
        for d, _, _ in sorted(os.walk(root), key=lambda w: -len(Path(w[0]).parts)):
            if Path(d) not in before:
                _remove_if_empty(Path(d))
        for d in missing:  # deepest first
            _remove_if_empty(d)
        raise


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            raise


def _load(dataset: Dataset, split: str, root: Path) -> ImageSet:
    try:
        return dataset.load(root, split)
    except PermissionError as e:  # a folder on the way that the user may not list
        raise _unreadable(Path(e.filename or root), e) from None


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None,
                 download: bool = True) -> ImageSet:
    """Load ``split`` ("train" or "test") of the data set ``name`` (a key of ``DATASETS``).

    Missing files are downloaded with torchvision unless ``download`` is False; any failure
    raises :class:`DataError` with a one-line message naming the files and the remedy. The
    files are checked (counts, image shape, label range) before anything trains on them.
    """
    dataset = get_dataset(name)
    root = resolve_data_dir(data_dir)
    try:
        return _load(dataset, split, root)
    except FileNotFoundError as missing:
        if not download:
            raise DataError(f"{name} not found: missing {missing}; pass --data-dir to the folder "
                            "that holds it, or drop --no-download to fetch it") from None
    try:
        _download(dataset, root)
    except Exception as e:  # network errors come in many types; all mean the same to the user
        raise DataError(f"{name} not found under {root} and the download failed "
                        f"({type(e).__name__}); pass --data-dir to a folder that holds it") from None
    try:
        return _load(dataset, split, root)
    except FileNotFoundError as missing:
        raise DataError(f"{name} still missing after download: {missing}") from None


# ---------------------------------------------------------------------------------------------
# Batched augmentation and iteration

def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the batch horizontally."""
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None,
                mode: str = "constant") -> torch.Tensor:
    """Random crop of the original size from the padded batch (a random translation); ``mode``
    is F.pad's: "constant" pads with zeros, "reflect" mirrors the border (no black frame)."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4, mode=mode)
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, chans, rows, cols]


AUGMENTATIONS = ("none", "flip", "crop", "flip_crop")
FLIP_MODES = ("random", "alternate")
CROP_MODES = ("constant", "reflect")


class BatchIterator:
    """Yields normalised (images, labels) batches of an in-memory split on ``device``.

    The uint8 split is moved to the device once; each batch is sliced by a random permutation,
    augmented as a whole tensor and normalised there.

    ``flip="alternate"`` (airbench's alternating flip): each image gets a random flip in epoch 0
    and the opposite one in every next epoch, so consecutive epochs see both views of every
    image, instead of a random half twice (set the epoch with :meth:`set_epoch`).
    ``crop_padding`` (None: the data set's, from its record) and ``crop_mode`` shape the crop.
    """

    def __init__(self, data: ImageSet, batch_size: int, device: torch.device | str = "cpu",
                 shuffle: bool = False, augment: str = "none", drop_last: bool = False,
                 channels_last: bool = False, seed: int = 0, flip: str = "random",
                 crop_padding: int | None = None, crop_mode: str = "constant") -> None:
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        if flip not in FLIP_MODES or crop_mode not in CROP_MODES:
            raise ValueError(f"flip must be one of {FLIP_MODES} and crop_mode one of {CROP_MODES}")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.data = data
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.drop_last, self.channels_last = drop_last, channels_last
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.stats = data.stats(self.device)  # made once, not per batch
        self.flip, self.crop_mode = flip, crop_mode
        self.crop_padding = data.crop_padding if crop_padding is None else crop_padding
        self.epoch = 0
        if flip == "alternate":  # each image's flip in epoch 0
            self.flip_parity = torch.rand(len(self.labels), device=self.device,
                                          generator=self.generator) < 0.5

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration belongs to (it decides the alternating flips)."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = (torch.randperm(n, device=self.device, generator=self.generator)
                 if self.shuffle else torch.arange(n, device=self.device))
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.data.normalize(self.images[idx], self.stats)
            if "flip" in self.augment and self.flip == "alternate":
                mask = self.flip_parity[idx] ^ bool(self.epoch % 2)
                x = torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)
            elif "flip" in self.augment:
                x = random_flip(x, self.generator)
            if "crop" in self.augment:
                x = random_crop(x, self.crop_padding, self.generator, self.crop_mode)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]
