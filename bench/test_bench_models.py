"""Model benchmarks: training steps against the numpy backend and against their matrix products
alone, inference latency, and whole epochs on digits."""
import numba
import numpy as np
import pytest

from conftest import assert_same, contenders
import fastae

BIG = dict(hidden=(512, 256), code=32, output_activation="sigmoid", loss="bce")
DIGITS = dict(hidden=(32, 16), code=8, output_activation="sigmoid", loss="bce")


def _model(config, d, backend, rows):
    X = np.random.default_rng(0).uniform(size=(rows, d)).astype(np.float32)
    model = fastae.Autoencoder(**config, batch_size=rows, epochs=1, seed=0, backend=backend).fit(X)
    return model, X


def _stepper(model):
    """A Trainer over the model's fitted state (it trains copies: the model is unchanged)."""
    from fastae.training import Trainer
    p = {**model.get_params(), "backend": model._fitted.backend}
    return Trainer(model._fitted, p, commit=lambda state: None)


def _one_step(trainer, X, index, keys):
    """Exactly one minibatch step (gather, forward, loss, backward, Adam) in the engine."""
    totals = np.zeros(1)
    trainer._steps(X, index, keys, totals, 0, 1)
    return totals[0]


@numba.njit(nogil=True, cache=True)
def _matmuls_alone(params, layout, xs, ys, deltas, dxs, grads):
    """The 17 matrix products of one training step of a 6-layer autoencoder, nothing else."""
    for l in range(layout.shape[0]):
        w, out, inp = layout[l, 0], layout[l, 1], layout[l, 2]
        W = params[w:w + out * inp].reshape((out, inp))
        dW = grads[w:w + out * inp].reshape((out, inp))
        np.dot(xs[l], W.T, ys[l])
        np.dot(deltas[l].T, xs[l], dW)
        if l > 0:
            np.dot(deltas[l], W, dxs[l])


def _floor_args(model, rows):
    net, params = model._fitted.net, model._fitted.params
    typed = numba.typed.List
    xs, ys, deltas, dxs = typed(), typed(), typed(), typed()
    for out, inp in ((o, i) for _, o, i, _ in net.layout):
        xs.append(np.ones((rows, inp), np.float32))
        ys.append(np.empty((rows, out), np.float32))
        deltas.append(np.ones((rows, out), np.float32))
        dxs.append(np.empty((rows, inp), np.float32))
    return params, net.layout, xs, ys, deltas, dxs, np.empty_like(params)


@pytest.mark.parametrize("net,d,rows", [("784-512-256-32", 784, 256), ("64-32-16-8", 64, 64)])
@pytest.mark.parametrize("impl", contenders("floor"))
def test_training_step(benchmark, threads, impl, net, d, rows):
    config = BIG if d == 784 else DIGITS
    if impl == "floor":
        model, _ = _model(config, d, "cpu", rows)
        benchmark.group = f"AE train step {net} b{rows} bce adam f32 {threads}thr"
        benchmark(_matmuls_alone, *_floor_args(model, rows))
        return
    model, X = _model(config, d, impl, rows)
    ref, _ = _model(config, d, "numpy", rows)
    index = np.arange(rows, dtype=np.int64)
    keys = np.zeros(1, np.uint64)
    assert_same(_one_step(_stepper(model), X, index, keys), _one_step(_stepper(ref), X, index, keys), rtol=1e-4)
    benchmark.group = f"AE train step {net} b{rows} bce adam f32 {threads}thr"
    benchmark(_one_step, _stepper(model), X, index, keys)


@pytest.mark.parametrize("rows", [1, 16, 256])
@pytest.mark.parametrize("net,d", [("64-32-16-8", 64), ("784-512-256-32", 784)])
@pytest.mark.parametrize("impl", contenders())
def test_transform_latency(benchmark, threads, impl, net, d, rows):
    config = BIG if d == 784 else DIGITS
    model, X = _model(config, d, impl, 64)
    ref, _ = _model(config, d, "numpy", 64)
    x = np.random.default_rng(1).uniform(size=(rows, d)).astype(np.float32)
    assert_same(model.transform(x), ref.transform(x), rtol=1e-4)
    benchmark.group = f"transform {net} encoder {rows} rows f32 {threads}thr"
    benchmark(model.transform, x)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    return (load_digits().data / 16.0).astype(np.float32)


MODELS = {
    "autoencoder": lambda b: fastae.Autoencoder(hidden=(64,), code=16, backend=b, batch_size=64, epochs=1, seed=0),
    "sparse": lambda b: fastae.Autoencoder(hidden=(64,), code=16, l1=0.01, backend=b, batch_size=64, epochs=1, seed=0),
    "denoising": lambda b: fastae.Autoencoder(hidden=(64,), code=16, noise=0.2, backend=b, batch_size=64, epochs=1, seed=0),
    "vae": lambda b: fastae.VAE(hidden=(64,), latent=8, backend=b, batch_size=64, epochs=1, seed=0),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("impl", contenders())
def test_fit_one_epoch_on_digits(benchmark, threads, impl, name, digits):
    make = MODELS[name]
    assert_same(make(impl).fit(digits).history_["loss"][0], make("numpy").fit(digits).history_["loss"][0], rtol=1e-4)
    benchmark.group = f"fit 1 epoch digits {name} b64 f32 {threads}thr"
    benchmark(lambda: make(impl).fit(digits))
