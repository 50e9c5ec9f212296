"""GPU kernels: CuPy (cuBLAS) for the matrix products, fused numba.cuda kernels for the rest.

The per-element math is `elementwise.py`, shared with the CPU kernels. Under Numba's CUDA simulator
(NUMBA_ENABLE_CUDASIM=1) the same kernels run on NumPy arrays, which is how CI tests them.
Signatures mirror `cpu.py`: outputs and workspaces are passed in.

Layout: arrays are C-contiguous (row-major), so thread x always runs along a row's columns: the 32
threads of a warp then read and write 32 neighbouring elements, one coalesced transaction.
Per-row sums (losses, L1 penalty) take one block per row and per-column sums (db) one block per
32-column tile; either way the block's partial sums meet in `_block_sum`, a shared-memory tree
whose order depends on the shape alone, so every run gives the same bits (no float atomics).
Precision: float32 data gets float32 math. Numba types a float64 literal or argument mixed with a
float32 value as float64, so scalars are cast to the data dtype on the host and constants in the
kernels are made with `type(x)(c)` / `a.dtype.type(c)`; tests/test_cuda_kernels.py compiles
every kernel to PTX and checks that the float32 ones (but for their noise streams) hold no
float64 arithmetic.
"""
import math

import numpy as np
from numba import cuda

from . import backend
from . import elementwise as ew


# float32-clean versions of the shared math whose float64 literals would promote float32 data
# (elementwise.py writes `1.0 / (1.0 + e)`); same formulas, constants in the argument's type.
@cuda.jit(device=True)
def _sigmoid(v):
    one = type(v)(1)
    e = math.exp(-abs(v))  # never overflows
    s = one / (one + e)
    return s if v >= 0 else e * s


@cuda.jit(device=True)
def _activation_grad(y, act):
    one = type(y)(1)
    if act == ew.RELU:
        return one if y > 0 else one - one
    if act == ew.SIGMOID:
        return y * (one - y)
    if act == ew.TANH:
        return one - y * y
    return one


@cuda.jit(device=True)
def _bce_with_logits(a, t):
    one = type(a)(1)
    zero = one - one
    e = math.exp(-abs(a))
    s = one / (one + e)
    p = s if a >= zero else e * s
    return (a if a > zero else zero) - a * t + math.log1p(e), p - t


_ew = ew.compiled(cuda.jit(device=True), {"sigmoid": _sigmoid, "activation_grad": _activation_grad,
                                          "bce_with_logits": _bce_with_logits})
activate, activation_grad, soft_threshold = _ew.activate, _ew.activation_grad, _ew.soft_threshold
normal_at, uniform_at, bce_with_logits = _ew.normal_at, _ew.uniform_at, _ew.bce_with_logits
LINEAR = ew.LINEAR
_BLOCK = 256  # most threads of a 1-D element-wise block
_TILE = (32, 8)  # most threads of a 2-D element-wise block: 32 columns (a warp) x 8 rows
_ROW_THREADS = 256  # most threads of a one-row reduction block
_COL_ROWS = 32  # most row threads of a column-sum block (32 x 32 threads)
_SLOTS = 1024  # shared-memory slots of `_block_sum`: the most threads any reduction block has
# Blocks span a whole warp along x at least (a smaller one leaves the rest of its warp idle). The
# simulator has no warps, and starting each of its threads (a Python thread) costs about a
# millisecond: there a block is only as wide as the shape needs.
_WARP = 1 if backend.simulated() else 32


def array_module(a):
    if isinstance(a, np.ndarray):
        return np
    import cupy
    return cupy


def _lanes(n, most):
    """Threads for n items: a power of two (a tree reduction halves it), at most `most`."""
    lanes = 1
    while lanes < min(n, most):
        lanes *= 2
    return lanes


def _blocks(n, threads):
    return (n + threads - 1) // threads


def _grid(n):
    threads = max(_WARP, _lanes(n, _BLOCK))
    return _blocks(n, threads), threads


def _tiles(shape):
    """Launch configuration of a 2-D element-wise kernel over `shape` (read with `_cell`): row
    blocks on grid x (up to 2^31 - 1 of them), column blocks on grid y (up to 65535)."""
    n, m = shape
    tx, ty = max(_WARP, _lanes(m, _TILE[0])), _lanes(n, _TILE[1])
    return (_blocks(n, ty), _blocks(m, tx)), (tx, ty)


@cuda.jit(device=True)
def _cell():
    """(row, column) of this thread in a `_tiles` launch; thread x runs along the columns."""
    return (cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y,
            cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x)


def _row_blocks(shape):
    """One block per row, its threads along the columns."""
    return shape[0], max(_WARP, _lanes(shape[1], _ROW_THREADS))


def _column_blocks(shape):
    """One block per tile of (up to) 32 columns, up to `_COL_ROWS` threads down each column."""
    n, m = shape
    width = max(_WARP, _lanes(m, 32))
    return _blocks(m, width), (width, _lanes(n, _COL_ROWS))


@cuda.jit(device=True)
def _block_sum(acc, lane, lanes, step):
    """Sum of `acc` over the `lanes` threads (a power of two) numbered lane = 0, 1, ... whose
    thread indices (x + y * blockDim.x) lie `step` apart: 1 to sum along x, blockDim.x along y.
    Lane 0 gets the total. Every thread of the block must call it (it synchronizes the block).

    A tree in shared memory: each round adds the upper half of the slots onto the lower half, so
    the order of the additions depends on the shape only (bit-reproducible, unlike atomics) and
    rounding grows with log2(lanes), like NumPy's pairwise sum."""
    buf = cuda.shared.array(_SLOTS, type(acc))
    t = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    buf[t] = acc
    half = lanes >> 1
    while half > 0:
        cuda.syncthreads()  # the partner's last write is visible
        if lane < half:
            buf[t] += buf[t + half * step]
        half >>= 1
    return buf[t]  # lane 0 wrote its slot last itself: no barrier needed to read it


@cuda.jit
def _bias_activate(out, b, act):
    i, j = _cell()
    if i < out.shape[0] and j < out.shape[1]:
        out[i, j] = activate(out[i, j] + b[j], act)


@cuda.jit
def _delta_colsum(dy, y, act, delta, db):
    """delta = dy * act'(y) and db = its column sums, one block per 32-column tile (`_column_blocks`):
    thread (x, y) walks rows y, y + blockDim.y, ... of column x of the tile, then the tile's row
    threads meet in `_block_sum`."""
    j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    acc = db.dtype.type(0)
    if j < dy.shape[1]:
        for i in range(cuda.threadIdx.y, dy.shape[0], cuda.blockDim.y):
            d = dy[i, j] * activation_grad(y[i, j], act)
            if act != LINEAR:
                delta[i, j] = d
            acc += d
    total = _block_sum(acc, cuda.threadIdx.y, cuda.blockDim.y, cuda.blockDim.x)
    if cuda.threadIdx.y == 0 and j < dy.shape[1]:
        db[j] = total


@cuda.jit
def _l1_prox(h, threshold, nonneg, out):
    i = cuda.grid(1)
    if i < h.size:
        out[i] = soft_threshold(h[i], threshold, nonneg)


# The noise of element (i, j) is number i * K + j of the stream, drawn in the data's precision
# (`elementwise.normal_pair`): float32 math for float32 data.
normal_in = _ew.normal_in


@cuda.jit
def _reparam_forward(mu, logvar, eps, has_eps, key, z, kl):
    """One block per row (`_row_blocks`), its threads along the columns; the KL terms meet in
    `_block_sum`."""
    i, tx = cuda.blockIdx.x, cuda.threadIdx.x
    k = mu.shape[1]
    one, half = mu.dtype.type(1), mu.dtype.type(0.5)
    acc = one - one
    for j in range(tx, k, cuda.blockDim.x):
        m, lv = mu[i, j], logvar[i, j]
        e = eps[i, j] if has_eps else normal_in(key, np.uint64(i * k + j), one)
        std = math.exp(half * lv)
        z[i, j] = m + std * e
        acc += one + lv - m * m - std * std
    total = _block_sum(acc, tx, cuda.blockDim.x, 1)
    if tx == 0:
        kl[i] = -half * total


@cuda.jit
def _reparam_backward(dz, mu, logvar, eps, has_eps, key, beta, dmu, dlogvar):
    """Element-wise over `_tiles`; `beta` arrives in the data dtype."""
    i, j = _cell()
    if i < mu.shape[0] and j < mu.shape[1]:
        one, half = mu.dtype.type(1), mu.dtype.type(0.5)
        e = eps[i, j] if has_eps else normal_in(key, np.uint64(i * mu.shape[1] + j), one)
        std = math.exp(half * logvar[i, j])
        dmu[i, j] = dz[i, j] + beta * mu[i, j]
        dlogvar[i, j] = half * (dz[i, j] * e * std + beta * (std * std - one))


# The row reductions run one block per row (`_row_blocks`): thread x walks columns x,
# x + blockDim.x, ... of row blockIdx.x, then the block meets in `_block_sum`. Scalars arrive in
# the data dtype.
@cuda.jit
def _mse_loss(pred, target, scale, g_scale, rows, grad):
    i, tx = cuda.blockIdx.x, cuda.threadIdx.x
    acc = rows.dtype.type(0)
    for j in range(tx, pred.shape[1], cuda.blockDim.x):
        d = pred[i, j] - target[i, j]
        acc += d * d
        grad[i, j] = g_scale * d
    total = _block_sum(acc, tx, cuda.blockDim.x, 1)
    if tx == 0:
        rows[i] = scale * total


@cuda.jit
def _bce_logits_loss(logits, target, scale, g_scale, rows, grad):
    i, tx = cuda.blockIdx.x, cuda.threadIdx.x
    acc = rows.dtype.type(0)
    for j in range(tx, logits.shape[1], cuda.blockDim.x):
        loss, g = bce_with_logits(logits[i, j], target[i, j])
        acc += loss
        grad[i, j] = g_scale * g
    total = _block_sum(acc, tx, cuda.blockDim.x, 1)
    if tx == 0:
        rows[i] = scale * total


@cuda.jit(device=True)
def _finite(x):
    return x - x == 0  # False for inf and NaN


@cuda.jit
def _adam_step(param, grad, m, v, lr_t, beta_1, c_1, beta_2, c_2, eps_t, nonfinite):
    """One Adam update with the bias corrections folded into lr_t and eps_t on the host (as
    cpu.adam_step): one sqrt and one division per parameter; all scalars in the data dtype."""
    i = cuda.grid(1)
    if i < param.size:
        g = grad[i]
        mi = beta_1 * m[i] + c_1 * g
        vi = beta_2 * v[i] + c_2 * g * g
        m[i] = mi
        v[i] = vi
        pi = param[i] - lr_t * mi / (math.sqrt(vi) + eps_t)
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
    """`level` stays float64: the drop mask compares it with the float64 uniform stream, as the
    reference does; the noise is drawn in float64 (the reference's stream), then cast, and added
    in the data dtype like the reference's `x + level * noise.astype(x.dtype)`."""
    i, j = _cell()
    if i < x.shape[0] and j < x.shape[1]:
        c = np.uint64(i * x.shape[1] + j)
        cast = x.dtype.type
        if kind == 0:
            out[i, j] = x[i, j] + cast(level) * cast(normal_at(key, c))
        else:
            out[i, j] = x[i, j] if uniform_at(key, c) >= level else cast(0)


@cuda.jit
def _gather_rows(X, index, start, out):
    i, j = _cell()
    if i < out.shape[0] and j < out.shape[1]:
        out[i, j] = X[index[start + i], j]


@cuda.jit
def _l1_code_grad(dh, h, weight, out):
    i, j = _cell()
    if i < h.shape[0] and j < h.shape[1]:
        v = h[i, j]
        out[i, j] = (dh[i, j] + (weight if v > 0 else -weight)) if v != 0 else v - v


@cuda.jit
def _l1_penalty_rows(h, lam, rows):
    i, tx = cuda.blockIdx.x, cuda.threadIdx.x
    acc = rows.dtype.type(0)
    for j in range(tx, h.shape[1], cuda.blockDim.x):
        acc += abs(h[i, j])
    total = _block_sum(acc, tx, cuda.blockDim.x, 1)
    if tx == 0:
        rows[i] += lam * total


def _flag(like):
    return array_module(like).zeros(1, np.int32)


def sgd_step(param, grad, velocity, lr, momentum):
    """Returns True when every updated parameter and velocity is finite (flagged in the same
    kernel; reading the flag waits for the kernel)."""
    blocks, threads = _grid(param.size)
    nonfinite = _flag(param)
    cast = param.dtype.type
    _sgd_step[blocks, threads](param, grad, velocity, cast(lr), cast(momentum), nonfinite)
    return not bool(nonfinite[0])


def corrupt(x, level, kind, key, out):
    blocks, threads = _tiles(x.shape)
    _corrupt[blocks, threads](x, float(level), kind, key, out)


def gather_rows(X, index, start, out):
    blocks, threads = _tiles(out.shape)
    _gather_rows[blocks, threads](X, index, start, out)


def l1_code_grad(dh, h, weight, out):
    blocks, threads = _tiles(h.shape)
    _l1_code_grad[blocks, threads](dh, h, h.dtype.type(weight), out)


def l1_penalty_rows(h, lam, rows):
    blocks, threads = _row_blocks(h.shape)
    _l1_penalty_rows[blocks, threads](h, rows.dtype.type(lam), rows)


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
    blocks, threads = _tiles(out.shape)
    _bias_activate[blocks, threads](out, b, act)


def affine_backward(dy, x, y, W, act, delta, dx, dW, db):
    blocks, threads = _column_blocks(dy.shape)
    _delta_colsum[blocks, threads](dy, y, act, delta, db)
    if act == LINEAR:
        delta = dy  # the kernel wrote no delta: a linear layer's delta is dy itself
    xp = array_module(x)
    xp.matmul(delta.T, x, out=dW)
    if dx.shape[0] > 0:
        xp.matmul(delta, W, out=dx)


def l1_prox(h, threshold, nonneg, out):
    blocks, threads = _grid(h.size)
    _l1_prox[blocks, threads](h, h.dtype.type(threshold), nonneg, out)
    return True  # h was checked before the launch


def reparam_forward(mu, logvar, eps, has_eps, key, z, kl, scratch=None):
    blocks, threads = _row_blocks(mu.shape)
    _reparam_forward[blocks, threads](mu, logvar, eps, has_eps, key, z, kl)


def reparam_backward(dz, mu, logvar, eps, has_eps, key, beta, dmu, dlogvar, scratch=None):
    blocks, threads = _tiles(mu.shape)
    _reparam_backward[blocks, threads](dz, mu, logvar, eps, has_eps, key, mu.dtype.type(beta), dmu, dlogvar)


def mse_loss(pred, target, scale, rows, grad, terms=None):
    blocks, threads = _row_blocks(pred.shape)
    cast = pred.dtype.type
    _mse_loss[blocks, threads](pred, target, cast(scale), cast(2.0 * scale / pred.shape[0]), rows, grad)


def bce_logits_loss(logits, target, scale, rows, grad, terms=None):
    blocks, threads = _row_blocks(logits.shape)
    cast = logits.dtype.type
    _bce_logits_loss[blocks, threads](logits, target, cast(scale), cast(scale / logits.shape[0]), rows, grad)


def adam_step(param, grad, m, v, step, lr, beta_1, beta_2, epsilon):
    """Returns True when every updated parameter and moment is finite (see `sgd_step`)."""
    blocks, threads = _grid(param.size)
    nonfinite = _flag(param)
    # lr * (m / b1) / (sqrt(v / b2) + eps) == lr_t * m / (sqrt(v) + eps_t), as cpu.adam_step
    root_2 = math.sqrt(1.0 - beta_2 ** step)
    cast = param.dtype.type
    _adam_step[blocks, threads](param, grad, m, v, cast(lr * root_2 / (1.0 - beta_1 ** step)),
                                cast(beta_1), cast(1.0 - beta_1), cast(beta_2), cast(1.0 - beta_2),
                                cast(epsilon * root_2), nonfinite)
    return not bool(nonfinite[0])


def all_finite(a):
    return bool(array_module(a).isfinite(a).all())


def row_sum(a):
    return float(a.sum())
