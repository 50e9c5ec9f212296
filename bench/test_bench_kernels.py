"""Kernel benchmarks against the naive NumPy reference, each validated before it is timed."""
import numba
import numpy as np
import pytest

from conftest import assert_same, contenders
from fastae import kernels


@numba.njit(nogil=True, cache=True)
def _gemms_alone(x, W, delta, y, dx, dW):
    """The three matrix products of an affine forward + backward, nothing else: the floor."""
    np.dot(x, W.T, y)
    np.dot(delta.T, x, dW)
    np.dot(delta, W, dx)


def _affine_step(backend, x, W, b, dy, outs=None):
    y = kernels.affine_forward(x, W, b, "relu", backend=backend, out=outs and outs[0])
    return (y,) + kernels.affine_backward(dy, x, y, W, "relu", backend=backend, out=outs and outs[1:])


@pytest.mark.parametrize("rows", [256, 1])
@pytest.mark.parametrize("impl", contenders("floor", "cpu_out"))
def test_affine_forward_backward(benchmark, threads, impl, rows):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 784), dtype=np.float32)
    W = rng.standard_normal((512, 784), dtype=np.float32) * 0.05
    b = rng.standard_normal(512, dtype=np.float32)
    dy = rng.standard_normal((rows, 512), dtype=np.float32)
    benchmark.group = f"affine fwd+bwd {rows}x784->512 relu f32 {threads}thr"
    y, dx, dW, db = np.empty((rows, 512), np.float32), np.empty_like(x), np.empty_like(W), np.empty_like(b)
    if impl == "floor":  # preallocated outputs, like cpu_out
        benchmark(_gemms_alone, x, W, dy, y, dx, dW)
        return
    args = ("cpu", x, W, b, dy, (y, dx, dW, db)) if impl == "cpu_out" else (impl, x, W, b, dy)
    assert_same(_affine_step(*args), _affine_step("numpy", x, W, b, dy), rtol=1e-3)
    benchmark(_affine_step, *args)


@pytest.mark.parametrize("impl", contenders())
def test_l1_prox(benchmark, threads, impl):
    h = np.random.default_rng(1).standard_normal((4096, 512), dtype=np.float32)
    benchmark.group = f"l1_prox 4096x512 f32 {threads}thr"
    assert_same(kernels.l1_prox(h, 0.5, backend=impl), kernels.l1_prox(h, 0.5, backend="numpy"))
    benchmark(kernels.l1_prox, h, 0.5, backend=impl)


def _reparam_step(backend, mu, logvar, dz):
    z, kl = kernels.reparam_forward(mu, logvar, seed=3, backend=backend)
    return (z, kl) + kernels.reparam_backward(dz, mu, logvar, seed=3, backend=backend)


def _reparam_numpy_rng(mu, logvar, dz):
    """What a NumPy user writes: draw eps with a Generator, keep it for the backward."""
    eps = np.random.default_rng(3).standard_normal(mu.shape, dtype=np.float32)
    z, kl = kernels.reparam_forward(mu, logvar, eps, backend="numpy")
    return (z, kl) + kernels.reparam_backward(dz, mu, logvar, eps, backend="numpy")


@pytest.mark.parametrize("impl", contenders("numpy_rng"))
def test_reparam_forward_backward(benchmark, threads, impl):
    rng = np.random.default_rng(2)
    mu, logvar, dz = (rng.standard_normal((4096, 64), dtype=np.float32) for _ in range(3))
    benchmark.group = f"reparam fwd+bwd 4096x64 in-kernel noise f32 {threads}thr"
    if impl == "numpy_rng":
        benchmark(_reparam_numpy_rng, mu, logvar, dz)
        return
    assert_same(_reparam_step(impl, mu, logvar, dz), _reparam_step("numpy", mu, logvar, dz))
    benchmark(_reparam_step, impl, mu, logvar, dz)


@pytest.mark.parametrize("impl", contenders())
def test_adam_step(benchmark, threads, impl):
    rng = np.random.default_rng(4)
    n = 1 << 20
    grad = rng.standard_normal(n, dtype=np.float32)
    state = {b: [rng.standard_normal(n, dtype=np.float32) * 0 + 0.5, np.zeros(n, np.float32),
                 np.zeros(n, np.float32)] for b in (impl, "numpy")}
    for b, (p, m, v) in state.items():
        kernels.adam_step(p, grad, m, v, step=1, backend=b)
    assert_same(tuple(state[impl]), tuple(state["numpy"]))
    p, m, v = state[impl]
    benchmark.group = f"adam step 1M params f32 {threads}thr"
    benchmark(kernels.adam_step, p, grad, m, v, step=2, backend=impl)


@pytest.mark.parametrize("loss", ["mse_loss", "bce_logits_loss"])
@pytest.mark.parametrize("impl", contenders())
def test_loss(benchmark, threads, impl, loss):
    rng = np.random.default_rng(5)
    pred = rng.standard_normal((256, 784), dtype=np.float32) * 4
    target = rng.uniform(size=(256, 784)).astype(np.float32)
    fn = getattr(kernels, loss)
    benchmark.group = f"{loss} value+grad 256x784 f32 {threads}thr"
    assert_same(fn(pred, target, backend=impl), fn(pred, target, backend="numpy"))
    benchmark(fn, pred, target, backend=impl)
