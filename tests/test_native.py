"""The native inference chain (fastae.native_chain, kernels.native, kernels.pool): the same bits as
the Numba chain it is compiled from, on every activation, dtype and odd shape, serial and split
between fastae's own threads; a process that loads a model and runs it without importing Numba;
files that do not fit are not loaded."""
import json
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import fastae
from fastae import compiled, native_chain
from fastae.chain import Chain
from fastae.kernels import native, packing
from fastae.kernels import pool as pool_layer
from fastae.kernels.elementwise import ACTIVATIONS

from conftest import run_in_threads

pytestmark = pytest.mark.skipif(not native_chain.enabled(), reason="the native chain is off here")


@pytest.fixture(scope="module", autouse=True)
def built():
    for dtype in ("float32", "float64"):
        assert native_chain.build(dtype) is not None
    yield
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def _chain(rng, sizes, acts, dtype, prox_at=-1, l1=0.0, nonneg=False):
    pairs = [((rng.standard_normal((o, i)) * 0.3).astype(dtype), rng.standard_normal(o).astype(dtype))
             for i, o in zip(sizes[:-1], sizes[1:])]
    return Chain(pairs, acts, np.dtype(dtype), prox_at, l1, nonneg)


def _numba(chain, x):
    out = np.empty((x.shape[0], chain.n_out), chain.params.dtype)
    assert compiled.chain_into(chain.params, chain.layout, chain.acts, chain.prox, chain.l1, chain.packed,
                               chain.packed_at, 1, True, x, out)
    return out


def _native(chain, x):
    out = np.full((x.shape[0], chain.n_out), np.nan, chain.params.dtype)
    assert native_chain.run(chain, x, out) is True
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("rows", [1, 3, 17, 130])
@pytest.mark.parametrize("threads", [1, 2])
def test_native_chain_equals_the_numba_chain_bit_for_bit(rng, dtype, act, rows, threads):
    numba.set_num_threads(threads)
    code = ACTIVATIONS[act]
    chain = _chain(rng, [129, 300, 17, 3, 129], [code, code, code, code], dtype, prox_at=1, l1=0.05)
    x = rng.standard_normal((rows, 129)).astype(dtype)
    before = x.copy()
    np.testing.assert_array_equal(_native(chain, x), _numba(chain, x))
    np.testing.assert_array_equal(x, before)


def test_native_chain_splits_a_large_layer_between_threads_with_the_same_bits(rng):
    chain = _chain(rng, [784, 512, 32], [0, 3], "float32")
    x = rng.uniform(size=(300, 784)).astype(np.float32)
    assert chain.splits(300, 2)
    numba.set_num_threads(1)
    one = _native(chain, x)
    numba.set_num_threads(2)
    two = _native(chain, x)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(two, _numba(chain, x))
    assert native_chain._pools[np.dtype("float32")].workers == 1


def test_many_python_threads_share_the_pool_safely(rng):
    numba.set_num_threads(2)
    chain = _chain(rng, [300, 400, 20], [0, 1], "float32")
    xs = [rng.uniform(size=(40 + k, 300)).astype(np.float32) for k in range(8)]
    expected = [_numba(chain, x) for x in xs]

    def work(k):
        for _ in range(20):
            np.testing.assert_array_equal(_native(chain, xs[k]), expected[k])
    assert run_in_threads(work) == []


def test_nan_input_writes_nothing_and_bad_shapes_are_refused(rng):
    chain = _chain(rng, [17, 9, 3], [0, 1], "float64")
    x = rng.standard_normal((5, 17))
    x[2, 4] = np.nan
    out = np.full((5, 3), 7.0)
    assert native_chain.run(chain, x, out) is False
    assert (out == 7.0).all()
    with pytest.raises(ValueError, match="shape"):
        native_chain.run(chain, np.zeros((5, 16)), out)
    with pytest.raises(ValueError, match="shape"):
        native_chain.run(chain, np.zeros((5, 17)), np.zeros((4, 3)))
    # layouts the native code does not take go back to the caller (the Numba chain runs them)
    assert native_chain.run(chain, np.zeros((17, 5)).T, out) is None
    assert native_chain.run(chain, np.zeros((5, 17), np.float32), out) is None


def test_the_native_code_checks_the_chain_it_is_given(rng):
    """A description that does not fit its buffers is refused with a status, nothing run."""
    chain = _chain(rng, [17, 9, 3], [0, 1], "float64")
    chain.layout = chain.layout.copy()
    chain.layout[1, 2] = 10  # layer 1 claims 10 inputs, layer 0 gives 9
    with pytest.raises(RuntimeError, match="status 5"):
        native_chain.run(chain, np.zeros((2, 17)), np.zeros((2, 3)))


def test_models_run_the_native_chain_and_give_the_numba_results(rng):
    X = rng.uniform(size=(300, 64)).astype(np.float32)
    model = fastae.Autoencoder(hidden=(32,), code=8, l1=0.01, epochs=2, seed=0).fit(X)
    vae = fastae.VAE(hidden=(32,), latent=4, epochs=2, seed=0).fit(X)
    state = model._state()
    for part in ("encode", "decode", "reconstruct"):
        chain = state._chain(part)
        x = X if part != "decode" else model.transform(X)
        np.testing.assert_array_equal(_native(chain, x), _numba(chain, x))
    os.environ["FASTAE_NATIVE"] = "0"
    native_chain._functions.clear()
    try:
        expected = (model.transform(X), model.reconstruct(X), vae.transform(X), vae.reconstruct(X))
    finally:
        del os.environ["FASTAE_NATIVE"]
        native_chain._functions.clear()
    got = (model.transform(X), model.reconstruct(X), vae.transform(X), vae.reconstruct(X))
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


_WARM_START = textwrap.dedent("""
    import sys, numpy as np, fastae
    model, vae, X = fastae.load(sys.argv[1]), fastae.load(sys.argv[2]), np.load(sys.argv[3])
    codes = model.transform(X)
    mu, logvar = vae.encode(X)
    np.savez(sys.argv[4], codes=codes, decoded=model.decode(codes), reconstructed=model.reconstruct(X),
             mean=vae.transform(X), mu=mu, logvar=logvar, vae_reconstructed=vae.reconstruct(X))
    print("numba" in sys.modules)
""")


def test_a_process_that_loads_models_runs_them_without_numba(tmp_path, rng):
    X = rng.uniform(size=(50, 64)).astype(np.float32)
    model = fastae.Autoencoder(hidden=(32,), code=8, epochs=1, seed=0).fit(X)
    vae = fastae.VAE(hidden=(32,), latent=4, epochs=1, seed=0).fit(X)
    model.save(tmp_path / "m.npz")
    vae.save(tmp_path / "v.npz")
    np.save(tmp_path / "X.npy", X)
    run = subprocess.run([sys.executable, "-c", _WARM_START, str(tmp_path / "m.npz"), str(tmp_path / "v.npz"),
                          str(tmp_path / "X.npy"), str(tmp_path / "out.npz")], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "FASTAE_BACKGROUND_COMPILE": "0"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False"]
    got = np.load(tmp_path / "out.npz")
    codes = model.transform(X)
    mu, logvar = vae.encode(X)
    expected = dict(codes=codes, decoded=model.decode(codes), reconstructed=model.reconstruct(X),
                    mean=vae.transform(X), mu=mu, logvar=logvar, vae_reconstructed=vae.reconstruct(X))
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_a_pool_of_its_own(rng):
    numba.set_num_threads(2)
    chain = _chain(rng, [400, 300, 8], [0, 3], "float32")
    x = rng.uniform(size=(64, 400)).astype(np.float32)
    expected = _native(chain, x)  # the parent's pool is running
    pid = os.fork()
    if pid == 0:
        try:
            ok = np.array_equal(_native(chain, x), expected)
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_object_files_that_do_not_fit_are_not_loaded(tmp_path):
    dtype = "float64"
    key = native_chain.key(dtype)
    path = str(tmp_path / "chain.o")
    native.save(native_chain._make_cfunc(dtype), path, key)
    assert native.load(path, key)
    assert native.load(path, key + "|another machine") is None
    assert native.load(str(tmp_path / "missing.o"), key) is None
    code = bytearray(open(path, "rb").read())
    code[len(code) // 2] ^= 0xFF
    open(path, "wb").write(bytes(code))
    assert native.load(path, key) is None  # damaged: the digest does not match
    meta = json.loads(open(path + ".json").read())
    assert meta["externals"] and set(meta["externals"]) <= native._LIBC


def test_code_that_needs_numbas_runtime_is_refused():
    @numba.cfunc(numba.types.int64(numba.types.int64))
    def allocates(n):
        return np.zeros(n).size
    with pytest.raises(ValueError, match="NRT"):
        native.object_code(allocates)


def test_constants_the_loader_repeats_match_the_kernels():
    assert (native_chain._CONTROL, native_chain._WORKERS) == (pool_layer.CONTROL, pool_layer.WORKERS)
    for dtype in (np.float32, np.float64):
        compiled_width = compiled.packed.panel_outputs(np.empty(0, dtype))  # what compiled code sizes with
        assert packing.BLOCK_ROWS * packing.panel_width(dtype) == compiled.packed.BLOCK_ROWS * compiled_width


def test_object_files_others_may_write_are_not_loaded(tmp_path, monkeypatch, rng):
    """A folder or file another user could write (e.g. made by someone else under the shared
    temp dir) may hold planted code: it is passed over."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    native_chain._functions.clear()
    path = native_chain.build("float64")
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)  # readable by other users of a shared cache
    assert native_chain.function(np.dtype("float64")) is not None
    folder = os.path.dirname(path)
    for target, mode in ((folder, 0o777), (path, 0o666)):
        original = os.stat(target).st_mode & 0o777
        os.chmod(target, mode)
        native_chain._functions.clear()
        try:
            assert native_chain.function(np.dtype("float64")) is None
        finally:
            os.chmod(target, original)
    native_chain._functions.clear()


def test_a_process_whose_sources_changed_on_disk_does_not_save_its_code(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native_chain, "_digest", lambda: "the sources after an upgrade")
    assert native_chain.build("float32") is None
    assert not os.path.exists(tmp_path / "fastae-native")


def test_large_work_buffers_are_not_kept_by_the_thread():
    dtype = np.dtype("float32")
    big = native_chain._KEEP * 3
    work = native_chain._scratch(dtype, big, 4096)[0]
    assert work.size >= big
    assert native_chain._local.buffers[dtype][0].size <= native_chain._KEEP


def test_a_pool_that_cannot_start_threads_runs_the_call_serially(rng, monkeypatch):
    numba.set_num_threads(2)
    chain = _chain(rng, [500, 400, 10], [0, 1], "float64")
    x = rng.uniform(size=(64, 500))
    expected = _numba(chain, x)
    monkeypatch.setattr(native_chain, "_pools", {})

    def refuse(self):
        raise RuntimeError("can't start new thread")
    monkeypatch.setattr(native_chain.threading.Thread, "start", refuse)
    np.testing.assert_array_equal(_native(chain, x), expected)


def test_without_a_background_compile_the_first_process_builds_the_native_chain(tmp_path, rng):
    X = rng.uniform(size=(20, 12)).astype(np.float32)
    model = fastae.Autoencoder(hidden=(6,), code=3, epochs=1, seed=0).fit(X)
    model.save(tmp_path / "m.npz")
    np.save(tmp_path / "X.npy", X)
    script = ("import sys, numpy as np, fastae\n"
              "m, X = fastae.load(sys.argv[1]), np.load(sys.argv[2])\n"
              "for _ in range(2): m.transform(X)\n")
    env = {**os.environ, "FASTAE_BACKGROUND_COMPILE": "0", "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m.npz"), str(tmp_path / "X.npy")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert any(name.endswith(".o") for name in os.listdir(tmp_path / "cache" / "fastae-native"))
