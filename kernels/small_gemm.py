"""Small matrix products in registers, for the training step of a narrow network.

A BLAS call packs both operands into its own layout on every call and runs a general driver
around its register kernel: on a product the size of a digits layer (64 rows x 32 x 64, 131 k
multiply-adds, all of it in L1) that fixed work is as long as the arithmetic. Here each product
is register tiles straight over the operands as they lie: a tile of up to 6 rows x 4 vectors of
C is held in registers while k runs, per k loading the tile's vectors of row k of B and
broadcasting one entry of A per row.

    nn(A, B, C):      C = A @ B       A (M, K), B (K, N)
    tn(A, B, C):      C = A.T @ B     A (K, M), B (K, N)
    nt(A, B, C, Bt):  C = A @ B.T     A (M, K), B (N, K); Bt (K * N entries) receives B.T

The only layout a tile needs is B's rows contiguous across the tile's columns, so A.T costs
nothing (the broadcast just reads A with other strides) while B.T is copied once into Bt.
Every array is C-contiguous; columns left over after the whole vectors go in one masked vector. Each entry of C is
one fused multiply-add chain over k in order: the bits depend on neither the tile nor M.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic

from . import simd
from .jit import cpu_jit
from .views import flat

ROWS = (6, 4, 1)      # tile heights: 6 rows, the rows left over 4 or 1 at a time
# tile widths in vectors: 24 accumulators at most (of 32 zmm registers); 0 is one vector of which
# only the first `width` lanes are read and written (masked loads and stores), for the columns
# left over, so that a layer of any width runs here
VECTORS = (4, 2, 1, 0)


def _emit(context, builder, arrays, offsets, rows, vectors, L, dtype, width):
    """The IR of one tile shape (see `_tile`): `vectors` vectors of L lanes, or with `width` (an
    intp value, 1 <= width < L) one vector of which only the first `width` lanes are touched."""
    (A, B, C), (a0, sar, sak, b0, ldb, c0, ldc, kn) = arrays, offsets
    intp = context.get_value_type(types.intp)
    const = lambda n: ir.Constant(intp, n)
    span = const(vectors * L) if width is None else width
    if config.BOUNDSCHECK:
        last_k = builder.sub(kn, const(1))
        some = builder.icmp_signed(">", kn, const(0))  # no k: A and B are not read
        simd.check_span(context, builder, A, builder.select(some, a0, const(0)), builder.select(some, builder.add(
            builder.add(builder.mul(sar, const(rows - 1)), builder.mul(sak, last_k)), const(1)), const(0)))
        simd.check_span(context, builder, B, builder.select(some, b0, const(0)), builder.select(
            some, builder.add(builder.mul(ldb, last_k), span), const(0)))
        simd.check_span(context, builder, C, c0, builder.add(builder.mul(ldc, const(rows - 1)), span))
    vty = ir.VectorType(context.get_value_type(dtype), L)
    vptr = lambda ary, i: builder.bitcast(builder.gep(ary.data, [i]), vty.as_pointer())
    align = dtype.bitwidth // 8
    if width is None:
        load = lambda ptr: builder.load(ptr, align=align)
        store = lambda value, ptr: builder.store(value, ptr, align=align)
    else:  # lanes < width only: a full vector could reach past the end of the array
        mask = builder.icmp_signed("<", ir.Constant(ir.VectorType(intp, L), list(range(L))),
                                   simd.splat(builder, width, ir.VectorType(intp, L)))
        i32, suffix = ir.IntType(32), f"v{L}f{dtype.bitwidth}.p0"
        masked_load = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            vty, [vty.as_pointer(), i32, mask.type, vty]), f"llvm.masked.load.{suffix}")
        masked_store = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            ir.VoidType(), [vty, vty.as_pointer(), i32, mask.type]), f"llvm.masked.store.{suffix}")
        load = lambda ptr: builder.call(masked_load, [ptr, ir.Constant(i32, align), mask, ir.Constant(vty, None)])
        store = lambda value, ptr: builder.call(masked_store, [value, ptr, ir.Constant(i32, align), mask])
    acc = [[cgutils.alloca_once_value(builder, cgutils.get_null_value(vty)) for _ in range(vectors)]
           for _ in range(rows)]
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                         f"llvm.fma.v{L}f{dtype.bitwidth}")
    with cgutils.for_range(builder, kn) as loop:
        k = loop.index
        row = builder.add(b0, builder.mul(k, ldb))
        b = [load(vptr(B, builder.add(row, const(v * L)))) for v in range(vectors)]
        ak = builder.add(a0, builder.mul(k, sak))
        for r in range(rows):
            a = simd.splat(builder, builder.load(builder.gep(A.data, [builder.add(ak, builder.mul(sar, const(r)))])),
                           vty)
            for v in range(vectors):
                builder.store(builder.call(fma, [a, b[v], builder.load(acc[r][v])]), acc[r][v])
    for r in range(rows):
        for v in range(vectors):
            at = builder.add(builder.add(c0, builder.mul(ldc, const(r))), const(v * L))
            store(builder.load(acc[r][v]), vptr(C, at))


@intrinsic
def _tile(typingctx, A, a0, sar, sak, B, b0, ldb, C, c0, ldc, kn, rows, vectors, width):
    """C[c0 + r * ldc + c] = sum over k < kn of A[a0 + r * sar + k * sak] * B[b0 + k * ldb + c]
    for r < rows, c < vectors * LANES (rows one of ROWS, vectors one of VECTORS, 0 meaning c <
    width, 1 <= width < LANES; anything else does nothing). LLVM IR written directly, as
    `packed._tile`: one switch over the tile shapes. Under NUMBA_BOUNDSCHECK an IndexError
    unless every access lies inside its array."""
    arrays, indices = (A, B, C), (a0, sar, sak, b0, ldb, c0, ldc, kn, rows, vectors, width)
    if not (all(simd.is_vector_array(a) and a.dtype == C.dtype for a in arrays)
            and all(isinstance(i, types.Integer) for i in indices)):
        return None
    lanes = simd.Vector(C.dtype).lanes

    def codegen(context, builder, sig, args):
        arrays = tuple(context.make_array(sig.args[i])(context, builder, args[i]) for i in (0, 4, 7))
        offsets = tuple(context.cast(builder, args[i], sig.args[i], types.intp) for i in (1, 2, 3, 5, 6, 8, 9, 10))
        intp = lambda i: context.cast(builder, args[i], sig.args[i], types.intp)
        const = lambda n: context.get_constant(types.intp, n)
        width = intp(13)
        shape = builder.add(builder.mul(intp(11), const(16)), intp(12))
        # a partial vector of a width outside 1 .. LANES - 1 matches no case
        valid = builder.or_(builder.icmp_signed("!=", intp(12), const(0)), builder.and_(
            builder.icmp_signed(">", width, const(0)), builder.icmp_signed("<", width, const(lanes))))
        shape = builder.select(valid, shape, const(-1))
        done = builder.append_basic_block("tile.done")
        switch = builder.switch(shape, done)
        for rows in ROWS:
            for vectors in VECTORS:
                case = builder.append_basic_block(f"tile.{rows}x{vectors}")
                switch.add_case(context.get_constant(types.intp, rows * 16 + vectors), case)
                with builder.goto_block(case):
                    _emit(context, builder, arrays, offsets, rows, max(vectors, 1), lanes, C.dtype,
                          width if vectors == 0 else None)
                    builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()
    return types.none(A, a0, sar, sak, B, b0, ldb, C, c0, ldc, kn, rows, vectors, width), codegen


@cpu_jit(inline="always")
def _product(A, sar, sak, M, B, N, K, C):
    """C (M, N) = sum over k of A(r, k) * B[k, :], A(r, k) = A[r * sar + k * sak] (1-D views)."""
    simd.prefer_wide_vectors()
    L = simd.lanes_of(C)
    j = 0
    while j < N:
        vectors = (N - j) // L
        vectors = 4 if vectors >= 4 else (2 if vectors >= 2 else vectors)  # 0: fewer than L columns left
        i = 0
        while i < M:
            rows = 6 if i + 6 <= M else (4 if i + 4 <= M else 1)
            _tile(A, i * sar, sar, sak, B, j, N, C, i * N + j, N, K, rows, vectors, N - j)
            i += rows
        j += vectors * L if vectors else N - j


@cpu_jit(inline="always")
def usable(A, B, C):
    """Whether C = op(A) @ op(B) may run here: all three typed C-contiguous (a view of any other
    array would be a copy)."""
    return simd.c_layout(A) and simd.c_layout(B) and simd.c_layout(C)


@cpu_jit(inline="always")
def transpose(B, Bt):
    """Bt[k * N + n] = B[n, k] for B (N, K). A product small enough to run here has a B of a few
    thousand entries, which stay in L1 whichever way they are walked."""
    N, K = B.shape
    for n in range(N):
        for k in range(K):
            Bt[k * N + n] = B[n, k]


@cpu_jit
def nn(A, B, C):
    M, K = A.shape
    N = B.shape[1]
    if B.shape[0] != K or C.shape[0] != M or C.shape[1] != N or not usable(A, B, C):
        raise ValueError("nn: shapes do not match or an array is not C-contiguous")
    _product(flat(A), K, 1, M, flat(B), N, K, flat(C))


@cpu_jit
def tn(A, B, C):
    K, M = A.shape
    N = B.shape[1]
    if B.shape[0] != K or C.shape[0] != M or C.shape[1] != N or not usable(A, B, C):
        raise ValueError("tn: shapes do not match or an array is not C-contiguous")
    _product(flat(A), 1, M, M, flat(B), N, K, flat(C))


@cpu_jit
def nt(A, B, C, Bt):
    M, K = A.shape
    N = B.shape[0]
    if B.shape[1] != K or C.shape[0] != M or C.shape[1] != N or Bt.size < K * N or not usable(A, B, C):
        raise ValueError("nt: shapes do not match or an array is not C-contiguous")
    transpose(B, Bt)
    _product(flat(A), K, 1, M, Bt, N, K, flat(C))
