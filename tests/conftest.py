import numpy as np
import pytest

from fastae.kernels import backend

# Under the CUDA simulator every GPU thread is a Python thread: keep its shapes tiny.
SHAPES = [(1, 3), (3, 17), (17, 129), (1, 129)] if not backend.simulated() else [(1, 3), (3, 5)]


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
