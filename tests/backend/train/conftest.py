"""Train tests run single-threaded: their tensors are small (≤ 4k Gaussians, ≤ 96 px), so intra-op threads
only add synchronisation, and on a shared CPU spinning worker threads made a fit step ~10× slower (measured
0.56 s vs 0.05 s per step on the recovery scene). The previous setting is restored after each test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
