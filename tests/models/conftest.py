"""Fixtures of the model adapter tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread while a module runs: on a shared 2-core machine OpenMP's spin-waiting makes many
    small ops 10x slower with 2 threads; restored afterwards. Use with `pytest.mark.usefixtures`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
