"""Model benchmarks: training steps against the numpy backend, PyTorch (optional) and their matrix
products alone, and whole epochs on digits. Inference (encode, reconstruct) is in
test_bench_export.py."""
import numba
import numpy as np
import pytest

from conftest import BIG_NET, DIGITS_NET, assert_same, contenders, group
from peers import import_torch, torch_network
import fastae
from fastae.kernels import small_gemm

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


@numba.njit(nogil=True, cache=True)
def _matmuls_tiled(params, layout, xs, ys, deltas, dxs, grads):
    """The same 17 products in `kernels.small_gemm`'s register tiles (the forward transposes W),
    as the training step runs them for a narrow network."""
    scratch = np.empty(params.size, params.dtype)
    for l in range(layout.shape[0]):
        w, out, inp = layout[l, 0], layout[l, 1], layout[l, 2]
        W = params[w:w + out * inp].reshape((out, inp))
        dW = grads[w:w + out * inp].reshape((out, inp))
        small_gemm.nt(xs[l], W, ys[l], scratch)
        small_gemm.tn(deltas[l], xs[l], dW)
        if l > 0:
            small_gemm.nn(deltas[l], W, dxs[l])


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


def _torch_step(torch, model, X):
    """One training step of the same autoencoder in eager PyTorch: nn.Linear layers holding the
    model's weights, the objective as fastae defines it (per-row BCE from the logits summed over
    the features, mean over the rows: BCEWithLogits with reduction="sum" over the batch size),
    torch.optim.Adam with the model's hyper-parameters (fused: PyTorch's fastest CPU Adam).
    Returns step() -> the minibatch's summed objective before the update, as fastae reports it."""
    net = torch_network(torch, model, "reconstruct", logits=True)
    p = model.get_params()
    opt = torch.optim.Adam(net.parameters(), lr=p["lr"], betas=(p["beta_1"], p["beta_2"]), eps=p["epsilon"],
                           fused=True)
    x = torch.from_numpy(X)
    rows = X.shape[0]

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), x, reduction="sum") / rows
        loss.backward()
        opt.step()
        return loss.item() * rows
    return step, net


def _check_torch_step(torch, model, X, config):
    """PyTorch's first two steps against fastae's numpy backend from the same weights and fresh
    optimizer state: the first loss checks the forward pass and the objective, the second (at the
    updated weights) the gradients and the Adam update as a whole; then every updated weight. Adam's
    first update is lr * g / (|g| + epsilon), about lr * sign(g): where g is at rounding level
    (dead units, tiny products) it is decided by rounding, so a few weights in 10^4 may differ."""
    ref = fastae.Autoencoder(**config, batch_size=X.shape[0], epochs=1, seed=0, backend="numpy")
    ref.set_weights(model.get_weights())
    trainer = _stepper(ref)
    index, keys = np.arange(X.shape[0], dtype=np.int64), np.zeros(1, np.uint64)
    want = [_one_step(trainer, X, index, keys)]
    net = ref._fitted.net
    want_w = np.concatenate([a.ravel() for l in range(net.n_layers) for a in net.layer(l, trainer.params)])
    want.append(_one_step(trainer, X, index, keys))
    step, twin = _torch_step(torch, ref, X)
    got = [step()]
    got_w = np.concatenate([t.detach().numpy().ravel() for t in twin.parameters()])
    got.append(step())
    assert_same(tuple(got), tuple(want), rtol=1e-4)
    off = np.abs(got_w - want_w) > 0.01 * ref.get_params()["lr"]
    assert off.mean() < 1e-4, f"{off.sum()} of {off.size} weights differ after one step"


@pytest.mark.parametrize("net,d,rows", [(BIG_NET, 784, 256), (DIGITS_NET, 64, 64)])
@pytest.mark.parametrize("impl", contenders("floor", "torch"))
def test_training_step(benchmark, threads, impl, net, d, rows):
    config = BIG if d == 784 else DIGITS
    name = group(f"AE train step {net} b{rows} bce adam f32", threads)
    if impl == "floor":
        model, _ = _model(config, d, "cpu", rows)
        benchmark.group = name
        benchmark(_matmuls_alone, *_floor_args(model, rows))
        return
    if impl == "torch":
        torch = import_torch(threads)
        model, X = _model(config, d, "numpy", rows)
        _check_torch_step(torch, model, X, config)
        step, _ = _torch_step(torch, model, X)
        benchmark.group = name
        benchmark(step)
        return
    model, X = _model(config, d, impl, rows)
    ref, _ = _model(config, d, "numpy", rows)
    index = np.arange(rows, dtype=np.int64)
    keys = np.zeros(1, np.uint64)
    assert_same(_one_step(_stepper(model), X, index, keys), _one_step(_stepper(ref), X, index, keys), rtol=1e-4)
    benchmark.group = name
    benchmark(_one_step, _stepper(model), X, index, keys)


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
    benchmark.group = group(f"fit 1 epoch digits {name} b64 f32", threads)
    benchmark(lambda: make(impl).fit(digits))
