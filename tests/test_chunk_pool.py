"""The chunk pool (`kernels.chunk_pool`): large reparameterization and l1_prox calls split into
fixed chunks that the calling thread and spinning workers take in turn. The same bits as one
thread for any thread count, whichever thread computes which chunk; NaN and inf found in any
chunk; one caller at a time (others split on Python threads); a forked child's own pool; the
kernels called by address with exactly the types they were compiled for."""
import os

import numba
import numpy as np
import pytest

from conftest import run_in_threads
from test_reparam_parallel import serial
from fastae import kernels
from fastae.kernels import atomics, chunk_pool, cpu, elementwise as ew

pytestmark = pytest.mark.skipif(not atomics.supported(), reason="the pool runs on x86-64 Linux")


def pooled(mu, logvar, dz, eps, key, threads, share, beta=0.5):
    n, _ = mu.shape
    z, kl, dmu, dlv = np.empty_like(mu), np.empty(n, mu.dtype), np.empty_like(mu), np.empty_like(mu)
    scratch = np.empty(share * threads, mu.dtype)
    e = mu if eps is None else eps
    assert chunk_pool.reparam_forward(mu, logvar, e, eps is not None, key, z, kl, scratch, threads) is True
    assert chunk_pool.reparam_backward(dz, mu, logvar, e, eps is not None, key, beta, dmu, dlv, scratch,
                                       threads) is True
    return z, kl, dmu, dlv


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, k", [(4096, 64), (2049, 3), (999, 7), (5, 8193), (3, 5), (1, 1)])
def test_reparam_chunks_give_the_serial_bits_for_any_thread_count(rng, dtype, n, k):
    # chunk boundaries inside the internal scratch chunks, odd K (chunks of an even row count),
    # rows wider than a chunk, a single chunk
    mu, logvar, dz, eps = (rng.standard_normal((n, k)).astype(dtype) for _ in range(4))
    key = ew.noise_key(2026)
    for noise in (None, eps):
        want = serial(mu, logvar, dz, noise, key)
        for threads in (2, 3):
            for share in (3 * k + 2, 4098 + 3 * k):
                got = pooled(mu, logvar, dz, noise, key, threads, share)
                for g, w, what in zip(got, want, ("z", "kl", "dmu", "dlogvar")):
                    np.testing.assert_array_equal(g, w, err_msg=f"{what}, {threads} threads, share {share}")


def test_nonfinite_input_in_any_chunk_is_reported(rng):
    n, k = 1500, 40  # 4 chunks of 408 rows
    mu, logvar, dz = (rng.standard_normal((n, k)).astype(np.float32) for _ in range(3))
    key = ew.noise_key(1)
    z, kl, dmu, dlv = np.empty_like(mu), np.empty(n, mu.dtype), np.empty_like(mu), np.empty_like(mu)
    scratch = np.empty(2 * 4098, mu.dtype)
    for row in (0, 407, 408, n - 1):
        for a in (mu, logvar, dz):
            a[row, 39] = np.inf
            assert chunk_pool.reparam_backward(dz, mu, logvar, mu, False, key, 1.0, dmu, dlv, scratch, 2) is False
            if a is not dz:
                assert chunk_pool.reparam_forward(mu, logvar, mu, False, key, z, kl, scratch, 2) is False
            a[row, 39] = 0.5
    assert chunk_pool.reparam_forward(mu, logvar, mu, False, key, z, kl, scratch, 2) is True


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 65535, 65536, 65537, 300001])
def test_l1_prox_chunks_give_the_serial_bits(rng, dtype, size):
    h = (rng.standard_normal(size) * 2).astype(dtype)
    want, got = np.empty_like(h), np.empty_like(h)
    for nonneg in (False, True):
        assert cpu.l1_prox(h, 0.7, nonneg, want)
        for threads in (2, 3):
            got[:] = 0
            assert chunk_pool.l1_prox_into(h, 0.7, nonneg, got, threads) is True
            np.testing.assert_array_equal(got, want)
    h[size - 1] = np.nan
    assert chunk_pool.l1_prox_into(h, 0.7, False, got, 2) is False


def with_threads(count, fn, *args, **kwargs):
    before = numba.get_num_threads()
    numba.set_num_threads(count)
    try:
        return fn(*args, **kwargs)
    finally:
        numba.set_num_threads(before)


def two_threads():
    return numba.config.NUMBA_NUM_THREADS >= 2


def test_public_l1_prox_on_two_threads(rng, monkeypatch):
    if not two_threads():
        pytest.skip("one Numba thread here")
    h = rng.standard_normal((600, 512)).astype(np.float32)  # above kernels._L1_PROX_PARALLEL
    assert h.size >= kernels._L1_PROX_PARALLEL
    before = int(chunk_pool._pool["control"][chunk_pool.GENERATION]) if chunk_pool._pool["control"] is not None else 0
    for nonneg in (False, True):
        one = with_threads(1, kernels.l1_prox, h, 0.3, nonneg=nonneg)
        two = with_threads(2, kernels.l1_prox, h, 0.3, nonneg=nonneg)
        out = np.full_like(h, 7.0)
        with_threads(2, kernels.l1_prox, h, 0.3, nonneg=nonneg, out=out)
        np.testing.assert_array_equal(two, one)
        np.testing.assert_array_equal(out, one)
        np.testing.assert_allclose(one, kernels.l1_prox(h, 0.3, nonneg=nonneg, backend="numpy"))
    assert chunk_pool._pool["control"][chunk_pool.GENERATION] >= before + 4  # the pool took the calls
    bad = h.copy()
    bad[599, 511] = np.nan
    out = np.full_like(h, 7.0)
    with pytest.raises(ValueError, match="^h contains NaN or infinity"):
        with_threads(2, kernels.l1_prox, bad, 0.3, out=out)
    assert (out == 7.0).all()  # a caller's out= is never written when the call fails
    with pytest.raises(ValueError, match="^h contains NaN or infinity"):
        with_threads(2, kernels.l1_prox, bad, 0.3)


def test_callers_that_find_the_pool_busy_split_on_python_threads(rng):
    if not two_threads():
        pytest.skip("one Numba thread here")
    mu, logvar, dz = (rng.standard_normal((1101, 31)).astype(np.float32) for _ in range(3))
    h = rng.standard_normal(300001).astype(np.float32)

    def run(seed):
        return (kernels.reparam_forward(mu, logvar, seed=seed) + kernels.reparam_backward(dz, mu, logvar, seed=seed)
                + (kernels.l1_prox(h, 0.2),))

    want = [with_threads(1, run, seed) for seed in range(4)]
    got = [None] * 6

    def worker(t):
        numba.set_num_threads(2)  # per calling thread
        got[t] = [run(seed) for seed in range(4) for _ in range(3)][::3]

    errors = run_in_threads(worker, 6)
    assert not errors, errors
    for results in got:
        for g, w in zip(results, want):
            for a, b in zip(g, w):
                np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_a_pool_of_its_own(rng):
    if not two_threads():
        pytest.skip("one Numba thread here")
    mu, logvar = (rng.standard_normal((2048, 64)).astype(np.float32) for _ in range(2))
    expected = with_threads(2, kernels.reparam_forward, mu, logvar, seed=5)  # the parent's workers are running
    pid = os.fork()
    if pid == 0:
        try:
            got = with_threads(2, kernels.reparam_forward, mu, logvar, seed=5)
            ok = all(np.array_equal(a, b) for a, b in zip(got, expected))
            ok = ok and chunk_pool._pool["pid"] == os.getpid() and chunk_pool._pool["control"][chunk_pool.WORKERS] >= 1
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernels_are_called_with_the_types_the_public_ops_compile(dtype):
    # call_at runs the address with the argument types of its call site, unchecked: these must be
    # the types the public ops compile the kernels for (else a second compile, or worse)
    kernels.warmup("cpu", (dtype,))
    for op in (chunk_pool.REPARAM_FORWARD, chunk_pool.REPARAM_BACKWARD, chunk_pool.L1_PROX):
        dispatcher, argtypes = chunk_pool._kernel_types(op, np.dtype(dtype))
        assert argtypes in dispatcher.signatures
    compiled = {fn: len(fn.signatures) for fn in (chunk_pool.run, chunk_pool.worker_loop, cpu.reparam_forward,
                                                  cpu.reparam_backward, cpu.l1_prox)}
    rng = np.random.default_rng(0)
    mu, logvar, dz = (rng.standard_normal((1024, 64)).astype(dtype) for _ in range(3))
    for threads in (1, 2):
        with_threads(threads, kernels.reparam_backward, dz, mu, logvar, seed=1)
        with_threads(threads, kernels.reparam_forward, mu, logvar, seed=1)
        with_threads(threads, kernels.l1_prox, mu.repeat(5, axis=0), 0.1)
    assert {fn: len(fn.signatures) for fn in compiled} == compiled  # nothing compiled after warmup


def test_a_late_worker_claims_nothing_of_a_newer_job():
    # a worker that saw job g but reached its first claim only after the next call had closed
    # CLAIM (and then opened it for job g + 1) must take no chunk: it would run g + 1's chunks
    # with the dtype it read for g
    control = np.zeros(chunk_pool.CONTROL, np.int64)
    h = np.ones(2 * 65536)
    column = h.reshape(-1, 1)
    kernel = chunk_pool._kernel(chunk_pool.L1_PROX, h.dtype)
    out = np.empty_like(h)
    assert chunk_pool.run(control, kernel, chunk_pool.L1_PROX, column, column, column, column, out.reshape(-1, 1),
                          column, h, 0, np.uint64(0), 0.5, False, 2) == 1
    g = int(control[chunk_pool.GENERATION])
    h2 = np.full(8 * 65536, 2.0, np.float32)
    guarded = np.full(h2.size + 65536, -7.0, np.float32)
    newer = {chunk_pool.ITEMSIZE: 4, chunk_pool.ROWS: h2.size, chunk_pool.COLS: 1, chunk_pool.CHUNKS: 8,
             chunk_pool.KERNEL: chunk_pool._kernel(chunk_pool.L1_PROX, h2.dtype), chunk_pool.IN_A: h2.ctypes.data,
             chunk_pool.OUT_A: guarded.ctypes.data}
    tag = ((g + 1) & 0x7FFFFFFF) << 32
    for claim in (tag | 0xFFFFFFFF, tag):  # the next call's job being written (closed), then open
        control[chunk_pool.CLAIM] = claim
        for field, value in newer.items():
            control[field] = value
        finished = int(control[chunk_pool.FINISHED])
        chunk_pool._take_chunks(control, g, 1, chunk_pool._F64)
        assert control[chunk_pool.CLAIM] == claim and control[chunk_pool.FINISHED] == finished
        assert (guarded == -7.0).all()


INTERRUPTED = """
import signal, threading, time
import numba, numpy as np
from fastae import kernels
from fastae.kernels import chunk_pool
numba.set_num_threads(2)
h = np.random.default_rng(0).standard_normal(600000).astype(np.float32)
want = kernels.l1_prox(h, 0.3)
armed = False
def interrupt(signum, frame):  # a KeyboardInterrupt anywhere inside the call, none outside it
    if armed:
        raise KeyboardInterrupt
signal.signal(signal.SIGINT, interrupt)
main, stop = threading.main_thread().ident, False
def storm():
    while not stop:
        time.sleep(0.0003)
        signal.pthread_kill(main, signal.SIGINT)
threading.Thread(target=storm, daemon=True).start()
caught = 0
for _ in range(400):
    try:
        armed = True
        kernels.l1_prox(h, 0.3)
        armed = False
    except KeyboardInterrupt:
        armed = False
        caught += 1
stop = True
for _ in range(20):
    assert np.array_equal(kernels.l1_prox(h, 0.3), want)
assert chunk_pool._pool["control"][chunk_pool.BUSY] == 0
print(caught)
"""


def test_interrupts_never_leave_a_job_running(tmp_path):
    # each pooled call is one compiled call from the job's start to its end: a KeyboardInterrupt
    # lands before or after it, never between publishing a job and waiting for its chunks
    if not two_threads():
        pytest.skip("one Numba thread here")
    import subprocess
    import sys
    script = tmp_path / "storm.py"
    script.write_text(INTERRUPTED)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NUMBA_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 10  # the storm did interrupt calls


def test_workers_a_job_does_not_ask_for_go_back_to_sleep(rng):
    h = rng.standard_normal(300000).astype(np.float32)
    out = np.empty_like(h)
    assert chunk_pool.l1_prox_into(h, 0.1, False, out, 4) is True  # workers 1, 2 and 3 running

    def cpu_seconds():
        found = {}
        for t in __import__("threading").enumerate():
            if t.name.startswith("fastae-chunks-") and t.native_id is not None:
                with open(f"/proc/self/task/{t.native_id}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                found[t.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return found

    before = cpu_seconds()
    for _ in range(300):
        assert chunk_pool.l1_prox_into(h, 0.1, False, out, 2) is True
    after = cpu_seconds()
    for name in ("fastae-chunks-2", "fastae-chunks-3"):
        assert after[name] - before[name] < 0.05, (name, before, after)
