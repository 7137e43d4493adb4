"""Synthetic data sets written in the real on-disk formats, so the real loaders are exercised."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from utils.synthetic_data import write_cifar10, write_mnist  # noqa: E402

torch.set_num_threads(1)  # tiny models: one thread is as fast, and leaves a core to other work


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """MNIST (.gz IDX) and CIFAR-10 (pickle batches), small and synthetic."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    write_cifar10(root)
    return root
