"""The cpu reparameterization ops on large batches split their rows between threads (Python threads
running the nogil serial kernel on row ranges): the same bits for any thread count, safe from many
Python threads at once, small batches serial."""

import numba
import numpy as np
import pytest

from conftest import run_in_threads
from fastae import kernels
from fastae.kernels import cpu, elementwise as ew
from fastae.kernels.threads import requested

BIG = kernels._REPARAM_PARALLEL  # elements from which the public ops go parallel


def two_threads_split():
    """Whether the public ops split a large batch at numba.set_num_threads(2) in this process."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        return False
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        return requested() == 2
    finally:
        numba.set_num_threads(before)


def serial(mu, logvar, dz, eps, key, beta=0.5):
    n, k = mu.shape
    z, kl, dmu, dlv = np.empty_like(mu), np.empty(n, mu.dtype), np.empty_like(mu), np.empty_like(mu)
    scratch = np.empty(3 * k + 2, mu.dtype)
    e = mu if eps is None else eps
    assert cpu.reparam_forward(mu, logvar, e, eps is not None, key, z, kl, scratch)
    assert cpu.reparam_backward(dz, mu, logvar, e, eps is not None, key, beta, dmu, dlv, scratch)
    return z, kl, dmu, dlv


def parallel(mu, logvar, dz, eps, key, threads, share, beta=0.5):
    n, _ = mu.shape
    z, kl, dmu, dlv = np.empty_like(mu), np.empty(n, mu.dtype), np.empty_like(mu), np.empty_like(mu)
    scratch = np.empty(share * threads, mu.dtype)
    e = mu if eps is None else eps
    assert cpu.reparam_forward_parallel(mu, logvar, e, eps is not None, key, z, kl, scratch, threads)
    assert cpu.reparam_backward_parallel(dz, mu, logvar, e, eps is not None, key, beta, dmu, dlv, scratch, threads)
    return z, kl, dmu, dlv


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, k", [(301, 3), (300, 7), (64, 20), (3, 5), (1, 9), (7, 1)])
def test_parallel_kernels_give_the_serial_bits_for_any_thread_count(rng, dtype, n, k):
    # row ranges begin at even numbers i * K (odd K: even rows), whatever n, K and the count of
    # parts, including parts of no rows; each part's chunks differ from the serial kernel's
    mu, logvar, dz, eps = (rng.standard_normal((n, k)).astype(dtype) for _ in range(4))
    key = ew.noise_key(2026)
    for noise in (None, eps):
        want = serial(mu, logvar, dz, noise, key)
        for threads in (1, 2, 3, 5, 8):
            for share in (3 * k + 2, 4098):
                got = parallel(mu, logvar, dz, noise, key, threads, share)
                for g, w, what in zip(got, want, ("z", "kl", "dmu", "dlogvar")):
                    np.testing.assert_array_equal(g, w, err_msg=f"{what}, {threads} threads, share {share}")


def test_parallel_kernels_report_nonfinite_input_in_any_part(rng):
    n, k = 40, 6
    mu, logvar, dz = (rng.standard_normal((n, k)).astype(np.float32) for _ in range(3))
    key = ew.noise_key(1)
    z, kl, dmu, dlv = np.empty_like(mu), np.empty(n, mu.dtype), np.empty_like(mu), np.empty_like(mu)
    scratch = np.empty(4 * (3 * k + 2), mu.dtype)
    for row in (0, 17, n - 1):
        for a in (mu, logvar, dz):
            a[row, 2] = np.nan
            assert cpu.reparam_backward_parallel(dz, mu, logvar, mu, False, key, 1.0, dmu, dlv, scratch, 4) is False
            if a is not dz:
                assert cpu.reparam_forward_parallel(mu, logvar, mu, False, key, z, kl, scratch, 4) is False
            a[row, 2] = 0.5
    assert cpu.reparam_forward_parallel(mu, logvar, mu, False, key, z, kl, scratch, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4096, 64), (1023, 33)])
def test_public_ops_give_the_same_bits_with_one_and_two_threads(rng, monkeypatch, dtype, shape):
    if shape[0] * shape[1] < BIG:
        pytest.skip("below the parallel threshold")
    mu, logvar, dz, eps = (rng.standard_normal(shape).astype(dtype) for _ in range(4))
    calls = []
    for name in ("reparam_forward_parallel", "reparam_backward_parallel"):
        fn = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *args, fn=fn: calls.append(args[-1]) or fn(*args))

    def run(threads):
        before = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            out = []
            for noise, seed in ((None, 9), (eps, None)):
                out += kernels.reparam_forward(mu, logvar, noise, seed=seed, backend="cpu")
                out += kernels.reparam_backward(dz, mu, logvar, noise, beta=0.7, seed=seed, backend="cpu")
            return out
        finally:
            numba.set_num_threads(before)

    one = run(1)
    assert calls == []
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one Numba thread here")
    two = run(2)
    assert calls == ([2] * 4 if two_threads_split() else [])
    for a, b, what in zip(one, two, ("z", "kl", "dmu", "dlogvar") * 2):
        np.testing.assert_array_equal(a, b, err_msg=what)
    ref = kernels.reparam_forward(mu, logvar, seed=9, backend="numpy")
    tol = 2e-4 if dtype == np.float32 else 1e-9
    for a, b in zip(one[:2], ref):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_warmup_compiles_the_signatures_large_batches_use(rng, dtype):
    if not two_threads_split():
        pytest.skip("large batches run serially here")
    kernels.warmup("cpu", (dtype,))
    fns = (cpu.reparam_forward, cpu.reparam_backward)  # the row ranges run these, as compiled
    compiled = [len(fn.signatures) for fn in fns]
    assert all(compiled)
    mu, logvar, dz, eps = (rng.standard_normal((BIG // 16, 16)).astype(dtype) for _ in range(4))
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        for noise, seed in ((None, 3), (eps, None)):
            kernels.reparam_forward(mu, logvar, noise, seed=seed, backend="cpu")
            kernels.reparam_backward(dz, mu, logvar, noise, seed=seed, backend="cpu")
    finally:
        numba.set_num_threads(before)
    assert [len(fn.signatures) for fn in fns] == compiled


def test_small_batches_stay_serial(rng, monkeypatch):
    calls = []
    for name in ("reparam_forward_parallel", "reparam_backward_parallel"):
        monkeypatch.setattr(cpu, name, lambda *args: calls.append(args))
    mu, logvar = (rng.standard_normal((256, 20)).astype(np.float32) for _ in range(2))
    z, _ = kernels.reparam_forward(mu, logvar, seed=1, backend="cpu")
    kernels.reparam_backward(z, mu, logvar, seed=1, backend="cpu")
    assert calls == []


@pytest.mark.parametrize("op", ["forward", "backward"])
def test_bad_large_input_raises_naming_the_first_bad_argument(rng, op):
    n, k = 2048, 32
    arrays = {name: rng.standard_normal((n, k)).astype(np.float32) for name in ("dz", "mu", "logvar")}
    names = ["mu", "logvar"] if op == "forward" else ["dz", "mu", "logvar"]
    fn = getattr(kernels, f"reparam_{op}")
    for name in names:
        for row in (3, n - 2):  # in the first thread's rows and in the last's
            bad = {a: v.copy() for a, v in arrays.items()}
            bad[name][row, 5] = np.inf
            bad[names[-1]][n // 2, 0] = np.nan  # a later argument broken too: the first is named
            keep = {a: v.copy() for a, v in bad.items()}
            with pytest.raises(ValueError, match=f"^{name} contains NaN or infinity"):
                fn(*(bad[a] for a in names), seed=4, backend="cpu")
            for a in names:  # the inputs are never written
                np.testing.assert_array_equal(bad[a], keep[a])


def test_eight_python_threads_with_two_numba_threads_each(rng):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one Numba thread here")
    shapes = [(1024, 64), (1101, 31), (3701, 9)]
    inputs = [tuple(rng.standard_normal(s).astype(np.float32) for _ in range(3)) for s in shapes]
    assert all(s[0] * s[1] >= BIG for s in shapes)

    def run(mu, logvar, dz, seed):
        return (kernels.reparam_forward(mu, logvar, seed=seed, backend="cpu")
                + kernels.reparam_backward(dz, mu, logvar, seed=seed, backend="cpu"))

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        want = [run(*x, seed) for seed, x in enumerate(inputs)]
    finally:
        numba.set_num_threads(before)
    got = [None] * 8

    def worker(t):
        numba.set_num_threads(2)  # per calling thread
        results = None
        for _ in range(5):
            results = [run(*x, seed) for seed, x in enumerate(inputs)]
        got[t] = results

    errors = run_in_threads(worker)
    assert not errors, errors
    for results in got:
        for g, w in zip(results, want):
            for a, b in zip(g, w):
                np.testing.assert_array_equal(a, b)
