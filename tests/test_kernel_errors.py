"""Bad input gets a clear error naming the argument; the caller's arrays are never written to."""
import numpy as np
import pytest

from fastae import kernels
from parity import backends_under_test

BACKENDS = ["numpy"] + backends_under_test()


@pytest.fixture
def arrays(rng):
    return {"x": rng.standard_normal((3, 5)), "W": rng.standard_normal((4, 5)), "b": rng.standard_normal(4)}


def forward(a, backend, **changes):
    a = {**a, **changes}
    return kernels.affine_forward(a["x"], a["W"], a["b"], "relu", backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arg,value,message", [
    ("x", np.ones(5), "x must be 2-D"),
    ("x", np.ones((3, 6)), "W must have shape"),
    ("x", np.ones((0, 5)), "x must not be empty"),
    ("x", np.array([[np.nan] * 5] * 3), "x contains NaN or infinity"),
    ("W", np.full((4, 5), np.inf), "W contains NaN or infinity"),
    ("b", np.ones(3), "b must have shape"),
    ("b", np.ones((1, 4)), "b must be 1-D"),
])
def test_bad_arrays_raise_value_error_naming_the_argument(arrays, backend, arg, value, message):
    with pytest.raises(ValueError, match=message):
        forward(arrays, backend, **{arg: value})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_every_op_rejects_nan_and_inf(backend, bad):
    good = np.full((3, 4), 0.5)
    broken = good.copy()
    broken[1, 2] = bad
    calls = {
        "h": lambda: kernels.l1_prox(broken, 0.1, backend=backend),
        "mu": lambda: kernels.reparam_forward(broken, good, seed=1, backend=backend),
        "logvar": lambda: kernels.reparam_backward(good, good, broken, seed=1, backend=backend),
        "eps": lambda: kernels.reparam_forward(good, good, broken, backend=backend),
        "pred": lambda: kernels.mse_loss(broken, good, backend=backend),
        "target": lambda: kernels.bce_logits_loss(good, broken, backend=backend),
        "dy": lambda: kernels.affine_backward(broken, good, good, np.ones((4, 4)), "relu", backend=backend),
        "grad": lambda: kernels.adam_step(good.copy(), broken, good * 0, good * 0, step=1, backend=backend),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=f"{name} contains NaN or infinity"):
            call()
    out = np.empty_like(good)
    with pytest.raises(ValueError, match="h contains NaN or infinity"):
        kernels.l1_prox(broken, 0.1, backend=backend, out=out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_types_raise_type_error(arrays, backend):
    with pytest.raises(TypeError, match="x must hold real numbers"):
        forward(arrays, backend, x=arrays["x"] + 1j)
    with pytest.raises(TypeError, match="x must be a numeric array"):
        forward(arrays, backend, x=np.array([["a"] * 5] * 3))
    with pytest.raises(TypeError, match="x must be a numeric array"):
        forward(arrays, backend, x=np.array([[object()] * 5] * 3))
    with pytest.raises(TypeError, match="x is float32 but W is float64"):
        forward(arrays, backend, x=arrays["x"].astype(np.float32))
    with pytest.raises(TypeError, match="x must be an array, got None"):
        forward(arrays, backend, x=None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_parameters(arrays, backend):
    x = arrays["x"]
    with pytest.raises(ValueError, match="activation must be one of"):
        kernels.affine_forward(x, arrays["W"], arrays["b"], "softmax", backend=backend)
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        kernels.l1_prox(x, -0.1, backend=backend)
    with pytest.raises(TypeError, match="threshold must be a real number"):
        kernels.l1_prox(x, "0.1", backend=backend)
    with pytest.raises(ValueError, match="target must lie in"):
        kernels.bce_logits_loss(x, x, backend=backend)
    with pytest.raises(ValueError, match="target must have the shape"):
        kernels.mse_loss(x, x[:, :2], backend=backend)
    with pytest.raises(ValueError, match="logvar must have the shape"):
        kernels.reparam_forward(x, x[:2], seed=0, backend=backend)
    with pytest.raises(ValueError, match="seed is required"):
        kernels.reparam_backward(x, x, x, backend=backend)
    with pytest.raises(ValueError, match="seed must be in"):
        kernels.reparam_forward(x, x, seed=-1, backend=backend)
    with pytest.raises(TypeError, match="seed must be an int or None"):  # checked though eps makes it unused
        kernels.reparam_forward(x, x, x, seed="bad", backend=backend)
    with pytest.raises(ValueError, match=r"^dz must have the shape of mu \(3, 5\), got \(2, 5\)"):
        kernels.reparam_backward(x[:2], x, x, seed=0, backend=backend)
    with pytest.raises(ValueError, match=r"^logvar must have the shape of mu"):
        kernels.reparam_backward(x, x, x[:2], seed=0, backend=backend)
    for step in (0, 2 ** 63):
        with pytest.raises(ValueError, match=r"step must be an int in \[1, 2\*\*63\)"):
            kernels.adam_step(x.copy(), x, x.copy(), x.copy(), step=step, backend=backend)
    with pytest.raises(ValueError, match="h must be an array of one dimension or more"):
        kernels.l1_prox(np.float32(3.0), 0.1, backend=backend)


def test_backend_names():
    x = np.ones((2, 2))
    with pytest.raises(ValueError, match="backend must be one of"):
        kernels.l1_prox(x, 0.1, backend="gpu")
    if "cuda" not in kernels.backends():
        with pytest.raises(RuntimeError, match="backend 'cuda' is not available"):
            kernels.l1_prox(x, 0.1, backend="cuda")
    assert kernels.l1_prox(x, 0.1, backend="auto").shape == (2, 2)


@pytest.mark.parametrize("backend", backends_under_test())
def test_bad_out(arrays, backend):
    x, W, b = arrays["x"], arrays["W"], arrays["b"]
    with pytest.raises(ValueError, match="out must have shape"):
        kernels.affine_forward(x, W, b, "relu", backend=backend, out=np.empty((3, 5)))
    with pytest.raises(ValueError, match="out must have shape"):
        kernels.affine_forward(x, W, b, "relu", backend=backend, out=np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.affine_forward(x, W, b, "relu", backend=backend, out=np.empty((4, 3)).T)
    with pytest.raises(ValueError, match="overlap"):
        kernels.l1_prox(x, 0.1, backend=backend, out=x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inputs_are_never_written(rng, backend):
    """Every op on read-only inputs (a write would raise) and on non-contiguous views."""
    a = {name: rng.standard_normal(s) for name, s in
         [("x", (3, 5)), ("W", (4, 5)), ("b", (4,)), ("m", (3, 5)), ("t", (3, 5))]}
    a["t"] = np.abs(a["t"]) / 4
    a["view"] = rng.standard_normal((5, 3)).T
    before = {k: v.copy() for k, v in a.items()}
    for v in a.values():
        v.setflags(write=False)
    x, W, b, m, t, view = (a[k] for k in ("x", "W", "b", "m", "t", "view"))
    dy = a["m"][:, :4]  # a read-only, non-contiguous gradient
    for act in kernels.ACTIVATIONS:
        y = kernels.affine_forward(view, W, b, act, backend=backend)
        assert_matches(y, kernels.affine_forward(before["view"], W, b, act, backend="numpy"), act)
        y.setflags(write=False)
        for grad in (y, dy):
            got = kernels.affine_backward(grad, x, y, W, act, backend=backend)
            want = kernels.affine_backward(grad.copy(), x, y.copy(), W, act, backend="numpy")
            for g, w, what in zip(got, want, ("dx", "dW", "db")):
                assert_matches(g, w, f"{what} {act}")
    assert_matches(kernels.l1_prox(view, 0.5, backend=backend), kernels.l1_prox(view.copy(), 0.5, backend="numpy"))
    for got, want in zip(kernels.reparam_forward(m, x, t, backend=backend),
                         kernels.reparam_forward(m.copy(), x.copy(), t.copy(), backend="numpy")):
        assert_matches(got, want, "reparam_forward")
    for got, want in zip(kernels.reparam_backward(t, m, x, None, seed=3, backend=backend),
                         kernels.reparam_backward(t.copy(), m.copy(), x.copy(), None, seed=3, backend="numpy")):
        assert_matches(got, want, "reparam_backward")
    for got, want in zip(kernels.mse_loss(view, t, backend=backend), kernels.mse_loss(view.copy(), t, backend="numpy")):
        assert_matches(got, want, "mse_loss")
    for got, want in zip(kernels.bce_logits_loss(x, t, backend=backend),
                         kernels.bce_logits_loss(x.copy(), t.copy(), backend="numpy")):
        assert_matches(got, want, "bce_logits_loss")
    for k, v in a.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def assert_matches(got, want, what=""):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_backward_of_a_memory_mapped_gradient(tmp_path, rng, backend, dtype):
    """A read-only dy straight from np.load(mmap_mode="r"): a linear layer's delta is dy itself."""
    x = rng.standard_normal((3, 5)).astype(dtype)
    W = rng.standard_normal((4, 5)).astype(dtype)
    np.save(tmp_path / "dy.npy", rng.standard_normal((3, 4)).astype(dtype))
    dy = np.load(tmp_path / "dy.npy", mmap_mode="r")
    y = kernels.affine_forward(x, W, np.zeros(4, dtype), "linear", backend="numpy")
    got = kernels.affine_backward(dy, x, y, W, "linear", backend=backend)
    want = (dy @ W, dy.T @ x, dy.sum(axis=0))
    for g, w, what in zip(got, want, ("dx", "dW", "db")):
        np.testing.assert_allclose(g, w, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6, err_msg=what)



@pytest.mark.parametrize("backend", backends_under_test())
def test_out_members_may_not_alias_each_other_or_the_inputs(arrays, backend):
    """Refused before anything is written: every out array keeps its sentinel."""
    x, W = arrays["x"], arrays["W"]
    dy = np.ones((3, 4))
    y = kernels.affine_forward(x, W, arrays["b"], "tanh", backend="numpy")

    def fresh():
        return np.full((3, 5), 7.0), np.full((4, 5), 7.0), np.full(4, 7.0)

    dx, dW, db = fresh()
    with pytest.raises(ValueError, match=r"out\[0\] \(dx\) and out\[2\] \(db\) must not overlap"):
        kernels.affine_backward(dy, x, y, W, "tanh", backend=backend, out=(dx, dW, dx[0, :4]))
    assert np.all(dx == 7) and np.all(dW == 7)
    with pytest.raises(ValueError, match=r"out\[1\] \(dW\) and out\[2\] \(db\) must not overlap"):
        kernels.affine_backward(dy, x, y, W, "tanh", backend=backend, out=(dx, dW, dW[0, :4]))
    assert np.all(dx == 7) and np.all(dW == 7)
    buf = np.full(40, 7.0)  # dx and dW as overlapping windows of one buffer
    with pytest.raises(ValueError, match="must not overlap"):
        kernels.affine_backward(dy, x, y, W, "tanh", backend=backend,
                                out=(buf[:15].reshape(3, 5), buf[10:30].reshape(4, 5), db))
    assert np.all(buf == 7) and np.all(db == 7)
    # a member overlapping an input: dx in x, dW in W, db in dy
    for member, source in ((0, "x"), (1, "W"), (2, "dy")):
        inputs = {"dy": dy.copy(), "x": x.copy(), "y": y.copy(), "W": W.copy()}
        before = {k: v.copy() for k, v in inputs.items()}
        outs = list(fresh())
        outs[member] = inputs[source] if member < 2 else inputs[source][0]
        with pytest.raises(ValueError, match="overlap"):
            kernels.affine_backward(inputs["dy"], inputs["x"], inputs["y"], inputs["W"], "tanh",
                                    backend=backend, out=tuple(outs))
        for k, v in inputs.items():
            np.testing.assert_array_equal(v, before[k], err_msg=k)
    Wb = np.zeros((4, 5))
    with pytest.raises(ValueError, match="overlap"):
        kernels.affine_forward(x, Wb, np.ones(4), "relu", backend=backend, out=Wb.reshape(-1)[:12].reshape(3, 4))
    assert np.all(Wb == 0)
    h = np.ones((3, 4))
    with pytest.raises(ValueError, match="overlap"):
        kernels.l1_prox(h, 0.1, backend=backend, out=h)


@pytest.mark.parametrize("backend", BACKENDS)
def test_l1_prox_writes_no_out_when_the_input_is_bad(backend):
    h = np.linspace(-2, 2, 64).reshape(8, 8)
    h[6, 3] = np.nan  # late in the pass: a fused kernel has written most of out by then
    out = np.full_like(h, 7.0)
    with pytest.raises(ValueError, match="h contains NaN or infinity"):
        kernels.l1_prox(h, 0.1, backend=backend, out=out)
    assert np.all(out == 7.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_state_may_not_alias(backend):
    def state():
        return np.ones(8), np.full(8, 0.5), np.zeros(8), np.zeros(8)

    p, g, m, v = state()
    cases = {"m and v": (p, g, m, m), "param and grad": (p, p, m, v), "param and m": (p, g, p, v),
             "grad and v": (p, g, m, g), "param and v": (p, g, m, p)}
    for what, args in cases.items():
        with pytest.raises(ValueError, match=f"{what} must not overlap"):
            kernels.adam_step(*args, step=1, backend=backend)
    big = np.zeros(16)
    with pytest.raises(ValueError, match="m and v must not overlap"):
        kernels.adam_step(p, g, big[:8], big[4:12], step=1, backend=backend)
    assert np.all(p == 1) and np.all(big == 0) and np.all(g == 0.5)
    for eps in (0, 0.0, -1e-8):
        with pytest.raises(ValueError, match="epsilon must be"):
            kernels.adam_step(p, g, m, v, step=1, epsilon=eps, backend=backend)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        kernels.adam_step(p, g, m, v, step=1, epsilon=0.0, backend=backend)
    assert np.all(p == 1) and np.all(m == 0) and np.all(v == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeds(backend):
    """None: fresh OS entropy; ints (Python or NumPy) in [0, 2**64); anything else is refused
    with an error naming the argument."""
    from fastae.kernels import checks
    x = np.zeros((2, 3))

    def draws(seed):
        return kernels.reparam_forward(x, x, seed=seed, backend=backend)[0]

    for bad in (1.5, 2.0, "x", "1", True, False, np.float64(3.0), b"1", [1]):
        with pytest.raises(TypeError, match="seed must be an int or None"):
            draws(bad)
        with pytest.raises(TypeError, match="seed must be an int or None"):
            kernels.reparam_backward(x, x, x, seed=bad, backend=backend)
    for bad in (-1, 2 ** 64, 2 ** 70, np.int64(-5)):
        with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\)"):
            draws(bad)
        with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\)"):
            kernels.reparam_backward(x, x, x, seed=bad, backend=backend)
    np.testing.assert_array_equal(draws(np.uint64(2 ** 64 - 1)), draws(2 ** 64 - 1))
    np.testing.assert_array_equal(draws(np.int32(7)), draws(7))
    assert not np.array_equal(draws(0), draws(2 ** 64 - 1))
    assert not np.array_equal(draws(None), draws(None))  # fresh entropy each call
    assert checks.seed(0) == 0 and checks.seed(2 ** 64 - 1) == 2 ** 64 - 1
    fresh = {checks.seed(None) for _ in range(8)}
    assert len(fresh) == 8 and all(0 <= s < 2 ** 64 for s in fresh)
    with pytest.raises(ValueError, match="noise_seed must be in"):
        checks.seed(-1, "noise_seed")
    with pytest.raises(TypeError, match="noise_seed must be an int"):
        checks.seed(1.5, "noise_seed")
