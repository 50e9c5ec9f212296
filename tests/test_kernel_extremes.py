"""Backends agree at extreme values: no silent clamping in the cpu kernels' exp (inf where NumPy
gives inf, 0 or a subnormal where NumPy underflows)."""
import numpy as np
import pytest

from fastae import kernels


def pattern(a):
    """The class of each entry: nan, +inf, -inf, 0 (or subnormal) or normal."""
    tiny = np.finfo(a.dtype).tiny
    return np.select([np.isnan(a), a == np.inf, a == -np.inf, np.abs(a) < tiny], [0, 1, 2, 3], 4)


def assert_agree(got, want, rtol):
    np.testing.assert_array_equal(pattern(got), pattern(want))
    normal = pattern(want) == 4
    np.testing.assert_allclose(got[normal], want[normal], rtol=rtol)


@pytest.mark.parametrize("dtype,big", [(np.float64, 1500.0), (np.float32, 200.0),
                                       (np.float64, 1000.0), (np.float32, 120.0)])
@pytest.mark.parametrize("explicit_eps", [True, False])
def test_reparam_at_extreme_logvar_matches_numpy(rng, dtype, big, explicit_eps):
    mu = rng.standard_normal((4, 6)).astype(dtype)
    logvar = rng.standard_normal((4, 6)).astype(dtype)
    logvar[0, :] = big           # exp(logvar / 2) overflows: z = +-inf, kl = inf
    logvar[1, 2] = big
    logvar[2, :] = -big          # exp underflows to 0: z = mu
    logvar[3, 1] = -big / 2
    eps = rng.standard_normal((4, 6)).astype(dtype) if explicit_eps else None
    eps_or_zero = eps if explicit_eps else None
    dz = rng.standard_normal((4, 6)).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    with np.errstate(over="ignore", invalid="ignore"):
        want_z, want_kl = kernels.reparam_forward(mu, logvar, eps_or_zero, seed=5, backend="numpy")
        want_b = kernels.reparam_backward(dz, mu, logvar, eps_or_zero, beta=0.5, seed=5, backend="numpy")
    got_z, got_kl = kernels.reparam_forward(mu, logvar, eps_or_zero, seed=5, backend="cpu")
    got_b = kernels.reparam_backward(dz, mu, logvar, eps_or_zero, beta=0.5, seed=5, backend="cpu")
    assert np.isinf(want_kl[0]) and np.isinf(want_kl[1])  # the case really is extreme
    if big in (1500.0, 200.0):  # exp(logvar / 2) overflows too
        assert np.isinf(want_z[0]).all() and np.isinf(want_z[1, 2])
    assert_agree(got_z, want_z, rtol)
    assert_agree(got_kl, want_kl, rtol)
    for g, w in zip(got_b, want_b):
        assert_agree(g, w, rtol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bce_and_sigmoid_at_huge_logits_match_numpy(dtype):
    big = 1e4 if dtype == np.float64 else 1e3
    logits = np.array([[-big, -800.0, -100.0, 0.0, 100.0, 800.0, big]], dtype)
    target = np.array([[0.0, 0.5, 1.0, 0.5, 0.0, 1.0, 0.3]], dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    with np.errstate(over="ignore"):
        for got, want in zip(kernels.bce_logits_loss(logits, target, backend="cpu"),
                             kernels.bce_logits_loss(logits, target, backend="numpy")):
            assert_agree(got, want, rtol)
        W, b = np.eye(7, dtype=dtype), np.zeros(7, dtype)
        assert_agree(kernels.affine_forward(logits, W, b, "sigmoid", backend="cpu"),
                     kernels.affine_forward(logits, W, b, "sigmoid", backend="numpy"), rtol)
