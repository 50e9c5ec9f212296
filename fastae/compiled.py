"""A fitted model as a compiled function: `model.compiled(part)` for use inside Numba code or from C.

`compiled(model, part)` returns a Numba dispatcher `f(x, out)` that runs one part of the fitted
model ("encode", "decode" or "reconstruct") on the rows of `x` and writes the result into `out`;
`compiled(model, part, c_abi=True)` a `numba.cfunc` with the C signature

    int32_t f(const T* x, int64_t n_rows, T* out)     (T: float or double, the model's dtype)

Both close over a private copy of the fitted weights (Numba freezes the closure's arrays into the
compiled code, or for large arrays refers to the private copy, which the function keeps alive), so
a later `fit` never changes a function already handed out. They call the same compiled kernels the
estimators' inference uses (`fastae.kernels.cpu.affine_forward`, `l1_prox`) through one shared,
disk-cached chain function, and allocate their scratch per call: any number of threads may call
them at once. Each `compiled()` call for a new (part, c_abi) compiles a small wrapper (well under
a second after the first); the result is cached per fitted state, so asking again is free.
"""
import threading
import weakref

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, register_jitable

from . import chain
from .chain import CHUNK, PARALLEL_WORK, Chain, chain_of
from .kernels import cpu, packed
from .kernels import pool as pool_layer
from .kernels import threads
from .kernels.elementwise import RELU, SIGMOID, TANH
from .kernels.jit import cpu_jit
from .kernels.views import flat, matrix

PARTS = ("encode", "decode", "reconstruct")


# return codes of the C ABI function
OK, BAD_ROWS, NULL_POINTER, OVERLAP = 0, 1, 2, 3


def check_part(part):
    if not isinstance(part, str) or part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(map(repr, PARTS))}, got {part!r}")
    return part


# ---- the compiled bodies (shared by every model; compiled once per dtype and cached on disk)

register_jitable(chain.work_entries)  # called by chain_work inside compiled code
chain_work = register_jitable(chain.chain_work)


@register_jitable
def chain_problem(params, layout, acts, prox, packed_w, packed_at, x, out, work, part):
    """What is wrong with the arguments of chain_rows: 0 nothing, else a code (the messages:
    _raise_chain_problem).
    Compiled code never trusts its caller: every offset the chain will read through is checked."""
    n_layers = layout.shape[0]
    if n_layers < 1 or layout.shape[1] != 4 or acts.shape[0] != n_layers or prox.shape[0] != 2:
        return 1
    if x.shape[1] != layout[0, 2]:
        return 2
    if out.shape[0] != x.shape[0] or out.shape[1] != layout[n_layers - 1, 1]:
        return 3
    if packed_at.shape[0] != n_layers + 1 or packed_at[n_layers] > packed_w.size:
        return 4
    nr = packed.panel_outputs(params)
    for l in range(n_layers):
        w, width, inp = layout[l, 0], layout[l, 1], layout[l, 2]
        if w < 0 or width < 1 or inp < 0 or layout[l, 3] < w + width * inp or layout[l, 3] + width > params.size or (
                l > 0 and inp != layout[l - 1, 1]) or packed_at[l] < 0 or (
                packed_at[l + 1] - packed_at[l] < -(-width // nr) * nr * inp):
            return 5
    if x.shape[0] > 0 and (work.size < chain_work(layout, min(x.shape[0], CHUNK)) or part.size < packed.BLOCK_ROWS * nr):
        return 6
    return 0


@register_jitable
def _raise_chain_problem(problem):
    if problem == 1:
        raise ValueError("layout, acts and prox do not describe a chain of layers")
    if problem == 2:
        raise ValueError("x has the wrong number of columns for this model")
    if problem == 3:
        raise ValueError("out has the wrong shape for this model")
    if problem == 4:
        raise ValueError("packed_at does not match the layout")
    if problem == 5:
        raise ValueError("layout does not fit the parameter buffers")
    raise ValueError("work or part is too small for the rows of x")


@cpu_jit
def chain_rows(params, layout, acts, prox, l1, packed_w, packed_at, threads, pool, x, out, work, part):
    """Dense layers 0 .. L-1 (layout[l] = (W offset, out, in, b offset), activation acts[l]) on
    the rows of x, into out; after layer prox[0] (-1: none) the L1 proximal operator with weight
    l1, non-negative when prox[1] (an array, not literals: one specialization serves every
    model). Rows go in chunks of up to CHUNK through two ping-pong buffers in `work` (at least
    chain_work(layout, min(n, CHUNK)) entries); `part` is the panels' scratch (packed.scratch).

    The layers run the register-blocked kernels over the packed weights (layer l's at
    packed_w[packed_at[l]:]): each row's result is the same bits whatever rows come with it and
    however many threads run. A large layer's panels are split between Numba's threads when
    `threads` > 1, or between the workers of fastae's own pool (`kernels.pool`: the native
    chain) when `pool` is its control block and it has workers. None for either compiles the
    chain without that parallel code (`compiled()` passes None for both: the serial chain)."""
    problem = chain_problem(params, layout, acts, prox, packed_w, packed_at, x, out, work, part)
    if problem != 0:
        _raise_chain_problem(problem)
    n_layers = layout.shape[0]
    prox_at, nonneg = prox[0], prox[1] != 0
    n = x.shape[0]
    if n == 0:
        return
    rows = min(n, CHUNK)
    slot = chain_work(layout, rows) // 2
    nr = packed.panel_outputs(params)
    for start in range(0, n, rows):
        m = min(rows, n - start)
        for l in range(n_layers):
            width, inp, b = layout[l, 1], layout[l, 2], layout[l, 3]
            bias = params[b:b + width]
            if l == n_layers - 1:
                dst = out[start:start + m]
            else:
                dst = matrix(work[(l % 2) * slot:], m, width)
            if l == 0:
                src = x[start:start + m]
            else:
                src = matrix(work[((l - 1) % 2) * slot:], m, inp)
            # this layer's panels exactly (the next layer starts on a cache line, so a float64 panel
            # of 8 outputs x an odd number of inputs is followed by padding)
            Wp = packed_w[packed_at[l]:packed_at[l] + -(-width // nr) * nr * inp]
            serial = True
            large = m * width * inp >= PARALLEL_WORK and packed.panel_count(Wp, inp) > 1
            if pool is not None:
                if large and pool[pool_layer.WORKERS] > 0:
                    pool_layer.run_layer(pool, src, Wp, bias, acts[l], dst, part)
                    serial = False
            if threads is not None:
                if large and threads > 1:
                    packed.affine_forward_parallel(src, Wp, bias, acts[l], dst, threads)
                    serial = False
            if serial:  # what affine_forward does, with one scratch for every layer
                packed.panels_into(src, Wp, bias, acts[l] == RELU, dst, part, 0, -(-width // nr))
                if acts[l] == SIGMOID or acts[l] == TANH:
                    packed.activate_span(dst, acts[l], 0, m, 0, width)
            if l == prox_at:
                values = flat(dst)
                cpu.l1_prox(values, l1, nonneg, values)


@cpu_jit
def chain_into(params, layout, acts, prox, l1, packed_w, packed_at, threads, check, x, out):
    """chain_rows with its scratch allocated here (nothing shared between calls). With `check`,
    returns False having written nothing when x holds NaN or inf (else True)."""
    if check and not cpu.all_finite(flat(x)):
        return False
    work = packed.scratch(chain_work(layout, min(max(x.shape[0], 1), CHUNK)), params)
    part = packed.scratch(packed.BLOCK_ROWS * packed.panel_outputs(params), params)
    chain_rows(params, layout, acts, prox, l1, packed_w, packed_at, threads, None, x, out, work, part)
    return True


@cpu_jit
def pca_into(M, shift, add, x, out):
    """out = (x - shift) @ M + add, computed in float64 (as PCA.transform/inverse_transform do)
    and stored in out's dtype; `shift`/`add` are float64 rows (zeros where not used)."""
    d, k = M.shape
    if x.shape[1] != d:
        raise ValueError("x has the wrong number of columns for this model")
    if out.shape[0] != x.shape[0] or out.shape[1] != k:
        raise ValueError("out has the wrong shape for this model")
    n = x.shape[0]
    if n == 0:
        return
    rows = min(n, CHUNK)
    a = np.empty((rows, d))
    y = np.empty((rows, k))
    for start in range(0, n, rows):
        m = min(rows, n - start)
        for i in range(m):
            for j in range(d):
                a[i, j] = x[start + i, j] - shift[j]
        np.dot(a[:m], M, y[:m])
        for i in range(m):
            for j in range(k):
                out[start + i, j] = y[i, j] + add[j]


@cpu_jit(inline="always")
def _overlaps(x, out):
    """Whether the memory of x and out intersects (rows are processed in chunks: a result written
    over rows not read yet would be read back as input)."""
    a, b = x.ctypes.data, out.ctypes.data
    return x.size > 0 and out.size > 0 and a < b + out.nbytes and b < a + x.nbytes


@intrinsic
def _is_null(typingctx, ptr):
    """Whether a raw pointer is NULL (inside a cfunc)."""
    if not isinstance(ptr, (types.CPointer, types.RawPointer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.icmp_unsigned("==", args[0], cgutils.get_null_value(args[0].type))
    return types.boolean(ptr), codegen


# ---- what a part computes, read from the fitted state

class _Affine:
    """PCA: out = (x - shift) @ M + add in float64."""

    def __init__(self, M, shift, add):
        self.M = np.ascontiguousarray(M, np.float64).copy()
        self.shift = np.ascontiguousarray(shift, np.float64).copy()
        self.add = np.ascontiguousarray(add, np.float64).copy()
        self.n_in, self.n_out = self.M.shape


def _program(state, part):
    if hasattr(state, "components"):  # PCA
        C, mean = state.components, state.mean
        zeros_k = np.zeros(C.shape[0])
        if part == "encode":
            return _Affine(C.T, mean, zeros_k), C.dtype
        return _Affine(C, zeros_k, mean), C.dtype  # decode (reconstruct: see build)
    return chain_of(state, part), state.dtype


# ---- building the functions

def _numba_type(dtype):
    return numba.from_dtype(np.dtype(dtype))


def _body(program, c_abi):
    """The Python closure over the program's private arrays: f(x, out), or for the C ABI
    f(x_ptr, n_rows, out_ptr) -> int32 viewing the pointers with numba.carray. The C entry calls
    the shared kernels itself (no wrapper in between: one function to compile)."""
    n_in, n_out = program.n_in, program.n_out
    if isinstance(program, Chain):
        params, layout, acts = program.params, program.layout, program.acts
        prox, l1 = program.prox, program.l1
        packed_w, packed_at = program.packed, program.packed_at
        packed_for = packed.VECTOR_BYTES  # the layout the weights were packed in (a closure constant)

        # one thread: a host calling from many threads, or from a forked child, needs no pool
        def run(x, out):
            if _overlaps(x, out):
                raise ValueError("out must not overlap x")
            if packed_for != packed.VECTOR_BYTES:  # unpickled where the kernels use the other layout
                raise ValueError("this compiled function's weights are packed for another CPU's vectors; "
                                 "call model.compiled() again in this process")
            chain_into(params, layout, acts, prox, l1, packed_w, packed_at, None, False, x, out)

        def c_run(x_ptr, n_rows, out_ptr):
            if n_rows < 0:
                return BAD_ROWS
            if _is_null(x_ptr) or _is_null(out_ptr):
                return NULL_POINTER
            x, out = numba.carray(x_ptr, (n_rows, n_in)), numba.carray(out_ptr, (n_rows, n_out))
            if _overlaps(x, out):
                return OVERLAP
            chain_into(params, layout, acts, prox, l1, packed_w, packed_at, None, False, x, out)
            return OK
    elif isinstance(program, _Affine):
        M, shift, add = program.M, program.shift, program.add

        def run(x, out):
            if _overlaps(x, out):
                raise ValueError("out must not overlap x")
            pca_into(M, shift, add, x, out)

        def c_run(x_ptr, n_rows, out_ptr):
            if n_rows < 0:
                return BAD_ROWS
            if _is_null(x_ptr) or _is_null(out_ptr):
                return NULL_POINTER
            x, out = numba.carray(x_ptr, (n_rows, n_in)), numba.carray(out_ptr, (n_rows, n_out))
            if _overlaps(x, out):
                return OVERLAP
            pca_into(M, shift, add, x, out)
            return OK
    else:  # PCA reconstruct: transform then inverse_transform, each rounded to the model dtype
        # as PCA.reconstruct does
        enc, dec = program.encode, program.decode
        Me, se, ae, Md, sd, ad = enc.M, enc.shift, enc.add, dec.M, dec.shift, dec.add
        k = enc.n_out

        def run(x, out):
            codes = np.empty((x.shape[0], k), out.dtype)
            pca_into(Me, se, ae, x, codes)
            pca_into(Md, sd, ad, codes, out)

        def c_run(x_ptr, n_rows, out_ptr):
            if n_rows < 0:
                return BAD_ROWS
            if _is_null(x_ptr) or _is_null(out_ptr):
                return NULL_POINTER
            out = numba.carray(out_ptr, (n_rows, n_out))
            codes = np.empty((n_rows, k), out.dtype)
            pca_into(Me, se, ae, numba.carray(x_ptr, (n_rows, n_in)), codes)
            pca_into(Md, sd, ad, codes, out)
            return OK
    return c_run if c_abi else run


class _TwoStep:
    def __init__(self, encode, decode):
        self.encode, self.decode = encode, decode
        self.n_in, self.n_out = encode.n_in, decode.n_out


def build(state, part, c_abi=False):
    """A new compiled function for one part of a fitted state (no caching: see `compiled`)."""
    check_part(part)
    threads.launch()  # the chain's cached code holds a parallel kernel: Numba's pool must be up
    if hasattr(state, "components") and part == "reconstruct":
        enc, dtype = _program(state, "encode")
        program = _TwoStep(enc, _program(state, "decode")[0])
    else:
        program, dtype = _program(state, part)
    n_in, n_out, keep = program.n_in, program.n_out, program
    body = _body(program, c_abi)
    T = _numba_type(dtype)
    if not c_abi:
        # one signature: x read-only (writeable arrays convert to it), out writeable; both 2-D C
        sig = types.void(types.Array(T, 2, "C", readonly=True), types.Array(T, 2, "C"))
        fn = numba.njit([sig], nogil=True, error_model="numpy")(body)
    else:
        sig = types.int32(types.CPointer(T), types.int64, types.CPointer(T))
        fn = numba.cfunc(sig, nogil=True, error_model="numpy")(body)
    _describe(fn, part, dtype, n_in, n_out, c_abi, keep)
    return fn


def _describe(fn, part, dtype, n_in, n_out, c_abi, keep):
    # attributes on the returned object: what it computes, and the private arrays (kept alive with it)
    try:
        fn.part, fn.dtype, fn.n_features_in, fn.n_features_out = part, np.dtype(dtype), n_in, n_out
        fn._fastae_arrays = keep
    except AttributeError:  # pragma: no cover - objects that refuse attributes
        pass


# ---- cached per fitted state (the state is immutable: a fit hands over a new one)

_cache = {}
_lock = threading.Lock()


def compiled(estimator, part="encode", c_abi=False):
    """The compiled function of one part of `estimator`'s fitted state (see the module docstring),
    compiled on first request and cached with the fitted state."""
    check_part(part)
    if not isinstance(c_abi, (bool, np.bool_)):
        raise TypeError(f"c_abi must be True or False, got {c_abi!r}")
    state = estimator._state()  # NotFittedError
    key = (part, bool(c_abi))
    with _lock:
        entry = _cache.get(id(state))
        if entry is None or entry[0]() is not state:
            entry = _cache[id(state)] = (weakref.ref(state), {}, threading.Lock())
            weakref.finalize(state, _forget, id(state), entry[0])
    functions, lock = entry[1], entry[2]
    with lock:  # one compile per (state, part, c_abi), even when threads ask at once
        fn = functions.get(key)
        if fn is None:
            fn = functions[key] = build(state, part, c_abi)
    return fn


def _forget(key, ref):
    with _lock:
        entry = _cache.get(key)
        if entry is not None and entry[0] is ref:
            del _cache[key]
