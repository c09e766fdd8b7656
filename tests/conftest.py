import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def single_thread():
    """Bit-exact comparisons: with several threads, oneDNN may pick kernels (and summation orders) by memory
    alignment, so two copies of the same weights can differ in the last bit. One thread removes that."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
