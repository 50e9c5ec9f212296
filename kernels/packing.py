"""The packed layout of a dense layer's weights (see `kernels.packed`), in plain NumPy: a
process that only loads a fitted model and runs it natively (`kernels.native`) packs its weights
without importing Numba."""
import numpy as np

VECTOR_BYTES = 64  # one 512-bit vector

ROWS = 6          # rows of the main register tile (4 and 1 for the rows left over)
VECTORS = 4       # vectors of a register tile (and of a panel)
BLOCK_ROWS = 64   # rows per pass over a panel (their sums, 16 KB, stay in L1 until written out)
K_BLOCK = 128     # inputs per slice of a panel (32 KB: stays in L1 while every tile of a block reads it)


def panel_width(dtype):
    """Outputs per panel: 64 for float32, 32 for float64."""
    return VECTORS * (VECTOR_BYTES // np.dtype(dtype).itemsize)


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
