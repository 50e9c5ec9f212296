"""Cold start: what a new process pays before its first result, each case in a fresh process.

"cold" cases get an empty Numba cache (a new machine, or the first run after an install); "warm"
cases a cache filled by an earlier run. `import numpy` is timed beside them as the floor of any
Python process. Background compiles that a cold case starts are stopped after each round, so the
rounds do not overlap. Python's own bytecode cache is allowed (PYTHONDONTWRITEBYTECODE is
dropped), as on an installed package: the times are Numba's and fastae's, not Python's parsing.
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
    "import numba": "import numba",
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
    # the README's first command (warmup, five models and their NumPy baselines, figures)
    "demo (python -m fastae demo)": "import runpy, sys; sys.argv = ['fastae', 'demo']; "
                                    "runpy.run_module('fastae', run_name='__main__')",
}
COLD_ONLY = ("demo (python -m fastae demo)",)


def _start(code, cache):
    """Start `python -c code` with NUMBA_CACHE_DIR=cache and return (process, seconds until its
    result): the child touches a stamp file right after the case's last statement, so the time is
    process start to result, as a pipeline waiting for it sees it; the interpreter's exit (0.05 s
    for NumPy alone, 0.15 s with Numba's modules loaded) is not in it."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    stamp = os.path.join(tempfile.mkdtemp(), "result")
    code = f"{code}\nopen({stamp!r}, 'w').close()\n"
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                               cwd=tempfile.mkdtemp(), stdout=subprocess.DEVNULL)
    while not os.path.exists(stamp):
        if process.poll() is not None:
            break
        if time.perf_counter() - start > 600:
            process.kill()
            break
        time.sleep(0.0005)
    return process, time.perf_counter() - start


def _finish(process):
    """Wait for the process to exit; stop its background compiles (they share its process group)."""
    status = process.wait(timeout=600)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert status == 0, f"a cold-start case exited with {status}"


def _run(code, cache):
    process, seconds = _start(code, cache)
    _finish(process)
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
    if case in ("import numpy", "import numba") and cache == "cold":
        pytest.skip("nothing to compile")
    if case in COLD_ONLY and cache == "warm":
        pytest.skip("measured cold only (its compile is the point)")
    code = CASES[case].format(path=model_file, folder=os.path.dirname(model_file))
    warm_cache = tempfile.mkdtemp()
    if cache == "warm":
        _run(code, warm_cache)  # fills the cache
        subprocess.run([sys.executable, "-m", "fastae.precompile", "float32"], check=True,
                       env={**os.environ, "NUMBA_CACHE_DIR": warm_cache})

    running = []

    def setup():  # the previous round's process exits here, untimed
        while running:
            _finish(running.pop())
        return ((tempfile.mkdtemp() if cache == "cold" else warm_cache),), {}

    def first_result(where):
        process, seconds = _start(code, where)
        running.append(process)
        return seconds

    benchmark.group = f"cold start: {case}"
    benchmark.extra_info["cache"] = cache
    benchmark.pedantic(first_result, setup=setup, rounds=3 if cache == "warm" else 2, iterations=1)
    setup()
