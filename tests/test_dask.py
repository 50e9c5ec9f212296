"""Dask arrays in and out: lazy inference equal to the in-memory results, on a real
dask.distributed LocalCluster (2 worker processes), the model shipped once, and out-of-core
training (block order from the model's random stream, per-block data checks, the Trainer's
guarantees, bounded memory)."""
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import fastae  # noqa: E402
from fastae import dask_support  # noqa: E402


@pytest.fixture(scope="module")
def client():
    fastae.warmup(dtypes=("float32",))  # workers load the compiled kernels from the disk cache
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       dashboard_address=None, memory_limit="2GiB", silence_logs=50)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


RNG = np.random.default_rng(0)
X = RNG.random((9000, 12)).astype(np.float32)      # crosses the 4096-row scoring chunks
CHUNKS = (2500, 12)


def _models():
    common = dict(epochs=2, seed=3, batch_size=64)
    return {
        "ae": fastae.Autoencoder(hidden=(8,), code=4, **common).fit(X),
        "sparse": fastae.Autoencoder(hidden=(8,), code=4, l1=0.01, loss="bce", output_activation="sigmoid",
                                     **common).fit(X),
        "vae": fastae.VAE(hidden=(8,), latent=3, **common).fit(X),
        "vae_s3": fastae.VAE(hidden=(8,), latent=3, n_samples=3, likelihood="gaussian", **common).fit(X),
        "pca": fastae.PCA(4).fit(X),
    }


MODELS = _models()


def _boom(block):
    raise RuntimeError("a block was computed")


def _poisoned():
    """A dask array whose every block raises when computed."""
    return da.from_array(X, chunks=CHUNKS).map_blocks(_boom, meta=np.empty((0, 0), np.float32))


def _calls(name, model, Xd, poison=False):
    """(method, in-memory result, dask result) for every dask-aware method of `model`."""
    codes = model.transform(X)
    codes_d = da.from_array(codes, chunks=(1700, codes.shape[1]))
    if poison:
        codes_d = codes_d.map_blocks(_boom, meta=np.empty((0, 0), np.float32))
    out = [("transform", codes, model.transform(Xd)),
           ("inverse_transform", model.inverse_transform(codes), model.inverse_transform(codes_d)),
           ("reconstruct", model.reconstruct(X), model.reconstruct(Xd)),
           ("score_samples", model.score_samples(X), model.score_samples(Xd))]
    if name != "pca":
        out.append(("decode", model.decode(codes), model.decode(codes_d)))
        enc, enc_d = model.encode(X), model.encode(Xd)
        if isinstance(enc, tuple):
            out += [("encode.mu", enc[0], enc_d[0]), ("encode.logvar", enc[1], enc_d[1])]
        else:
            out.append(("encode", enc, enc_d))
    if name.startswith("vae"):
        eps = RNG.standard_normal((2, X.shape[0], 3)).astype(np.float32)
        out += [("elbo(seed)", model.elbo(X, seed=11), model.elbo(Xd, seed=11)),
                ("elbo(eps)", model.elbo(X, eps=eps), model.elbo(Xd, eps=da.from_array(eps, chunks=(2, 3000, 3)))),
                ("elbo(eps[0])", model.elbo(X, eps=eps[0]), model.elbo(Xd, eps=eps[0]))]
    return out


def test_import_fastae_does_not_import_dask():
    code = "import sys, fastae; assert not {'dask', 'distributed'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", MODELS)
def test_inference_is_lazy(name):
    model = MODELS[name]
    for method, _, result in _calls(name, model, _poisoned(), poison=True):  # nothing runs before compute
        assert isinstance(result, da.Array), method
        with pytest.raises(RuntimeError, match="a block was computed"):
            result.compute(scheduler="sync")


@pytest.mark.parametrize("name", MODELS)
def test_inference_equals_in_memory_on_the_cluster(client, name):
    model = MODELS[name]
    Xd = da.from_array(X, chunks=(2500, 5))  # column chunks are merged into one
    calls = _calls(name, model, Xd)
    computed = client.compute([r for _, _, r in calls], sync=True)
    for (method, expected, result), value in zip(calls, computed):
        assert result.chunks[0] == Xd.chunks[0] or method in ("inverse_transform", "decode"), method
        assert result.ndim == 1 or result.numblocks[1] == 1, method
        assert value.shape == expected.shape and value.dtype == expected.dtype, method
        np.testing.assert_allclose(value, expected, rtol=2e-5, atol=2e-5, err_msg=f"{name}.{method}")
    assert model.score(Xd) == pytest.approx(model.score(X), rel=1e-5)


def test_vae_monte_carlo_scores_do_not_depend_on_chunks():
    model = MODELS["vae_s3"]
    expected = model.score_samples(X)
    for chunks in (9000, 4096, 1000, 4097, 333):
        got = model.score_samples(da.from_array(X, chunks=(chunks, 12))).compute(scheduler="sync")
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=str(chunks))


def test_the_model_travels_once(client):
    model = MODELS["vae"]
    Xd = da.from_array(X, chunks=(500, 12))  # 18 blocks
    graph = dict(model.reconstruct(Xd).__dask_graph__())
    assert len([k for k in graph if str(k).startswith("fastae-model-")]) == 1  # transform and decode share it
    client.run(lambda: setattr(dask_support, "LOADS", 0))
    result = model.score_samples(Xd).persist()
    distributed.wait(result)
    loads = client.run(lambda: dask_support.LOADS)
    assert 1 <= sum(loads.values()) <= 2 * len(loads), loads  # not once per block (18)
    np.testing.assert_allclose(result.compute(), model.score_samples(X), rtol=1e-5, atol=1e-5)


def test_inference_errors_name_the_block(client):
    bad = X.copy()
    bad[5100, 3] = np.nan
    result = MODELS["ae"].transform(da.from_array(bad, chunks=CHUNKS))
    with pytest.raises(ValueError, match=r"X block 2 \(rows 5000 to 7499\) contains NaN"):
        result.compute()
    with pytest.raises(ValueError, match=r"X block \d \(rows .*outside \[0, 1\]"):
        MODELS["vae"].score_samples(da.from_array(X * 2, chunks=CHUNKS)).compute(scheduler="sync")
    with pytest.raises(ValueError, match="expecting 12 features"):
        MODELS["ae"].transform(da.zeros((10, 5), chunks=5))


# ---- training

def _ae(**kw):
    return fastae.Autoencoder(hidden=(8,), code=4, batch_size=64, seed=0, **kw)


def test_one_block_trains_exactly_as_in_memory():
    small = X[:1000]
    a = _ae(epochs=2).fit(small)
    b = _ae(epochs=2).fit(da.from_array(small, chunks=-1))
    for (Wa, ba), (Wb, bb) in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)
    assert a.history_ == b.history_ and a.t_ == b.t_


def test_fit_is_repeatable_and_partial_fit_continues_the_stream(client):
    Xd = da.from_array(X, chunks=CHUNKS)
    a, b = _ae(epochs=2).fit(Xd), _ae(epochs=2).fit(Xd)
    np.testing.assert_array_equal(a.get_weights()[0][0], b.get_weights()[0][0])
    assert a.t_ == 2 * sum(-(-c // 64) for c in Xd.chunks[0]) and a.n_iter_ == 2
    steps = _ae(epochs=1).fit(Xd)
    steps.partial_fit(Xd)
    again = _ae(epochs=1).fit(Xd).partial_fit(Xd)
    np.testing.assert_array_equal(steps.get_weights()[0][0], again.get_weights()[0][0])
    assert steps.n_iter_ == 2 and len(steps.history_["loss"]) == 2
    vae = fastae.VAE(hidden=(8,), latent=3, epochs=2, seed=0, batch_size=64).fit(Xd)
    assert np.isfinite(vae.score(X))


def test_block_order_is_drawn_from_the_model_stream():
    seen = []

    class Recording(dask_support._Blocks):
        def iterate(self, ids):
            seen.append(list(ids))
            return super().iterate(ids)

    original = dask_support._Blocks
    dask_support._Blocks = Recording
    try:
        _ae(epochs=3).fit(da.from_array(X, chunks=(1000, 12)))
        _ae(epochs=1, shuffle=False).fit(da.from_array(X, chunks=(1000, 12)))
    finally:
        dask_support._Blocks = original
    assert all(sorted(ids) == list(range(9)) for ids in seen)  # every block once per epoch
    assert seen[0] != seen[1] != seen[2] and seen[3] == list(range(9))


def test_validation_and_early_stopping(client):
    Xd = da.from_array(X, chunks=CHUNKS)
    Xv = da.from_array(X[:3000], chunks=1000)
    model = _ae(epochs=2).fit(Xd, X_val=Xv)
    assert len(model.history_["val_loss"]) == 2
    assert model.history_["val_loss"][-1] == pytest.approx(-model.score(X[:3000]), rel=1e-5)
    stopped = _ae(epochs=30, early_stopping=True, n_iter_no_change=1, tol=10.0, validation_fraction=0.25).fit(Xd)
    assert stopped.n_iter_ < 30 and len(stopped.history_["val_loss"]) == stopped.n_iter_  # whole blocks held out
    assert stopped.t_ < stopped.n_iter_ * sum(-(-c // 64) for c in Xd.chunks[0])
    vae = fastae.VAE(hidden=(8,), latent=3, epochs=1, seed=0, batch_size=64).fit(Xd, X_val=X[:500])
    assert len(vae.history_["val_loss"]) == 1
    with pytest.raises(ValueError, match="at least 2 row blocks"):
        _ae(early_stopping=True).fit(da.from_array(X, chunks=-1))


def test_bad_blocks_name_the_block_and_leave_the_model():
    model = _ae(epochs=1).fit(X[:500])
    before = model.get_weights()[0][0]
    bad = X.copy()
    bad[7600] = np.inf
    with pytest.raises(ValueError, match=r"X block 3 \(rows 7500 to 8999\) contains NaN or infinity"):
        model.set_params(epochs=2).fit(da.from_array(bad, chunks=CHUNKS))
    np.testing.assert_array_equal(model.get_weights()[0][0], before)
    assert model.n_iter_ == 1
    with pytest.raises(ValueError, match="block .* outside \\[0, 1\\].*bernoulli"):
        fastae.VAE(hidden=(8,), latent=3, epochs=1).fit(da.from_array(X - 0.5, chunks=CHUNKS))
    with pytest.raises(ValueError, match="complex"):
        _ae().fit(da.zeros((10, 3), dtype=complex))


@pytest.mark.parametrize("how", ["worker error", "ctrl-c"])
def test_a_failed_epoch_keeps_the_last_committed_one(tmp_path, monkeypatch, how):
    flag = tmp_path / "fail"

    def block(x):  # runs on a worker: a block that cannot be read any more
        if flag.exists():
            raise OSError("the disk went away")
        return x

    Xd = da.from_array(X, chunks=CHUNKS)
    if how == "worker error":
        Xd, error = Xd.map_blocks(block, meta=np.empty((0, 0), np.float32)), OSError
    else:
        checked = dask_support.checked_block

        def interrupted(x, *args):  # Ctrl-C in this process while a block arrives
            if flag.exists():
                raise KeyboardInterrupt
            return checked(x, *args)
        monkeypatch.setattr(dask_support, "checked_block", interrupted)
        error = KeyboardInterrupt

    def after_epoch(model, epoch, logs):
        flag.touch()

    model = _ae(epochs=3, callback=after_epoch)
    with pytest.raises(error):
        model.fit(Xd)
    flag.unlink()
    one = _ae(epochs=1).fit(da.from_array(X, chunks=CHUNKS))
    assert model.n_iter_ == 1 and model.t_ == one.t_ and model.history_ == one.history_
    np.testing.assert_array_equal(model.get_weights()[0][0], one.get_weights()[0][0])
    # the optimizer moments and the random stream were kept too: continuing gives the
    # uninterrupted model
    model.set_params(callback=None).partial_fit(da.from_array(X, chunks=CHUNKS))
    two = _ae(epochs=2).fit(da.from_array(X, chunks=CHUNKS))
    np.testing.assert_array_equal(model.get_weights()[0][0], two.get_weights()[0][0])


def test_training_memory_stays_near_a_few_blocks(client):
    """Arrays of 6 and 18 blocks of 10 MB generated on the workers: the fitting process's traced
    allocations peak at a few blocks (about 3.2 on a quiet machine), the same for the array three
    times the size."""
    rows, cols = 50_000, 50
    block_bytes = rows * cols * 4
    model = fastae.Autoencoder(hidden=(8,), code=4, batch_size=1024, epochs=1, seed=0)
    peaks = []
    for blocks in (6, 18):
        Xd = da.random.default_rng(0).random((rows * blocks, cols), chunks=(rows, cols), dtype=np.float32)
        model.fit(Xd[:1000])  # compile and settle before measuring
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            model.fit(Xd)
            peaks.append(tracemalloc.get_traced_memory()[1] - base)
        finally:
            tracemalloc.stop()
        assert model.n_iter_ == 1 and np.isfinite(model.history_["loss"][0])
        print(f"array {rows * blocks * cols * 4 / 2**20:.0f} MiB in {blocks} blocks of "
              f"{block_bytes / 2**20:.0f} MiB: peak traced {peaks[-1] / 2**20:.1f} MiB "
              f"({peaks[-1] / block_bytes:.2f} blocks)")
    # the block trained on, the next one and one being received, plus transient copies while a
    # block is deserialized on a loaded machine: a few blocks, and not more for a larger array
    assert max(peaks) < 7 * block_bytes
    assert peaks[1] < peaks[0] + 1.5 * block_bytes