"""A stack of dense layers stored in one flat parameter buffer, and the workspace plan the engine
runs in. Knows shapes and offsets, no training logic."""
import numpy as np

from . import engine


class Network:
    """Dense layers `dims[l] = (in, out)` with activation codes `acts`, all weights and biases in
    one flat buffer `params` (so one Adam step covers every layer)."""

    def __init__(self, dims, acts, dtype, xp=np):
        """`xp` (NumPy or CuPy) allocates the parameter buffer (None: no buffer, the layout only);
        it is not kept (modules do not pickle)."""
        self.dims = [(int(i), int(o)) for i, o in dims]
        self.acts = np.asarray(acts, dtype=np.int64)
        self.dtype = np.dtype(dtype)
        rows, offset = [], 0
        for fan_in, fan_out in self.dims:
            b_offset = _aligned(offset + fan_out * fan_in)
            rows.append((offset, fan_out, fan_in, b_offset))
            offset = _aligned(b_offset + fan_out)
        self.layout = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
        self.n_params = offset
        self.params = None if xp is None else zeros(offset, self.dtype, xp)  # None: the layout only

    @property
    def n_layers(self):
        return len(self.layout)

    def layer(self, l, buffer=None):
        w, out, inp, b = self.layout[l]
        buf = self.params if buffer is None else buffer
        return buf[w:w + out * inp].reshape(out, inp), buf[b:b + out]

    def init(self, rng, xp=np):
        """Glorot-uniform weights (scaled for the activation, as scikit-learn's MLP), zero biases."""
        for l, act in enumerate(self.acts):
            W, b = self.layer(l)
            out, inp = W.shape
            factor = 2.0 if act == 1 else 6.0  # sigmoid layers: smaller range, as scikit-learn
            bound = np.sqrt(factor / (inp + out))
            W[...] = xp.asarray(rng.uniform(-bound, bound, size=(out, inp)), dtype=self.dtype)
            b[...] = 0

    def plan(self, rows, samples=1, code=0, latent=0):
        """A workspace plan (engine.PLAN record) for batches of up to `rows` rows (`samples`
        stacked draws for a VAE), and the size of the buffer that holds it."""
        stacked = rows * samples
        widest = max(max(d) for d in self.dims)
        dim = self.dims[0][0]
        sizes = dict(delta=stacked * widest, dy_a=stacked * widest, dy_b=stacked * widest, code=rows * code,
                     noisy=rows * dim, batch=rows * dim, rows_out=stacked, grad_out=stacked * dim,
                     mu_rep=stacked * latent, lv_rep=stacked * latent, z=stacked * latent, kl=stacked,
                     dmu_rep=stacked * latent, dlv_rep=stacked * latent, dheads=rows * 2 * latent,
                     target=stacked * dim if samples > 1 else 0, scratch=max(dim, 3 * latent + 2))
        plan = engine.record(engine.PLAN, rows=rows, samples=samples)
        offset = 0
        for slot in engine.SLOTS:
            plan[slot] = offset
            offset = _aligned(offset + sizes[slot])
        plan["scratch_end"] = plan["scratch"][0] + sizes["scratch"]
        for l, out in enumerate(self.layout[:, 1]):
            plan["layer_out"][0, l] = offset
            offset = _aligned(offset + stacked * int(out))
        plan["size"] = offset
        return plan, offset


def _aligned(offset, items=16):
    """Round up to a multiple of 16 items (64 bytes in float32), so every weight matrix and
    workspace slot starts on a cache line: BLAS and the vectorized loops run on aligned rows."""
    return -(-offset // items) * items


def empty(n, dtype, xp=np):
    """A flat buffer of n items starting on a 64-byte boundary (NumPy's large allocations are only
    16-byte aligned; the slot offsets above are aligned relative to the buffer's start)."""
    if xp is not np:
        return xp.empty(n, dtype)  # CuPy allocations are 256-byte aligned
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n + 64 // itemsize, dtype)
    skip = (-raw.ctypes.data % 64) // itemsize
    return raw[skip:skip + n]


def zeros(n, dtype, xp=np):
    a = empty(n, dtype, xp)
    a[...] = 0
    return a


def copy(a, xp=np):
    """An aligned copy of a flat buffer."""
    out = empty(a.shape[0], a.dtype, xp)
    out[...] = a
    return out
