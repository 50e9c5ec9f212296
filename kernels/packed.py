"""Dense layers for inference over packed weights: register-blocked, no BLAS.

A fitted model's weights do not change between inference calls, so they are packed once into
the layout a register-blocked kernel streams (as ONNX Runtime's MLAS does): W (m outputs, K inputs)
becomes column panels of NR = 4 vectors (64 float32 or 32 float64 outputs), panel p holding
W[p*NR:(p+1)*NR, k] for k = 0 .. K-1 contiguously, zero-padded past m. The kernel holds a tile of
4 rows x NR outputs in 16 vector registers while it runs over k: per k it loads 4 vectors of the
panel and broadcasts 4 inputs for 16 fused multiply-adds, so it runs at the FMA units' rate where
a BLAS call on few rows does not (OpenBLAS packs its operands on every call). Rows go in blocks
of BLOCK_ROWS whose sums stay in L1 until the bias and activation write them out. (Blocking the
inputs too, to hold a block of the panel in L1, measured slower here: the panel streams from L2
fast enough, and each block reloads its partial sums.)

`affine_forward(x, Wp, b, act, out)` computes what `cpu.affine_forward(x, W, b, act, out)` does.
Each output is one fused multiply-add chain over k in order, whatever the row count, the tile or
the thread: results do not depend on the batch a row comes in or on the number of threads.
`affine_forward_parallel` splits the panels between Numba's threads (the caller checks that the
threading layer is one that may be entered from several threads at once).
"""
import math

import numba
import numpy as np

from . import simd
from .cpu import exp_like, in_dtype_of
from .elementwise import LINEAR, RELU, SIGMOID, TANH
from .jit import cpu_jit

ROWS = 4          # rows of a register tile
VECTORS = 4       # vectors of a register tile (and of a panel)
BLOCK_ROWS = 64   # rows per pass over a panel (their sums, 16 KB, stay in L1 until written out)


def panel_width(dtype):
    """Outputs per panel: 64 for float32, 32 for float64."""
    return VECTORS * simd.lanes(dtype)


def packed_size(m, k, dtype):
    """Entries of the packed weights of an (m, k) matrix."""
    nr = panel_width(dtype)
    return -(-m // nr) * nr * k


def pack(W, out):
    """W (m, K) into panels (see the module docstring), in NumPy (done once per fitted model: no
    compile on the way to a first transform); out must hold packed_size(m, K) entries."""
    W = np.asarray(W)
    m, K = W.shape
    nr = panel_width(W.dtype)
    panels = -(-m // nr)
    if out.ndim != 1 or out.size != panels * nr * K or out.dtype != W.dtype:
        raise ValueError("out has the wrong size or dtype for the packed weights")
    padded = np.zeros((panels * nr, K), W.dtype)
    padded[:m] = W
    out[:] = padded.reshape(panels, nr, K).transpose(0, 2, 1).reshape(-1)


@cpu_jit
def _tile_4(x, i, Wp, base, part, at):
    """part[at + r * NR + c] = sum_k x[i + r, k] * panel[k, c] for 4 rows."""
    K = x.shape[1]
    L = simd.lanes_of(Wp)
    nr = VECTORS * L
    xf = x.ravel()
    r0 = i * K
    o1, o2, o3 = at + nr, at + 2 * nr, at + 3 * nr
    c00 = simd.zeros(Wp); c01 = simd.zeros(Wp); c02 = simd.zeros(Wp); c03 = simd.zeros(Wp)
    c10 = simd.zeros(Wp); c11 = simd.zeros(Wp); c12 = simd.zeros(Wp); c13 = simd.zeros(Wp)
    c20 = simd.zeros(Wp); c21 = simd.zeros(Wp); c22 = simd.zeros(Wp); c23 = simd.zeros(Wp)
    c30 = simd.zeros(Wp); c31 = simd.zeros(Wp); c32 = simd.zeros(Wp); c33 = simd.zeros(Wp)
    for k in range(K):
        o = base + k * nr
        w0 = simd.load(Wp, o); w1 = simd.load(Wp, o + L); w2 = simd.load(Wp, o + 2 * L); w3 = simd.load(Wp, o + 3 * L)
        a = simd.broadcast(xf, r0 + k)
        c00 = simd.fma(a, w0, c00); c01 = simd.fma(a, w1, c01); c02 = simd.fma(a, w2, c02); c03 = simd.fma(a, w3, c03)
        a = simd.broadcast(xf, r0 + K + k)
        c10 = simd.fma(a, w0, c10); c11 = simd.fma(a, w1, c11); c12 = simd.fma(a, w2, c12); c13 = simd.fma(a, w3, c13)
        a = simd.broadcast(xf, r0 + 2 * K + k)
        c20 = simd.fma(a, w0, c20); c21 = simd.fma(a, w1, c21); c22 = simd.fma(a, w2, c22); c23 = simd.fma(a, w3, c23)
        a = simd.broadcast(xf, r0 + 3 * K + k)
        c30 = simd.fma(a, w0, c30); c31 = simd.fma(a, w1, c31); c32 = simd.fma(a, w2, c32); c33 = simd.fma(a, w3, c33)
    simd.store(part, at, c00); simd.store(part, at + L, c01)
    simd.store(part, at + 2 * L, c02); simd.store(part, at + 3 * L, c03)
    simd.store(part, o1, c10); simd.store(part, o1 + L, c11)
    simd.store(part, o1 + 2 * L, c12); simd.store(part, o1 + 3 * L, c13)
    simd.store(part, o2, c20); simd.store(part, o2 + L, c21)
    simd.store(part, o2 + 2 * L, c22); simd.store(part, o2 + 3 * L, c23)
    simd.store(part, o3, c30); simd.store(part, o3 + L, c31)
    simd.store(part, o3 + 2 * L, c32); simd.store(part, o3 + 3 * L, c33)


@cpu_jit
def _tile_1(x, i, Wp, base, part, at):
    """_tile_4 for one row (the same chain per output)."""
    K = x.shape[1]
    L = simd.lanes_of(Wp)
    nr = VECTORS * L
    xf = x.ravel()
    r0 = i * K
    c0 = simd.zeros(Wp); c1 = simd.zeros(Wp); c2 = simd.zeros(Wp); c3 = simd.zeros(Wp)
    for k in range(K):
        o = base + k * nr
        a = simd.broadcast(xf, r0 + k)
        c0 = simd.fma(a, simd.load(Wp, o), c0); c1 = simd.fma(a, simd.load(Wp, o + L), c1)
        c2 = simd.fma(a, simd.load(Wp, o + 2 * L), c2); c3 = simd.fma(a, simd.load(Wp, o + 3 * L), c3)
    simd.store(part, at, c0); simd.store(part, at + L, c1)
    simd.store(part, at + 2 * L, c2); simd.store(part, at + 3 * L, c3)


@cpu_jit(inline="always")
def _block(x, Wp, b, act, out, i0, i1, p, part):
    """Rows i0 .. i1 - 1 (at most BLOCK_ROWS), outputs p * NR ..: register tiles, then bias and
    activation on the way out."""
    simd.prefer_wide_vectors()
    K = x.shape[1]
    m = out.shape[1]
    nr = VECTORS * simd.lanes_of(Wp)
    base, first = p * K * nr, p * nr
    width = min(nr, m - first)
    i = i0
    while i < i1:
        if i + ROWS <= i1:
            _tile_4(x, i, Wp, base, part, (i - i0) * nr)
            i += ROWS
        else:
            _tile_1(x, i, Wp, base, part, (i - i0) * nr)
            i += 1
    if simd.c_layout(out) and width == nr and (act == RELU or act == LINEAR):  # bias, ReLU in registers
        L = simd.lanes_of(Wp)
        flat = out.ravel()
        for i in range(i0, i1):
            at, o = (i - i0) * nr, i * m + first
            for v in range(VECTORS):
                y = simd.add(simd.load(part, at + v * L), simd.load(b, first + v * L))
                simd.store(flat, o + v * L, simd.relu(y) if act == RELU else y)
        return
    # one loop per activation (each vectorizes; `elementwise.activate` holds all four)
    one = in_dtype_of(1.0, part)
    for i in range(i0, i1):
        at = (i - i0) * nr
        if act == SIGMOID:
            for c in range(width):
                v = part[at + c] + b[first + c]
                e = exp_like(-abs(v))  # never overflows
                s = one / (one + e)
                out[i, first + c] = s if v >= 0 else e * s
        elif act == TANH:
            for c in range(width):
                out[i, first + c] = math.tanh(part[at + c] + b[first + c])
        elif act == RELU:
            for c in range(width):
                v = part[at + c] + b[first + c]
                out[i, first + c] = v if v > 0 else v - v
        else:
            for c in range(width):
                out[i, first + c] = part[at + c] + b[first + c]


@cpu_jit
def _panels(x, Wp, b, act, out, p0, p1, part):
    """Panels p0 .. p1 - 1 for every row, BLOCK_ROWS rows at a time."""
    n = x.shape[0]
    for i0 in range(0, n, BLOCK_ROWS):
        for p in range(p0, p1):
            _block(x, Wp, b, act, out, i0, min(n, i0 + BLOCK_ROWS), p, part)


@cpu_jit(inline="always")
def panel_count(Wp, k):
    """Panels of packed weights Wp with k inputs (a layer of one panel has nothing to split)."""
    return Wp.size // (k * VECTORS * simd.lanes_of(Wp)) if k > 0 else 0


@cpu_jit(inline="always")
def aligned_empty(n, like):
    """n entries of like's dtype starting on a 64-byte boundary (a cache line: vector loads and
    stores that straddle two lines run at half speed)."""
    lanes = simd.lanes_of(like)
    buf = np.empty(n + lanes, like.dtype)
    skip = ((-buf.ctypes.data) % 64) // buf.itemsize
    return buf[skip:skip + n]


@cpu_jit(inline="always")
def _check(x, Wp, b, out):
    n, K = x.shape
    m = out.shape[1]
    nr = VECTORS * simd.lanes_of(Wp)
    if out.shape[0] != n or b.size != m or Wp.size != -(-m // nr) * nr * K:
        raise ValueError("affine_forward: shapes do not match the packed weights")
    if not simd.c_layout(x):  # the tiles read x as one flat buffer: any other layout is a copy each time
        raise ValueError("affine_forward: x must be C-contiguous")


@cpu_jit
def affine_forward(x, Wp, b, act, out):
    """out = act(x @ W.T + b) with W packed by `pack` (one thread)."""
    _check(x, Wp, b, out)
    nr = VECTORS * simd.lanes_of(Wp)
    _panels(x, Wp, b, act, out, 0, -(-out.shape[1] // nr), aligned_empty(BLOCK_ROWS * nr, Wp))


@cpu_jit(parallel=True)
def affine_forward_parallel(x, Wp, b, act, out, threads):
    """affine_forward with the panels split between `threads` of Numba's threads (the same
    results: each output is computed as in one thread)."""
    _check(x, Wp, b, out)
    nr = VECTORS * simd.lanes_of(Wp)
    panels = -(-out.shape[1] // nr)
    threads = max(1, min(threads, panels))
    for t in numba.prange(threads):
        part = aligned_empty(BLOCK_ROWS * nr, Wp)
        _panels(x, Wp, b, act, out, t * panels // threads, (t + 1) * panels // threads, part)
