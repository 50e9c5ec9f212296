"""Naive NumPy reference: textbook formulas, separate ops and temporaries.

This is the oracle the tests compare against and the baseline the benchmarks beat. Keep it naive.
Inputs arrive validated (C-contiguous, one float dtype, finite); outputs are new arrays.
"""
import numpy as np

from . import elementwise as ew


def _activate(z, activation):
    if activation == "relu":
        return np.maximum(z, 0)
    if activation == "sigmoid":
        with np.errstate(over="ignore"):  # exp(-z) = inf for z << 0 gives the right 0
            return 1 / (1 + np.exp(-z))
    if activation == "tanh":
        return np.tanh(z)
    return z


def _activation_grad(y, activation):
    if activation == "relu":
        return (y > 0).astype(y.dtype)
    if activation == "sigmoid":
        return y * (1 - y)
    if activation == "tanh":
        return 1 - y ** 2
    return np.ones_like(y)


def affine_forward(x, W, b, activation):
    z = x @ W.T + b
    return _activate(z, activation).astype(x.dtype, copy=False)


def affine_backward(dy, x, y, W, activation):
    dz = dy * _activation_grad(y, activation)
    return dz @ W, dz.T @ x, dz.sum(axis=0)


def l1_prox(h, threshold, nonneg):
    if nonneg:
        return np.maximum(h - threshold, 0).astype(h.dtype, copy=False)
    return (np.sign(h) * np.maximum(np.abs(h) - threshold, 0)).astype(h.dtype, copy=False)


def normal_noise(seed, shape, dtype):
    return noise_from_key(ew.noise_key(seed), shape, dtype)


def noise_from_key(key, shape, dtype):
    """The counter-based stream of `elementwise.normal_pair`, vectorised, in float64 (then cast):
    pair p is one splitmix64 hash h of key + p * golden; u1 = 1 - (top 24 bits of h) / 2^24 and
    u2 = (low 24 bits of h) / 2^24 give numbers 2p = r cos(2 pi u2) and 2p + 1 = r sin(2 pi u2),
    r = sqrt(-2 log u1)."""
    size = int(np.prod(shape))
    with np.errstate(over="ignore"):
        p = np.arange((size + 1) // 2, dtype=np.uint64)
        h = ew.mix64(key + p * ew._GOLDEN)
    u1 = 1.0 - (h >> np.uint64(40)).astype(np.float64) / 2 ** 24
    u2 = (h & np.uint64(0xFFFFFF)).astype(np.float64) / 2 ** 24
    r = np.sqrt(-2.0 * np.log(u1))
    eps = np.empty(2 * len(p))
    eps[0::2] = r * np.cos(2.0 * np.pi * u2)
    eps[1::2] = r * np.sin(2.0 * np.pi * u2)
    return eps[:size].reshape(shape).astype(dtype)


def uniform_from_key(key, shape):
    """The stream of `elementwise.uniform_at`, vectorised."""
    with np.errstate(over="ignore"):
        c = np.arange(int(np.prod(shape)), dtype=np.uint64)
        h = ew.mix64(key + c * ew._GOLDEN + ew._MASK_SALT)
    return ((h >> np.uint64(11)).astype(np.float64) * ew._TWO_POW_53).reshape(shape)


def reparam_forward(mu, logvar, eps, seed):
    if eps is None:
        eps = normal_noise(seed, mu.shape, mu.dtype)
    z = mu + np.exp(logvar / 2) * eps
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=1)
    return z.astype(mu.dtype, copy=False), kl.astype(mu.dtype, copy=False)


def reparam_backward(dz, mu, logvar, eps, beta, seed):
    if eps is None:
        eps = normal_noise(seed, mu.shape, mu.dtype)
    dmu = dz + beta * mu
    dlogvar = dz * eps * 0.5 * np.exp(logvar / 2) + beta * 0.5 * (np.exp(logvar) - 1)
    return dmu.astype(mu.dtype, copy=False), dlogvar.astype(mu.dtype, copy=False)


def mse_loss(pred, target):
    diff = pred - target
    rows = np.sum(diff ** 2, axis=1)
    return rows, 2 * diff / pred.shape[0]


def bce_logits_loss(logits, target):
    rows = np.sum(np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits))), axis=1)
    with np.errstate(over="ignore"):
        grad = (1 / (1 + np.exp(-logits)) - target) / logits.shape[0]
    return rows.astype(logits.dtype, copy=False), grad.astype(logits.dtype, copy=False)


def adam_step(param, grad, m, v, step, lr, beta_1, beta_2, epsilon):
    m[:] = beta_1 * m + (1 - beta_1) * grad
    v[:] = beta_2 * v + (1 - beta_2) * grad ** 2
    m_hat = m / (1 - beta_1 ** step)
    v_hat = v / (1 - beta_2 ** step)
    param -= lr * m_hat / (np.sqrt(v_hat) + epsilon)
