"""The packed-weight inference kernels (fastae.kernels.packed) and the chains built on them."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastae
from fastae.kernels import packed, packing, reference
from fastae.kernels.elementwise import ACTIVATIONS

SHAPES = [(1, 3, 1), (3, 17, 5), (17, 129, 64), (5, 64, 65), (4, 1, 129), (9, 200, 3), (7, 150, 20), (2, 9, 45)]


def _packed(W):
    Wp = np.empty(packed.packed_size(*W.shape, W.dtype), W.dtype)
    packed.pack(W, Wp)
    return Wp


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("n,k,m", SHAPES)
def test_packed_forward_equals_reference(rng, dtype, act, n, k, m):
    x = rng.standard_normal((n, k)).astype(dtype)
    W = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    want = reference.affine_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64), act)
    Wp = _packed(W)
    got = np.full((n, m), np.nan, dtype)
    packed.affine_forward(x, Wp, b, ACTIVATIONS[act], got)
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.sqrt(k))
    both = np.full((n, m), np.nan, dtype)
    packed.affine_forward_parallel(x, Wp, b, ACTIVATIONS[act], both, 2)
    np.testing.assert_array_equal(both, got)  # the split between threads changes nothing


def test_a_row_gives_the_same_bits_in_any_batch(rng):
    """Each output is one multiply-add chain over the inputs in order: a row's result does not
    depend on the rows beside it (register tiles of 6, 4 and 1 rows agree, across slices of
    K_BLOCK inputs: 300 = 128 + 128 + 44, and the wide tiles of a call on one row)."""
    k = 2 * packed.K_BLOCK + 44
    m = (2 * packed.GROUP + 1) * packed.panel_width(np.float32) + 6  # a row alone: two wide tiles, then one panel at a time
    x = rng.standard_normal((11, k)).astype(np.float32)
    W = rng.standard_normal((m, k)).astype(np.float32)
    b = np.zeros(m, np.float32)
    Wp = _packed(W)
    whole = np.empty((11, m), np.float32)
    packed.affine_forward(x, Wp, b, 3, whole)
    for i in range(11):
        one = np.empty((1, m), np.float32)
        packed.affine_forward(x[i:i + 1], Wp, b, 3, one)
        np.testing.assert_array_equal(one[0], whole[i])


@pytest.mark.parametrize("vector_bytes,vectors,nr", [(64, 4, 32), (32, 2, 8)])
def test_packing_layout_and_padding(rng, monkeypatch, vector_bytes, vectors, nr):
    """Both layouts (the AVX-512 one and the AVX2 one), whichever this machine uses."""
    monkeypatch.setattr(packing, "VECTOR_BYTES", vector_bytes)
    monkeypatch.setattr(packing, "VECTORS", vectors)
    W = rng.standard_normal((70, 3))
    assert packing.panel_width(W.dtype) == nr  # float64 outputs per panel
    Wp = _packed(W)
    panels = -(-70 // nr)
    assert Wp.size == panels * nr * 3
    grid = Wp.reshape(panels, 3, nr)
    np.testing.assert_array_equal(grid[1, 2, :5], W[nr:nr + 5, 2])
    assert not grid[-1, :, 70 - (panels - 1) * nr:].any()


@pytest.mark.parametrize("env,want", [
    ({"FASTAE_VECTOR_BYTES": "32"}, 32), ({"FASTAE_VECTOR_BYTES": "64"}, 64),
    ({"NUMBA_CPU_FEATURES": "+avx2,+fma,+avx512f"}, 64), ({"NUMBA_CPU_FEATURES": "+avx2,+fma"}, 32),
    ({"NUMBA_CPU_FEATURES": "+avx2, +avx512f"}, 64), ({"NUMBA_CPU_NAME": "generic"}, 32),
    ({"NUMBA_ENABLE_AVX": "0"}, 32)])
def test_the_vector_width_follows_what_numba_compiles_for(monkeypatch, env, want):
    for name in ("FASTAE_VECTOR_BYTES", "NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME", "NUMBA_ENABLE_AVX"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert packing._vector_bytes() == want


def test_a_bad_vector_width_is_refused(monkeypatch):
    monkeypatch.setenv("FASTAE_VECTOR_BYTES", "48")
    with pytest.raises(ValueError, match="FASTAE_VECTOR_BYTES"):
        packing._vector_bytes()


def test_the_other_vector_width_gives_the_same_results(rng, tmp_path):
    """The packed kernels written for the other machine vector (FASTAE_VECTOR_BYTES: LLVM splits
    or joins the vectors, so both run here), in a fresh process with its own cache: the same
    bits as this process (each output one FMA chain over k in order, whatever the tile)."""
    other = 32 if packing.VECTOR_BYTES == 64 else 64
    cases = [(n, k, m, act) for n, k, m in SHAPES[:5] + [(1, 300, 150), (1, 40, 300)] for act in (0, 1)]
    arrays = {}
    for i, (n, k, m, act) in enumerate(cases):
        arrays[f"x{i}"], arrays[f"W{i}"], arrays[f"b{i}"] = (
            rng.standard_normal(s).astype(np.float32) for s in ((n, k), (m, k), (m,)))
        Wp, got = _packed(arrays[f"W{i}"]), np.empty((n, m), np.float32)
        packed.affine_forward(arrays[f"x{i}"], Wp, arrays[f"b{i}"], act, got)
        arrays[f"want{i}"] = got
    np.savez(tmp_path / "cases.npz", **arrays)
    script = (
        "import sys, numpy as np\n"
        "from fastae.kernels import packed, packing\n"
        f"assert packing.VECTOR_BYTES == {other}\n"
        "d = np.load(sys.argv[1])\n"
        f"for i, act in enumerate({[c[3] for c in cases]}):\n"
        "    W = d[f'W{i}']\n"
        "    Wp = np.empty(packed.packed_size(*W.shape, W.dtype), W.dtype)\n"
        "    packed.pack(W, Wp)\n"
        "    out = np.empty_like(d[f'want{i}'])\n"
        "    packed.affine_forward(d[f'x{i}'], Wp, d[f'b{i}'], act, out)\n"
        "    np.testing.assert_array_equal(out, d[f'want{i}'])\n")
    env = dict(os.environ, FASTAE_VECTOR_BYTES=str(other), NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cases.npz")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("bad", ["x", "b", "out", "Wp"])
def test_shapes_are_checked_before_anything_is_written(rng, bad):
    x, W, b = rng.standard_normal((4, 5)), rng.standard_normal((6, 5)), np.zeros(6)
    Wp, out = _packed(W), np.full((4, 6), 7.0)
    args = dict(x=x, Wp=Wp, b=b, out=out)
    args[bad] = {"x": x[:, :4].copy(), "b": b[:5].copy(), "out": np.full((4, 5), 7.0), "Wp": Wp[:-1].copy()}[bad]
    for kernel in (packed.affine_forward, lambda *a: packed.affine_forward_parallel(*a, 2)):
        with pytest.raises(ValueError, match="shapes"):
            kernel(args["x"], args["Wp"], args["b"], 0, args["out"])
        assert (args["out"] == 7.0).all()


@pytest.mark.parametrize("rows", [1, 5, 64, 65, 300])
def test_chain_inference_equals_the_numpy_backend(rng, rows):
    """transform, decode and reconstruct on the cpu backend (the packed kernels) against the
    numpy backend's engine, which shares no code with them."""
    X = rng.uniform(size=(300, 20))
    kw = dict(hidden=(33, 17), code=5, l1=0.01, epochs=1, batch_size=50, seed=0, dtype="float64")
    cpu = fastae.Autoencoder(**kw).fit(X)
    ref = fastae.Autoencoder(**kw, backend="numpy").fit(X)
    x = X[:rows]
    for method in ("transform", "reconstruct"):
        np.testing.assert_allclose(getattr(cpu, method)(x), getattr(ref, method)(x), rtol=1e-10, atol=1e-12)
    codes = ref.transform(x)
    np.testing.assert_allclose(cpu.decode(codes), ref.decode(codes), rtol=1e-10, atol=1e-12)


def test_inference_of_a_row_is_the_same_in_any_batch_and_thread_count(rng):
    """What a pipeline relies on: transform(X)[i] is transform(X[i:i + 1]) bit for bit, with one
    thread or two (the compiled() function, always one thread, agrees too)."""
    import numba
    from fastae.kernels.threads import pool_threads
    X = rng.uniform(size=(300, 784)).astype(np.float32)
    model = fastae.Autoencoder(hidden=(512, 256), code=32, epochs=1, batch_size=100, seed=0).fit(X)
    whole = model.reconstruct(X)
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            for i in (0, 7, 299):
                np.testing.assert_array_equal(model.reconstruct(X[i:i + 1])[0], whole[i])
            np.testing.assert_array_equal(model.reconstruct(X[5:70]), whole[5:70])
    finally:
        numba.set_num_threads(before)
    f, out = model.compiled("reconstruct"), np.empty_like(whole)
    f(X, out)
    np.testing.assert_array_equal(out, whole)
    assert pool_threads() >= 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_layer_with_no_inputs_gives_its_bias(rng, dtype):
    n, m = 3, 70  # a full panel and a partial one
    b = rng.standard_normal(m).astype(dtype)
    Wp = np.empty(packed.packed_size(m, 0, dtype), dtype)
    junk = [np.full(4096, 1e30, dtype) for _ in range(20)]  # leave garbage where the scratch may go
    del junk
    for act, want in (("linear", b), ("relu", np.maximum(b, 0))):
        out = np.full((n, m), np.nan, dtype)
        packed.affine_forward(np.empty((n, 0), dtype), Wp, b, ACTIVATIONS[act], out)
        np.testing.assert_array_equal(out, np.broadcast_to(want, (n, m)))


PICKLED_SCRIPT = """
import pickle, sys, numpy as np
f, x = pickle.load(open(sys.argv[1], "rb"))
try:
    f(x, np.empty((x.shape[0], 3), x.dtype))
except ValueError as e:
    print("refused:", e)
"""


def test_a_compiled_function_unpickled_under_the_other_layout_refuses_to_run(rng, tmp_path):
    """model.compiled()'s closure holds weights packed for this machine's vectors; unpickled in a
    process that packs for the other width it must not compute with them (same-size layouts
    would give wrong numbers silently)."""
    import pickle
    X = rng.standard_normal((50, 40)).astype(np.float32)
    model = fastae.Autoencoder(hidden=(70,), code=3, epochs=1, seed=0).fit(X)
    with open(tmp_path / "f.pkl", "wb") as f:
        pickle.dump((model.compiled("encode"), X[:4]), f)
    other = 32 if packing.VECTOR_BYTES == 64 else 64
    env = dict(os.environ, FASTAE_VECTOR_BYTES=str(other), NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", PICKLED_SCRIPT, str(tmp_path / "f.pkl")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert "refused: this compiled function's weights are packed for another CPU" in done.stdout, done.stderr[-2000:]
