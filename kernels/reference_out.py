"""The naive reference in the calling convention of `cpu.py` and `gpu.py` (integer activation codes,
results written into given arrays), so that code driving any backend (the model engine) can run on
it. Each op is still the reference's separate NumPy steps; the copies into `out` come on top."""
import numpy as np

from . import elementwise as ew
from . import reference as ref

_NAMES = {code: name for name, code in ew.ACTIVATIONS.items()}


def affine_forward(x, W, b, act, out):
    out[...] = ref.affine_forward(x, W, b, _NAMES[act])


def affine_backward(dy, x, y, W, act, delta, dx, dW, db):
    gx, gW, gb = ref.affine_backward(dy, x, y, W, _NAMES[act])
    dW[...], db[...] = gW, gb
    if dx.shape[0] > 0:
        dx[...] = gx


def l1_prox(h, threshold, nonneg, out):
    out[...] = ref.l1_prox(h, threshold, nonneg)
    return bool(np.isfinite(out).all())


def reparam_forward(mu, logvar, eps, has_eps, key, z, kl, scratch=None):
    noise = eps if has_eps else _noise_from_key(key, mu.shape, mu.dtype)
    z[...], kl[...] = ref.reparam_forward(mu, logvar, noise, None)


def reparam_backward(dz, mu, logvar, eps, has_eps, key, beta, dmu, dlogvar, scratch=None):
    noise = eps if has_eps else _noise_from_key(key, mu.shape, mu.dtype)
    dmu[...], dlogvar[...] = ref.reparam_backward(dz, mu, logvar, noise, beta, None)


def _noise_from_key(key, shape, dtype):
    return ref.noise_from_key(key, shape, dtype)


def mse_loss(pred, target, scale, rows, grad, terms=None):
    r, g = ref.mse_loss(pred, target)
    rows[...], grad[...] = scale * r, scale * g


def bce_logits_loss(logits, target, scale, rows, grad, terms=None):
    r, g = ref.bce_logits_loss(logits, target)
    rows[...], grad[...] = scale * r, scale * g


def _all_finite(*arrays):
    return all(bool(np.isfinite(a).all()) for a in arrays)


def adam_step(param, grad, m, v, step, lr, beta_1, beta_2, epsilon):
    """Returns True when every updated parameter and moment is finite."""
    ref.adam_step(param, grad, m, v, step, lr, beta_1, beta_2, epsilon)
    return _all_finite(param, m, v)


def sgd_step(param, grad, velocity, lr, momentum):
    """Returns True when every updated parameter and velocity is finite."""
    velocity[...] = momentum * velocity - lr * grad
    param += velocity
    return _all_finite(param, velocity)


def corrupt(x, level, kind, key, out):
    if kind == 0:
        out[...] = x + level * ref.noise_from_key(key, x.shape, x.dtype)
    else:
        out[...] = np.where(ref.uniform_from_key(key, x.shape) >= level, x, 0)


def gather_rows(X, index, start, out):
    out[...] = X[index[start:start + out.shape[0]]]


def l1_code_grad(dh, h, weight, out):
    out[...] = (dh + weight * np.sign(h)) * (h != 0)


def l1_penalty_rows(h, lam, rows):
    rows += lam * np.abs(h).sum(axis=1)


def repeat_rows(src, copies, out):
    out[...] = np.concatenate([src] * copies)


def fold_rows(src, copies, out):
    out[...] = src.reshape(copies, *out.shape).sum(axis=0)


def row_sum(a):
    return float(np.sum(a))


def all_finite(a):
    return bool(np.isfinite(a).all())
