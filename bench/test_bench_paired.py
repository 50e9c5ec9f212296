"""Paired rounds for the headline ratios that noise moves most: fastae and its floor (or the numpy
baseline) called alternately, one call each per round, in alternating order. A slow spell of a
shared machine then slows both calls of a round, and the median of the per-round ratios holds
where the ratio of two medians, each taken in a block of its own (pytest-benchmark's groups),
moves by 10-50% between runs. The results go into the summary's "Paired rounds" table."""
import time

import numpy as np
import pytest

from conftest import BIG_NET, DIGITS_NET, PAIRED
from test_bench_models import BIG, DIGITS, _floor_args, _matmuls_alone, _matmuls_tiled, _model, _one_step, _stepper
from fastae import kernels


def paired(first, second, rounds):
    """(median of first's time / second's, median first, median second) over `rounds` rounds,
    after warm-up calls of both."""
    for _ in range(3):
        first(), second()
    ratios, a, b = [], [], []
    for r in range(rounds):
        order = (first, second) if r % 2 == 0 else (second, first)
        t = []
        for fn in order:
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
        ta, tb = t if r % 2 == 0 else t[::-1]
        ratios.append(ta / tb)
        a.append(ta)
        b.append(tb)
    return float(np.median(ratios)), float(np.median(a)), float(np.median(b))


def _record(case, threads, what, result, rounds):
    ratio, ta, tb = result
    PAIRED[(case, threads, what)] = dict(ratio=ratio, fastae=ta, other=tb, rounds=rounds)


@pytest.mark.parametrize("net,d,rows,rounds", [(BIG_NET, 784, 256, 40), (DIGITS_NET, 64, 64, 2000)])
def test_training_step_paired(threads, net, d, rows, rounds):
    config = BIG if d == 784 else DIGITS
    model, X = _model(config, d, "cpu", rows)
    index, keys = np.arange(rows, dtype=np.int64), np.zeros(1, np.uint64)
    step = _stepper(model)
    args = _floor_args(model, rows)
    case = f"AE train step {net} b{rows} bce adam f32"
    _record(case, threads, "fastae / floor", paired(lambda: _one_step(step, X, index, keys),
                                                    lambda: _matmuls_alone(*args), rounds), rounds)
    if d == 64:  # the digits target is a speed-up over the numpy backend
        # the same products in small_gemm's tiles, as the step runs them
        ratio, ta, tb = paired(lambda: _matmuls_tiled(*args), lambda: _matmuls_alone(*args), rounds)
        _record(f"17 products of {net} b{rows} f32", threads, "small_gemm / BLAS", (ratio, ta, tb), rounds)
        ref, _ = _model(config, d, "numpy", rows)
        slow = _stepper(ref)
        ratio, ta, tb = paired(lambda: _one_step(step, X, index, keys), lambda: _one_step(slow, X, index, keys),
                               rounds // 10)
        _record(case, threads, "fastae / numpy", (ratio, ta, tb), rounds // 10)


def test_l1_prox_paired(threads):
    h = np.random.default_rng(1).standard_normal((4096, 512), dtype=np.float32)
    out = np.empty_like(h)
    _record("l1_prox 4096x512 f32", threads, "fastae / floor",
            paired(lambda: kernels.l1_prox(h, 0.5, backend="cpu"), lambda: np.copyto(out, h), 200), 200)
    # l1_prox returns a new array: a copy that allocates its result too is the like-for-like floor
    _record("l1_prox 4096x512 f32", threads, "fastae / allocating copy",
            paired(lambda: kernels.l1_prox(h, 0.5, backend="cpu"), h.copy, 200), 200)
