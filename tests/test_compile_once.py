"""Compile once: after the first call, no input flavour a user can pass (read-only, memory-mapped,
F-ordered, strided, big-endian, another dtype, a list, an unaligned buffer) makes Numba compile
another specialization of any kernel or engine pass."""
import numba
import numpy as np
import pytest

import fastae
from fastae import compiled as chains
from fastae import engine
from fastae.kernels import cpu, packed


def _signatures():
    """Every compiled specialization of every cpu kernel, packed inference kernel, inference
    chain and engine function, by name."""
    found = {}
    compiled = engine.for_backend("cpu")
    spaces = [vars(cpu), vars(packed), vars(chains), compiled.ae_pass.py_func.__globals__]
    for space in spaces:
        for name, obj in space.items():
            if isinstance(obj, numba.core.registry.CPUDispatcher):
                found[(id(space), name)] = len(obj.signatures)
    return found


def _flavours(X, tmp_path):
    """The same numbers as X (float32, C-contiguous) in every other form a user may hand over."""
    frozen = X.copy()
    frozen.setflags(write=False)
    np.save(tmp_path / "x.npy", X)
    raw = np.zeros(X.nbytes + 1, np.uint8)
    unaligned = np.frombuffer(raw.data, dtype=np.float32, count=X.size, offset=1).reshape(X.shape)
    unaligned[...] = X
    wide = np.zeros((X.shape[0], 2 * X.shape[1]), np.float32)
    wide[:, ::2] = X
    return {"read-only": frozen, "memory-mapped": np.load(tmp_path / "x.npy", mmap_mode="r"),
            "F-ordered": np.asfortranarray(X), "strided": wide[:, ::2], "big-endian": X.astype(">f4"),
            "float64": X.astype(np.float64), "float16": X.astype(np.float16), "list": X.tolist(),
            "unaligned": unaligned, "int": (X > 0.5).astype(np.int64)}


@pytest.fixture(scope="module")
def models():
    fastae.warmup(dtypes=("float32",))  # the compiled engine, in this process
    X = np.random.default_rng(0).uniform(size=(20, 5)).astype(np.float32)
    ae = fastae.Autoencoder(hidden=(4,), code=2, l1=0.01, epochs=1, seed=0).fit(X)
    vae = fastae.VAE(hidden=(4,), latent=2, epochs=1, seed=0).fit(X)  # a sigmoid output layer
    return X, ae, vae


def _use(X, ae, vae, kernels=True):
    ae.transform(X), ae.score_samples(X), ae.reconstruct(X), ae.partial_fit(X), ae.value_and_grad(X)
    vae.encode(X), vae.transform(X), vae.elbo(X, seed=1), vae.partial_fit(X)
    ae.decode(ae.transform(X)), vae.decode(vae.transform(X))
    if not kernels:  # the kernels take float64 (and integer) data as float64: another dtype
        return
    W, b = ae.get_weights()[0]
    fastae.kernels.affine_forward(X, W, b, "relu")
    fastae.kernels.l1_prox(X, 0.1)
    fastae.kernels.mse_loss(X, X)


def test_no_input_flavour_triggers_a_compile(models, tmp_path):
    X, ae, vae = models
    _use(X, ae, vae)  # the first calls (compiled already by warmup, or loaded from the cache)
    before = _signatures()
    for name, flavour in _flavours(X, tmp_path).items():
        _use(flavour, ae, vae, kernels=name not in ("float64", "list", "int"))
        after = _signatures()
        grew = {key[1]: (before[key], after[key]) for key in after if after[key] != before.get(key)}
        assert not grew, f"{name} input compiled new specializations: {grew}"


def test_flavours_give_the_same_results(models, tmp_path):
    X, ae, _ = models
    want = ae.transform(X)
    for name, flavour in _flavours(X, tmp_path).items():
        if name not in ("int", "float16"):  # the same numbers, not rounded to another precision
            np.testing.assert_array_equal(ae.transform(flavour), want, err_msg=name)
