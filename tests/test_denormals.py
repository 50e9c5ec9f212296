"""Training and scoring passes on the cpu backend run with subnormal floats flushed to zero
(`fastae.kernels.denormals`): inside the block only, on the calling thread only, restored even
when the block raises."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastae
from fastae.kernels import denormals

pytestmark = pytest.mark.skipif(not denormals.SUPPORTED, reason="x86-64 only")

SMALL = np.float32(1e-38)  # a normal float32 whose half is subnormal


def half_of_small():
    return float(SMALL * np.float32(0.5))


def test_flushed_zeroes_subnormal_results_inside_the_block_only():
    assert half_of_small() > 0
    with denormals.flushed():
        assert half_of_small() == 0.0
        assert float(np.float32(1e-39) + np.float32(0)) == 0.0  # subnormal inputs read as zero
    assert half_of_small() > 0


def test_flushed_restores_the_mode_after_an_exception_and_when_nested():
    with pytest.raises(RuntimeError):
        with denormals.flushed():
            raise RuntimeError("inside")
    assert half_of_small() > 0
    with denormals.flushed():
        with denormals.flushed():
            pass
        assert half_of_small() == 0.0  # the outer block's mode is back, not the thread's default
    assert half_of_small() > 0


def test_flushed_is_per_thread():
    """Another thread running while this one is inside the block keeps IEEE arithmetic. (A thread
    started inside the block inherits the mode, as POSIX threads inherit the float environment.)"""
    go, seen = threading.Event(), []
    worker = threading.Thread(target=lambda: (go.wait(), seen.append(half_of_small())))
    worker.start()
    with denormals.flushed():
        go.set()
        worker.join()
    assert seen[0] > 0


def test_fit_and_score_leave_the_callers_float_mode_alone(rng):
    X = rng.uniform(size=(64, 8)).astype(np.float32)
    model = fastae.Autoencoder(hidden=(4,), code=2, epochs=2, seed=0).fit(X)
    model.score(X)
    assert half_of_small() > 0


def test_adam_moments_that_shrink_past_the_normal_range_are_flushed(rng):
    """900 steps of a small network with a dead unit: Adam moments whose gradients vanish shrink
    geometrically (beta_1 per step) past 1e-38. With IEEE arithmetic 23 of them are subnormal at
    the end (checked by hand with the flush switched off); on the cpu backend they are zero."""
    X = rng.uniform(size=(32, 6)).astype(np.float32)
    model = fastae.Autoencoder(hidden=(5,), code=2, epochs=1, batch_size=32, seed=0).fit(X)
    W, b = model.get_weights()[0]
    W[0], b[0] = 0.0, -10.0
    model.set_weights([(W, b)] + model.get_weights()[1:])
    model.set_params(epochs=900, warm_start=True).fit(X)
    m = model._fitted.train.opt_a
    tiny = np.finfo(np.float32).tiny
    assert np.count_nonzero(m) > 0  # training went on
    assert not ((m != 0) & (np.abs(m) < tiny)).any()


_BLAS_AFTER_FIT = textwrap.dedent("""
    import sys
    import numpy as np
    import fastae
    assert "scipy.linalg" not in sys.modules  # the first fit loads SciPy's BLAS
    X = np.random.default_rng(0).uniform(size=(300, 40)).astype(np.float32)
    fastae.Autoencoder(hidden=(150,), code=64, epochs=1, batch_size=300, seed=0).fit(X)
    from scipy.linalg import blas
    a = np.full((256, 256), 1e-20, np.float32, order="F")
    c = blas.sgemm(1.0, a, a)  # every product 1e-40 (subnormal), every sum 2.56e-38 (normal)
    print(int((c == 0).sum()))
""")


def test_blas_worker_threads_started_by_a_fit_keep_ieee_arithmetic(tmp_path):
    """SciPy's OpenBLAS starts its worker threads when it loads, and they take the float mode of
    the thread that loads it: loaded inside a flushed pass, they would flush subnormals in the
    caller's own BLAS calls for the rest of the process."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", NUMBA_CACHE_DIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", _BLAS_AFTER_FIT], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0"]
