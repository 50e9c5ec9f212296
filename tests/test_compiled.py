"""model.compiled(part): the Numba function and the C ABI cfunc against transform / decode /
reconstruct, from Python, from an @njit pipeline, from threads and through ctypes; private weights;
the cache; bad arguments."""
import ctypes

import numba
import numpy as np
import pytest

import fastae
from conftest import run_in_threads
from fastae import compiled as compiled_module

PARTS = ["encode", "decode", "reconstruct"]
DTYPES = ["float32", "float64"]
MODELS = {
    "ae": lambda dt: fastae.Autoencoder(hidden=(32, 16), code=8, activation="tanh", output_activation="sigmoid",
                                        loss="bce", epochs=2, seed=0, dtype=dt),
    "sparse": lambda dt: fastae.Autoencoder(hidden=(32,), code=8, l1=0.02, epochs=2, seed=0, dtype=dt),
    "sparse_tanh": lambda dt: fastae.Autoencoder(hidden=(), code=8, l1=0.02, code_activation="tanh", epochs=2,
                                                 seed=0, dtype=dt),
    "vae": lambda dt: fastae.VAE(hidden=(32,), latent=4, epochs=2, seed=0, dtype=dt),
    "pca": lambda dt: fastae.PCA(8, dtype=dt),
}
TOL = {"float32": dict(rtol=1e-6, atol=1e-6), "float64": dict(rtol=1e-13, atol=1e-13)}
CTYPE = {"float32": ctypes.c_float, "float64": ctypes.c_double}


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    return load_digits().data / 16.0


@pytest.fixture(scope="module")
def fitted(digits):
    cache = {}

    def get(name, dtype):
        if (name, dtype) not in cache:
            cache[name, dtype] = MODELS[name](dtype).fit(digits.astype(dtype))
        return cache[name, dtype]
    return get


def reference(model, part):
    return {"encode": model.transform, "decode": model.inverse_transform, "reconstruct": model.reconstruct}[part]


def inputs(model, part, digits, dtype, rows=None):
    x = digits.astype(dtype)
    if part == "decode":
        x = np.ascontiguousarray(model.transform(x))
    return x if rows is None else np.ascontiguousarray(x[:rows])


def c_call(cfunc, dtype):
    P = ctypes.POINTER(CTYPE[dtype])
    proto = ctypes.CFUNCTYPE(ctypes.c_int32, P, ctypes.c_int64, P)(cfunc.address)

    def call(x, out):
        return proto(x.ctypes.data_as(P), x.shape[0], out.ctypes.data_as(P))
    return call


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("name", list(MODELS))
def test_equals_the_model(name, part, dtype, fitted, digits):
    model = fitted(name, dtype)
    f = model.compiled(part)
    for rows in (1, 7, None):
        x = inputs(model, part, digits, dtype, rows)
        want = reference(model, part)(x)
        out = np.full_like(want, np.nan)
        assert f(x, out) is None
        np.testing.assert_allclose(out, want, **TOL[dtype])
        readonly = x.copy()
        readonly.flags.writeable = False
        out2 = np.empty_like(want)
        f(readonly, out2)
        np.testing.assert_array_equal(out2, out)
    if name == "vae" and part == "encode":
        np.testing.assert_allclose(out, model.encode(x)[0], **TOL[dtype])  # mu


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,part", [(n, "encode") for n in MODELS] + [("sparse", "reconstruct"),
                                                                         ("vae", "decode"), ("pca", "decode")])
def test_c_abi_through_ctypes(name, part, dtype, fitted, digits):
    model = fitted(name, dtype)
    cfunc = model.compiled(part, c_abi=True)
    call = c_call(cfunc, dtype)
    for rows in (1, 5, None):
        x = inputs(model, part, digits, dtype, rows)
        want = reference(model, part)(x)
        out = np.full_like(want, np.nan)
        assert call(x, out) == 0
        np.testing.assert_allclose(out, want, **TOL[dtype])
    # numba's own ctypes wrapper has the same signature
    assert cfunc.ctypes.restype is ctypes.c_int32 or cfunc.ctypes.restype is ctypes.c_int
    assert cfunc.ctypes(x.ctypes.data_as(ctypes.POINTER(CTYPE[dtype])), x.shape[0],
                        out.ctypes.data_as(ctypes.POINTER(CTYPE[dtype]))) == 0


def test_chunks_of_many_rows(fitted):
    model = fitted("sparse", "float32")
    x = np.random.default_rng(0).uniform(size=(10_000, 64)).astype(np.float32)  # more than one CHUNK
    out = np.empty((10_000, 8), np.float32)
    model.compiled()(x, out)
    np.testing.assert_allclose(out, model.transform(x), **TOL["float32"])
    out2 = np.empty_like(out)
    assert c_call(model.compiled(c_abi=True), "float32")(x, out2) == 0
    np.testing.assert_array_equal(out2, out)
    empty = np.empty((0, 8), np.float32)
    model.compiled()(x[:0], empty)
    assert c_call(model.compiled(c_abi=True), "float32")(x[:0], empty) == 0


@numba.njit(nogil=True)
def _pipeline(X, encode, width):
    """A user's compiled pipeline: encode rows one batch at a time and sum each code."""
    codes = np.empty((X.shape[0], width), X.dtype)
    for start in range(0, X.shape[0], 100):
        stop = min(start + 100, X.shape[0])
        encode(X[start:stop], codes[start:stop])
    total = np.zeros(X.shape[0])
    for i in range(X.shape[0]):
        for j in range(width):
            total[i] += codes[i, j]
    return codes, total


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sparse", "vae", "pca"])
def test_called_from_an_njit_pipeline(name, dtype, fitted, digits):
    model = fitted(name, dtype)
    x = digits.astype(dtype)
    codes, total = _pipeline(x, model.compiled("encode"), 8 if name != "vae" else 4)
    want = model.transform(x)
    np.testing.assert_allclose(codes, want, **TOL[dtype])
    np.testing.assert_allclose(total, codes.astype(np.float64).sum(axis=1), rtol=1e-12, atol=1e-12)


def test_njit_pipeline_reports_bad_shapes(fitted, digits):
    f = fitted("ae", "float64").compiled("encode")

    @numba.njit
    def wrong(x):
        out = np.empty((x.shape[0], 3))
        f(x, out)
        return out
    with pytest.raises(ValueError, match="out has the wrong shape"):
        wrong(digits)


@pytest.mark.parametrize("c_abi", [False, True])
@pytest.mark.parametrize("name", ["sparse", "pca"])
def test_threads(name, c_abi, fitted, digits):
    model = fitted(name, "float32")
    f = model.compiled("reconstruct", c_abi=c_abi)
    call = c_call(f, "float32") if c_abi else f
    rng = np.random.default_rng(0)
    batches = [rng.uniform(size=(int(rng.integers(1, 300)), 64)).astype(np.float32) for _ in range(16)]
    wants = [model.reconstruct(b) for b in batches]

    def work(k):
        for _ in range(20):
            i = (k + _) % len(batches)
            out = np.empty_like(wants[i])
            result = call(batches[i], out)
            assert result in (None, 0)
            np.testing.assert_allclose(out, wants[i], **TOL["float32"])
    errors = run_in_threads(work)
    assert not errors, errors[0]


@pytest.mark.parametrize("name", ["sparse", "vae", "pca"])
def test_private_weights_and_cache(name, digits):
    model = MODELS[name]("float32").fit(digits)
    x = digits.astype(np.float32)
    f, g = model.compiled("reconstruct"), model.compiled("reconstruct", c_abi=True)
    assert model.compiled("reconstruct") is f and model.compiled("reconstruct", c_abi=True) is g  # cached
    before = model.reconstruct(x)
    model.set_params(dtype="float64")  # parameters are not read
    assert model.compiled("reconstruct") is f
    model.set_params(dtype="float32")
    model.fit(x[::-1] * 0.5 if name == "pca" else x[::-1])
    if name != "pca":
        model.set_params(warm_start=True)
        model.fit(x)
    after = model.reconstruct(x)
    assert not np.allclose(after, before)
    for fn, call in ((f, f), (g, c_call(g, "float32"))):
        out = np.empty_like(before)
        call(x, out)
        np.testing.assert_allclose(out, before, **TOL["float32"])  # the weights handed out
    h = model.compiled("reconstruct")
    assert h is not f
    out = np.empty_like(before)
    h(x, out)
    np.testing.assert_allclose(out, after, **TOL["float32"])


def test_cached_function_is_released_with_its_state(digits):
    import gc
    model = MODELS["pca"]("float32").fit(digits)
    model.compiled()
    key = id(model._fitted)
    assert key in compiled_module._cache
    model.fit(digits[:100])
    gc.collect()
    assert key not in compiled_module._cache or compiled_module._cache[key][0]() is not None


@pytest.mark.parametrize("dtype", DTYPES)
def test_bad_arguments_njit(dtype, fitted, digits):
    f = fitted("sparse", dtype).compiled("encode")
    x = digits.astype(dtype)
    with pytest.raises(ValueError, match="columns"):
        f(np.ascontiguousarray(x[:, :10]), np.empty((len(x), 8), dtype))
    with pytest.raises(ValueError, match="out has the wrong shape"):
        f(x, np.empty((len(x) - 1, 8), dtype))
    with pytest.raises(ValueError, match="out has the wrong shape"):
        f(x, np.empty((len(x), 9), dtype))
    other = "float64" if dtype == "float32" else "float32"
    with pytest.raises(TypeError):
        f(x.astype(other), np.empty((len(x), 8), dtype))  # the model's dtype only
    with pytest.raises(TypeError):
        f(np.asfortranarray(x), np.empty((len(x), 8), dtype))  # C-contiguous only
    with pytest.raises(TypeError):
        f(x[0], np.empty((1, 8), dtype))  # 2-D only


@pytest.mark.parametrize("dtype", DTYPES)
def test_bad_arguments_c_abi(dtype, fitted, digits):
    cfunc = fitted("vae", dtype).compiled("encode", c_abi=True)
    P = ctypes.POINTER(CTYPE[dtype])
    proto = ctypes.CFUNCTYPE(ctypes.c_int32, P, ctypes.c_int64, P)(cfunc.address)
    x = digits.astype(dtype)
    out = np.zeros((len(x), 4), dtype)
    assert proto(x.ctypes.data_as(P), -1, out.ctypes.data_as(P)) != 0
    assert proto(None, len(x), out.ctypes.data_as(P)) != 0
    assert proto(x.ctypes.data_as(P), len(x), None) != 0
    assert proto(None, 0, None) != 0
    assert not out.any()  # nothing written on an error
    assert proto(x.ctypes.data_as(P), 0, out.ctypes.data_as(P)) == 0


@pytest.mark.parametrize("name", ["sparse", "pca"])
def test_overlapping_x_and_out_are_refused(name, fitted):
    """Rows go in chunks, so a result written over input rows not read yet would corrupt later
    rows: the function refuses overlap (ValueError; the C function returns 3) and writes nothing."""
    model = fitted(name, "float32")
    d = model.n_features_in_
    width = model.transform(np.zeros((1, d), np.float32)).shape[1]
    n = 9000  # more than two chunks of 4096 rows
    buf = np.random.default_rng(0).uniform(size=n * d + width).astype(np.float32)
    x = buf[:n * d].reshape(n, d)
    out = buf[width:width + n * width].reshape(n, width)  # starts inside x
    before = buf.copy()
    with pytest.raises(ValueError, match="overlap"):
        model.compiled()(x, out)
    assert c_call(model.compiled(c_abi=True), "float32")(x, out) == 3
    np.testing.assert_array_equal(buf, before)


def test_bad_part_and_unfitted(fitted):
    for part in ["encoder", None, "", 3]:
        with pytest.raises(ValueError, match="part") as info:
            fitted("ae", "float32").compiled(part)
        assert repr(part) in str(info.value)
    with pytest.raises(TypeError, match="c_abi"):
        fitted("ae", "float32").compiled("encode", c_abi="yes")
    for model in (fastae.Autoencoder(), fastae.VAE(), fastae.PCA(3)):
        with pytest.raises(fastae.NotFittedError):
            model.compiled()
        with pytest.raises(fastae.NotFittedError):
            model.compiled("decode", c_abi=True)


def test_as_fast_as_transform(fitted, digits):
    """Not a benchmark (bench/test_bench_export.py is): the compiled function must not be slower
    than transform's fastest path (out=) on the same rows, with generous slack for noisy machines."""
    import time
    model = fitted("ae", "float32")
    f = model.compiled()
    x = digits[:16].astype(np.float32)
    out = np.empty((16, 8), np.float32)

    def best(fn):
        times = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(200):
                fn()
            times.append(time.perf_counter() - start)
        return min(times)
    f(x, out)
    model.transform(x, out=out)
    assert best(lambda: f(x, out)) < 1.5 * best(lambda: model.transform(x, out=out))
