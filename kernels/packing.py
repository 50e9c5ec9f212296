"""The packed layout of a dense layer's weights (see `kernels.packed`), in plain NumPy: a
process that only loads a fitted model and runs it natively (`kernels.native`) packs its weights
without importing Numba.

The layout follows the machine's vectors: on a CPU with AVX-512, 512-bit vectors and tiles of
6 rows x 4 vectors (24 of its 32 registers); elsewhere (AVX2: 16 registers of 256 bits) 256-bit
vectors and tiles of 6 rows x 2 vectors (12 accumulators, 2 weight vectors and a broadcast). The
AVX-512 tile on an AVX2 machine needs 48 registers and spills: 784-512-256-32 on 256 rows ran
2.9x slower than ONNX Runtime there, against 1.0x with the tile that fits. Each output is one
fused multiply-add chain over the inputs in order either way, so the results do not depend on
the layout.
"""
import os

import numpy as np


def _vector_bytes():
    """64 where the code Numba compiles here may use AVX-512 (the features NUMBA_CPU_FEATURES
    names; else, unless NUMBA_CPU_NAME names another CPU, the host's, as llvmlite reports them
    to Numba), else 32. FASTAE_VECTOR_BYTES=32 or 64 chooses (the tests run the other layout this
    way: LLVM splits 512-bit vectors where the CPU has only 256-bit ones, so both run anywhere,
    only one fast)."""
    chosen = os.environ.get("FASTAE_VECTOR_BYTES")
    if chosen:
        if chosen not in ("32", "64"):
            raise ValueError(f"FASTAE_VECTOR_BYTES must be 32 or 64, not {chosen!r}")
        return int(chosen)
    named = os.environ.get("NUMBA_CPU_FEATURES")
    if named:
        return 64 if "+avx512f" in (f.strip() for f in named.split(",")) else 32
    if os.environ.get("NUMBA_CPU_NAME", "host") != "host":  # a named target (say, generic for a
        return 32                                           # portable cache): assume no AVX-512
    if os.environ.get("NUMBA_ENABLE_AVX", "1").strip() == "0":
        return 32
    import llvmlite.binding as llvm
    try:
        return 64 if llvm.get_host_cpu_features().get("avx512f", False) else 32
    except RuntimeError:  # features unknown on this platform (Numba falls back the same way)
        return 32


VECTOR_BYTES = _vector_bytes()  # one machine vector (512 or 256 bits)

ROWS = 6          # rows of the main register tile (4 and 1 for the rows left over)
VECTORS = 4 if VECTOR_BYTES == 64 else 2  # vectors of a register tile (and of a panel)
BLOCK_ROWS = 64   # rows per pass over a panel (their sums stay in L1 until written out)
K_BLOCK = 128     # inputs per slice of a panel (stays in L1 while every tile of a block reads it)


def panel_width(dtype):
    """Outputs per panel: 64 float32 or 32 float64 outputs with AVX-512, else 16 or 8."""
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
