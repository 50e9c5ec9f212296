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
from numba.extending import intrinsic

from .fitted import CHUNK
from .kernels import cpu, packed
from .kernels import threads
from .kernels.elementwise import ACTIVATIONS, LINEAR, RELU, SIGMOID, TANH
from .kernels.jit import cpu_jit
from .network import _aligned, copy as _aligned_copy

PARTS = ("encode", "decode", "reconstruct")

PARALLEL_WORK = 100000  # multiply-adds of a layer worth splitting between threads (~5 us)

# return codes of the C ABI function
OK, BAD_ROWS, NULL_POINTER, OVERLAP = 0, 1, 2, 3


def check_part(part):
    if not isinstance(part, str) or part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(map(repr, PARTS))}, got {part!r}")
    return part


# ---- the compiled bodies (shared by every model; compiled once per dtype and cached on disk)

@cpu_jit
def chain_into(params, layout, acts, prox, l1, packed_w, packed_at, threads, check, x, out):
    """Dense layers 0 .. L-1 (layout[l] = (W offset, out, in, b offset), activation acts[l]) on
    the rows of x, into out; after layer prox[0] (-1: none) the L1 proximal operator with weight
    l1, non-negative when prox[1] (an array, not literals: one specialization serves every
    model). Rows go in chunks of CHUNK through two ping-pong buffers allocated here (nothing
    shared between calls).

    The layers run the register-blocked kernels over the packed weights (layer l's at
    packed_w[packed_at[l]:]; `threads` > 1 splits a large layer's panels between Numba's
    threads): each row's result is the same bits whatever rows come with it and however many
    threads run. With `check`, returns False having written nothing when x holds NaN or inf
    (else True)."""
    n_layers = layout.shape[0]
    if n_layers < 1 or layout.shape[1] != 4 or acts.shape[0] != n_layers or prox.shape[0] != 2:
        raise ValueError("layout, acts and prox do not describe a chain of layers")
    prox_at, nonneg = prox[0], prox[1] != 0
    if x.shape[1] != layout[0, 2]:
        raise ValueError("x has the wrong number of columns for this model")
    if out.shape[0] != x.shape[0] or out.shape[1] != layout[n_layers - 1, 1]:
        raise ValueError("out has the wrong shape for this model")
    if packed_at.shape[0] != n_layers + 1 or packed_at[n_layers] > packed_w.size:
        raise ValueError("packed_at does not match the layout")
    for l in range(n_layers):
        w, width, inp = layout[l, 0], layout[l, 1], layout[l, 2]
        if w < 0 or layout[l, 3] < w + width * inp or layout[l, 3] + width > params.size or (
                l > 0 and inp != layout[l - 1, 1]) or packed_at[l] < 0 or packed_at[l] > packed_at[l + 1]:
            raise ValueError("layout does not fit the parameter buffers")
    n = x.shape[0]
    if n == 0:
        return True
    if check and not cpu.all_finite(x.ravel()):
        return False
    rows = min(n, CHUNK)
    widest = 1
    for l in range(n_layers - 1):
        widest = max(widest, layout[l, 1])
    slot = -(-(rows * widest) // 16) * 16  # each buffer starts on a 64-byte boundary
    work = packed.scratch(2 * slot, params)
    nr = packed.panel_outputs(params)
    part = packed.scratch(packed.BLOCK_ROWS * nr, params)
    for start in range(0, n, rows):
        m = min(rows, n - start)
        xc = x[start:start + m]
        for l in range(n_layers):
            w, width, inp, b = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
            bias = params[b:b + width]
            if l == n_layers - 1:
                dst = out[start:start + m]
            else:
                dst = work[(l % 2) * slot:(l % 2) * slot + m * width].reshape((m, width))
            if l == 0:
                src = xc
            else:
                o = ((l - 1) % 2) * slot
                src = work[o:o + m * inp].reshape((m, inp))
            Wp = packed_w[packed_at[l]:packed_at[l + 1]]
            if threads > 1 and m * width * inp >= PARALLEL_WORK and packed.panel_count(Wp, inp) > 1:
                packed.affine_forward_parallel(src, Wp, bias, acts[l], dst, threads)
            else:  # what affine_forward does, with one scratch for every layer
                packed.panels_into(src, Wp, bias, acts[l] == RELU, dst, part, 0, -(-width // nr))
                if acts[l] == SIGMOID or acts[l] == TANH:
                    packed.activate_span(dst, acts[l], 0, m, 0, width)
            if l == prox_at:
                flat = dst.ravel()
                cpu.l1_prox(flat, l1, nonneg, flat)
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

class _Chain:
    """Dense layers in one private, 64-byte aligned flat buffer."""

    def __init__(self, pairs, acts, dtype, prox_at=-1, l1=0.0, nonneg=False):
        rows, offset = [], 0
        for W, _ in pairs:
            out, inp = W.shape
            b_offset = _aligned(offset + out * inp)
            rows.append((offset, out, inp, b_offset))
            offset = _aligned(b_offset + out)
        params = np.zeros(max(offset, 1), dtype)
        for (w, out, inp, b), (W, bias) in zip(rows, pairs):
            params[w:w + out * inp] = np.asarray(W, dtype).reshape(-1)
            params[b:b + out] = np.asarray(bias, dtype)
        self.params = _aligned_copy(params)
        self.layout = np.asarray(rows, np.int64).reshape(-1, 4)
        # each layer's weights packed for the register-blocked kernels, 64-byte aligned
        at = [0]
        for W, _ in pairs:
            at.append(_aligned(at[-1] + packed.packed_size(W.shape[0], W.shape[1], dtype)))
        self.packed_at = np.asarray(at, np.int64)
        self.packed = _aligned_copy(np.zeros(max(at[-1], 1), dtype))
        for l, (W, _) in enumerate(pairs):
            packed.pack(np.ascontiguousarray(W, dtype), self.packed[at[l]:at[l] + packed.packed_size(*W.shape, dtype)])
        self.acts = np.asarray(acts, np.int64)
        self.prox_at, self.l1, self.nonneg = int(prox_at), float(l1), bool(nonneg)
        self.prox = np.array([self.prox_at, int(self.nonneg)], np.int64)
        self.n_in, self.n_out = int(self.layout[0, 2]), int(self.layout[-1, 1])


class _Affine:
    """PCA: out = (x - shift) @ M + add in float64."""

    def __init__(self, M, shift, add):
        self.M = np.ascontiguousarray(M, np.float64).copy()
        self.shift = np.ascontiguousarray(shift, np.float64).copy()
        self.add = np.ascontiguousarray(add, np.float64).copy()
        self.n_in, self.n_out = self.M.shape


def neural_layers(state, part):
    """[(W, b, activation code), ...] of a part of a fitted Autoencoder or VAE (host arrays), and
    the index of the layer after which the L1 prox applies (-1: none), its weight and sign rule.
    A VAE's encoder ends in the mu head; its reconstruct decodes mu."""
    spec = state.spec
    layers = [(state.host(W), state.host(b)) for W, b in state.layers()]
    acts = [int(a) for a in state.net.acts]
    split = len(spec.hidden)
    if spec.is_vae:
        acts = acts[:split] + [LINEAR, LINEAR] + acts[split + 1:]  # heads split: mu, logvar
        encoder = [(W, b, a) for (W, b), a in zip(layers[:split + 1], acts[:split + 1])]
        decoder = [(W, b, a) for (W, b), a in zip(layers[split + 2:], acts[split + 2:])]
        prox = (-1, 0.0, False)
    else:
        encoder = [(W, b, a) for (W, b), a in zip(layers[:split + 1], acts[:split + 1])]
        decoder = [(W, b, a) for (W, b), a in zip(layers[split + 1:], acts[split + 1:])]
        prox = (split, spec.l1, ACTIVATIONS[spec.code_activation] == RELU) if spec.l1 > 0 else (-1, 0.0, False)
    chain = {"encode": encoder, "decode": decoder, "reconstruct": encoder + decoder}[part]
    prox_at = prox[0] if part != "decode" else -1
    return chain, prox_at, prox[1], prox[2]


def _program(state, part):
    if hasattr(state, "components"):  # PCA
        C, mean = state.components, state.mean
        zeros_k = np.zeros(C.shape[0])
        if part == "encode":
            return _Affine(C.T, mean, zeros_k), C.dtype
        return _Affine(C, zeros_k, mean), C.dtype  # decode (reconstruct: see build)
    chain, prox_at, l1, nonneg = neural_layers(state, part)
    dtype = state.dtype
    return _Chain([(W, b) for W, b, _ in chain], [a for _, _, a in chain], dtype, prox_at, l1, nonneg), dtype


# ---- building the functions

def _numba_type(dtype):
    return numba.from_dtype(np.dtype(dtype))


def _body(program, c_abi):
    """The Python closure over the program's private arrays: f(x, out), or for the C ABI
    f(x_ptr, n_rows, out_ptr) -> int32 viewing the pointers with numba.carray. The C entry calls
    the shared kernels itself (no wrapper in between: one function to compile)."""
    n_in, n_out = program.n_in, program.n_out
    if isinstance(program, _Chain):
        params, layout, acts = program.params, program.layout, program.acts
        prox, l1 = program.prox, program.l1
        packed_w, packed_at = program.packed, program.packed_at

        # one thread: a host calling from many threads, or from a forked child, needs no pool
        def run(x, out):
            if _overlaps(x, out):
                raise ValueError("out must not overlap x")
            chain_into(params, layout, acts, prox, l1, packed_w, packed_at, 1, False, x, out)

        def c_run(x_ptr, n_rows, out_ptr):
            if n_rows < 0:
                return BAD_ROWS
            if _is_null(x_ptr) or _is_null(out_ptr):
                return NULL_POINTER
            x, out = numba.carray(x_ptr, (n_rows, n_in)), numba.carray(out_ptr, (n_rows, n_out))
            if _overlaps(x, out):
                return OVERLAP
            chain_into(params, layout, acts, prox, l1, packed_w, packed_at, 1, False, x, out)
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
