"""ONNX export of a fitted model: `model.to_onnx(path, part="encode")`.

The graph is built with `onnx.helper` alone (no torch) from the fitted state, never from the
constructor parameters: a dense layer is `Gemm(h, W, b, transB=1)` followed by its activation
(`Relu`, `Sigmoid`, `Tanh`, or nothing for linear); a sparse Autoencoder's code adds the L1
proximal operator (`Relu(v - l1)` after a relu code layer, else `Sign(v) * Relu(|v| - l1)`); PCA is
`(x - mean) @ components.T` and `c @ components + mean`. The input is named `input`, with a dynamic
batch dimension `N`; the output is `output`, or `mu` and `logvar` for a VAE's encoder. Everything
runs in the model's dtype (float32 or float64), at opset 17 (IR version 8), which current ONNX
Runtime releases support. The file is written through a temporary file renamed into place.
"""
import os

import numpy as np

from .chain import neural_layers
from .compiled import check_part

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17: readable by ONNX Runtime 1.12 and later
BATCH = "N"
_ACT_OPS = {0: "Relu", 1: "Sigmoid", 2: "Tanh", 3: None}  # kernels.elementwise RELU, SIGMOID, TANH, LINEAR


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("to_onnx needs the onnx package: pip install 'fastae[onnx]' "
                          f"(or pip install onnx) ({exc})") from None
    return onnx


class _Graph:
    """Nodes and initializers, with fresh names."""

    def __init__(self, onnx, dtype):
        self.onnx, self.helper = onnx, onnx.helper
        self.dtype = np.dtype(dtype)
        self.elem = onnx.helper.np_dtype_to_tensor_dtype(self.dtype)
        self.nodes, self.initializers, self._count = [], [], 0

    def name(self, stem):
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem, array):
        name = self.name(stem)
        array = np.ascontiguousarray(array, dtype=self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op, inputs, output=None, **attrs):
        output = output or self.name(op.lower())
        self.nodes.append(self.helper.make_node(op, list(inputs), [output], name=self.name(f"{op}_node"), **attrs))
        return output

    def dense(self, h, W, b, act, index, output=None):
        W_name = self.const(f"layer{index}_W", W)
        b_name = self.const(f"layer{index}_b", b)
        op = _ACT_OPS[int(act)]
        y = self.node("Gemm", [h, W_name, b_name], output if op is None else None, transB=1)
        return y if op is None else self.node(op, [y], output)

    def prox(self, v, l1, nonneg, output=None):
        t = self.const("l1", np.array(l1))
        if nonneg:  # max(v - l1, 0)
            return self.node("Relu", [self.node("Sub", [v, t])], output)
        shrunk = self.node("Relu", [self.node("Sub", [self.node("Abs", [v]), t])])
        return self.node("Mul", [self.node("Sign", [v]), shrunk], output)


def _neural(g, state, part):
    """Outputs [(name, width)] of a part of an Autoencoder or VAE, added to graph g."""
    spec = state.spec
    if spec.is_vae and part == "encode":
        chain, _, _, _ = neural_layers(state, "encode")  # trunk + the mu head
        trunk = chain[:-1]
        (W_lv, b_lv) = [(state.host(W), state.host(b)) for W, b in state.layers()][len(spec.hidden) + 1]
        h = "input"
        for i, (W, b, act) in enumerate(trunk):
            h = g.dense(h, W, b, act, i)
        W_mu, b_mu, _ = chain[-1]
        g.dense(h, W_mu, b_mu, 3, len(trunk), output="mu")
        g.dense(h, W_lv, b_lv, 3, len(trunk) + 1, output="logvar")
        return [("mu", spec.width), ("logvar", spec.width)]
    chain, prox_at, l1, nonneg = neural_layers(state, part)
    h = "input"
    last = len(chain) - 1
    for i, (W, b, act) in enumerate(chain):
        final = i == last and i != prox_at
        h = g.dense(h, W, b, act, i, output="output" if final else None)
        if i == prox_at:
            h = g.prox(h, l1, nonneg, output="output" if i == last else None)
    return [("output", int(chain[-1][0].shape[0]))]


def _pca(g, state, part):
    C, mean = state.components, state.mean
    h = "input"
    if part in ("encode", "reconstruct"):
        centred = g.node("Sub", [h, g.const("mean", mean)])
        h = g.node("MatMul", [centred, g.const("components_T", C.T)],
                   "output" if part == "encode" else None)
    if part in ("decode", "reconstruct"):
        product = g.node("MatMul", [h, g.const("components", C)])
        h = g.node("Add", [product, g.const("mean", mean)], "output")
    return [("output", C.shape[0] if part == "encode" else C.shape[1])]


def build(estimator, part="encode"):
    """The onnx.ModelProto of `part` of the estimator's fitted state."""
    check_part(part)
    onnx = _onnx()
    state = estimator._state()  # NotFittedError on an unfitted model
    name = type(estimator).__name__
    is_pca = hasattr(state, "components")
    dtype = state.components.dtype if is_pca else state.dtype
    g = _Graph(onnx, dtype)
    if is_pca:
        n_in = state.components.shape[1] if part != "decode" else state.components.shape[0]
        outputs = _pca(g, state, part)
    else:
        n_in = state.spec.n_features if part != "decode" else state.spec.width
        outputs = _neural(g, state, part)
    helper = onnx.helper
    inputs = [helper.make_tensor_value_info("input", g.elem, [BATCH, int(n_in)])]
    outs = [helper.make_tensor_value_info(o, g.elem, [BATCH, int(width)]) for o, width in outputs]
    graph = helper.make_graph(g.nodes, f"fastae_{name}_{part}", inputs, outs, g.initializers)
    from . import __version__
    model = helper.make_model(graph, producer_name="fastae", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", OPSET)],
                              doc_string=f"fastae {name}, part={part!r}, dtype {np.dtype(dtype).name}")
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"fastae.model": name, "fastae.part": part,
                                   "fastae.dtype": np.dtype(dtype).name})
    onnx.checker.check_model(model)
    return model


def export(estimator, path, part="encode"):
    """Write `part` of the fitted estimator to an ONNX file at exactly `path` (str or PathLike)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or pathlib.Path, got {type(path).__name__}")
    from .persistence import _replacing  # temporary file, renamed into place when complete
    target = _replacing(path)  # checks the path
    model = build(estimator, part)
    with target as f:
        f.write(model.SerializeToString())
