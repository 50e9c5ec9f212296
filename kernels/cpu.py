"""Numba CPU kernels: BLAS for the matrix products (`small_gemm`'s register tiles for small
ones), one fused pass for everything element-wise.

Kernels are serial and `nogil` (see `jit.py`). Outputs and workspaces are passed in, so model code
can reuse them from step to step.
"""
import math

import numpy as np
from numba import types
from numba.extending import overload

from . import cpu_math, simd, small_gemm
from . import elementwise as ew
from .jit import cpu_jit

jit = cpu_jit
# log and sincos_small in the precision of their argument: the noise of float32 data is drawn in
# float32 (twice the SIMD lanes)
_ew = ew.compiled(cpu_jit(inline="always"), {"exp": cpu_math.exp, "log1p": cpu_math.log1p,
                                              "log": cpu_math.log_in, "sincos_small": cpu_math.sincos_small_in,
                                              "tanh": cpu_math.tanh_in})
activate, activation_grad, soft_threshold = _ew.activate, _ew.activation_grad, _ew.soft_threshold
box_muller, mix64, normal_at, uniform_at = _ew.box_muller, _ew.mix64, _ew.normal_at, _ew.uniform_at
bce_with_logits = _ew.bce_with_logits
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


@cpu_jit(fastmath={"reassoc"})
def add_nonfinite(acc, a, b, c):
    """acc + (a - a) + (b - b) + (c - c): stays 0 while a, b and c are finite, NaN from the first
    inf or NaN on. Summed over a loop it checks the loop's results in the same pass; it is a
    separate function (LLVM inlines it, keeping each instruction's flags) so that reassociation,
    which lets that sum vectorize, never reaches the caller's own arithmetic."""
    return acc + ((a - a) + (b - b) + (c - c))


@cpu_jit(fastmath={"reassoc"})
def row_dot(a, b):
    """Dot product of two 1-D rows; reassociation lets it vectorize (not inlined, see row_sum)."""
    acc = 0.0
    for k in range(a.size):
        acc += a[k] * b[k]
    return acc


SMALL_PRODUCT = 1 << 14  # below this many multiply-adds a plain loop beats a BLAS call's overhead
# Up to this many multiply-adds a product runs in `small_gemm`'s register tiles (0.46x the time
# of OpenBLAS's sgemm on the digits net's products; 0.6-0.8x at 256 x 64 x 64); a forward
# product's weights are transposed for it, so only small ones.
SMALL_GEMM = 1 << 20
SMALL_TRANSPOSE = 1 << 12


@jit
def affine_forward(x, W, b, act, out):
    n, m = out.shape
    k = x.shape[1]
    if n * m * k <= SMALL_GEMM and m * k <= SMALL_TRANSPOSE and small_gemm.usable(x, W, out):
        small_gemm.nt(x, W, out, np.empty(m * k, out.dtype))
    elif n * m * k <= SMALL_PRODUCT:
        for i in range(n):
            for j in range(m):
                out[i, j] = row_dot(x[i], W[j])
    else:
        np.dot(x, W.T, out)
    for i in range(n):
        for j in range(m):
            out[i, j] = activate(out[i, j] + b[j], act)


@jit
def backward_products(delta, x, W, dx, dW):
    """dW = delta.T @ x and (unless dx has no rows) dx = delta @ W."""
    n, m = delta.shape
    if n * m * x.shape[1] <= SMALL_GEMM and small_gemm.usable(delta, x, dW) and small_gemm.usable(delta, W, dx):
        small_gemm.tn(delta, x, dW)
        if dx.shape[0] > 0:
            small_gemm.nn(delta, W, dx)
        return
    np.dot(delta.T, x, dW)
    if dx.shape[0] > 0:
        np.dot(delta, W, dx)


@jit
def affine_backward(dy, x, y, W, act, delta, dx, dW, db):
    """delta = dy * act'(y) and db = column sums of delta in one pass, then two GEMMs.

    For a linear layer delta is dy itself: the products read dy, and `delta` is neither read nor
    written (it may be dy, or any array; dy may be read-only).
    """
    n, m = dy.shape
    db[:] = 0
    if act == LINEAR:
        for i in range(n):
            for j in range(m):
                db[j] += dy[i, j]
        backward_products(dy, x, W, dx, dW)
        return
    for i in range(n):
        for j in range(m):
            d = dy[i, j] * activation_grad(y[i, j], act)
            delta[i, j] = d
            db[j] += d
    backward_products(delta, x, W, dx, dW)


@cpu_jit(fastmath={"reassoc"})
def l1_prox(h, threshold, nonneg, out):
    """Soft-thresholding, written branch-free so that LLVM vectorizes it at the speed of a copy:
    max(h - t, 0) + min(h + t, 0), in the data's precision (with the data first, Numba's max and
    min pass a NaN through, like the reference). Returns False if h holds NaN or inf: the check rides along in
    the same pass (reassociation only reorders that sum; the thresholding has nothing to
    reassociate)."""
    t = in_dtype_of(threshold, h)
    zero = t - t
    bad = zero
    if nonneg:
        for i in range(h.size):
            a = h[i]
            out[i] = max(a - t, zero)
            bad += a * zero
    else:
        for i in range(h.size):
            a = h[i]
            out[i] = max(a - t, zero) + min(a + t, zero)
            bad += a * zero
    return bad == zero


def in_dtype_of(value, array):
    """value cast to the array's float type, so float32 data keeps float32 (16-lane) math."""


@overload(in_dtype_of)
def _in_dtype_of(value, array):
    if array.dtype == types.float32:
        return lambda value, array: np.float32(value)
    return lambda value, array: np.float64(value)


def exp_like(x):
    """exp in the precision of x: float32 math (16 lanes) for float32 data."""


@overload(exp_like, jit_options={"error_model": "numpy"})
def _exp_like(x):
    if x == types.float32:
        return lambda x: cpu_math.exp32(x)
    return lambda x: cpu_math.exp(x)


# The reparameterization kernels let LLVM fuse a * b + c into one FMA ("contract"): the exp and
# Box-Muller polynomials (Horner steps) take half the instructions and round once, not twice.
_GOLDEN = ew._GOLDEN


@cpu_jit(fastmath={"contract"})
def draw_normals(key, start, count, buf):
    """Numbers start .. start + count - 1 of the stream `key` into buf[off:off + count], in buf's
    precision; returns off = start & 1 (pairs begin at even numbers). buf holds count + 2.

    One branch-free loop over whole Box-Muller pairs, both halves kept: LLVM vectorizes it (a
    pair's hash in 64-bit lanes, its log / sqrt / sincos in float32 or float64 lanes). The hash
    input key + pair * golden (`elementwise.normal_pair`) steps by an add, not a 64-bit multiply.
    In 512-bit vectors (`simd.prefer_wide_vectors`: 243 -> 173 us for 256K float32 numbers)."""
    simd.prefer_wide_vectors()
    one = in_dtype_of(1.0, buf)
    off = start & 1
    x = key + np.uint64(start >> 1) * _GOLDEN
    for q in range((off + count + 1) >> 1):
        a, b = box_muller(mix64(x), one)
        buf[2 * q] = a
        buf[2 * q + 1] = b
        x += _GOLDEN
    return off


@cpu_jit(fastmath={"contract"})
def reparam_forward(mu, logvar, eps, has_eps, key, z, kl, scratch):
    """z = mu + exp(logvar / 2) * eps and the per-row KL, over flat chunks of whole rows whose noise
    is drawn into `scratch` (3K + 2 entries of the data dtype at least: a chunk's noise, then its
    KL terms; a larger scratch takes more rows per chunk), so that a training step allocates
    nothing. Returns False if mu, logvar or (has_eps) eps holds NaN or inf, checked in the same pass.
    Its loops run in 512-bit vectors, as `draw_normals`' (the exp: 116 -> 81 us for 256K float32)."""
    simd.prefer_wide_vectors()
    n, k = mu.shape
    m, lv, e, zf = mu.reshape(-1), logvar.reshape(-1), eps.reshape(-1), z.reshape(-1)
    room = (scratch.size - 2) // 2
    rows = room // k
    terms = room + 2  # where the chunk's KL terms start in scratch
    half, one = in_dtype_of(0.5, mu), in_dtype_of(1.0, mu)
    zero = one - one
    bad = zero
    for i0 in range(0, n, rows):
        start, count = i0 * k, min(rows, n - i0) * k
        src, off = e, start
        if not has_eps:
            src, off = scratch, draw_normals(key, start, count, scratch)
        # views of the chunk, indexed from 0: Numba's negative-index wraparound on `start + t`
        # would turn the loop's loads and stores into gathers and scatters
        mc, lc, xc, zc = m[start:start + count], lv[start:start + count], src[off:off + count], zf[start:start + count]
        tc = scratch[terms:terms + count]
        for t in range(count):
            a, b, x = mc[t], lc[t], xc[t]
            std = exp_like(half * b)
            zc[t] = a + std * x
            tc[t] = one + b - a * a - std * std
            bad = add_nonfinite(bad, a, b, x)
        for r in range(count // k):
            kl[i0 + r] = -0.5 * row_sum(tc[r * k:(r + 1) * k])
    return bad == zero


@cpu_jit(fastmath={"contract"})
def reparam_backward(dz, mu, logvar, eps, has_eps, key, beta, dmu, dlogvar, scratch):
    """dmu and dlogvar of f(z) + beta * sum(kl), the noise regenerated chunk by chunk into
    `scratch` (3K + 2 entries at least, as the forward). Returns False if dz, mu, logvar or
    (has_eps) eps holds NaN or inf. In 512-bit vectors, as the forward."""
    simd.prefer_wide_vectors()
    g, m, lv, e = dz.reshape(-1), mu.reshape(-1), logvar.reshape(-1), eps.reshape(-1)
    dm, dl = dmu.reshape(-1), dlogvar.reshape(-1)
    chunk = (scratch.size - 2) & ~1
    half, one, b = in_dtype_of(0.5, mu), in_dtype_of(1.0, mu), in_dtype_of(beta, mu)
    zero = one - one
    bad = zero
    for start in range(0, m.size, chunk):
        count = min(chunk, m.size - start)
        src, off = e, start
        if not has_eps:
            src, off = scratch, draw_normals(key, start, count, scratch)
        gc, mc, lc, xc = g[start:start + count], m[start:start + count], lv[start:start + count], src[off:off + count]
        dmc, dlc = dm[start:start + count], dl[start:start + count]
        for t in range(count):
            d, a, l, x = gc[t], mc[t], lc[t], xc[t]
            std = exp_like(half * l)
            dmc[t] = d + b * a
            dlc[t] = half * (d * x * std + b * (std * std - one))
            bad = add_nonfinite(bad, d, a, l + x * zero)  # x * 0 is 0 unless x is NaN or inf
    return bad == zero


# The public ops on large batches: the rows split between Python threads (`threads.run_parts`),
# each part a contiguous row range through the serial kernel above (nogil: the parts run at once)
# with its own share of the scratch. Element (i, j) is number i * K + j of the stream wherever it
# is computed: a part starting at row r draws from the key moved on by r * K / 2 pairs
# (`part_key`), r * K even, so every thread count gives the same bits. (No parallel kernel: each
# costs a second or more of compile, for a split Python threads do at ~10 us a call. The training
# engine calls the serial kernels: its passes run beside BLAS's threads.)
def part_start(n, k, parts, p):
    """First row of part p of `parts` (parts: n): p * n // parts, made even when K is odd, so
    that the part's first number r * K begins a Box-Muller pair."""
    if p >= parts:
        return n
    r = p * n // parts
    return r - (r & (k & 1))


def part_key(key, first):
    """The stream key whose pair 0 is pair first / 2 of `key` (first even)."""
    return np.uint64((int(key) + (first >> 1) * int(_GOLDEN)) % 2 ** 64)


def reparam_forward_parallel(mu, logvar, eps, has_eps, key, z, kl, scratch, threads):
    """reparam_forward over `threads` row ranges at once (scratch: `threads` equal shares of
    3K + 2 entries or more). The same results as one thread, bit for bit. On the workers of
    `chunk_pool` where it takes the call, else on Python threads (`run_parts`)."""
    from .chunk_pool import reparam_forward as pooled
    from .threads import run_parts
    ok = pooled(mu, logvar, eps, has_eps, key, z, kl, scratch, threads)
    if ok is not None:
        return ok
    n, k = mu.shape
    share = scratch.size // threads

    def part(p):
        r0, r1 = part_start(n, k, threads, p), part_start(n, k, threads, p + 1)
        return reparam_forward(mu[r0:r1], logvar[r0:r1], eps[r0:r1] if has_eps else eps, has_eps,
                               part_key(key, r0 * k), z[r0:r1], kl[r0:r1], scratch[p * share:(p + 1) * share])
    return all(run_parts(part, threads))


def reparam_backward_parallel(dz, mu, logvar, eps, has_eps, key, beta, dmu, dlogvar, scratch, threads):
    """reparam_backward over `threads` row ranges at once (as `reparam_forward_parallel`)."""
    from .chunk_pool import reparam_backward as pooled
    from .threads import run_parts
    ok = pooled(dz, mu, logvar, eps, has_eps, key, beta, dmu, dlogvar, scratch, threads)
    if ok is not None:
        return ok
    n, k = mu.shape
    share = scratch.size // threads

    def part(p):
        r0, r1 = part_start(n, k, threads, p), part_start(n, k, threads, p + 1)
        return reparam_backward(dz[r0:r1], mu[r0:r1], logvar[r0:r1], eps[r0:r1] if has_eps else eps, has_eps,
                                part_key(key, r0 * k), beta, dmu[r0:r1], dlogvar[r0:r1],
                                scratch[p * share:(p + 1) * share])
    return all(run_parts(part, threads))


@jit
def mse_loss(pred, target, scale, rows, grad, terms):
    """rows = scale * per-row squared error; grad = d mean(rows) / d pred; `terms` is scratch for
    one row's terms (summed vectorized)."""
    n, m = pred.shape
    g_scale = in_dtype_of(2.0 * scale / n, pred)  # float32 lanes for float32 data (as bce_logits_loss)
    terms = terms[:m]  # the scratch may be longer
    for i in range(n):
        for j in range(m):
            d = pred[i, j] - target[i, j]
            terms[j] = d * d
            grad[i, j] = g_scale * d
        rows[i] = scale * row_sum(terms)


def bce_pair(a, t):
    """(loss, gradient) of one logit: float32 math for float32 data (see the overload below)."""


@overload(bce_pair, jit_options={"error_model": "numpy"})
def _bce_pair(a, t):
    if a == types.float32 and t == types.float32:
        return lambda a, t: cpu_math.bce_with_logits32(a, t)
    return lambda a, t: bce_with_logits(a, t)


@cpu_jit(fastmath={"contract"})
def bce_logits_loss(logits, target, scale, rows, grad, terms):
    """rows = scale * per-row BCE of sigmoid(logits); grad = d mean(rows) / d logits. In the
    logits' precision throughout, with fused multiply-adds in the exp and log1p polynomials (a
    float64 gradient scale converted every float32 lane twice: 256x784 806 -> 506 us on one Zen 3 core)."""
    simd.prefer_wide_vectors()
    n, m = logits.shape
    g_scale = in_dtype_of(scale / n, logits)
    terms = terms[:m]  # the scratch may be longer
    for i in range(n):
        for j in range(m):
            loss, g = bce_pair(logits[i, j], target[i, j])
            terms[j] = loss
            grad[i, j] = g_scale * g
        rows[i] = scale * row_sum(terms)


@jit
def adam_step(param, grad, m, v, step, lr, beta_1, beta_2, epsilon):
    """One Adam update in place; returns True when every updated parameter and moment is finite
    (checked in the same pass: a training loop sees divergence without reading the state again)."""
    # lr * (m / b1) / (sqrt(v / b2) + eps) == lr_t * m / (sqrt(v) + eps_t): one sqrt and one
    # division per parameter instead of three divisions; all in the parameters' precision
    root_2 = math.sqrt(1.0 - beta_2 ** step)
    lr_t = in_dtype_of(lr * root_2 / (1.0 - beta_1 ** step), param)
    eps_t = in_dtype_of(epsilon * root_2, param)
    b1, c1 = in_dtype_of(beta_1, param), in_dtype_of(1.0 - beta_1, param)
    b2, c2 = in_dtype_of(beta_2, param), in_dtype_of(1.0 - beta_2, param)
    bad = in_dtype_of(0.0, param)
    for i in range(param.size):
        g = grad[i]
        mi = b1 * m[i] + c1 * g
        vi = b2 * v[i] + c2 * g * g
        m[i] = mi
        v[i] = vi
        pi = param[i] - lr_t * mi / (math.sqrt(vi) + eps_t)
        param[i] = pi
        bad = add_nonfinite(bad, pi, mi, vi)
    return bad == 0


@jit
def sgd_step(param, grad, velocity, lr, momentum):
    """One SGD-with-momentum update in place, in the parameters' precision (as NumPy computes
    `momentum * velocity - lr * grad` for float32 arrays); returns True when every updated
    parameter and velocity is finite (checked in the same pass, as `adam_step`)."""
    bad = in_dtype_of(0.0, param)
    mu, rate = in_dtype_of(momentum, param), in_dtype_of(lr, param)
    for i in range(param.size):
        vi = mu * velocity[i] - rate * grad[i]
        velocity[i] = vi
        pi = param[i] + vi
        param[i] = pi
        bad = add_nonfinite(bad, pi, vi, pi)
    return bad == 0


@jit
def corrupt(x, level, kind, key, out):
    """Denoising input: x + level * N(0, 1) (kind 0) or x with each entry zeroed with probability
    `level` (kind 1), from the counter-based stream `key` (entry (i, j) uses number i * D + j)."""
    n, d = x.shape
    for i in range(n):
        for j in range(d):
            c = np.uint64(i * d + j)
            if kind == 0:
                out[i, j] = x[i, j] + level * normal_at(key, c)
            else:
                out[i, j] = x[i, j] if uniform_at(key, c) >= level else x[i, j] * 0


# Copies below are plain loops: Numba's array slice assignment compiles a formatted
# shape-mismatch error (string code), seconds of cold start per kernel.
@jit
def gather_rows(X, index, start, out):
    """out[r] = X[index[start + r]]: a shuffled minibatch copied into a reused buffer."""
    for r in range(out.shape[0]):
        row = index[start + r]
        for j in range(out.shape[1]):
            out[r, j] = X[row, j]


@jit
def l1_code_grad(dh, h, weight, out):
    """Gradient through h = prox(v) plus the penalty weight * |h|: (dh + weight sign(h)) [h != 0]."""
    for i in range(h.shape[0]):
        for j in range(h.shape[1]):
            v = h[i, j]
            out[i, j] = (dh[i, j] + weight * (1.0 if v > 0 else -1.0)) if v != 0 else v * 0


@jit
def l1_penalty_rows(h, lam, rows):
    for i in range(h.shape[0]):
        acc = 0.0
        for j in range(h.shape[1]):
            acc += abs(h[i, j])
        rows[i] += lam * acc


@jit
def repeat_rows(src, copies, out):
    n, k = src.shape
    for s in range(copies):
        for i in range(n):
            for j in range(k):
                out[s * n + i, j] = src[i, j]


@jit
def fold_rows(src, copies, out):
    """out = the sum of the `copies` stacked blocks of src."""
    n, k = out.shape
    for i in range(n):
        for j in range(k):
            acc = src[i, j]
            for s in range(1, copies):
                acc += src[s * n + i, j]
            out[i, j] = acc


@jit
def all_finite(a):
    return nonfinite_sum(a) == 0.0
