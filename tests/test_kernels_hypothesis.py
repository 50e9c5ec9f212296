"""Property tests: random shapes and values, including huge logits on the sigmoid/BCE path."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fastae import kernels
from parity import backends_under_test, check_op

BACKENDS = backends_under_test()
dims = st.integers(1, 9)
finite = st.floats(-1e3, 1e3, allow_nan=False, width=64)
huge = st.floats(-2.0 ** 100, 2.0 ** 100, width=32)
SETTINGS = settings(max_examples=40, deadline=None)


@SETTINGS
@given(n=dims, d_in=dims, d_out=dims, data=st.data(),
       act=st.sampled_from(kernels.ACTIVATIONS), dtype=st.sampled_from([np.float32, np.float64]))
def test_affine_parity_any_shape(n, d_in, d_out, data, act, dtype):
    x = data.draw(arrays(dtype, (n, d_in), elements=st.floats(-10, 10, width=32)))
    W = data.draw(arrays(dtype, (d_out, d_in), elements=st.floats(-3, 3, width=32)))
    b = data.draw(arrays(dtype, (d_out,), elements=st.floats(-3, 3, width=32)))
    for backend in BACKENDS:
        y = check_op("affine_forward", backend, x, W, b, act)
        check_op("affine_backward", backend, y, x, y, W, act)


@SETTINGS
@given(h=arrays(np.float64, st.tuples(dims, dims), elements=finite), t=st.floats(0, 100), nonneg=st.booleans())
def test_l1_prox_properties(h, t, nonneg):
    for backend in BACKENDS:
        out = check_op("l1_prox", backend, h, t, nonneg=nonneg)
        assert np.all(np.abs(out) <= np.abs(h))          # shrinks
        assert np.all(out[np.abs(h) <= t] == 0)          # zeroes the small entries
        assert np.all(out * h >= 0)                      # never flips a sign
        if nonneg:
            assert np.all(out >= 0)


@SETTINGS
@given(logits=arrays(np.float32, st.tuples(dims, dims), elements=huge), data=st.data())
def test_bce_and_sigmoid_stay_finite_for_huge_logits(logits, data):
    target = data.draw(arrays(np.float32, logits.shape, elements=st.floats(0, 1, width=32)))
    for backend in ["numpy"] + BACKENDS:
        rows, grad = kernels.bce_logits_loss(logits, target, backend=backend)
        # each term max(a, 0) - a t + log1p(exp(-|a|)) is >= 0 in floating point too (fl(a t) <= a
        # for t <= 1), so the rows are; and they equal a float64 evaluation within float32 rounding
        # of the terms' size
        assert np.all(np.isfinite(rows)) and np.all(rows >= 0)
        a, t = logits.astype(np.float64), target.astype(np.float64)
        exact = (np.maximum(a, 0) - a * t + np.log1p(np.exp(-np.abs(a)))).sum(1)
        size = (np.abs(a) + 1).sum(1)
        assert np.all(np.abs(rows - exact) <= 1e-6 * size + 1e-4 * exact)
        assert np.all(np.abs(grad) <= 1.0 / logits.shape[0] + 1e-6)
        y = kernels.affine_forward(logits, np.eye(logits.shape[1], dtype=np.float32),
                                   np.zeros(logits.shape[1], np.float32), "sigmoid", backend=backend)
        assert np.all((y >= 0) & (y <= 1))
    for backend in BACKENDS:
        check_op("bce_logits_loss", backend, logits.astype(np.float64), target.astype(np.float64))


@SETTINGS
@given(mu=arrays(np.float64, st.tuples(dims, dims), elements=st.floats(-5, 5)), data=st.data(),
       seed=st.integers(0, 2 ** 64 - 1))
def test_reparam_parity_any_shape_and_seed(mu, data, seed):
    logvar = data.draw(arrays(np.float64, mu.shape, elements=st.floats(-6, 6)))
    for backend in BACKENDS:
        z, kl = check_op("reparam_forward", backend, mu, logvar, None, seed=seed)
        assert np.all(kl >= -1e-9)  # a KL divergence is never negative
        check_op("reparam_backward", backend, z, mu, logvar, None, seed=seed)
