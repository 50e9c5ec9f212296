"""Cold start: what a new process pays before its first result, each case in a fresh process.

"cold" cases get an empty Numba cache (a new machine, or the first run after an install); "warm"
cases a cache filled by an earlier run. `import numpy` is timed beside them as the floor of any
Python process. Background compiles that a cold case starts are stopped after each round, so the
rounds do not overlap.
"""
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

MODEL_SETUP = textwrap.dedent("""
    import numpy as np, fastae
    X = np.random.default_rng(0).uniform(size=(200, 64)).astype(np.float32)
    fastae.Autoencoder(hidden=(32,), code=8, epochs=1, seed=0).fit(X).save({path!r})
""")
FLOOR_MODULE = textwrap.dedent("""
    import numba
    @numba.njit(cache=True)
    def total(a):
        return a.sum()
""")
CASES = {
    "import numpy": "import numpy",
    # the floor of any program that runs cached Numba code: import numpy and numba, load one function
    "numba floor (import numba, one cached call)": textwrap.dedent("""
        import sys, numpy as np
        sys.path.insert(0, {folder!r})
        import floor_module
        floor_module.total(np.ones(3))
    """),
    "first transform (import, load, transform 1 row)": textwrap.dedent("""
        import numpy as np, fastae
        model = fastae.load({path!r})
        model.transform(np.ones((1, 64), np.float32))
    """),
    "first fit (digits-size autoencoder, 2 epochs)": textwrap.dedent("""
        import numpy as np, fastae
        X = np.random.default_rng(0).uniform(size=(1797, 64)).astype(np.float32)
        fastae.Autoencoder(hidden=(32,), code=8, epochs=2, seed=0).fit(X)
    """),
    "warmup() float32": "import fastae; fastae.warmup(dtypes=('float32',))",
}


def _run(code, cache):
    """Seconds for `python -c code` with NUMBA_CACHE_DIR=cache; its background compiles are
    stopped afterwards (they share its process group)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    status = process.wait(timeout=600)
    seconds = time.perf_counter() - start
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert status == 0, f"{code!r} exited with {status}"
    return seconds


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coldstart")
    (folder / "floor_module.py").write_text(FLOOR_MODULE)
    path = str(folder / "model.npz")
    _run(MODEL_SETUP.format(path=path), tempfile.mkdtemp())
    return path


@pytest.mark.parametrize("cache", ["cold", "warm"])
@pytest.mark.parametrize("case", list(CASES))
def test_process_start(benchmark, case, cache, model_file):
    if case == "import numpy" and cache == "cold":
        pytest.skip("NumPy has no Numba cache")
    code = CASES[case].format(path=model_file, folder=os.path.dirname(model_file))
    warm_cache = tempfile.mkdtemp()
    if cache == "warm":
        _run(code, warm_cache)  # fills the cache
        subprocess.run([sys.executable, "-m", "fastae.precompile", "float32"], check=True,
                       env={**os.environ, "NUMBA_CACHE_DIR": warm_cache})

    def setup():
        return ((tempfile.mkdtemp() if cache == "cold" else warm_cache),), {}

    benchmark.group = f"cold start: {case}"
    benchmark.extra_info["cache"] = cache
    benchmark.pedantic(lambda where: _run(code, where), setup=setup, rounds=3 if cache == "warm" else 2,
                       iterations=1)
