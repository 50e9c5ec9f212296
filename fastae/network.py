"""A stack of dense layers stored in one flat parameter buffer, and the workspace plan the engine
runs in. Knows shapes and offsets, no training logic."""
import numpy as np

from . import engine


class Network:
    """Dense layers `dims[l] = (in, out)` with activation codes `acts`, all weights and biases in
    one flat buffer `params` (so one Adam step covers every layer)."""

    def __init__(self, dims, acts, dtype, xp=np):
        """`xp` (NumPy or CuPy) allocates the parameter buffer; it is not kept (modules do not pickle)."""
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
        self.params = xp.zeros(offset, self.dtype)

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
        """Offsets of every workspace slot for batches of up to `rows` rows (`samples` stacked
        draws for a VAE), and the size of the buffer that holds them."""
        stacked = rows * samples
        widest = max(max(d) for d in self.dims)
        dim = self.dims[0][0]
        sizes = {engine.S_DELTA: stacked * widest, engine.S_DY_A: stacked * widest,
                 engine.S_DY_B: stacked * widest, engine.S_CODE: rows * code,
                 engine.S_NOISY: rows * dim, engine.S_BATCH: rows * dim, engine.S_ROWS: stacked,
                 engine.S_GRAD_OUT: stacked * dim, engine.S_MU_REP: stacked * latent,
                 engine.S_LV_REP: stacked * latent, engine.S_Z: stacked * latent, engine.S_KL: stacked,
                 engine.S_DMU_REP: stacked * latent, engine.S_DLV_REP: stacked * latent,
                 engine.S_DHEADS: rows * 2 * latent,
                 engine.S_TARGET: stacked * dim if samples > 1 else 0,
                 engine.S_SCRATCH: max(dim, 3 * latent + 2)}
        sizes.update({engine.N_SLOTS + l: stacked * int(out) for l, out in enumerate(self.layout[:, 1])})
        plan = np.zeros(engine.N_SLOTS + self.n_layers, dtype=np.int64)
        offset = 0
        for slot in range(len(plan)):
            plan[slot] = offset
            offset = _aligned(offset + sizes[slot])
        return plan, offset


def _aligned(offset, items=16):
    """Round up to a multiple of 16 items (64 bytes in float32), so every weight matrix and
    workspace slot starts on a cache line: BLAS and the vectorized loops run on aligned rows."""
    return -(-offset // items) * items
