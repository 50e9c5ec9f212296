"""ONNX export: every part of every model, run in ONNX Runtime against the model's own inference,
on random and real (digits) data, float32 and float64, one row and many; the file's interface
(names, dtypes, dynamic batch, opset); the fitted state only; errors."""
import os

import numpy as np
import pytest

import fastae

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

DTYPES = ["float32", "float64"]
MODELS = {
    "ae": lambda dt: fastae.Autoencoder(hidden=(32, 16), code=8, activation="tanh", output_activation="sigmoid",
                                        loss="bce", epochs=2, seed=0, dtype=dt),
    "sparse_relu": lambda dt: fastae.Autoencoder(hidden=(32,), code=8, l1=0.02, epochs=2, seed=0, dtype=dt),
    "sparse_tanh": lambda dt: fastae.Autoencoder(hidden=(32,), code=8, l1=0.02, code_activation="tanh",
                                                 activation="sigmoid", epochs=2, seed=0, dtype=dt),
    "ae_no_hidden": lambda dt: fastae.Autoencoder(hidden=(), code=6, code_activation="linear", epochs=2, seed=0,
                                                  dtype=dt),
    "vae": lambda dt: fastae.VAE(hidden=(32,), latent=4, epochs=2, seed=0, dtype=dt),
    "vae_gaussian": lambda dt: fastae.VAE(hidden=(24, 12), latent=3, likelihood="gaussian", epochs=2, seed=0,
                                          dtype=dt),
    "pca": lambda dt: fastae.PCA(8, dtype=dt),
}
TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}


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


def run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})


def expected(model, part, x):
    if part == "encode":
        return list(model.encode(x)) if isinstance(model, fastae.VAE) else [model.transform(x)]
    if part == "decode":
        return [model.inverse_transform(x)]
    return [model.reconstruct(x)]


def inputs(model, part, digits, dtype):
    """Digits rows (real data) and random rows, or their codes and random codes for decode."""
    rng = np.random.default_rng(1)
    real = digits[:300].astype(dtype)
    random = rng.uniform(size=(50, digits.shape[1])).astype(dtype)
    if part == "decode":
        real = model.transform(real)
        random = rng.normal(size=(50, real.shape[1])).astype(dtype)
    return real, random


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("part", ["encode", "decode", "reconstruct"])
@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_runtime_matches_the_model(name, part, dtype, fitted, digits, tmp_path):
    model = fitted(name, dtype)
    path = tmp_path / "model.onnx"
    model.to_onnx(path, part=part)
    for x in inputs(model, part, digits, dtype):
        for rows in (x[:1], x):  # one row and many: the batch dimension is dynamic
            got, want = run(path, rows), expected(model, part, rows)
            assert len(got) == len(want)
            for g, w in zip(got, want):
                assert g.dtype == np.dtype(dtype) and g.shape == w.shape
                np.testing.assert_allclose(g, w, **TOL[dtype])
                if name.startswith("sparse") and part == "encode":
                    assert np.array_equal(g == 0, w == 0) or np.mean((g == 0) != (w == 0)) < 1e-3


@pytest.mark.parametrize("name", ["ae", "vae", "pca"])
def test_interface(name, fitted, tmp_path):
    model = fitted(name, "float32")
    path = str(tmp_path / "enc.onnx")  # str paths too
    model.to_onnx(path)  # part="encode" by default
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (inp,) = proto.graph.input
    assert inp.name == "input"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    batch, features = inp.type.tensor_type.shape.dim
    assert batch.dim_param and not batch.HasField("dim_value")
    assert features.dim_value == 64
    names = [o.name for o in proto.graph.output]
    assert names == (["mu", "logvar"] if name == "vae" else ["output"])
    ops = {node.op_type for node in proto.graph.node}
    assert ops <= {"Gemm", "Relu", "Sigmoid", "Tanh", "Sub", "Abs", "Sign", "Mul", "MatMul", "Add"}
    assert [f for f in os.listdir(tmp_path)] == ["enc.onnx"]  # no temporary file left behind


def test_float64_file(fitted, tmp_path):
    fitted("ae", "float64").to_onnx(tmp_path / "m.onnx", part="reconstruct")
    proto = onnx.load(tmp_path / "m.onnx")
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


def test_sparse_codes_are_exactly_sparse(fitted, digits, tmp_path):
    model = fitted("sparse_relu", "float64")
    model.to_onnx(tmp_path / "m.onnx")
    (codes,) = run(tmp_path / "m.onnx", digits)
    assert (codes == 0).mean() > 0.05 and (codes >= 0).all()
    np.testing.assert_array_equal(codes == 0, model.transform(digits) == 0)


@pytest.mark.parametrize("name", ["sparse_relu", "vae", "pca"])
def test_export_reads_the_fitted_state_only(name, digits, tmp_path):
    model = MODELS[name]("float32").fit(digits)
    model.to_onnx(tmp_path / "before.onnx", part="reconstruct")
    changed = {"sparse_relu": dict(l1=0.5, code=3, code_activation="tanh", hidden=(7,), dtype="float64"),
               "vae": dict(latent=2, hidden=(5,), likelihood="gaussian"),
               "pca": dict(n_components=2, dtype="float64")}[name]
    model.set_params(**changed)
    model.to_onnx(tmp_path / "after.onnx", part="reconstruct")
    assert (tmp_path / "before.onnx").read_bytes() == (tmp_path / "after.onnx").read_bytes()


def test_overwrites_an_existing_file(fitted, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    fitted("pca", "float32").to_onnx(path, part="decode")
    assert onnx.load(path).graph.input[0].type.tensor_type.shape.dim[1].dim_value == 8


@pytest.mark.parametrize("cls", [lambda: fastae.Autoencoder(), lambda: fastae.VAE(), lambda: fastae.PCA(2)])
def test_unfitted_model(cls, tmp_path):
    with pytest.raises(fastae.NotFittedError):
        cls().to_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("part", ["encoder", "", None, "ENCODE", 1])
def test_bad_part(part, fitted, tmp_path):
    with pytest.raises(ValueError, match="part") as info:
        fitted("ae", "float32").to_onnx(tmp_path / "m.onnx", part=part)
    assert repr(part) in str(info.value)
    assert not (tmp_path / "m.onnx").exists()


def test_bad_path(fitted, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        fitted("ae", "float32").to_onnx(tmp_path / "missing" / "m.onnx")
    with pytest.raises(TypeError, match="path"):
        fitted("ae", "float32").to_onnx(123)
