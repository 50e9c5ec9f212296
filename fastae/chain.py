"""The dense layers of one part of a fitted network (encode, decode, reconstruct, a VAE's heads)
as the inference kernels read them: weights and biases in one flat 64-byte aligned buffer, the
weights also packed into panels (`kernels.packing`). Plain NumPy: a process that only loads a
model and runs it natively never imports Numba."""
import numpy as np

from . import network
from .kernels import packing
from .kernels.elementwise import ACTIVATIONS, LINEAR, RELU

CHUNK = 4096  # inference rows per pass through the chain: bounds the workspace
PARALLEL_WORK = 100000  # multiply-adds of a layer worth splitting between threads (~5 us)


def chain_work(layout, rows):
    """Entries of the work buffer a chain needs for `rows` rows at a time (work_entries of its
    widest hidden layer)."""
    widest = 1
    for l in range(layout.shape[0] - 1):
        widest = max(widest, layout[l, 1])
    return work_entries(widest, rows)


def work_entries(widest, rows):
    """Two ping-pong buffers of rows x widest entries, each starting on a 64-byte boundary (16
    entries)."""
    return 2 * (-(-(rows * widest) // 16) * 16)


class Chain:
    """Dense layers in one private, 64-byte aligned flat buffer."""

    def __init__(self, pairs, acts, dtype, prox_at=-1, l1=0.0, nonneg=False):
        rows, offset = [], 0
        for W, _ in pairs:
            out, inp = W.shape
            b_offset = network._aligned(offset + out * inp)
            rows.append((offset, out, inp, b_offset))
            offset = network._aligned(b_offset + out)
        params = np.zeros(max(offset, 1), dtype)
        for (w, out, inp, b), (W, bias) in zip(rows, pairs):
            params[w:w + out * inp] = np.asarray(W, dtype).reshape(-1)
            params[b:b + out] = np.asarray(bias, dtype)
        self.params = network.copy(params)
        self.layout = np.asarray(rows, np.int64).reshape(-1, 4)
        # each layer's weights packed for the register-blocked kernels, 64-byte aligned
        at = [0]
        for W, _ in pairs:
            at.append(network._aligned(at[-1] + packing.packed_size(W.shape[0], W.shape[1], dtype)))
        self.packed_at = np.asarray(at, np.int64)
        self.packed = network.copy(np.zeros(max(at[-1], 1), dtype))
        for l, (W, _) in enumerate(pairs):
            packing.pack(np.ascontiguousarray(W, dtype), self.packed[at[l]:at[l] + packing.packed_size(*W.shape, dtype)])
        self.acts = np.asarray(acts, np.int64)
        self.prox_at, self.l1, self.nonneg = int(prox_at), float(l1), bool(nonneg)
        self.prox = np.array([self.prox_at, int(self.nonneg)], np.int64)
        self.n_in, self.n_out = int(self.layout[0, 2]), int(self.layout[-1, 1])
        self.largest = int(max(out * inp for _, out, inp, _ in rows))  # multiply-adds per row of the largest layer

    def splits(self, rows, threads):
        """Whether a call on `rows` rows with `threads` threads splits a layer between them."""
        return threads > 1 and min(rows, CHUNK) * self.largest >= PARALLEL_WORK



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


def chain_of(state, part):
    """The Chain of one part ("encode", "decode" or "reconstruct") of a fitted Autoencoder or VAE."""
    layers, prox_at, l1, nonneg = neural_layers(state, part)
    return Chain([(W, b) for W, b, _ in layers], [a for _, _, a in layers], state.dtype, prox_at, l1, nonneg)
