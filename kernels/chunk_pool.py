"""Large element-wise cpu ops (the reparameterization kernels, l1_prox) split into fixed chunks
that the calling thread and the pool's workers claim in turn.

`threads.run_parts` hands a part to a Python thread asleep on a queue: 70-110 us a call on a
2-vCPU VM (the wake-up and the GIL), as much as the second half of a 4096 x 64 reparameterization.
Here each worker is a Python thread that entered `worker_loop` (nogil) once and stays in it, as
the inference pool's do (`kernels.pool`): it spins (~1 ms) after a job it took part in, then
sleeps on a futex. A call (`run`, one compiled call from start to end, so that no
KeyboardInterrupt can leave a job behind it) writes the job into the control block, bumps the
generation and claims chunks itself. Every thread claims the next chunk with one compare-and-swap
on CLAIM, a word holding the job's generation and the next chunk's number: a worker that wakes
late finds nothing left, and the caller never waits for a sleeping thread, only for chunks in
progress. Before it writes a job's fields the caller closes CLAIM to every earlier job (the new
generation, no chunk left), so a late worker can never claim a chunk under an old job's fields.

The chunks are fixed by the job, not by who computes them: the same bits for any thread count.
For the reparameterization they are whole rows starting at an even number i * K, each drawn from
the stream key moved on to there (`cpu.part_key`), as `cpu.reparam_forward_parallel`'s parts.
The kernels are called through their addresses (`kernels.addresses`).

One call at a time uses the pool (another thread's call gets None and splits otherwise); a forked
child starts a pool of its own. x86-64 Linux only (`atomics.supported`).
"""
import os
import threading

import numpy as np
from numba import types

from . import atomics, cpu
from .addresses import address_of, call_at
from .elementwise import noise_key
from .jit import cpu_jit
from .views import at_address

# the control block: the words threads spin on or count with, each on a cache line of its own,
# then the job (REAL holds a float64). CLAIM holds (generation << 32) | the next chunk's number;
# FAILED counts the job's chunks whose kernel raised; BUSY is 1 while a call uses the pool.
GENERATION, CLAIM, FINISHED, SLEEPERS, STOP, WORKERS, FAILED, BAD, BUSY = 0, 8, 16, 24, 32, 40, 48, 56, 64
(OP, KERNEL, ITEMSIZE, ROWS, COLS, CHUNK, CHUNKS, KEY, REAL, FLAG, IN_A, IN_B, IN_C, IN_D, OUT_A, OUT_B,
 SCRATCH, SHARE, THREADS) = range(72, 91)
CONTROL = 96
REPARAM_FORWARD, REPARAM_BACKWARD, L1_PROX = 0, 1, 2
CHUNK_ELEMENTS = 16384  # a chunk of the reparameterization (~6 us of work); l1_prox takes 4x
_LOW = 0xFFFFFFFF  # the next-chunk half of CLAIM; all ones: closed (no chunk number reaches it)
_GOLDEN = cpu._GOLDEN


@cpu_jit(inline="always")
def _chunk(control, c, thread, like):
    """Chunk c of the job, computed by thread `thread` (its scratch share) with the kernel at
    control[KERNEL]: 1, or 0 if an input of the chunk holds NaN or inf (-1: the kernel raised).
    like: an array of the job's dtype."""
    n, k, step, size = control[ROWS], control[COLS], control[CHUNK], like.itemsize
    r0 = c * step
    rows = min(r0 + step, n) - r0
    at, span = r0 * k * size, rows * k  # the chunk's rows in the (n, k) arrays
    a = at_address(control[IN_A] + at, span, like).reshape(rows, k)
    out_a = at_address(control[OUT_A] + at, span, like).reshape(rows, k)
    real, flag, kernel = at_address(control.ctypes.data + REAL * 8, 1, np.float64)[0], control[FLAG] != 0, control[KERNEL]
    if control[OP] == L1_PROX:
        return call_at(kernel, (a.reshape(-1), real, flag, out_a.reshape(-1)))
    key = np.uint64(control[KEY]) + np.uint64((r0 * k) >> 1) * _GOLDEN  # cpu.part_key
    b = at_address(control[IN_B] + at, span, like).reshape(rows, k)
    eps = at_address(control[IN_C] + at, span, like).reshape(rows, k)
    share = control[SHARE]
    scratch = at_address(control[SCRATCH] + thread * share * size, share, like)
    if control[OP] == REPARAM_FORWARD:
        kl = at_address(control[OUT_B] + r0 * size, rows, like)
        return call_at(kernel, (a, b, eps, flag, key, out_a, kl, scratch))
    dz = at_address(control[IN_D] + at, span, like).reshape(rows, k)
    out_b = at_address(control[OUT_B] + at, span, like).reshape(rows, k)
    return call_at(kernel, (dz, a, b, eps, flag, key, real, out_a, out_b, scratch))


@cpu_jit
def _take_chunks(control, generation, thread, like):
    """Claim and compute chunks of job `generation` until none is left (like: a 1-D array of the
    job's dtype). The job's fields are read after its generation was seen, and a newer job's are
    written only once CLAIM is closed to this one: a chunk claimed here is this job's."""
    tag = (generation & 0x7FFFFFFF) << 32
    while True:
        word = atomics.load(control, CLAIM)
        c = word & _LOW
        if word - c != tag or c >= control[CHUNKS]:  # another job's word, or every chunk taken
            return
        if atomics.swap_if(control, CLAIM, word, word + 1):
            try:
                result = _chunk(control, c, thread, like)
            except Exception:  # a bug, not an input: counted, and the chunk still counts as done
                result = -1
            if result != 1:
                atomics.add(control, BAD if result == 0 else FAILED, 1)
            atomics.add(control, FINISHED, 1)


@cpu_jit
def run(control, kernel, op, a, b, c, d, out_a, out_b, scratch, share, key, real, flag, threads):
    """Job `op` on this thread and the pool's workers, `threads` in all: the kernel at address
    `kernel` over the rows of the (n, k) arrays a, b, c, d (inputs) and out_a, out_b (outputs;
    out_b (n, 1) for the forward's KL; L1_PROX takes its arrays as (size, 1)), each thread with
    a `share` of the scratch. The caller checked shapes and dtypes, as the public ops do.
    Returns 1 if every input was finite, 0 if one held NaN or inf, -1 if a kernel raised, -2 if
    another call was using the pool (nothing done)."""
    if not atomics.swap_if(control, BUSY, 0, 1):
        return -2
    generation = control[GENERATION] + 1
    tag = (generation & 0x7FFFFFFF) << 32
    atomics.store(control, CLAIM, tag | _LOW)  # closed: no chunk of an earlier job from here on
    n, k = a.shape
    control[OP], control[KERNEL], control[ITEMSIZE], control[ROWS], control[COLS] = op, kernel, a.itemsize, n, k
    control[KEY], control[FLAG], control[THREADS] = np.int64(key), 1 if flag else 0, threads
    at_address(control.ctypes.data + REAL * 8, 1, np.float64)[0] = real
    control[IN_A], control[IN_B], control[IN_C], control[IN_D] = a.ctypes.data, b.ctypes.data, c.ctypes.data, d.ctypes.data
    control[OUT_A], control[OUT_B] = out_a.ctypes.data, out_b.ctypes.data
    control[SCRATCH], control[SHARE] = scratch.ctypes.data, share
    # reparameterization chunks: whole rows, an even count (each chunk's first number i * K even)
    control[CHUNK] = 4 * CHUNK_ELEMENTS if op == L1_PROX else max(2, (CHUNK_ELEMENTS // k) & ~1)
    chunks = -(-n // control[CHUNK])
    control[CHUNKS] = chunks
    atomics.store(control, FINISHED, 0)
    atomics.store(control, BAD, 0)
    atomics.store(control, FAILED, 0)
    atomics.store(control, CLAIM, tag)  # open
    atomics.store(control, GENERATION, generation)  # publishes the job (sequentially consistent)
    if atomics.load(control, SLEEPERS) > 0:
        atomics.futex_wake(control, GENERATION)
    _take_chunks(control, generation, 0, scratch)
    while atomics.load(control, FINISHED) < chunks:  # chunks in progress on other threads
        atomics.pause()
    result = -1 if atomics.load(control, FAILED) > 0 else (1 if atomics.load(control, BAD) == 0 else 0)
    atomics.store(control, BUSY, 0)
    return result


@cpu_jit
def worker_loop(control, index, seen, f32, f64):
    """Worker `index` (1 .. WORKERS): claim chunks of every job after generation `seen` that asks
    for more than `index` threads, until STOP is set (f32, f64: 1-D arrays of each dtype, for
    the types). After a job it was not asked for, it goes back to sleep at once."""
    idle = 0
    while True:
        generation = atomics.wait_while(control, GENERATION, seen, STOP, SLEEPERS, idle)
        if atomics.load(control, STOP) != 0:
            return
        seen = generation
        idle = atomics.SPIN
        if index < control[THREADS]:  # a stale read is harmless: chunks are claimed per generation
            idle = 0
            if control[ITEMSIZE] == 4:
                _take_chunks(control, generation, index, f32)
            else:
                _take_chunks(control, generation, index, f64)


_pool = {"pid": None, "control": None}
_start_lock = threading.Lock()


def _new_lock():
    global _start_lock
    _start_lock = threading.Lock()  # a thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock)


_F32, _F64 = np.empty(0, np.float32), np.empty(0, np.float64)


def _serve(control, index, seen):
    try:
        worker_loop(control, index, seen, _F32, _F64)
    except BaseException:  # compiled code that cannot raise did: use this pool no more
        control[STOP] = 1
        raise


def _workers(count):
    """This process's control block with `count` workers or more running (fewer where threads
    cannot start), or None where the pool stopped."""
    with _start_lock:
        if _pool["pid"] != os.getpid():
            _pool.update(pid=os.getpid(), control=np.zeros(CONTROL, np.int64))
        control = _pool["control"]
        if control[STOP]:
            return None
        while control[WORKERS] < count:
            index = int(control[WORKERS]) + 1
            thread = threading.Thread(target=_serve, args=(control, index, int(control[GENERATION])), daemon=True,
                                      name=f"fastae-chunks-{index}")
            try:
                thread.start()
            except RuntimeError:  # no more threads here: the caller's thread takes their chunks
                break
            control[WORKERS] = index
        return control


def _kernel_types(op, dtype):
    """The kernel of `op` and the Numba argument types the pool calls it with in `dtype`: those
    `_chunk` passes, which are those the public ops compile it for."""
    a1, a2 = (types.Array(types.float32 if dtype == np.float32 else types.float64, ndim, "C") for ndim in (1, 2))
    if op == L1_PROX:
        return cpu.l1_prox, (a1, types.float64, types.boolean, a1)
    if op == REPARAM_FORWARD:
        return cpu.reparam_forward, (a2, a2, a2, types.boolean, types.uint64, a2, a1, a1)
    return cpu.reparam_backward, (a2, a2, a2, a2, types.boolean, types.uint64, types.float64, a2, a2, a1)


_kernels = {}


def _kernel(op, dtype):
    """The address of op's kernel for `dtype` (compiled or loaded on first use)."""
    address = _kernels.get((op, dtype))
    if address is None:
        address = _kernels[op, dtype] = address_of(*_kernel_types(op, dtype))
    return address


def _call(op, threads, *args):
    """run(control, kernel, op, *args, threads) on the pool: True / False as the cpu kernels
    return, or None where the pool cannot take the call (another thread's call is on it, or not
    here)."""
    if not atomics.supported():
        return None
    control = _workers(threads - 1)
    if control is None:
        return None
    result = run(control, _kernel(op, args[0].dtype), op, *args, threads)
    if result == -2:
        return None
    if result == -1:
        raise RuntimeError("fastae: a kernel raised inside the chunk pool")
    return result == 1


def reparam_forward(mu, logvar, eps, has_eps, key, z, kl, scratch, threads):
    """cpu.reparam_forward on `threads` threads (scratch: `threads` equal shares), or None
    where the pool cannot take the call."""
    return _call(REPARAM_FORWARD, threads, mu, logvar, eps, mu, z, kl.reshape(-1, 1), scratch,
                 scratch.size // threads, key, 0.0, has_eps)


def reparam_backward(dz, mu, logvar, eps, has_eps, key, beta, dmu, dlogvar, scratch, threads):
    """cpu.reparam_backward on `threads` threads, or None where the pool cannot take the call."""
    return _call(REPARAM_BACKWARD, threads, mu, logvar, eps, dz, dmu, dlogvar, scratch, scratch.size // threads,
                 key, beta, has_eps)


def l1_prox_into(h, threshold, nonneg, out, threads):
    """cpu.l1_prox on `threads` threads (h, out: 1-D), or None where the pool cannot take the
    call."""
    column = h.reshape(-1, 1)
    return _call(L1_PROX, threads, column, column, column, column, out.reshape(-1, 1), column, h, 0, _NO_KEY,
                 threshold, nonneg)


_NO_KEY = np.uint64(0)


def warmup(dtype):
    """Compile (or load) the pool's functions and kernels for `dtype` without starting threads:
    each job runs whole on the calling thread of a pool with no workers."""
    control = np.zeros(CONTROL, np.int64)
    x = np.zeros((2, 3), dtype)
    out = x.copy()
    scratch = np.empty(3 * 3 + 2, dtype)
    for op in (REPARAM_FORWARD, REPARAM_BACKWARD, L1_PROX):
        run(control, _kernel(op, x.dtype), op, x, x, x, x, out, out, scratch, scratch.size, noise_key(0), 0.1, False, 1)
    worker_loop.compile((types.Array(types.int64, 1, "C"), types.int64, types.int64, types.Array(types.float32, 1, "C"),
                         types.Array(types.float64, 1, "C")))
