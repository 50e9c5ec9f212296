import threading

import numpy as np
import pytest

from fastae.kernels import backend

# Under the CUDA simulator every GPU thread is a Python thread: keep its shapes tiny.
SHAPES = [(1, 3), (3, 17), (17, 129), (1, 129)] if not backend.simulated() else [(1, 3), (3, 5)]


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def run_in_threads(work, count=8):
    """Run work(k) for k < count in that many Python threads at once; returns the exceptions they
    raised (a failure in a thread would otherwise be lost)."""
    errors = []

    def guarded(k):
        try:
            work(k)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            errors.append(exc)
    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
