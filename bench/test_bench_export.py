"""Inference: encode and reconstruct through every way fastae offers, beside its peers.

One group per part, net, row count and thread count, float32. Contenders:

- `numpy`: the model on the numpy backend (`transform` / `reconstruct`), the baseline;
- `cpu`: `transform(x)` / `reconstruct(x)` on the cpu backend (fresh results); `cuda` likewise
  when a GPU is usable;
- `cpu_out`: the same with preallocated results, `transform(x, out=)` / `reconstruct(x, out=)`;
- `compiled`: the function `model.compiled(part)` returns, called from Python with a
  preallocated result;
- peers (skipped when not installed): `onnxruntime`, a session on the file `model.to_onnx(path,
  part=part)` writes; `torch`, the same layers in eager PyTorch under `torch.inference_mode()`.

The digits net (64-32-16-8) and the 784-512-256-32 encoder at 1, 16 and 256 rows (and with tanh
in place of ReLU at 256 rows); the whole autoencoders (reconstruct) at 1, 16 and 256 rows (784)
and 1 and 16 rows (digits).
"""
import numpy as np
import pytest

from conftest import BIG_NET, DIGITS_NET, assert_same, contenders, group
from peers import import_torch, onnx_session, torch_inference
import fastae

BIG = dict(hidden=(512, 256), code=32, output_activation="sigmoid", loss="bce")
DIGITS = dict(hidden=(32, 16), code=8, output_activation="sigmoid", loss="bce")
IMPLS = contenders("cpu_out", "compiled", "onnxruntime", "torch")

_models = {}


def _model(d, backend="cpu", activation="relu"):
    """One fitted model per input width d (and hidden activation) for the whole file (compiled()
    is cached on its fitted state); the other backends' models hold the very same weights."""
    config = dict(BIG if d == 784 else DIGITS, activation=activation)
    if (d, "cpu", activation) not in _models:
        X = np.random.default_rng(0).uniform(size=(64, d)).astype(np.float32)
        _models[d, "cpu", activation] = fastae.Autoencoder(**config, batch_size=64, epochs=1, seed=0,
                                                           backend="cpu").fit(X)
    if (d, backend, activation) not in _models:
        _models[d, backend, activation] = fastae.Autoencoder(**config, backend=backend).set_weights(
            _models[d, "cpu", activation].get_weights())
    return _models[d, backend, activation]


def _contender(impl, part, threads, tmp_path, x, activation="relu"):
    """f(rows) -> result, for one contender and part, built outside the timing."""
    d = x.shape[1]
    model = _model(d, "cpu", activation)
    if impl in ("numpy", "cpu", "cuda"):
        other = _model(d, impl, activation)
        return other.transform if part == "encode" else other.reconstruct
    if impl == "cpu_out":
        code = np.empty_like(model.transform(x))
        if part == "encode":
            return lambda rows: model.transform(rows, out=code)
        rec = np.empty_like(x)
        return lambda rows: model.reconstruct(rows, out=rec)
    if impl == "compiled":
        f = model.compiled(part)
        out = np.empty_like(model.transform(x) if part == "encode" else model.reconstruct(x))

        def run(rows):
            f(rows, out)
            return out
        return run
    if impl == "onnxruntime":
        session = onnx_session(model, part, threads, tmp_path)
        return lambda rows: session.run(None, {"input": rows})[0]
    if impl == "torch":
        return torch_inference(import_torch(threads), model, part)
    raise ValueError(impl)


def _inference(benchmark, threads, impl, part, net, rows, tmp_path, activation="relu"):
    d = int(net.split("-")[0])
    x = np.random.default_rng(1).uniform(size=(rows, d)).astype(np.float32)
    f = _contender(impl, part, threads, tmp_path, x, activation)
    ref = _model(d, "numpy", activation)
    want = ref.transform(x) if part == "encode" else ref.reconstruct(x)
    assert_same(np.asarray(f(x)), want, rtol=1e-4)
    benchmark.group = group(f"{part} {net}{'' if activation == 'relu' else ' ' + activation} {rows} rows f32",
                            threads)
    benchmark(f, x)


@pytest.mark.parametrize("rows", [1, 16, 256])
@pytest.mark.parametrize("net", ["64-32-16-8", "784-512-256-32"])
@pytest.mark.parametrize("impl", IMPLS)
def test_encode(benchmark, threads, impl, net, rows, tmp_path):
    _inference(benchmark, threads, impl, "encode", net, rows, tmp_path)


@pytest.mark.parametrize("net,rows", [(BIG_NET, 1), (BIG_NET, 16), (BIG_NET, 256), (DIGITS_NET, 1), (DIGITS_NET, 16)])
@pytest.mark.parametrize("impl", IMPLS)
def test_reconstruct(benchmark, threads, impl, net, rows, tmp_path):
    _inference(benchmark, threads, impl, "reconstruct", net, rows, tmp_path)


@pytest.mark.parametrize("impl", IMPLS)
def test_encode_tanh(benchmark, threads, impl, tmp_path):
    """The 784 encoder with tanh hidden layers (a ReLU code), 256 rows: what the activation costs."""
    _inference(benchmark, threads, impl, "encode", "784-512-256-32", 256, tmp_path, activation="tanh")
