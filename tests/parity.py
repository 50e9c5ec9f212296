"""One helper for every op: run it on a backend and on the NumPy reference, compare everything;
plus float64 central differences for gradients."""
import numpy as np

import fastae
from fastae import kernels

# (rtol, atol) per dtype; atol is scaled by the largest reference magnitude.
TOLERANCE = {np.dtype(np.float64): (1e-9, 1e-11), np.dtype(np.float32): (2e-4, 2e-5)}


def backends_under_test():
    """Every backend that can run here besides the reference: cpu, and cuda on a GPU or simulator."""
    return [b for b in fastae.backends() if b != "numpy"]


def assert_close(actual, expected, dtype, what=""):
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    assert type(actual) is type(expected), what
    assert actual.shape == expected.shape, what
    assert actual.dtype == expected.dtype == np.dtype(dtype), f"{what}: {actual.dtype} vs {expected.dtype}"
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=what)


def check_op(op, backend, *args, **kwargs):
    """Run kernels.<op> on `backend` and on the reference; compare shape, dtype and values."""
    fn = getattr(kernels, op)
    got = fn(*args, backend=backend, **kwargs)
    want = fn(*args, backend="numpy", **kwargs)
    got_t, want_t = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    assert len(got_t) == len(want_t)
    dtype = want_t[0].dtype
    for i, (g, w) in enumerate(zip(got_t, want_t)):
        assert_close(g, w, dtype, f"{op} output {i} on {backend}")
    return got


def numerical_grad(f, x, h=1e-6):
    """Central differences of the scalar f at x (float64), one coordinate at a time."""
    x = x.astype(np.float64).copy()
    grad = np.empty_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f(x)
        flat[i] = old - h
        down = f(x)
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


def assert_grad(analytic, f, x, what, rtol=1e-5, atol=1e-7):
    np.testing.assert_allclose(analytic, numerical_grad(f, x), rtol=rtol, atol=atol, err_msg=what)
