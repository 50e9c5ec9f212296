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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_noise_is_standard_normal(dtype):
    eps = draws(2026, (4096, 64), dtype=dtype).ravel().astype(np.float64)
    assert abs(eps.mean()) < 0.01
    assert abs(eps.var() - 1) < 0.01
    assert stats.kstest(eps, "norm").pvalue > 1e-3
    assert stats.kstest(draws(7, (4096, 64), dtype=dtype).ravel(), "norm").pvalue > 1e-3
    # the cos halves and the sin halves are each standard normal
    assert stats.kstest(eps[0::2], "norm").pvalue > 1e-3
    assert stats.kstest(eps[1::2], "norm").pvalue > 1e-3


def test_noise_tails_end_where_24_bit_uniforms_put_them():
    # u1 >= 2^-24, so |eps| <= sqrt(2 log 2^24) = 5.77 (a normal passes it with probability 8e-9)
    eps = draws(11, (4096, 256), dtype=np.float32)
    assert np.abs(eps).max() <= np.sqrt(2 * 24 * np.log(2)) + 1e-6
    assert np.abs(eps).max() > 4.5


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_noise_entries_are_uncorrelated(dtype):
    eps = draws(99, (2048, 64), dtype=dtype).astype(np.float64)
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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [1, 7, 64, 4099])
def test_cpu_draws_do_not_depend_on_row_length_or_chunking(dtype, k):
    # element (i, j) is number i * K + j whatever K, the kernels' chunks (rows, odd starts) or the
    # scratch size: the same numbers as one long row, as a column, and as the reference's
    n = 9000 // k + 3
    flat = draws(42, (n, k), dtype=dtype).ravel()
    np.testing.assert_array_equal(flat, draws(42, (1, n * k), dtype=dtype).ravel())
    np.testing.assert_array_equal(flat, draws(42, (n * k, 1), dtype=dtype).ravel())
    tol = 2e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(flat, draws(42, (n, k), "numpy", dtype).ravel(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [3, 20])
def test_cpu_kernels_give_the_same_bits_with_any_scratch(rng, dtype, k):
    """The engine gives the kernels 3K + 2 entries of scratch or more, the public ops a larger one:
    the chunking changes, the results do not."""
    from fastae.kernels import cpu, elementwise as ew
    n = 301
    mu, logvar, dz = (rng.standard_normal((n, k)).astype(dtype) for _ in range(3))
    key = ew.noise_key(17)
    results = []
    for size in (3 * k + 2, 3 * k + 3, 1000, 5000):
        z, kl, dmu, dlv = np.empty_like(mu), np.empty(n, dtype), np.empty_like(mu), np.empty_like(mu)
        scratch = np.empty(size, dtype)
        assert cpu.reparam_forward(mu, logvar, mu, False, key, z, kl, scratch)
        assert cpu.reparam_backward(dz, mu, logvar, mu, False, key, 0.5, dmu, dlv, scratch)
        results.append((z, kl, dmu, dlv))
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(results[0][0], kernels.reparam_forward(mu, logvar, seed=17, backend="cpu")[0])
