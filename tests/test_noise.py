"""The in-kernel standard normal noise: its distribution, reproducibility and regeneration."""
import numpy as np
import pytest
from scipy import stats

from fastae import kernels
from parity import backends_under_test

BACKENDS = ["numpy"] + backends_under_test()


def draws(seed, shape=(512, 64), backend="cpu", dtype=np.float64):
    zeros = np.zeros(shape, dtype)
    return kernels.reparam_forward(zeros, zeros, seed=seed, backend=backend)[0]  # z = eps


def test_noise_is_standard_normal():
    eps = draws(2026, (4096, 64)).ravel()
    assert abs(eps.mean()) < 0.01
    assert abs(eps.var() - 1) < 0.01
    assert stats.kstest(eps, "norm").pvalue > 1e-3
    assert stats.kstest(draws(7, (4096, 64)).ravel(), "norm").pvalue > 1e-3


def test_noise_entries_are_uncorrelated():
    eps = draws(99, (2048, 64))
    corr = np.corrcoef(eps, rowvar=False)
    assert np.max(np.abs(corr - np.eye(64))) < 0.12  # ~5 standard errors at 2048 rows
    # neighbouring counters (the same row, next column) are independent too
    assert abs(np.corrcoef(eps[:, :-1].ravel(), eps[:, 1:].ravel())[0, 1]) < 0.01


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_draws_different_seed_different_draws(backend):
    shape = (3, 5)
    a, b = draws(1, shape, backend), draws(1, shape, backend)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, draws(2, shape, backend))


def test_draws_depend_only_on_seed_row_and_column():
    # Counter-based: the first rows of a large batch are the draws of a small batch, so the split
    # of rows between threads or blocks cannot change them; every backend draws the same numbers.
    np.testing.assert_array_equal(draws(5, (17, 8))[:3], draws(5, (3, 8)))
    for backend in BACKENDS:
        np.testing.assert_allclose(draws(5, (3, 8), backend), draws(5, (3, 8)), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_regenerates_the_forward_noise(rng, backend):
    mu, logvar, dz = (rng.standard_normal((3, 7)) for _ in range(3))
    z, _ = kernels.reparam_forward(mu, logvar, seed=42, backend=backend)
    eps = (z - mu) / np.exp(logvar / 2)
    from_seed = kernels.reparam_backward(dz, mu, logvar, seed=42, backend=backend)
    from_eps = kernels.reparam_backward(dz, mu, logvar, eps, backend=backend)
    for got, want in zip(from_seed, from_eps):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_float32_noise_is_the_float64_noise_rounded():
    np.testing.assert_allclose(draws(3, (4, 4), dtype=np.float32), draws(3, (4, 4)), rtol=1e-6)
