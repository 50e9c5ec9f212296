"""A packed layer split between the threads of fastae's own pool (native inference, where Numba's
threading layer is not loaded).

The pool is a control block (an int64 array, `CONTROL` entries) and worker threads that wait in
`worker_loop` (started by the caller, e.g. Python threads calling native code with the GIL
released). For a layer, the calling thread writes the job into the block, bumps the generation,
computes its own share and spins until every worker has counted itself done: `run_layer`. A
share is a range of panels on every row or, for a layer of many rows, every panel on a range of
rows. A worker spins for a while (`atomics.wait_while`, ~1 ms) after its last job, then sleeps on
a futex until the next generation. Thread t of `parts` computes panels t * P // parts ..
(t + 1) * P // parts - 1 (or rows t * M // parts ..) and their activation: the same kernel on
the same outputs as one thread (a row's result does not depend on the rows beside it), so the
same bits for any thread count.

The functions here are typed into their callers (inline): each separately compiled function that
calls the panels' kernel would optimize that kernel's code once more (seconds of compile).
"""
from . import atomics, packed
from .elementwise import RELU, SIGMOID, TANH
from .jit import cpu_jit
from .views import at_address, matrix

# the control block: the words the threads spin on each on a cache line of its own, then the job
GENERATION, DONE, SLEEPERS, STOP, WORKERS = 0, 8, 16, 24, 32
SRC, DST, ROWS, INPUTS, WIDTH, WEIGHTS, WEIGHTS_SIZE, BIAS, ACT, PARTS, BY_ROWS = range(40, 51)
CONTROL = 56
# From this many rows per thread on, a layer is split by rows (every thread all panels on its
# rows) instead of by panels: each thread's rows stay in its own cache. Measured on 2 cores, the
# 784-512-256-32-256-512-784 chain on 256 rows: 1820 us split by panels, 1560 by rows.
ROWS_PER_THREAD = 64


@cpu_jit(inline="always")
def _share(control, index, part):
    """Worker `index`'s panels of the job in the control block (part: its scratch, of the
    layer's dtype)."""
    m, inp, width, act, parts = (control[ROWS], control[INPUTS], control[WIDTH], control[ACT],
                                 control[PARTS])
    if index >= parts:
        return
    Wp = at_address(control[WEIGHTS], control[WEIGHTS_SIZE], part)
    bias = at_address(control[BIAS], width, part)
    nr = packed.panel_outputs(part)
    panels = -(-width // nr)
    if control[BY_ROWS] != 0:  # rows r0 .. r1 - 1, every panel
        r0, r1 = index * m // parts, (index + 1) * m // parts
        size = part.itemsize
        src = matrix(at_address(control[SRC] + r0 * inp * size, (r1 - r0) * inp, part), r1 - r0, inp)
        dst = matrix(at_address(control[DST] + r0 * width * size, (r1 - r0) * width, part), r1 - r0, width)
        p0, p1 = 0, panels
    else:  # every row, panels p0 .. p1 - 1
        src = matrix(at_address(control[SRC], m * inp, part), m, inp)
        dst = matrix(at_address(control[DST], m * width, part), m, width)
        p0, p1 = index * panels // parts, (index + 1) * panels // parts
    if p1 > p0 and dst.shape[0] > 0:
        packed.panels_into(src, Wp, bias, act == RELU, dst, part, p0, p1)
        if act == SIGMOID or act == TANH:
            packed.activate_span(dst, act, 0, dst.shape[0], p0 * nr, min(p1 * nr, width))


@cpu_jit(inline="always")
def run_layer(control, src, Wp, bias, act, dst, part):
    """dst = act(src @ W.T + bias) with the panels split between this thread and the pool's
    workers (src, dst C-contiguous; the caller checked the shapes, as for packed.panels_into)."""
    packed._check(src, Wp, bias, dst)
    nr = packed.panel_outputs(part)
    panels = -(-dst.shape[1] // nr)
    workers = control[WORKERS]
    control[SRC], control[DST] = src.ctypes.data, dst.ctypes.data
    control[ROWS], control[INPUTS], control[WIDTH] = src.shape[0], src.shape[1], dst.shape[1]
    control[WEIGHTS], control[WEIGHTS_SIZE], control[BIAS] = Wp.ctypes.data, Wp.size, bias.ctypes.data
    m = src.shape[0]
    by_rows = m >= ROWS_PER_THREAD * (workers + 1)
    control[ACT], control[BY_ROWS] = act, 1 if by_rows else 0
    control[PARTS] = workers + 1 if by_rows else min(workers + 1, panels)
    atomics.store(control, DONE, 0)
    atomics.add(control, GENERATION, 1)  # publishes the job (sequentially consistent)
    if atomics.load(control, SLEEPERS) > 0:
        atomics.futex_wake(control, GENERATION)
    _share(control, 0, part)
    while atomics.load(control, DONE) < workers:
        atomics.pause()


@cpu_jit(inline="always")
def worker_loop(control, index, part):
    """Run worker `index`'s share (1 .. WORKERS) of every job until STOP is set. The pool's
    generation starts at 0 when its workers are started: a job published before this thread got
    here is still ahead of it."""
    seen = 0
    while True:
        generation = atomics.wait_while(control, GENERATION, seen, STOP, SLEEPERS, 0)
        if atomics.load(control, STOP) != 0:
            return
        seen = generation
        _share(control, index, part)
        atomics.add(control, DONE, 1)


@cpu_jit(inline="always")
def stop(control):
    """Make every worker of the pool return from worker_loop."""
    atomics.store(control, STOP, 1)
    atomics.add(control, GENERATION, 1)
    atomics.futex_wake(control, GENERATION)
