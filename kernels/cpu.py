"""Numba CPU kernels: BLAS for the matrix products, one fused pass for everything element-wise.

Kernels are serial and `nogil` (see `jit.py`). Outputs and workspaces are passed in, so model code
can reuse them from step to step.
"""
import math

import numpy as np

from . import cpu_math
from . import elementwise as ew
from .jit import cpu_jit

jit = cpu_jit
_ew = ew.compiled(cpu_jit(inline="always"),
                  {name: getattr(cpu_math, name) for name in ("exp", "log", "log1p", "sincos")})
activate, activation_grad, soft_threshold = _ew.activate, _ew.activation_grad, _ew.soft_threshold
normal_pair, bce_with_logits = _ew.normal_pair, _ew.bce_with_logits
exp = cpu_math.exp
LINEAR = ew.LINEAR


@cpu_jit(fastmath={"reassoc"})
def row_sum(a):
    """Sum of a 1-D buffer. Reassociation lets it vectorize; it is a separate (not inlined)
    function so that the flag never reaches the range reductions of `cpu_math`."""
    acc = 0.0
    for i in range(a.size):
        acc += a[i]
    return acc


@cpu_jit(fastmath={"reassoc"})
def nonfinite_sum(a):
    """0.0 when every entry of a 1-D array is finite, else NaN (inf * 0 and NaN * 0 are NaN)."""
    acc = 0.0
    for i in range(a.size):
        acc += a[i] * 0.0
    return acc


@jit
def affine_forward(x, W, b, act, out):
    np.dot(x, W.T, out)
    n, m = out.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = activate(out[i, j] + b[j], act)


@jit
def affine_backward(dy, x, y, W, act, delta, dx, dW, db):
    """delta = dy * act'(y) and db = column sums of delta in one pass, then two GEMMs.

    For a linear layer `delta` may be `dy` itself: it is then only read.
    """
    n, m = dy.shape
    db[:] = 0
    for i in range(n):
        for j in range(m):
            d = dy[i, j] * activation_grad(y[i, j], act)
            if act != LINEAR:
                delta[i, j] = d
            db[j] += d
    np.dot(delta.T, x, dW)
    if dx.shape[0] > 0:
        np.dot(delta, W, dx)


@jit
def l1_prox(h, threshold, nonneg, out):
    """Soft-thresholding; returns False if h holds NaN or inf (they pass through to the output,
    which is checked while still warm in cache rather than validating h in a separate pass)."""
    for i in range(h.size):
        out[i] = soft_threshold(h[i], threshold, nonneg)
    return nonfinite_sum(out) == 0.0


@jit
def noise_row(eps, has_eps, key, i, pairs, out):
    """Row i of the noise into `out` (in the data dtype, like the reference): eps[i], or numbers
    i * K .. i * K + K - 1 of the stream, drawn two at a time into `pairs` (K + 2 long)."""
    k = out.size
    if has_eps:
        out[:] = eps[i]
        return
    start = i * k
    offset = start & 1
    first = start >> 1
    for q in range((offset + k + 1) >> 1):
        a, b = normal_pair(key, np.uint64(first + q))
        pairs[2 * q] = a
        pairs[2 * q + 1] = b
    out[:] = pairs[offset:offset + k]


@jit
def reparam_forward(mu, logvar, eps, has_eps, key, z, kl):
    n, k = mu.shape
    terms, pairs, noise = np.empty(k), np.empty(k + 2), np.empty(k, mu.dtype)
    for i in range(n):
        noise_row(eps, has_eps, key, i, pairs, noise)
        for j in range(k):
            m, lv = mu[i, j], logvar[i, j]
            std = exp(0.5 * lv)
            z[i, j] = m + std * noise[j]
            terms[j] = 1.0 + lv - m * m - std * std
        kl[i] = -0.5 * row_sum(terms)


@jit
def reparam_backward(dz, mu, logvar, eps, has_eps, key, beta, dmu, dlogvar):
    n, k = mu.shape
    pairs, noise = np.empty(k + 2), np.empty(k, mu.dtype)
    for i in range(n):
        noise_row(eps, has_eps, key, i, pairs, noise)
        for j in range(k):
            std = exp(0.5 * logvar[i, j])
            dmu[i, j] = dz[i, j] + beta * mu[i, j]
            dlogvar[i, j] = 0.5 * (dz[i, j] * noise[j] * std + beta * (std * std - 1.0))


@jit
def mse_loss(pred, target, rows, grad):
    n, m = pred.shape
    scale = 2.0 / n
    terms = np.empty(m)
    for i in range(n):
        for j in range(m):
            d = pred[i, j] - target[i, j]
            terms[j] = d * d
            grad[i, j] = scale * d
        rows[i] = row_sum(terms)


@jit
def bce_logits_loss(logits, target, rows, grad):
    n, m = logits.shape
    scale = 1.0 / n
    terms = np.empty(m)
    for i in range(n):
        for j in range(m):
            loss, g = bce_with_logits(logits[i, j], target[i, j])
            terms[j] = loss
            grad[i, j] = scale * g
        rows[i] = row_sum(terms)


@jit
def adam_step(param, grad, m, v, step, lr, beta_1, beta_2, epsilon):
    bias_1 = 1.0 - beta_1 ** step
    bias_2 = 1.0 - beta_2 ** step
    for i in range(param.size):
        g = grad[i]
        m[i] = beta_1 * m[i] + (1.0 - beta_1) * g
        v[i] = beta_2 * v[i] + (1.0 - beta_2) * g * g
        param[i] -= lr * (m[i] / bias_1) / (math.sqrt(v[i] / bias_2) + epsilon)


@jit
def all_finite(a):
    return nonfinite_sum(a) == 0.0
