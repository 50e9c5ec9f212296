"""GPU kernels: CuPy (cuBLAS) for the matrix products, fused numba.cuda kernels for the rest.

The per-element math is `elementwise.py`, shared with the CPU kernels. Under Numba's CUDA simulator
(NUMBA_ENABLE_CUDASIM=1) the same kernels run on NumPy arrays, which is how CI tests them.
Signatures mirror `cpu.py`: outputs and workspaces are passed in.
"""
import math

import numpy as np
from numba import cuda

from . import elementwise as ew

_ew = ew.compiled(cuda.jit(device=True))
activate, activation_grad, soft_threshold = _ew.activate, _ew.activation_grad, _ew.soft_threshold
normal_at, uniform_at, bce_with_logits = _ew.normal_at, _ew.uniform_at, _ew.bce_with_logits
LINEAR = ew.LINEAR
_BLOCK = 128
_BLOCK_2D = (16, 16)


def array_module(a):
    if isinstance(a, np.ndarray):
        return np
    import cupy
    return cupy


def _grid(n):
    return (n + _BLOCK - 1) // _BLOCK, _BLOCK


def _grid_2d(shape):
    return tuple((s + t - 1) // t for s, t in zip(shape, _BLOCK_2D)), _BLOCK_2D


@cuda.jit
def _bias_activate(out, b, act):
    i, j = cuda.grid(2)
    if i < out.shape[0] and j < out.shape[1]:
        out[i, j] = activate(out[i, j] + b[j], act)


@cuda.jit
def _delta_colsum(dy, y, act, delta, db):
    # One thread per column walks the rows: neighbouring threads read neighbouring columns
    # (coalesced), and the column sum needs no atomics, so it is deterministic.
    j = cuda.grid(1)
    if j < dy.shape[1]:
        acc = 0.0
        for i in range(dy.shape[0]):
            d = dy[i, j] * activation_grad(y[i, j], act)
            if act != LINEAR:
                delta[i, j] = d
            acc += d
        db[j] = acc


@cuda.jit
def _l1_prox(h, threshold, nonneg, out):
    i = cuda.grid(1)
    if i < h.size:
        out[i] = soft_threshold(h[i], threshold, nonneg)


@cuda.jit
def _reparam_forward(mu, logvar, eps, has_eps, key, z, kl):
    i = cuda.grid(1)
    if i < mu.shape[0]:
        k = mu.shape[1]
        acc = 0.0
        for j in range(k):
            m, lv = mu[i, j], logvar[i, j]
            e = eps[i, j] if has_eps else normal_at(key, np.uint64(i * k + j))
            z[i, j] = m + math.exp(0.5 * lv) * e
            acc += 1.0 + lv - m * m - math.exp(lv)
        kl[i] = -0.5 * acc


@cuda.jit
def _reparam_backward(dz, mu, logvar, eps, has_eps, key, beta, dmu, dlogvar):
    i, j = cuda.grid(2)
    if i < mu.shape[0] and j < mu.shape[1]:
        lv = logvar[i, j]
        e = eps[i, j] if has_eps else normal_at(key, np.uint64(i * mu.shape[1] + j))
        dmu[i, j] = dz[i, j] + beta * mu[i, j]
        dlogvar[i, j] = 0.5 * (dz[i, j] * e * math.exp(0.5 * lv) + beta * (math.exp(lv) - 1.0))


@cuda.jit
def _mse_loss(pred, target, scale, rows, grad):
    i = cuda.grid(1)
    if i < pred.shape[0]:
        g_scale = 2.0 * scale / pred.shape[0]
        acc = 0.0
        for j in range(pred.shape[1]):
            d = pred[i, j] - target[i, j]
            acc += d * d
            grad[i, j] = g_scale * d
        rows[i] = scale * acc


@cuda.jit
def _bce_logits_loss(logits, target, scale, rows, grad):
    i = cuda.grid(1)
    if i < logits.shape[0]:
        g_scale = scale / logits.shape[0]
        acc = 0.0
        for j in range(logits.shape[1]):
            loss, g = bce_with_logits(logits[i, j], target[i, j])
            acc += loss
            grad[i, j] = g_scale * g
        rows[i] = scale * acc


@cuda.jit(device=True)
def _finite(x):
    return x - x == 0  # False for inf and NaN


@cuda.jit
def _adam_step(param, grad, m, v, lr, beta_1, beta_2, epsilon, bias_1, bias_2, nonfinite):
    i = cuda.grid(1)
    if i < param.size:
        g = grad[i]
        mi = beta_1 * m[i] + (1.0 - beta_1) * g
        vi = beta_2 * v[i] + (1.0 - beta_2) * g * g
        m[i] = mi
        v[i] = vi
        pi = param[i] - lr * (mi / bias_1) / (math.sqrt(vi / bias_2) + epsilon)
        param[i] = pi
        if not (_finite(pi) and _finite(mi) and _finite(vi)):
            nonfinite[0] = 1  # every writer writes the same value: no atomics needed


@cuda.jit
def _sgd_step(param, grad, velocity, lr, momentum, nonfinite):
    i = cuda.grid(1)
    if i < param.size:
        vi = momentum * velocity[i] - lr * grad[i]
        velocity[i] = vi
        pi = param[i] + velocity[i]  # the stored (parameter-precision) velocity, as before
        param[i] = pi
        if not (_finite(pi) and _finite(vi)):
            nonfinite[0] = 1


@cuda.jit
def _corrupt(x, level, kind, key, out):
    i, j = cuda.grid(2)
    if i < x.shape[0] and j < x.shape[1]:
        c = np.uint64(i * x.shape[1] + j)
        if kind == 0:
            out[i, j] = x[i, j] + level * normal_at(key, c)
        else:
            out[i, j] = x[i, j] if uniform_at(key, c) >= level else x[i, j] * 0


@cuda.jit
def _gather_rows(X, index, start, out):
    i, j = cuda.grid(2)
    if i < out.shape[0] and j < out.shape[1]:
        out[i, j] = X[index[start + i], j]


@cuda.jit
def _l1_code_grad(dh, h, weight, out):
    i, j = cuda.grid(2)
    if i < h.shape[0] and j < h.shape[1]:
        v = h[i, j]
        out[i, j] = (dh[i, j] + weight * (1.0 if v > 0 else -1.0)) if v != 0 else v * 0


@cuda.jit
def _l1_penalty_rows(h, lam, rows):
    i = cuda.grid(1)
    if i < h.shape[0]:
        acc = 0.0
        for j in range(h.shape[1]):
            acc += abs(h[i, j])
        rows[i] += lam * acc


def _flag(like):
    return array_module(like).zeros(1, np.int32)


def sgd_step(param, grad, velocity, lr, momentum):
    """Returns True when every updated parameter and velocity is finite (flagged in the same
    kernel; reading the flag waits for the kernel)."""
    blocks, threads = _grid(param.size)
    nonfinite = _flag(param)
    _sgd_step[blocks, threads](param, grad, velocity, lr, momentum, nonfinite)
    return not bool(nonfinite[0])


def corrupt(x, level, kind, key, out):
    blocks, threads = _grid_2d(x.shape)
    _corrupt[blocks, threads](x, level, kind, key, out)


def gather_rows(X, index, start, out):
    blocks, threads = _grid_2d(out.shape)
    _gather_rows[blocks, threads](X, index, start, out)


def l1_code_grad(dh, h, weight, out):
    blocks, threads = _grid_2d(h.shape)
    _l1_code_grad[blocks, threads](dh, h, weight, out)


def l1_penalty_rows(h, lam, rows):
    blocks, threads = _grid(h.shape[0])
    _l1_penalty_rows[blocks, threads](h, lam, rows)


def repeat_rows(src, copies, out):
    n = src.shape[0]
    for s in range(copies):
        out[s * n:(s + 1) * n] = src


def fold_rows(src, copies, out):
    n = out.shape[0]
    out[...] = src[:n]
    for s in range(1, copies):
        out += src[s * n:(s + 1) * n]


def affine_forward(x, W, b, act, out):
    array_module(x).matmul(x, W.T, out=out)
    blocks, threads = _grid_2d(out.shape)
    _bias_activate[blocks, threads](out, b, act)


def affine_backward(dy, x, y, W, act, delta, dx, dW, db):
    blocks, threads = _grid(dy.shape[1])
    _delta_colsum[blocks, threads](dy, y, act, delta, db)
    if act == LINEAR:
        delta = dy  # the kernel wrote no delta: a linear layer's delta is dy itself
    xp = array_module(x)
    xp.matmul(delta.T, x, out=dW)
    if dx.shape[0] > 0:
        xp.matmul(delta, W, out=dx)


def l1_prox(h, threshold, nonneg, out):
    blocks, threads = _grid(h.size)
    _l1_prox[blocks, threads](h, threshold, nonneg, out)
    return True  # h was checked before the launch


def reparam_forward(mu, logvar, eps, has_eps, key, z, kl, scratch=None):
    blocks, threads = _grid(mu.shape[0])
    _reparam_forward[blocks, threads](mu, logvar, eps, has_eps, key, z, kl)


def reparam_backward(dz, mu, logvar, eps, has_eps, key, beta, dmu, dlogvar, scratch=None):
    blocks, threads = _grid_2d(mu.shape)
    _reparam_backward[blocks, threads](dz, mu, logvar, eps, has_eps, key, beta, dmu, dlogvar)


def mse_loss(pred, target, scale, rows, grad, terms=None):
    blocks, threads = _grid(pred.shape[0])
    _mse_loss[blocks, threads](pred, target, scale, rows, grad)


def bce_logits_loss(logits, target, scale, rows, grad, terms=None):
    blocks, threads = _grid(logits.shape[0])
    _bce_logits_loss[blocks, threads](logits, target, scale, rows, grad)


def adam_step(param, grad, m, v, step, lr, beta_1, beta_2, epsilon):
    """Returns True when every updated parameter and moment is finite (see `sgd_step`)."""
    blocks, threads = _grid(param.size)
    nonfinite = _flag(param)
    _adam_step[blocks, threads](param, grad, m, v, lr, beta_1, beta_2, epsilon,
                                1.0 - beta_1 ** step, 1.0 - beta_2 ** step, nonfinite)
    return not bool(nonfinite[0])


def all_finite(a):
    return bool(array_module(a).isfinite(a).all())


def row_sum(a):
    return float(a.sum())
