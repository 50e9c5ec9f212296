"""Dense layers for inference over packed weights: register-blocked, no BLAS.

A fitted model's weights do not change between inference calls, so they are packed once into
the layout a register-blocked kernel streams (as ONNX Runtime's MLAS does): W (m outputs, K inputs)
becomes column panels of NR outputs, panel p holding W[p*NR:(p+1)*NR, k] for k = 0 .. K-1
contiguously, zero-padded past m. With AVX-512 a panel is 4 vectors (64 float32 or 32 float64
outputs) and the kernel holds a tile of 6 rows x NR outputs in 24 vector registers while it runs
over k: per k it loads 4 vectors of the panel and broadcasts 6 inputs for 24 fused multiply-adds.
With AVX2 (16 registers) a panel is 2 vectors of 256 bits (16 float32 or 8 float64 outputs) and a
tile 6 x 2 vectors: 45-47 GMAC/s on one Zen 3 core at every shape of the 784 net, the FMA units'
peak (`kernels.packing`). Either way it runs near the FMA units' rate where
a BLAS call on few rows does not (OpenBLAS packs its operands on every call). The panel streams
from L2 once per tile, so the taller the tile the fewer bytes per multiply-add: 6 rows (the most
that fit 32 registers with 4 vectors) ran 1.25-1.7x faster than 4 rows here (256x784 -> 512:
69 against 55 GMAC/s, interleaved in one process); rows left over go in 4-row and 1-row tiles.
Rows go in blocks of BLOCK_ROWS whose sums stay in L1 until the bias and activation write them
out, and k in slices of K_BLOCK: every tile of a block reads the same 32 KB slice of the panel,
which then stays in L1 instead of streaming from L2 for each tile (each tile saves its sums after
a slice and takes them up again for the next: the same FMA chain, the same bits). Slices of 96-128
ran fastest (256x784 -> 512: 83 -> 92 GMAC/s; 16 rows 46 -> 81), 64 and 256 slower (with AVX-512;
with AVX2 a slice of 128 is 8 KB, and 128, 256 and 512 ran within 5%, all at the peak). A panel
holding at most 2 (or 1) vectors of outputs (a layer's last, or a narrow layer: 32 outputs or
fewer in float32) runs tiles of that many vectors, not the zero padding (the digits encoder
64-32-16-8 on 256 rows: 45 -> 18 us, with the partial panel's bias loop vectorized).

`affine_forward(x, Wp, b, act, out)` computes what `cpu.affine_forward(x, W, b, act, out)` does.
Each output is one fused multiply-add chain over k in order, whatever the row count, the tile or
the thread: results do not depend on the batch a row comes in or on the number of threads.
`affine_forward_parallel` splits the panels between Numba's threads (the caller checks that the
threading layer is one that may be entered from several threads at once).

Compile time is part of the design: a first `transform` on a new machine compiles exactly one
function, `panels_into` (the tiles are LLVM IR written directly, so Numba has little to type;
LINEAR and ReLU are applied in the panels, sigmoid and tanh by `activate_span`, compiled only
for a model that has them).
"""

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic, register_jitable

from . import simd
from .cpu import exp_like, in_dtype_of
from .cpu_math import tanh_in
from .elementwise import RELU, SIGMOID, TANH
from .jit import cpu_jit, plain_argument_types
from .packing import BLOCK_ROWS, K_BLOCK, ROWS, VECTOR_BYTES, VECTORS, pack, packed_size, panel_width  # noqa: F401
from .views import flat as flat_view

TILE_ROWS = (ROWS, 4, 1)          # the tiles' heights: rows left over after the 6-row tiles go 4 or 1 at a time
TILE_VECTORS = tuple(sorted({VECTORS, 2, 1}, reverse=True))  # and widths: a panel holding at most 2 (or 1) vectors
# A call on one row runs its panels GROUP at a time in one tile of 1 row x 8 vectors: a 1-row
# tile of one panel has only VECTORS multiply-add chains, too few to hide the FMA latency (4
# cycles, 2 units: 8 in flight). 784-512-256-32 on 1 row, one Zen 3 core: 51 -> 34 us.
WIDE = 8
GROUP = WIDE // VECTORS           # panels per single-row tile: 4 with AVX2, 2 with AVX-512


def _emit_tile(context, builder, arrays, offsets, rows, vectors, L, dtype):
    """The LLVM IR of one tile shape (see `_tile`). Vector v of a wide tile (vectors > VECTORS,
    one row) is vector v % VECTORS of panel v // VECTORS after the one at `base`."""
    (xa, wa, pa), (r0, K, base, at, k0, kn, resume) = arrays, offsets
    intp = context.get_value_type(types.intp)
    const = lambda n: ir.Constant(intp, n)
    nr = const(VECTORS * L)
    stride = builder.mul(K, nr)  # from one panel to the next
    panels = -(-vectors // VECTORS)
    if config.BOUNDSCHECK:
        simd.check_span(context, builder, xa, builder.add(r0, k0), builder.add(builder.mul(K, const(rows - 1)), kn))
        span = builder.add(builder.mul(stride, const(panels - 1)),
                           builder.sub(builder.mul(kn, nr), const((panels * VECTORS - vectors) * L)))
        simd.check_span(context, builder, wa, builder.add(base, builder.mul(k0, nr)),
                        builder.select(builder.icmp_signed(">", kn, const(0)), span, const(0)))
        simd.check_span(context, builder, pa, at, const(((rows - 1) * VECTORS + vectors) * L))
    vty = context.get_value_type(simd.Vector(dtype))
    vptr = lambda ary, i: builder.bitcast(builder.gep(ary.data, [i]), vty.as_pointer())
    align = dtype.bitwidth // 8
    acc = [[cgutils.alloca_once_value(builder, cgutils.get_null_value(vty)) for _ in range(vectors)]
           for _ in range(rows)]
    with builder.if_then(resume):  # go on from the sums of the previous slice of k
        for r in range(rows):
            for v in range(vectors):
                builder.store(builder.load(vptr(pa, builder.add(at, const((r * VECTORS + v) * L))), align=align),
                              acc[r][v])
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                         f"llvm.fma.v{L}f{dtype.bitwidth}")
    with cgutils.for_range(builder, kn) as loop:
        k = builder.add(k0, loop.index)
        o = builder.add(base, builder.mul(k, nr))
        w = [builder.load(vptr(wa, builder.add(builder.add(o, builder.mul(stride, const(v // VECTORS))),
                                               const(v % VECTORS * L))), align=align) for v in range(vectors)]
        for r in range(rows):
            a = simd.splat(builder, builder.load(builder.gep(xa.data, [
                builder.add(builder.add(r0, builder.mul(K, const(r))), k)])), vty)
            for v in range(vectors):
                builder.store(builder.call(fma, [a, w[v], builder.load(acc[r][v])]), acc[r][v])
    for r in range(rows):
        for v in range(vectors):
            builder.store(builder.load(acc[r][v]), vptr(pa, builder.add(at, const((r * VECTORS + v) * L))),
                          align=align)


@intrinsic
def _tile(typingctx, xf, r0, K, Wp, base, part, at, k0, kn, resume, rows, vectors):
    """tile(xf, r0, K, Wp, base, part, at, k0, kn, resume, rows, vectors): for the `rows` rows of
    x starting at flat offset r0 (xf: x raveled, K columns) and the first `vectors` vectors of the
    panel at Wp[base:] (c < vectors * LANES),
    part[at + r * NR + c] (+)= sum over k0 <= k < k0 + kn of xf[r0 + r * K + k] * Wp[base + k * NR + c],
    each output one FMA chain in k order, starting from 0 or, with `resume`, from what part holds.
    rows is one of TILE_ROWS, vectors one of TILE_VECTORS (anything else does nothing), or
    rows 1 and vectors WIDE: GROUP whole panels from the one at `base` (see `_emit_tile`), their
    sums one after the other in part.

    Written as LLVM IR rather than Numba code: a tile is up to 24 named accumulators and 24
    multiply-adds per k, which Numba types and lowers call by call (0.5 s of a cold start); as IR
    it costs nothing before LLVM: one switch over the tile shapes, each case the IR of one shape.
    The accumulators are stack slots that LLVM promotes to vector registers (24 zmm for 6 rows x 4
    vectors). Under NUMBA_BOUNDSCHECK it raises IndexError unless every access lies inside its
    array."""
    arrays, indices = (xf, Wp, part), (r0, K, base, at, k0, kn, rows, vectors)
    if not (all(simd.is_vector_array(a) and a.dtype == Wp.dtype for a in arrays)
            and all(isinstance(i, types.Integer) for i in indices)):
        return None
    L = simd.Vector(Wp.dtype).lanes

    def codegen(context, builder, sig, args):
        arrays = tuple(context.make_array(sig.args[i])(context, builder, args[i]) for i in (0, 3, 5))
        offsets = tuple(context.cast(builder, args[i], sig.args[i], types.intp) for i in (1, 2, 4, 6, 7, 8))
        offsets += (context.cast(builder, args[9], sig.args[9], types.boolean),)
        shape = builder.add(builder.mul(context.cast(builder, args[10], sig.args[10], types.intp),
                                        context.get_constant(types.intp, 16)),
                            context.cast(builder, args[11], sig.args[11], types.intp))
        done = builder.append_basic_block("tile.done")
        switch = builder.switch(shape, done)
        shapes = [(rows, vectors) for rows in TILE_ROWS for vectors in TILE_VECTORS] + [(1, WIDE)]
        for rows, vectors in shapes:
            case = builder.append_basic_block(f"tile.{rows}x{vectors}")
            switch.add_case(context.get_constant(types.intp, rows * 16 + vectors), case)
            with builder.goto_block(case):
                _emit_tile(context, builder, arrays, offsets, rows, vectors, L, Wp.dtype)
                builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()
    return types.none(xf, r0, K, Wp, base, part, at, k0, kn, resume, rows, vectors), codegen


@cpu_jit(inline="always")
def _block(x, Wp, b, relu, out, i0, i1, p, part):
    """Rows i0 .. i1 - 1 (at most BLOCK_ROWS), outputs p * NR ..: register tiles, then the bias
    (and ReLU when `relu`) on the way out."""
    simd.prefer_wide_vectors()
    K = x.shape[1]
    m = out.shape[1]
    L = simd.lanes_of(Wp)
    nr = VECTORS * L
    base, first = p * K * nr, p * nr
    width = min(nr, m - first)
    vectors = VECTORS if width > 2 * L else (2 if width > L else 1)  # a partial panel: no padding
    xf = flat_view(x)
    # the block's tiles share a K_BLOCK-deep slice of the panel in L1 (no inputs: one empty slice,
    # which writes the zero sums)
    for k0 in range(0, max(K, 1), K_BLOCK):
        kn, resume = min(K_BLOCK, K - k0), k0 > 0
        i = i0
        while i < i1:
            rows = ROWS if i + ROWS <= i1 else (4 if i + 4 <= i1 else 1)
            _tile(xf, i * K, K, Wp, base, part, (i - i0) * nr, k0, kn, resume, rows, vectors)
            i += rows
    _finish(b, relu, out, i0, i1, p, part, 0)


@cpu_jit(inline="always")
def _row_group(x, Wp, b, relu, out, p, part):
    """The one row of x, outputs of the GROUP whole panels from p on: one wide tile (GROUP x
    VECTORS multiply-add chains at once), then each panel's bias and ReLU."""
    simd.prefer_wide_vectors()
    K = x.shape[1]
    nr = VECTORS * simd.lanes_of(Wp)
    # all of k at once: with one row no slice of a panel is read twice (the sums are the same
    # bits either way: a slice's sums are saved and taken up again exactly)
    _tile(flat_view(x), 0, K, Wp, p * K * nr, part, 0, 0, K, False, 1, WIDE)
    for g in range(GROUP):
        _finish(b, relu, out, 0, 1, p + g, part, g * nr)


@cpu_jit(inline="always")
def _finish(b, relu, out, i0, i1, p, part, off):
    """out[i0:i1, panel p's outputs] = the sums at part[off + (i - i0) * NR ..] + the bias (and
    ReLU when `relu`)."""
    m = out.shape[1]
    L = simd.lanes_of(part)
    nr = VECTORS * L
    first = p * nr
    width = min(nr, m - first)
    if simd.c_layout(out) and width == nr:  # bias and ReLU in registers
        flat = flat_view(out)
        for i in range(i0, i1):
            at, o = off + (i - i0) * nr, i * m + first
            for v in range(VECTORS):
                y = simd.add(simd.load(part, at + v * L), simd.load(b, first + v * L))
                simd.store(flat, o + v * L, simd.relu(y) if relu else y)
        return
    if simd.c_layout(out):  # a layer's last, partial panel
        flat, bias = flat_view(out), b[first:first + width]
        for i in range(i0, i1):
            at = off + (i - i0) * nr
            sums, dst = part[at:at + width], flat[i * m + first:i * m + first + width]
            for c in range(width):  # over 0-based views: the loop vectorizes
                y = sums[c] + bias[c]
                dst[c] = (y if y > 0 else y - y) if relu else y
        return
    for i in range(i0, i1):  # an out that is not C-contiguous
        at = off + (i - i0) * nr
        for c in range(width):
            y = part[at + c] + b[first + c]
            out[i, first + c] = (y if y > 0 else y - y) if relu else y


@cpu_jit(inline="always")
def _check(x, Wp, b, out):
    n, K = x.shape
    m = out.shape[1]
    nr = VECTORS * simd.lanes_of(Wp)
    if out.shape[0] != n or b.size != m or Wp.size != -(-m // nr) * nr * K:
        raise ValueError("affine_forward: shapes do not match the packed weights")
    if not simd.c_layout(x):  # the tiles read x as one flat buffer: any other layout is a copy each time
        raise ValueError("affine_forward: x must be C-contiguous")


@plain_argument_types
@cpu_jit
def panels_into(x, Wp, b, relu, out, part, p0, p1):
    """Outputs p0 * NR .. p1 * NR - 1 (panels p0 .. p1 - 1) of x @ W.T + b, with ReLU when
    `relu`, into out, BLOCK_ROWS rows at a time; part is scratch of at least BLOCK_ROWS * NR
    entries (see `scratch`). The one compiled unit of a layer: what a first transform compiles."""
    _check(x, Wp, b, out)
    nr = VECTORS * simd.lanes_of(Wp)
    if part.size < BLOCK_ROWS * nr or p0 < 0 or p1 > -(-out.shape[1] // nr):
        raise ValueError("affine_forward: scratch too small or panels out of range")
    n = x.shape[0]
    first = p0
    if n == 1:  # whole panels GROUP at a time (see WIDE)
        whole = min(p1, out.shape[1] // nr)
        while first + GROUP <= whole:
            _row_group(x, Wp, b, relu, out, first, part)
            first += GROUP
    for i0 in range(0, n, BLOCK_ROWS):
        for p in range(first, p1):
            _block(x, Wp, b, relu, out, i0, min(n, i0 + BLOCK_ROWS), p, part)


@cpu_jit(inline="always")
def _activate(a, act):
    """a = act(a) in place for SIGMOID and TANH (a 1-D array, indexed from 0: an offset index
    kept LLVM from proving the in-place loop safe to vectorize, 5 ns a sigmoid instead of 1)."""
    one = in_dtype_of(1.0, a)
    if act == SIGMOID:
        for c in range(a.size):
            v = a[c]
            e = exp_like(-abs(v))  # never overflows
            s = one / (one + e)
            a[c] = s if v >= 0 else e * s
    elif act == TANH:
        for c in range(a.size):
            a[c] = tanh_in(a[c])


@plain_argument_types
@cpu_jit(fastmath={"contract"})
def activate_span(out, act, i0, i1, c0, c1):
    """out[i0:i1, c0:c1] = act(out[i0:i1, c0:c1]) in place, for SIGMOID and TANH (the panels
    apply LINEAR and ReLU themselves). A layer's result is the same bits as with the activation
    fused: the same rounded pre-activation goes through the same formula. The polynomials' Horner
    steps are fused multiply-adds (float32 on one Zen 4 core: sigmoid 0.70 -> 0.54 ns an element,
    tanh 0.81 -> 0.65)."""
    simd.prefer_wide_vectors()
    if simd.c_layout(out):
        flat, m = flat_view(out), out.shape[1]
        for i in range(i0, i1):
            _activate(flat[i * m + c0:i * m + c1], act)
    else:  # ravel would be a copy
        for i in range(i0, i1):
            _activate(out[i, c0:c1], act)


@register_jitable(inline="always")
def panel_outputs(like):
    """Outputs per panel for arrays of like's dtype (panel_width, callable in compiled code)."""
    return VECTORS * (VECTOR_BYTES // like.itemsize)


@register_jitable(inline="always")
def panel_count(Wp, k):
    """Panels of packed weights Wp with k inputs (a layer of one panel has nothing to split)."""
    return Wp.size // (k * panel_outputs(Wp)) if k > 0 else 0


@register_jitable(inline="always")
def scratch(n, like):
    """n entries of like's dtype starting on a 64-byte boundary (a cache line: vector loads and
    stores that straddle two lines run at half speed). Plain NumPy when called from Python."""
    buf = np.empty(n + 64 // like.itemsize, like.dtype)
    skip = ((-buf.ctypes.data) % 64) // buf.itemsize
    return buf[skip:skip + n]


@cpu_jit
def affine_forward(x, Wp, b, act, out):
    """out = act(x @ W.T + b) with W packed by `pack` (one thread)."""
    nr = VECTORS * simd.lanes_of(Wp)
    panels_into(x, Wp, b, act == RELU, out, scratch(BLOCK_ROWS * nr, Wp), 0, -(-out.shape[1] // nr))
    if act == SIGMOID or act == TANH:
        activate_span(out, act, 0, out.shape[0], 0, out.shape[1])


@cpu_jit(parallel=True)
def affine_forward_parallel(x, Wp, b, act, out, threads):
    """affine_forward with the panels split between `threads` of Numba's threads (the same
    results: each output is computed as in one thread)."""
    _check(x, Wp, b, out)
    nr = VECTORS * simd.lanes_of(Wp)
    panels = -(-out.shape[1] // nr)
    parts = max(1, min(threads, panels))
    for t in numba.prange(parts):
        p0, p1 = t * panels // parts, (t + 1) * panels // parts
        panels_into(x, Wp, b, act == RELU, out, scratch(BLOCK_ROWS * nr, Wp), p0, p1)
        if act == SIGMOID or act == TANH:
            activate_span(out, act, 0, out.shape[0], p0 * nr, min(p1 * nr, out.shape[1]))
