"""The register-tiled small products (`kernels.small_gemm`) against float64 NumPy, and the cpu
affine kernels on shapes that route through them against the reference and finite differences."""
import numpy as np
import pytest

from fastae import kernels
from fastae.kernels import cpu, simd, small_gemm
from parity import assert_close, assert_grad, check_op

DTYPES = [np.float64, np.float32]
ACTS = list(kernels.ACTIVATIONS)


def product(kind, A, B):
    A, B = A.astype(np.float64), B.astype(np.float64)
    return {"nn": lambda: A @ B, "tn": lambda: A.T @ B, "nt": lambda: A @ B.T}[kind]()


def operands(rng, kind, M, K, N, dtype):
    A = rng.standard_normal((K, M) if kind == "tn" else (M, K)).astype(dtype)
    B = rng.standard_normal((N, K) if kind == "nt" else (K, N)).astype(dtype)
    return A, B


def run(kind, A, B, C):
    if kind == "nt":
        small_gemm.nt(A, B, C, np.full(B.size, np.nan, C.dtype))
    else:
        getattr(small_gemm, kind)(A, B, C)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["nn", "tn", "nt"])
@pytest.mark.parametrize("M,K", [(1, 1), (3, 17), (17, 3), (129, 64), (7, 129)])
# columns in lanes L: a partial vector alone, 1 + partial, 2 + 1, 4 + 1 and 4 + 4 + 1 + partial
@pytest.mark.parametrize("columns", [lambda L: 1, lambda L: L + 3, lambda L: 3 * L, lambda L: 5 * L,
                                     lambda L: 9 * L + L - 1], ids=["1", "L+3", "3L", "5L", "10L-1"])
def test_products_match_numpy(rng, dtype, kind, M, K, columns):
    N = columns(simd.lanes(dtype))
    A, B = operands(rng, kind, M, K, N, dtype)
    C = np.full((M, N), np.nan, dtype)
    before = A.copy(), B.copy()
    run(kind, A, B, C)
    assert_close(C, product(kind, A, B).astype(dtype), dtype, f"{kind} {M}x{K}x{N}")
    assert np.array_equal(A, before[0]) and np.array_equal(B, before[1])  # inputs untouched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["nn", "nt"])
def test_a_row_has_the_same_bits_in_any_batch(rng, dtype, kind):
    # Each entry is one multiply-add chain over k in order, whichever tile (6, 4 or 1 rows) its
    # row falls in: the bits of a row do not depend on the rows around it.
    M, K, N = 23, 37, 3 * simd.lanes(dtype) + 5
    A, B = operands(rng, kind, M, K, N, dtype)
    C = np.empty((M, N), dtype)
    run(kind, A, B, C)
    for r in (0, 5, 6, 21, 22):
        alone = np.empty((1, N), dtype)
        run(kind, A[r:r + 1].copy(), B, alone)
        assert np.array_equal(alone[0], C[r])
        tail = np.empty((M - r, N), dtype)
        run(kind, A[r:].copy(), B, tail)
        assert np.array_equal(tail, C[r:])


def test_mismatched_shapes_raise():
    f = np.zeros((4, 16), np.float32)
    with pytest.raises(ValueError, match="nn"):
        small_gemm.nn(f, np.zeros((5, 16), np.float32), np.zeros((4, 16), np.float32))
    with pytest.raises(ValueError, match="tn"):
        small_gemm.tn(f, np.zeros((4, 16), np.float32), np.zeros((15, 16), np.float32))
    with pytest.raises(ValueError, match="nt"):  # too small a scratch for B.T
        small_gemm.nt(f, np.zeros((16, 16), np.float32), np.zeros((4, 16), np.float32), np.zeros(255, np.float32))


# (rows, inputs, outputs), all in register tiles forward and backward: whole and partial vectors,
# odd row counts
TILED = [(1, 16, 32), (3, 32, 16), (5, 24, 8), (17, 48, 80), (17, 80, 48), (129, 16, 64), (3, 17, 5), (17, 3, 129)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("n,d_in,d_out", TILED)
def test_cpu_affine_kernels_on_tiled_shapes(rng, dtype, act, n, d_in, d_out):
    assert n * d_in * d_out <= cpu.SMALL_GEMM and d_in * d_out <= cpu.SMALL_TRANSPOSE  # really tiled
    x = rng.standard_normal((n, d_in)).astype(dtype)
    W = (rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)).astype(dtype)
    b = rng.standard_normal(d_out).astype(dtype)
    y = check_op("affine_forward", "cpu", x, W, b, act)
    dy = rng.standard_normal(y.shape).astype(dtype)
    check_op("affine_backward", "cpu", dy, x, y, W, act)


@pytest.mark.parametrize("act", ACTS)
def test_tiled_affine_backward_finite_differences(rng, act):
    n, d_in, d_out = 3, 16, 32
    x = rng.standard_normal((n, d_in))
    W = rng.standard_normal((d_out, d_in)) / 4
    b = rng.standard_normal(d_out)
    G = rng.standard_normal((n, d_out))

    def loss(x_, W_, b_):
        return float(np.sum(G * kernels.affine_forward(x_, W_, b_, act, backend="numpy")))

    y = kernels.affine_forward(x, W, b, act, backend="cpu")
    dx, dW, db = kernels.affine_backward(G, x, y, W, act, backend="cpu")
    assert_grad(dx, lambda v: loss(v, W, b), x, f"dx {act}")
    assert_grad(dW, lambda v: loss(x, v, b), W, f"dW {act}")
    assert_grad(db, lambda v: loss(x, W, v), b, f"db {act}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["nn", "tn", "nt"])
def test_partial_vectors_write_nothing_past_the_result(rng, dtype, kind):
    # The columns left over go through masked stores: the entries after C's last one stay as
    # they were (NUMBA_BOUNDSCHECK runs check the reads against the operands' ends as well).
    L = simd.lanes(dtype)
    for M, N in ((1, 1), (7, L - 1), (6, 2 * L + 3)):
        A, B = operands(rng, kind, M, 5, N, dtype)
        buffer = np.full(M * N + 2 * L, 7.0, dtype)
        C = buffer[:M * N].reshape(M, N)
        run(kind, A, B, C)
        assert np.all(buffer[M * N:] == 7.0)
        assert_close(C, product(kind, A, B).astype(dtype), dtype, f"{kind} {M}x{N}")


def test_non_contiguous_result_or_empty_sum_dimension():
    A, B = np.ones((3, 2), np.float32), np.ones((2, 16), np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):  # a raveled copy would take the result
        small_gemm.nn(A, B, np.zeros((3, 16), np.float32, order="F"))
    for kind in ("nn", "tn", "nt"):  # no k: C = 0 (also under NUMBA_BOUNDSCHECK)
        A, B = operands(np.random.default_rng(0), kind, 7, 0, 40, np.float32)
        C = np.full((7, 40), np.nan, np.float32)
        run(kind, A, B, C)
        assert np.all(C == 0)
