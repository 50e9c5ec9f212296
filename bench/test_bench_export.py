"""Encoder latency through each way out of Python: `transform` (its fastest path, `out=`), the
function from `model.compiled()` (called from Python with a preallocated result), and ONNX Runtime
running the file from `model.to_onnx()` (a session with intra_op_num_threads = the thread count).
The digits net (64-32-16-8) and the 784-512-256-32 encoder at 1, 16 and 256 rows, float32."""
import numpy as np
import pytest

from conftest import assert_same
import fastae

BIG = dict(hidden=(512, 256), code=32, output_activation="sigmoid", loss="bce")
DIGITS = dict(hidden=(32, 16), code=8, output_activation="sigmoid", loss="bce")
IMPLS = ["transform", "compiled", "onnxruntime"]

_models = {}


def _model(net):
    """One fitted cpu model per net for the whole file (compiled() is cached on its fitted state)."""
    if net not in _models:
        config, d = (BIG, 784) if net.startswith("784") else (DIGITS, 64)
        X = np.random.default_rng(0).uniform(size=(64, d)).astype(np.float32)
        _models[net] = fastae.Autoencoder(**config, batch_size=64, epochs=1, seed=0, backend="cpu").fit(X)
    return _models[net]


@pytest.mark.parametrize("rows", [1, 16, 256])
@pytest.mark.parametrize("net", ["64-32-16-8", "784-512-256-32"])
@pytest.mark.parametrize("impl", IMPLS)
def test_encoder_latency(benchmark, threads, impl, net, rows, tmp_path):
    model = _model(net)
    d = model.n_features_in_
    x = np.random.default_rng(1).uniform(size=(rows, d)).astype(np.float32)
    want = model.transform(x)
    out = np.empty_like(want)
    benchmark.group = f"encoder {net} {rows} rows f32 {threads}thr: transform / compiled / onnxruntime"
    if impl == "transform":
        assert_same(model.transform(x, out=out), want, rtol=1e-6)
        benchmark(model.transform, x, out=out)
    elif impl == "compiled":
        f = model.compiled("encode")
        f(x, out)
        assert_same(out, want, rtol=1e-6)
        benchmark(f, x, out)
    else:
        ort = pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
        path = tmp_path / "encoder.onnx"
        model.to_onnx(path, part="encode")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"input": x}
        assert_same(session.run(None, feed)[0], want, rtol=1e-5)
        benchmark(session.run, None, feed)
