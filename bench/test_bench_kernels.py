"""Kernel benchmarks against the naive NumPy reference, each validated before it is timed; floors
(the BLAS calls alone, or a NumPy copy moving the same bytes), and for the reparam step its peers
(PyTorch, NumPy with Generator noise)."""
import numba
import numpy as np
import pytest

from conftest import assert_same, contenders, group
from fastae import kernels
from peers import import_torch


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
    benchmark.group = group(f"affine fwd+bwd {rows}x784->512 relu f32", threads)
    y, dx, dW, db = np.empty((rows, 512), np.float32), np.empty_like(x), np.empty_like(W), np.empty_like(b)
    if impl == "floor":  # preallocated outputs, like cpu_out
        benchmark(_gemms_alone, x, W, dy, y, dx, dW)
        return
    args = ("cpu", x, W, b, dy, (y, dx, dW, db)) if impl == "cpu_out" else (impl, x, W, b, dy)
    assert_same(_affine_step(*args), _affine_step("numpy", x, W, b, dy), rtol=1e-3)
    benchmark(_affine_step, *args)


@pytest.mark.parametrize("impl", contenders("cpu_out", "floor"))
def test_l1_prox(benchmark, threads, impl):
    """Soft-thresholding of 4096x512: memory bound, so its floor is a copy of the same size
    (np.copyto into a preallocated array: 8 MB read, 8 MB written); cpu_out writes into a
    preallocated result like the floor."""
    h = np.random.default_rng(1).standard_normal((4096, 512), dtype=np.float32)
    out = np.empty_like(h)
    benchmark.group = group("l1_prox 4096x512 f32", threads)
    if impl == "floor":
        benchmark(np.copyto, out, h)
        return
    want = kernels.l1_prox(h, 0.5, backend="numpy")
    if impl == "cpu_out":
        assert_same(kernels.l1_prox(h, 0.5, backend="cpu", out=out), want)
        benchmark(kernels.l1_prox, h, 0.5, backend="cpu", out=out)
        return
    assert_same(kernels.l1_prox(h, 0.5, backend=impl), want)
    benchmark(kernels.l1_prox, h, 0.5, backend=impl)


def _reparam_step(backend, mu, logvar, dz):
    z, kl = kernels.reparam_forward(mu, logvar, seed=3, backend=backend)
    return (z, kl) + kernels.reparam_backward(dz, mu, logvar, seed=3, backend=backend)


def _reparam_numpy_rng(mu, logvar, dz):
    """What a NumPy user writes: draw eps with a Generator, keep it for the backward."""
    eps = np.random.default_rng(3).standard_normal(mu.shape, dtype=np.float32)
    z, kl = kernels.reparam_forward(mu, logvar, eps, backend="numpy")
    return (z, kl) + kernels.reparam_backward(dz, mu, logvar, eps, backend="numpy")


def _reparam_torch(torch, mu, logvar, dz):
    """The same step in eager PyTorch: z = mu + exp(logvar / 2) * eps with torch.randn noise, the
    per-row KL, and autograd's (dmu, dlogvar) of sum(dz * z) + sum(kl). step(eps=None): fresh
    noise, or the given eps (to check it against the reference)."""
    mu_t, lv_t = (torch.from_numpy(a).requires_grad_() for a in (mu, logvar))
    dz_t, ones = torch.from_numpy(dz), torch.ones(mu.shape[0])

    def step(eps=None):
        eps = torch.randn(mu.shape) if eps is None else torch.from_numpy(eps)
        z = mu_t + torch.exp(0.5 * lv_t) * eps
        kl = -0.5 * torch.sum(1 + lv_t - mu_t * mu_t - torch.exp(lv_t), dim=1)
        dmu, dlv = torch.autograd.grad((z, kl), (mu_t, lv_t), (dz_t, ones))
        return z, kl, dmu, dlv
    return step


@pytest.mark.parametrize("shape", [(4096, 64), (256, 20)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("impl", contenders("numpy_rng", "torch", "floor"))
def test_reparam_forward_backward(benchmark, threads, impl, shape):
    """The VAE's sampling and KL step and its backward. Floor: the bytes it moves (forward: mu and
    logvar in, z out; backward: dz, mu and logvar in, dmu and dlogvar out: 5 arrays read, 3
    written) as one NumPy copy of 4 arrays into a preallocated one."""
    rng = np.random.default_rng(2)
    mu, logvar, dz = (rng.standard_normal(shape, dtype=np.float32) for _ in range(3))
    benchmark.group = group(f"reparam fwd+bwd {shape[0]}x{shape[1]} in-kernel noise f32", threads)
    if impl == "floor":
        src = rng.standard_normal((4,) + shape, dtype=np.float32)
        benchmark(np.copyto, np.empty_like(src), src)
        return
    if impl == "numpy_rng":
        benchmark(_reparam_numpy_rng, mu, logvar, dz)
        return
    if impl == "torch":
        step = _reparam_torch(import_torch(threads), mu, logvar, dz)
        eps = rng.standard_normal(shape, dtype=np.float32)
        want = kernels.reparam_forward(mu, logvar, eps, backend="numpy")
        want += kernels.reparam_backward(dz, mu, logvar, eps, backend="numpy")
        assert_same(tuple(t.detach().numpy() for t in step(eps)), want)
        benchmark(step)
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
    benchmark.group = group("adam step 1M params f32", threads)
    benchmark(kernels.adam_step, p, grad, m, v, step=2, backend=impl)


@pytest.mark.parametrize("loss", ["mse_loss", "bce_logits_loss"])
@pytest.mark.parametrize("impl", contenders())
def test_loss(benchmark, threads, impl, loss):
    rng = np.random.default_rng(5)
    pred = rng.standard_normal((256, 784), dtype=np.float32) * 4
    target = rng.uniform(size=(256, 784)).astype(np.float32)
    fn = getattr(kernels, loss)
    benchmark.group = group(f"{loss} value+grad 256x784 f32", threads)
    assert_same(fn(pred, target, backend=impl), fn(pred, target, backend="numpy"))
    benchmark(fn, pred, target, backend=impl)
