"""The optimizer kernels (cpu, the reference in the kernels' calling convention, cuda) report in
the same pass whether every updated parameter and optimizer state entry is finite, so a training
loop detects divergence from the weights without another pass over them."""
import numpy as np
import pytest

from fastae import kernels
from fastae.kernels import backend as _backend
from parity import backends_under_test

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")

MODULES = ["numpy_out"] + backends_under_test()
SIZES = [1, 7, 129]  # 129: a vectorized body plus a scalar remainder


def module(name):
    return _backend.module(name)


def adam(mod, state, grad, step=1, lr=1e-3):
    p, m, v = state
    return mod.adam_step(p, grad, m, v, step, lr, 0.9, 0.999, 1e-8)


def sgd(mod, state, grad, lr=1e-3):
    p, vel = state[0], state[1]
    return mod.sgd_step(p, grad, vel, lr, 0.9)


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("step", [adam, sgd])
def test_optimizer_step_reports_finiteness(name, dtype, size, step):
    mod = module(name)
    rng = np.random.default_rng(size)

    def fresh():
        return [rng.standard_normal(size).astype(dtype), np.zeros(size, dtype), np.zeros(size, dtype)]

    grad = rng.standard_normal(size).astype(dtype)
    ok = step(mod, fresh(), grad)
    assert isinstance(ok, (bool, np.bool_)) and ok is not None and bool(ok) is True
    for where in sorted({0, size // 2, size - 1}):
        for bad in (np.inf, -np.inf, np.nan):
            g = grad.copy()
            g[where] = bad
            assert bool(step(mod, fresh(), g)) is False, (where, bad)
            state = fresh()  # a non-finite parameter or state entry carried in
            state[0][where] = bad
            assert bool(step(mod, state, grad)) is False, (where, bad, "param")
            state = fresh()
            state[1][where] = bad
            assert bool(step(mod, state, grad)) is False, (where, bad, "m / velocity")
    # finite in, non-finite out: the update itself overflows
    huge = np.finfo(dtype).max
    g = grad.copy()
    g[size - 1] = huge / 2  # g * g overflows v (adam); lr * g pushes p past the maximum (sgd)
    state = fresh()
    state[0][size - 1] = -huge
    assert bool(step(mod, state, g, lr=4.0)) is False
    assert np.isfinite(g).all()


@pytest.mark.parametrize("name", MODULES)
def test_adam_reports_an_overflowing_second_moment(name):
    mod = module(name)
    p, m, v = np.zeros(9, np.float32), np.zeros(9, np.float32), np.zeros(9, np.float32)
    g = np.full(9, 1e30, np.float32)  # finite; g * g = 1e60 is not a float32
    assert bool(adam(mod, (p, m, v), g)) is False
    assert np.isfinite(p).all()  # the parameter alone would not show it: v / inf -> 0
    assert not np.isfinite(v).all()


@pytest.mark.parametrize("backend", ["numpy"] + backends_under_test())
def test_public_adam_step_returns_none(backend):
    p, m, v = np.ones(5), np.zeros(5), np.zeros(5)
    assert kernels.adam_step(p, np.ones(5), m, v, step=1, backend=backend) is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpu_sgd_matches_the_reference_bit_for_bit(dtype):
    """Both compute in the parameters' precision (NumPy scales float32 arrays by Python floats in
    float32)."""
    rng = np.random.default_rng(3)
    a = [rng.standard_normal(257).astype(dtype) for _ in range(3)]
    b = [x.copy() for x in a]
    for _ in range(4):
        assert module("cpu").sgd_step(a[0], a[1], a[2], 1e-2, 0.9)
        assert module("numpy_out").sgd_step(b[0], b[1], b[2], 1e-2, 0.9)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])
