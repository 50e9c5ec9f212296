"""fastae.kernels: autoencoder ops on every backend, with one signature each.

    numpy  the naive reference (oracle and benchmark baseline)
    cpu    Numba kernels: BLAS products (register tiles for small ones) plus one fused element-wise pass
    cuda   CuPy/cuBLAS products plus fused numba.cuda kernels

`backend=None` picks `cuda` for CuPy input and `cpu` otherwise. Every op checks its input, never
writes to the caller's arrays (except `adam_step`, whose job is to update its state in place) and
returns arrays of the input dtype and array type.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Literal, Optional

import numpy as np
from numpy.typing import ArrayLike

from . import backend as _backend
from . import threads as _threads  # (imported here for its fork handler, before Numba's threads start)
from . import checks as _checks
from . import elementwise as _ew
from .backend import backends

__all__ = ["affine_forward", "affine_backward", "l1_prox", "reparam_forward", "reparam_backward",
           "mse_loss", "bce_logits_loss", "adam_step", "backends", "warmup", "ACTIVATIONS"]
ACTIVATIONS = tuple(_ew.ACTIVATIONS)

Backend = Optional[Literal["numpy", "cpu", "cuda", "auto"]]
Activation = Literal["relu", "sigmoid", "tanh", "linear"]


def _prepare(backend, like, specs, fused_check=False):
    """Resolve the backend and check the arrays; `fused_check`: the cpu kernel reports NaN/inf."""
    name = _backend.resolve(backend, like)
    arrays, dtype, host = _checks.arrays(name, specs, check_finite=not (fused_check and name == "cpu"))
    return name, _backend.module(name), arrays, dtype, host


def _to_host(host, *results):
    return tuple(r.get() for r in results) if host else results


def _deliver(y, out, host):
    """Hand back `y`, through the caller's `out=` when given (checked before any work is done)."""
    if host:
        y = y.get()
    if out is None or out is y:
        return y
    out[...] = y
    return out


def _out(out, shape, dtype, name, host, given):
    """Where a kernel writes: the caller's checked `out=` (which must not overlap the arrays the
    caller `given`), or a new array on the backend."""
    if out is not None:
        _checks.out_array(out, shape, dtype, "numpy" if host else name, given)
    if name == "numpy":
        return None
    return out if out is not None and not host else _backend.array_module(name).empty(shape, dtype)


def affine_forward(x: ArrayLike, W: ArrayLike, b: ArrayLike, activation: Activation, *,
                   backend: Backend = None, out: np.ndarray | None = None) -> np.ndarray:
    """y = act(x @ W.T + b) for x (n, in), W (out, in), b (out,).

    Parameters
    ----------
    x : array-like of shape (n, in)
        Input rows.
    W : array-like of shape (out, in)
        Weights.
    b : array-like of shape (out,)
        Biases.
    activation : {'relu', 'sigmoid', 'tanh', 'linear'}
        The activation ``act`` (one of ``ACTIVATIONS``).
    backend : {'numpy', 'cpu', 'cuda', 'auto'} or None, default=None
        Where to compute; None means 'cuda' for CuPy input and 'cpu' otherwise.
    out : ndarray of shape (n, out), default=None
        A preallocated result: writeable, C-contiguous, of the result's dtype, not overlapping
        the inputs.

    Returns
    -------
    ndarray of shape (n, out)
        ``act(x @ W.T + b)``, of the input dtype and array type (``out`` when given).

    Raises
    ------
    ValueError
        If shapes do not match, an input holds NaN/inf or is empty, `activation` is unknown, or
        `out` does not fit.
    TypeError
        If an input is not numeric, or float dtypes are mixed.
    """
    act = _checks.activation(activation)
    given = (x, W, b)
    name, impl, (x, W, b), dtype, host = _prepare(backend, x, [("x", x, 2), ("W", W, 2), ("b", b, 1)])
    if W.shape[1] != x.shape[1]:
        raise ValueError(f"W must have shape (out, {x.shape[1]}) to match the {x.shape[1]} columns of x, "
                         f"got {tuple(W.shape)}")
    if b.shape != (W.shape[0],):
        raise ValueError(f"b must have shape ({W.shape[0]},) to match W, got {tuple(b.shape)}")
    y = _out(out, (x.shape[0], W.shape[0]), dtype, name, host, given)
    if y is None:
        y = impl.affine_forward(x, W, b, activation)
    else:
        impl.affine_forward(x, W, b, act, y)
    return _deliver(y, out, host)


def affine_backward(dy: ArrayLike, x: ArrayLike, y: ArrayLike, W: ArrayLike, activation: Activation, *,
                    backend: Backend = None,
                    out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dW, db) of a layer y = act(x @ W.T + b), given dy = dL/dy and the layer output y.

    `out=(dx, dW, db)` takes preallocated results (fresh large arrays cost page faults).

    Parameters
    ----------
    dy : array-like of shape (n, out)
        The gradient of the loss with respect to the layer's output.
    x : array-like of shape (n, in)
        The layer's input.
    y : array-like of shape (n, out)
        The layer's output; the activation's derivative is taken from it.
    W : array-like of shape (out, in)
        The layer's weights.
    activation : {'relu', 'sigmoid', 'tanh', 'linear'}
        The layer's activation.
    backend : {'numpy', 'cpu', 'cuda', 'auto'} or None, default=None
        Where to compute; None means 'cuda' for CuPy input and 'cpu' otherwise.
    out : tuple of 3 ndarrays, default=None
        Preallocated ``(dx, dW, db)``, each writeable, C-contiguous, of the result's shape and
        dtype, and not overlapping the inputs or each other.

    Returns
    -------
    dx : ndarray of shape (n, in)
    dW : ndarray of shape (out, in)
    db : ndarray of shape (out,)

    Raises
    ------
    ValueError
        If shapes do not match, an input holds NaN/inf or is empty, `activation` is unknown, or
        `out` does not fit.
    TypeError
        If an input is not numeric, float dtypes are mixed, or `out` is not a 3-tuple.
    """
    act = _checks.activation(activation)
    given = (dy, x, y, W)
    name, impl, (dy, x, y, W), dtype, host = _prepare(
        backend, dy, [("dy", dy, 2), ("x", x, 2), ("y", y, 2), ("W", W, 2)])
    n, m = dy.shape
    if x.shape[0] != n:
        raise ValueError(f"x must have {n} rows like dy, got shape {tuple(x.shape)}")
    if W.shape != (m, x.shape[1]):
        raise ValueError(f"W must have shape ({m}, {x.shape[1]}) to match dy and x, got {tuple(W.shape)}")
    _checks.same_shape("dy", dy, y=y)
    if out is not None and (not isinstance(out, tuple) or len(out) != 3):
        raise TypeError("out must be a tuple (dx, dW, db) of arrays")
    shapes = (x.shape, W.shape, (m,))
    targets = [_out(o, s, dtype, name, host, given) for o, s in zip(out or (None,) * 3, shapes)]
    if out is not None:
        _checks.disjoint(zip(("out[0] (dx)", "out[1] (dW)", "out[2] (db)"), out))
    if name == "numpy":
        targets = impl.affine_backward(dy, x, y, W, activation)
    else:
        # A linear layer's delta is dy itself: the kernels then neither read nor write `delta`
        # (any array of dy's type does; a read-only dy cannot stand in for it, as Numba compiles
        # the non-linear branch's writes to it too).
        linear_in_place = act == _ew.LINEAR and getattr(dy.flags, "writeable", True)
        delta = dy if linear_in_place else _backend.scratch(name, dy.shape, dtype)
        impl.affine_backward(dy, x, y, W, act, delta, *targets)
    return tuple(_deliver(t, o, host) for t, o in zip(targets, out or (None,) * 3))


def l1_prox(h: ArrayLike, threshold: float, *, nonneg: bool = False, backend: Backend = None,
            out: np.ndarray | None = None) -> np.ndarray:
    """Soft-thresholding sign(h) * max(|h| - threshold, 0); max(h - threshold, 0) when nonneg.

    The proximal operator of ``threshold * ||h||_1``.

    Parameters
    ----------
    h : array-like of any shape with one dimension or more
        The values to threshold.
    threshold : float
        The threshold, a finite float >= 0.
    nonneg : bool, default=False
        Also clamp at 0: ``max(h - threshold, 0)``.
    backend : {'numpy', 'cpu', 'cuda', 'auto'} or None, default=None
        Where to compute; None means 'cuda' for CuPy input and 'cpu' otherwise.
    out : ndarray of the shape of h, default=None
        A preallocated result: writeable, C-contiguous, of the result's dtype, not overlapping `h`.

    Returns
    -------
    ndarray of the shape of h
        The thresholded values (``out`` when given).

    Raises
    ------
    ValueError
        If `threshold` is negative or not finite, `h` holds NaN/inf or is empty, or `out` does
        not fit.
    TypeError
        If `nonneg` is not a bool or `h` is not numeric.
    """
    y = _l1_prox_plain(h, threshold, nonneg, backend, out)
    if y is not None:
        return y
    threshold = _checks.real(threshold, "threshold", minimum=0.0)
    if np.ndim(h) == 0:
        raise ValueError("h must be an array of one dimension or more, got a scalar")
    if not isinstance(nonneg, (bool, np.bool_)):
        raise TypeError(f"nonneg must be a bool, got {type(nonneg).__name__}")
    given = h
    # The kernel's own NaN/inf check rides in its pass, which writes the output: it is only used
    # when that output is ours. A caller's out= is never written when the call fails.
    name, impl, (h,), dtype, host = _prepare(backend, h, [("h", h, max(np.ndim(h), 1))],
                                             fused_check=out is None)
    if threshold > float(np.finfo(dtype).max):  # inf in h's precision: every backend refuses it alike
        raise ValueError(f"threshold is too large for {np.dtype(dtype).name} data, got {threshold}")
    y = _out(out, h.shape, dtype, name, host, (given,))
    if y is None:
        y = impl.l1_prox(h, threshold, bool(nonneg))
    elif _l1_prox_into(name, impl, h.reshape(-1), threshold, bool(nonneg), y.reshape(-1)) is False:
        raise ValueError("h contains NaN or infinity")
    return _deliver(y, out, host)


def _l1_prox_plain(h, threshold, nonneg, backend, out):
    """The cpu l1_prox of the common call (a C-contiguous native float ndarray the kernel takes
    as it is, a float threshold in range, a bool nonneg, no out=), told by a few attribute reads;
    None for any other call, which goes through the full checks. The checks cost ~6 us a call
    warm but 15-25 us right after an 8 MB array has gone through the caches (the interpreter's
    own data has been evicted): 8-10% of a 4096 x 512 call on one thread."""
    if (out is not None or type(h) is not np.ndarray or type(threshold) is not float or type(nonneg) is not bool
            or not (backend is None or (type(backend) is str and backend == "cpu"))):
        return None
    dtype, flags = h.dtype, h.flags
    if (dtype not in _FLOATS or h.ndim == 0 or h.size == 0 or not flags.c_contiguous or not flags.aligned
            or not flags.writeable or not 0.0 <= threshold <= (_F32_MAX if dtype == _FLOATS[0] else _F64_MAX)
            or _backend.jit_disabled()):
        return None
    y = np.empty(h.shape, dtype)
    if _l1_prox_into("cpu", _backend.module("cpu"), h.reshape(-1), threshold, nonneg, y.reshape(-1)) is False:
        raise ValueError("h contains NaN or infinity")
    return y


_F32_MAX, _F64_MAX = float(np.finfo(np.float32).max), float(np.finfo(np.float64).max)

# From this many elements on, the cpu l1_prox splits its work between threads (`chunk_pool`).
_L1_PROX_PARALLEL = 1 << 18


def _l1_prox_into(name, impl, h, threshold, nonneg, y):
    """The backend's l1_prox kernel into y (both 1-D), on `threads.requested()` threads for a
    large cpu call (the same bits)."""
    if name == "cpu" and h.size >= _L1_PROX_PARALLEL:
        threads = _threads.requested()
        if threads > 1:
            from .chunk_pool import l1_prox_into
            ok = l1_prox_into(h, threshold, nonneg, y, threads)
            if ok is not None:
                return ok
    return impl.l1_prox(h, threshold, nonneg, y)


def _reparam_seed(seed, eps):
    """The checked seed (None draws a fresh one), or None where `eps` is given: a seed given with
    eps is unused, but still checked."""
    if eps is None or seed is not None:
        seed = _checks.seed(seed)
    return None if eps is not None else seed


def _reparam_inputs(backend, specs, eps, seed):
    """Checked arrays for the reparameterization ops; eps (explicit, or a placeholder that is never
    read when the noise comes from `seed`) is last. The cpu kernels find NaN and inf themselves, in
    their own pass (`_kernel_found_nonfinite`); they write only to arrays allocated here."""
    if eps is not None:
        specs = specs + [("eps", eps)]
    given = [a for _, a in specs]
    name = _backend.resolve(backend, given[0])
    if name == "cpu" and _kernel_ready(given):
        arrays, dtype, host = given, given[0].dtype, False
    else:
        arrays, dtype, host = _checks.arrays(name, [(n, a, 2) for n, a in specs], check_finite=name != "cpu")
    names = [n for n, _ in specs]
    ref = names.index("mu")  # every other input is checked against mu (dz comes first in the backward)
    for arg, a in zip(names, arrays):
        if a.shape != arrays[ref].shape:
            _checks.same_shape("mu", arrays[ref], **{arg: a})
    key = np.uint64(0) if eps is not None else _ew.noise_key(seed)
    if eps is None:
        arrays.append(arrays[0])
    return name, _backend.module(name), arrays, dtype, host, key, names


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _kernel_ready(arrays):
    """Whether `checks.arrays` would hand these to the cpu kernels unchanged (base-class ndarrays,
    2-D, non-empty, C-contiguous, aligned, writeable, of one native float32 or float64 dtype): the
    common case, told by a few attribute reads instead of the conversion pass (~4 us a call)."""
    if any(type(a) is not np.ndarray for a in arrays) or arrays[0].dtype not in _FLOATS:
        return False
    for a in arrays:
        flags = a.flags
        if (a.dtype != arrays[0].dtype or a.ndim != 2 or a.size == 0 or not flags.c_contiguous
                or not flags.aligned or not flags.writeable):
            return False
    return True


# Entries of the cpu kernels' scratch: chunks of ~2K elements (their noise and KL terms stay in L1);
# a smaller scratch (3K + 2, the least the kernels take) means a chunk per row or two.
_REPARAM_SCRATCH = 4098
_reparam_scratches = threading.local()
# From this many elements on, the cpu ops split the rows between threads. Measured on 2
# idle cores, float32 forward + backward, 1 -> 2 threads: 5120 elements 39 -> 37 us, 10240
# 48 -> 44, 16384 59 -> 50, 32768 100 -> 68, 131072 368 -> 192. Split only where it pays well:
# on a busy machine a parallel region waits for a time slice (ms; see docs/api.md).
_REPARAM_PARALLEL = 32768


def _reparam_scratch(name, k, dtype, parts=1):
    """The cpu kernels' scratch (`parts` equal shares, one per part of the rows), reused from
    call to call; one per Python thread, as the ops run in several at once. The cuda kernels
    take none."""
    if name != "cpu":
        return None
    size = max(3 * k + 2, _REPARAM_SCRATCH) * parts
    scratch = _reparam_scratches.__dict__.get(dtype.char)
    if scratch is None or scratch.size < size:
        scratch = _reparam_scratches.__dict__[dtype.char] = np.empty(size, dtype)
    return scratch


def _reparam_parts(name, n, k):
    """How many threads a cpu op splits its rows between (`threads.run_parts`):
    `threads.requested()` for batches of `_REPARAM_PARALLEL` elements or more, else 1. Results
    are the same bits."""
    if name != "cpu" or n * k < _REPARAM_PARALLEL:
        return 1
    from .threads import requested
    return max(1, min(requested(), n))


def _kernel_found_nonfinite(names, arrays):
    """The error of the input check the cpu kernel did in its pass: the first input with NaN or
    inf, named as `checks.arrays` names it."""
    for arg, a in zip(names, arrays):
        if not np.isfinite(a).all():
            return ValueError(f"{arg} contains NaN or infinity")
    return ValueError("an input contains NaN or infinity")


def reparam_forward(mu: ArrayLike, logvar: ArrayLike, eps: ArrayLike | None = None, *,
                    seed: int | None = None, backend: Backend = None) -> tuple[np.ndarray, np.ndarray]:
    """(z, kl): z = mu + exp(logvar / 2) * eps and the per-row KL(q || N(0, I)).

    With eps=None the standard normal noise is drawn inside the kernel from `seed` (counter-based:
    the same seed gives the same draws on a backend whatever the thread count).

    Parameters
    ----------
    mu : array-like of shape (n, k)
        Means of q(z|x).
    logvar : array-like of shape (n, k)
        Log-variances of q(z|x).
    eps : array-like of shape (n, k), default=None
        Standard normal noise; None draws it inside the kernel from `seed`.
    seed : int or None, default=None
        Seed of the noise when `eps` is None: an int in [0, 2**64), or None for fresh noise.
    backend : {'numpy', 'cpu', 'cuda', 'auto'} or None, default=None
        Where to compute; None means 'cuda' for CuPy input and 'cpu' otherwise.

    Returns
    -------
    z : ndarray of shape (n, k)
        The samples.
    kl : ndarray of shape (n,)
        ``KL(N(mu, exp(logvar)) || N(0, I))`` per row.

    Raises
    ------
    ValueError
        If shapes differ, an input holds NaN/inf or is empty, or `seed` is invalid.
    TypeError
        If an input is not numeric, or float dtypes are mixed.
    """
    seed = _reparam_seed(seed, eps)
    has_eps = eps is not None
    name, impl, (mu, logvar, eps), dtype, host, key, names = _reparam_inputs(
        backend, [("mu", mu), ("logvar", logvar)], eps, seed)
    if name == "numpy":
        return _to_host(host, *impl.reparam_forward(mu, logvar, eps if has_eps else None, seed))
    xp = _backend.array_module(name)
    z, kl = xp.empty_like(mu), xp.empty(mu.shape[0], dtype)
    parts = _reparam_parts(name, *mu.shape)
    scratch = _reparam_scratch(name, mu.shape[1], dtype, parts)
    if parts > 1:
        ok = impl.reparam_forward_parallel(mu, logvar, eps, has_eps, key, z, kl, scratch, parts)
    else:
        ok = impl.reparam_forward(mu, logvar, eps, has_eps, key, z, kl, scratch)
    if ok is False:
        raise _kernel_found_nonfinite(names, (mu, logvar, eps))
    return _to_host(host, z, kl)


def reparam_backward(dz: ArrayLike, mu: ArrayLike, logvar: ArrayLike, eps: ArrayLike | None = None, *,
                     beta: float = 1.0, seed: int | None = None,
                     backend: Backend = None) -> tuple[np.ndarray, np.ndarray]:
    """(dmu, dlogvar) of f(z) + beta * sum(kl), given dz = df/dz.

    With eps=None the forward's noise is regenerated from `seed`, so it is never stored.

    Parameters
    ----------
    dz : array-like of shape (n, k)
        The gradient of ``f`` with respect to ``z``.
    mu : array-like of shape (n, k)
        Means of q(z|x), as given to ``reparam_forward``.
    logvar : array-like of shape (n, k)
        Log-variances of q(z|x), as given to ``reparam_forward``.
    eps : array-like of shape (n, k), default=None
        The forward's noise; None regenerates it from `seed`.
    beta : float, default=1.0
        Weight of the KL term (a finite float).
    seed : int or None, default=None
        The forward's seed; required when `eps` is None.
    backend : {'numpy', 'cpu', 'cuda', 'auto'} or None, default=None
        Where to compute; None means 'cuda' for CuPy input and 'cpu' otherwise.

    Returns
    -------
    dmu : ndarray of shape (n, k)
    dlogvar : ndarray of shape (n, k)

    Raises
    ------
    ValueError
        If `eps` and `seed` are both None, shapes differ, an input holds NaN/inf or is empty, or
        `beta` or `seed` is invalid.
    TypeError
        If an input is not numeric, or float dtypes are mixed.
    """
    beta = _checks.real(beta, "beta")
    if eps is None and seed is None:
        raise ValueError("seed is required when eps is None: it regenerates the forward pass's noise")
    seed = _reparam_seed(seed, eps)
    has_eps = eps is not None
    name, impl, (dz, mu, logvar, eps), dtype, host, key, names = _reparam_inputs(
        backend, [("dz", dz), ("mu", mu), ("logvar", logvar)], eps, seed)
    if name == "numpy":
        return _to_host(host, *impl.reparam_backward(dz, mu, logvar, eps if has_eps else None, beta, seed))
    xp = _backend.array_module(name)
    dmu, dlogvar = xp.empty_like(mu), xp.empty_like(mu)
    parts = _reparam_parts(name, *mu.shape)
    scratch = _reparam_scratch(name, mu.shape[1], dtype, parts)
    if parts > 1:
        ok = impl.reparam_backward_parallel(dz, mu, logvar, eps, has_eps, key, beta, dmu, dlogvar, scratch, parts)
    else:
        ok = impl.reparam_backward(dz, mu, logvar, eps, has_eps, key, beta, dmu, dlogvar, scratch)
    if ok is False:
        raise _kernel_found_nonfinite(names, (dz, mu, logvar, eps))
    return _to_host(host, dmu, dlogvar)


def _loss(op, pred_name, pred, target, backend):
    name, impl, (pred, target), dtype, host = _prepare(backend, pred, [(pred_name, pred, 2), ("target", target, 2)])
    _checks.same_shape(pred_name, pred, target=target)
    if op == "bce_logits_loss":
        xp = _backend.array_module(name)
        if bool(xp.any(target < 0)) or bool(xp.any(target > 1)):
            raise ValueError("target must lie in [0, 1] for binary cross-entropy")
    if name == "numpy":
        return _to_host(host, *getattr(impl, op)(pred, target))
    xp = _backend.array_module(name)
    rows, grad = xp.empty(pred.shape[0], dtype), xp.empty_like(pred)
    getattr(impl, op)(pred, target, 1.0, rows, grad, xp.empty(pred.shape[1], dtype))
    return _to_host(host, rows, grad)


def mse_loss(pred: ArrayLike, target: ArrayLike, *, backend: Backend = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, grad): rows[i] = ||pred[i] - target[i]||^2 and grad = d mean(rows) / d pred.

    Parameters
    ----------
    pred : array-like of shape (n, d)
        Predictions.
    target : array-like of shape (n, d)
        Targets.
    backend : {'numpy', 'cpu', 'cuda', 'auto'} or None, default=None
        Where to compute; None means 'cuda' for CuPy input and 'cpu' otherwise.

    Returns
    -------
    rows : ndarray of shape (n,)
        The per-row squared errors.
    grad : ndarray of shape (n, d)
        The gradient of their mean with respect to `pred`.

    Raises
    ------
    ValueError
        If shapes differ, or an input holds NaN/inf or is empty.
    TypeError
        If an input is not numeric, or float dtypes are mixed.
    """
    return _loss("mse_loss", "pred", pred, target, backend)


def bce_logits_loss(logits: ArrayLike, target: ArrayLike, *,
                    backend: Backend = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, grad): rows[i] = summed binary cross-entropy of sigmoid(logits[i]) against target[i],
    computed from the logits (finite when saturated), and grad = d mean(rows) / d logits.

    Parameters
    ----------
    logits : array-like of shape (n, d)
        Pre-sigmoid outputs.
    target : array-like of shape (n, d)
        Targets in [0, 1].
    backend : {'numpy', 'cpu', 'cuda', 'auto'} or None, default=None
        Where to compute; None means 'cuda' for CuPy input and 'cpu' otherwise.

    Returns
    -------
    rows : ndarray of shape (n,)
        The per-row summed binary cross-entropies.
    grad : ndarray of shape (n, d)
        The gradient of their mean with respect to `logits`.

    Raises
    ------
    ValueError
        If shapes differ, an input holds NaN/inf or is empty, or `target` leaves [0, 1].
    TypeError
        If an input is not numeric, or float dtypes are mixed.
    """
    return _loss("bce_logits_loss", "logits", logits, target, backend)


def adam_step(param: np.ndarray, grad: ArrayLike, m: np.ndarray, v: np.ndarray, *, step: int,
              lr: float = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8,
              backend: Backend = None) -> None:
    """One Adam update in place on `param` and its moments `m`, `v` (one pass over all four).

    `param`, `m` and `v` must be writeable C-contiguous arrays of one float dtype (a flat buffer
    holding every layer is the fast way); `step` is the 1-based step count for bias correction.

    Parameters
    ----------
    param : ndarray
        The parameters, updated in place.
    grad : array-like of the shape of param
        Their gradient (same float dtype as `param`).
    m : ndarray of the shape of param
        First-moment estimate, updated in place.
    v : ndarray of the shape of param
        Second-moment estimate, updated in place.
    step : int
        The 1-based step count, >= 1, for bias correction.
    lr : float, default=1e-3
        Learning rate, >= 0.
    beta_1 : float, default=0.9
        First-moment decay, in [0, 1).
    beta_2 : float, default=0.999
        Second-moment decay, in [0, 1).
    epsilon : float, default=1e-8
        Denominator term, > 0.
    backend : {'numpy', 'cpu', 'cuda', 'auto'} or None, default=None
        Where to compute; None means 'cuda' for CuPy input and 'cpu' otherwise.

    Returns
    -------
    None
        `param`, `m` and `v` are updated in place.

    Raises
    ------
    ValueError
        If `step` or a hyperparameter is out of range, or `param`, `m`, `v` are not writeable
        C-contiguous arrays of one shape and dtype, or any two arrays overlap.
    TypeError
        If `param`, `m` or `v` is not a float array of the backend, or `grad`'s dtype differs.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 1 <= step < 2 ** 63:
        raise ValueError(f"step must be an int in [1, 2**63), got {step!r}")
    lr = _checks.real(lr, "lr", minimum=0.0)
    beta_1, beta_2 = _checks.real(beta_1, "beta_1", 0.0), _checks.real(beta_2, "beta_2", 0.0)
    if beta_1 >= 1 or beta_2 >= 1:
        raise ValueError(f"beta_1 and beta_2 must be in [0, 1), got {beta_1}, {beta_2}")
    epsilon = _checks.real(epsilon, "epsilon", minimum=0.0)
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    name = _backend.resolve(backend, param)
    xp = _backend.array_module(name)
    for arg, a in (("param", param), ("m", m), ("v", v)):
        if not isinstance(a, xp.ndarray) or a.dtype.kind != "f":
            raise TypeError(f"{arg} must be a float {xp.__name__} array (it is updated in place)")
        if not a.flags.c_contiguous or not a.flags.writeable:
            raise ValueError(f"{arg} must be a writeable C-contiguous array (it is updated in place)")
        if a.shape != param.shape or _checks.native(a.dtype) != _checks.native(param.dtype):
            raise ValueError(f"{arg} must have the shape and dtype of param, got {a.shape} {a.dtype}")
    _checks.disjoint([("param", param), ("grad", grad), ("m", m), ("v", v)])
    (grad,), dtype, _ = _checks.arrays(name, [("grad", grad, param.ndim)])
    if grad.dtype != _checks.native(param.dtype):
        raise TypeError(f"grad is {grad.dtype} but param is {param.dtype}")
    _checks.same_shape("param", param, grad=grad)
    if name == "numpy":
        _backend.module(name).adam_step(param, grad, m, v, int(step), lr, beta_1, beta_2, epsilon)
        return
    # The compiled kernels take native byte order only: non-native state (rare: arrays from a
    # file) is updated in native copies, then written back.
    state = [a if a.dtype.isnative else a.astype(dtype) for a in (param, m, v)]
    _backend.module(name).adam_step(state[0].reshape(-1), grad.reshape(-1), state[1].reshape(-1),
                                     state[2].reshape(-1), int(step), lr, beta_1, beta_2, epsilon)
    for a, s in zip((param, m, v), state):
        if s is not a:
            a[...] = s


def warmup(backend: Literal["numpy", "cpu", "cuda", "auto"] = "cpu",
           dtypes: Iterable[str] = ("float32", "float64")) -> None:
    """Compile (or load from the disk cache) every kernel of `backend` for `dtypes` now, so that the
    first real call does not pay for it.

    Parameters
    ----------
    backend : {'cpu', 'numpy', 'cuda', 'auto'}, default='cpu'
        The backend whose kernels to compile.
    dtypes : iterable of str, default=('float32', 'float64')
        The float dtypes to compile for.
    """
    if isinstance(dtypes, str) or not all(d in ("float32", "float64") for d in dtypes):
        raise ValueError(f"dtypes must be a tuple of 'float32' and/or 'float64', got {dtypes!r}")
    for dtype in dtypes:
        rng = np.random.default_rng(0)
        x, W, b = (rng.standard_normal(s).astype(dtype) for s in ((2, 3), (4, 3), (4,)))
        for act in ACTIVATIONS:
            y = affine_forward(x, W, b, act, backend=backend)
            affine_backward(y, x, y, W, act, backend=backend)
        l1_prox(x, 0.1, backend=backend)
        l1_prox(x, 0.1, nonneg=True, backend=backend)
        for eps in (None, x):
            z, _ = reparam_forward(x, x, eps, seed=0, backend=backend)
            reparam_backward(z, x, x, eps, seed=0, backend=backend)
        mse_loss(x, x, backend=backend)
        bce_logits_loss(x, np.clip(x, 0, 1), backend=backend)
        p, m, v = np.zeros(3, dtype), np.zeros(3, dtype), np.zeros(3, dtype)
        adam_step(p, p + 1, m, v, step=1, backend=backend)
        if _backend.resolve(backend, x) == "cpu":  # what large calls on several threads run
            from . import atomics, chunk_pool
            if atomics.supported():
                chunk_pool.warmup(np.dtype(dtype))
