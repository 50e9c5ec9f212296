"""Big-endian inputs (np.load of a file written elsewhere, ">f4" dtypes) are converted to native
byte order before any compiled call: every op gives exactly its native-input result."""
import numpy as np
import pytest

from fastae import kernels
from parity import backends_under_test

BACKENDS = ["numpy"] + backends_under_test()
SWAPPED = {"<": ">", ">": "<"}


def non_native(a):
    """a with the same values in the other byte order."""
    a = np.asarray(a)
    order = SWAPPED["<" if np.little_endian else ">"]
    out = a.astype(a.dtype.newbyteorder(order))
    assert not out.dtype.isnative
    np.testing.assert_array_equal(out, a)
    return out


def same(got, want):
    got_t, want_t = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got_t, want_t):
        assert g.dtype.isnative and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_op_takes_big_endian_input(rng, backend, dtype):
    n, d, k = 3, 5, 4
    x, mu, logvar, eps, dz = (rng.standard_normal((n, d)).astype(dtype) for _ in range(5))
    W, b = rng.standard_normal((k, d)).astype(dtype), rng.standard_normal(k).astype(dtype)
    target = rng.uniform(size=(n, d)).astype(dtype)
    calls = {
        "affine_forward": (lambda x, W, b: kernels.affine_forward(x, W, b, "tanh", backend=backend), (x, W, b)),
        "l1_prox": (lambda h: kernels.l1_prox(h, 0.3, backend=backend), (x,)),
        "l1_prox nonneg": (lambda h: kernels.l1_prox(h, 0.3, nonneg=True, backend=backend), (x,)),
        "reparam_forward eps": (lambda m, l, e: kernels.reparam_forward(m, l, e, backend=backend),
                                (mu, logvar, eps)),
        "reparam_forward seed": (lambda m, l: kernels.reparam_forward(m, l, seed=3, backend=backend), (mu, logvar)),
        "reparam_backward eps": (lambda g, m, l, e: kernels.reparam_backward(g, m, l, e, backend=backend),
                                 (dz, mu, logvar, eps)),
        "reparam_backward seed": (lambda g, m, l: kernels.reparam_backward(g, m, l, seed=3, backend=backend),
                                  (dz, mu, logvar)),
        "mse_loss": (lambda p, t: kernels.mse_loss(p, t, backend=backend), (x, target)),
        "bce_logits_loss": (lambda p, t: kernels.bce_logits_loss(p, t, backend=backend), (x, target)),
    }
    for act in kernels.ACTIVATIONS:
        y = kernels.affine_forward(x, W, b, act, backend="numpy")
        calls[f"affine_backward {act}"] = (
            lambda g, x_, y_, W_, act=act: kernels.affine_backward(g, x_, y_, W_, act, backend=backend),
            (y[:, :k] * 0.5, x, y, W))
    for what, (call, args) in calls.items():
        want = call(*args)
        for i in range(len(args)):  # each argument alone, then all of them
            same(call(*[non_native(a) if j == i else a for j, a in enumerate(args)]), want)
        same(call(*map(non_native, args)), want)
    # out= of native dtype with big-endian input
    out = np.empty((n, d), dtype)
    assert kernels.l1_prox(non_native(x), 0.3, backend=backend, out=out) is out
    same(out, kernels.l1_prox(x, 0.3, backend=backend))
    # integers in the other byte order convert to native float64
    same(kernels.l1_prox(non_native(np.arange(6).reshape(2, 3)), 1, backend=backend),
         kernels.l1_prox(np.arange(6.0).reshape(2, 3), 1, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_takes_big_endian_grad_and_state(rng, backend, dtype):
    size = 33
    p0 = rng.standard_normal(size).astype(dtype)
    grads = [rng.standard_normal(size).astype(dtype) for _ in range(3)]

    def run(swap_grad, swap_state):
        p, m, v = p0.copy(), np.zeros(size, dtype), np.zeros(size, dtype)
        if swap_state:
            p, m, v = (non_native(a) for a in (p, m, v))
        for step, g in enumerate(grads, 1):
            assert kernels.adam_step(p, non_native(g) if swap_grad else g, m, v, step=step, lr=0.1,
                                     backend=backend) is None
        return p, m, v

    want = run(False, False)
    for swap_grad, swap_state in ((True, False), (False, True), (True, True)):
        got = run(swap_grad, swap_state)
        for g, w in zip(got, want):
            assert g.dtype.isnative != swap_state  # updated in place, in its own byte order
            np.testing.assert_array_equal(g, w)
