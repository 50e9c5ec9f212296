"""Every op on every backend against the NumPy reference, and every gradient against float64
central differences."""
import numpy as np
import pytest

from conftest import SHAPES
from fastae import kernels
from parity import assert_grad, backends_under_test, check_op

BACKENDS = backends_under_test()
DTYPES = [np.float64, np.float32]
ACTS = list(kernels.ACTIVATIONS)


def layer(rng, n, d_in, d_out, dtype):
    x = rng.standard_normal((n, d_in)).astype(dtype)
    W = (rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)).astype(dtype)
    b = rng.standard_normal(d_out).astype(dtype)
    return x, W, b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("n,d", SHAPES)
def test_affine_parity(rng, backend, dtype, act, n, d):
    x, W, b = layer(rng, n, d, d // 2 + 2, dtype)
    y = check_op("affine_forward", backend, x, W, b, act)
    dy = rng.standard_normal(y.shape).astype(dtype)
    check_op("affine_backward", backend, dy, x, y, W, act)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d", SHAPES)
def test_elementwise_parity(rng, backend, dtype, n, d):
    h = (rng.standard_normal((n, d)) * 2).astype(dtype)
    for nonneg in (False, True):
        check_op("l1_prox", backend, h, 0.7, nonneg=nonneg)
    mu, logvar, eps, dz = (rng.standard_normal((n, d)).astype(dtype) for _ in range(4))
    for e in (eps, None):
        check_op("reparam_forward", backend, mu, logvar, e, seed=7)
        check_op("reparam_backward", backend, dz, mu, logvar, e, beta=0.5, seed=7)
    target = rng.uniform(size=(n, d)).astype(dtype)
    check_op("mse_loss", backend, mu, target)
    check_op("bce_logits_loss", backend, mu * 5, target)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_parity(rng, backend, dtype):
    size = 129 if backend == "cpu" else 17
    state = {b: [np.zeros(size, dtype) for _ in range(3)] for b in ("numpy", backend)}
    for b in state:
        state[b][0][:] = np.linspace(-1, 1, size)
    for step in range(1, 4):
        grad = rng.standard_normal(size).astype(dtype)
        for b, (p, m, v) in state.items():
            kernels.adam_step(p, grad, m, v, step=step, lr=0.01, backend=b)
    for got, want in zip(state[backend], state["numpy"]):
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-7)
    assert not np.allclose(state[backend][0], np.linspace(-1, 1, size))  # it really moved


def test_adam_matches_textbook_first_step():
    # After one step from zero moments, Adam moves each parameter by lr * sign(grad) (eps aside).
    p, m, v = np.zeros(4), np.zeros(4), np.zeros(4)
    kernels.adam_step(p, np.array([3.0, -0.5, 1e-3, -2.0]), m, v, step=1, lr=0.1, epsilon=1e-15)
    np.testing.assert_allclose(p, [-0.1, 0.1, -0.1, 0.1], rtol=1e-10)


@pytest.mark.parametrize("backend", ["numpy"] + BACKENDS)
@pytest.mark.parametrize("act", ACTS)
def test_affine_backward_finite_differences(rng, backend, act):
    x, W, b = layer(rng, 3, 5, 4, np.float64)
    G = rng.standard_normal((3, 4))

    def loss(x_, W_, b_):
        return float(np.sum(G * kernels.affine_forward(x_, W_, b_, act, backend="numpy")))

    y = kernels.affine_forward(x, W, b, act, backend=backend)
    dx, dW, db = kernels.affine_backward(G, x, y, W, act, backend=backend)
    assert_grad(dx, lambda v: loss(v, W, b), x, f"dx {act}")
    assert_grad(dW, lambda v: loss(x, v, b), W, f"dW {act}")
    assert_grad(db, lambda v: loss(x, W, v), b, f"db {act}")


@pytest.mark.parametrize("backend", ["numpy"] + BACKENDS)
@pytest.mark.parametrize("explicit_eps", [True, False])
def test_reparam_backward_finite_differences(rng, backend, explicit_eps):
    mu, logvar = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)) * 0.5
    G = rng.standard_normal((3, 4))
    eps = rng.standard_normal((3, 4)) if explicit_eps else None
    beta = 0.7

    def objective(mu_, logvar_):
        z, kl = kernels.reparam_forward(mu_, logvar_, eps, seed=11, backend="numpy")
        return float(np.sum(G * z) + beta * np.sum(kl))

    dmu, dlogvar = kernels.reparam_backward(G, mu, logvar, eps, beta=beta, seed=11, backend=backend)
    assert_grad(dmu, lambda v: objective(v, logvar), mu, "dmu")
    assert_grad(dlogvar, lambda v: objective(mu, v), logvar, "dlogvar")


@pytest.mark.parametrize("backend", ["numpy"] + BACKENDS)
@pytest.mark.parametrize("loss", ["mse_loss", "bce_logits_loss"])
def test_loss_finite_differences(rng, backend, loss):
    pred, target = rng.standard_normal((3, 5)) * 3, rng.uniform(size=(3, 5))
    fn = getattr(kernels, loss)
    rows, grad = fn(pred, target, backend=backend)
    assert rows.shape == (3,)
    assert_grad(grad, lambda v: float(np.mean(fn(v, target, backend="numpy")[0])), pred, loss)


def test_bce_matches_the_textbook_formula(rng):
    logits, target = rng.standard_normal((4, 6)), rng.uniform(size=(4, 6))
    p = 1 / (1 + np.exp(-logits))
    textbook = -np.sum(target * np.log(p) + (1 - target) * np.log(1 - p), axis=1)
    for backend in ["numpy"] + BACKENDS:
        np.testing.assert_allclose(kernels.bce_logits_loss(logits, target, backend=backend)[0], textbook)


def test_mse_matches_the_textbook_formula(rng):
    pred, target = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    for backend in ["numpy"] + BACKENDS:
        rows = kernels.mse_loss(pred, target, backend=backend)[0]
        np.testing.assert_allclose(rows, np.linalg.norm(pred - target, axis=1) ** 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_argument_is_filled_and_returned(rng, backend):
    x, W, b = layer(rng, 3, 5, 4, np.float32)
    out = np.full((3, 4), np.nan, np.float32)
    y = kernels.affine_forward(x, W, b, "tanh", backend=backend, out=out)
    assert y is out
    np.testing.assert_allclose(out, kernels.affine_forward(x, W, b, "tanh", backend="numpy"), rtol=1e-5)
    h = rng.standard_normal((2, 3)).astype(np.float32)
    out = np.empty_like(h)
    assert kernels.l1_prox(h, 0.3, backend=backend, out=out) is out
    np.testing.assert_allclose(out, kernels.l1_prox(h, 0.3, backend="numpy"), rtol=1e-6)


@pytest.mark.parametrize("backend", ["numpy"] + BACKENDS)
def test_integer_and_half_inputs_are_converted(backend):
    x = np.arange(6).reshape(2, 3)
    W = np.ones((4, 3), np.float32)
    y = kernels.affine_forward(x, W, np.zeros(4, np.float32), "linear", backend=backend)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.repeat([[3.0], [12.0]], 4, axis=1))
    assert kernels.l1_prox(np.ones(3, np.float16), 0.5, backend=backend).dtype == np.float32
    assert kernels.l1_prox([1, -2, 3], 1, backend=backend).dtype == np.float64


def test_l1_prox_matches_scikit_learn_sparse_coder(rng):
    from sklearn.decomposition import SparseCoder
    h = rng.standard_normal((17, 129))
    for nonneg in (False, True):
        coder = SparseCoder(dictionary=np.eye(129), transform_algorithm="threshold",
                            transform_alpha=0.4, positive_code=nonneg)
        want = coder.transform(h)
        for backend in ["numpy"] + BACKENDS:
            np.testing.assert_allclose(kernels.l1_prox(h, 0.4, nonneg=nonneg, backend=backend), want)
    assert np.mean(kernels.l1_prox(h, 0.4) == 0) > 0.25  # thresholding really zeroes entries


@pytest.mark.skipif("cpu" not in BACKENDS, reason="the cpu backend cannot run here")
def test_l1_prox_plain_call_skips_the_full_checks_and_agrees(rng, monkeypatch):
    # The common call (a plain C-contiguous float array, a float threshold, a bool nonneg) takes a
    # short path past checks.arrays; every other flavour still goes through it.
    import fastae.kernels as K
    full = K._checks.arrays
    routed = []
    monkeypatch.setattr(K._checks, "arrays", lambda *a, **k: routed.append(1) or full(*a, **k))
    for dtype in (np.float32, np.float64):
        for shape in ((7,), (3, 17), (2, 3, 5)):
            h = (rng.standard_normal(shape) * 2).astype(dtype)
            for nonneg in (False, True):
                got = kernels.l1_prox(h, 0.7, nonneg=nonneg)
                want = kernels.l1_prox(h, 0.7, nonneg=nonneg, backend="numpy")
                assert got.dtype == h.dtype and got.shape == h.shape
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert len(routed) == 12  # only the numpy reference calls went through the full checks
    h = rng.standard_normal((3, 17))
    h[1, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kernels.l1_prox(h, 0.5)
    frozen = rng.standard_normal((3, 17))
    frozen.flags.writeable = False
    for call in (lambda: kernels.l1_prox(frozen, 0.5), lambda: kernels.l1_prox(frozen.T, 0.5),
                 lambda: kernels.l1_prox(frozen, np.float64(0.5)), lambda: kernels.l1_prox(frozen, 1)):
        before = len(routed)
        call()
        assert len(routed) == before + 1
    with pytest.raises(TypeError, match="nonneg"):
        kernels.l1_prox(h, 0.5, nonneg=1)
    with pytest.raises(ValueError, match="threshold"):
        kernels.l1_prox(np.ones(3, np.float32), 1e39)
