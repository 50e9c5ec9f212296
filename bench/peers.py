"""Peers: other libraries doing the same work as a fastae contender, each optional (the contender
is skipped when its library is not installed) and run on the benchmark's thread count.

- ONNX Runtime: a session on the file `model.to_onnx(path, part=...)` writes (CPU provider,
  intra_op_num_threads = the thread count, one inter-op thread);
- PyTorch (CPU, eager): the same network as an `nn.Sequential` of `nn.Linear` layers holding the
  fastae model's weights (fastae stores W as (out, in), like nn.Linear), on
  `torch.set_num_threads(thread count)`.
"""
from pathlib import Path

import pytest

_torch_default_threads = None


def import_torch(threads):
    """PyTorch (the test is skipped without it) running on `threads` threads like every contender.
    The `threads` fixture puts torch's own thread count back after the test."""
    global _torch_default_threads
    torch = pytest.importorskip("torch", exc_type=ImportError)  # absent, or an install that fails to load
    if _torch_default_threads is None:
        _torch_default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    return torch


def torch_default_threads():
    """torch's thread count before the first benchmark changed it (None: never imported here)."""
    return _torch_default_threads


def onnx_session(model, part, threads, folder):
    """An ONNX Runtime session (skipped without onnxruntime and onnx) on the file
    `model.to_onnx(path, part=part)` writes, `threads` intra-op threads, one inter-op thread."""
    ort = pytest.importorskip("onnxruntime", exc_type=ImportError)
    pytest.importorskip("onnx", exc_type=ImportError)
    path = Path(folder) / f"{part}.onnx"
    model.to_onnx(path, part=part)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_network(torch, model, part, logits=False):
    """`part` ("encode" or "reconstruct") of a fitted plain fastae Autoencoder as an nn.Sequential
    holding copies of its weights; `logits=True` leaves out the output activation (the training
    step computes the loss from the logits, as fastae does)."""
    p = model.get_params()
    if p["l1"] or p["noise"]:
        raise ValueError("only plain autoencoders have a torch twin here")
    hidden = (p["hidden"],) if isinstance(p["hidden"], int) else tuple(p["hidden"])
    acts = [p["activation"]] * len(hidden) + [p["code_activation"]]
    if part == "reconstruct":
        acts += [p["activation"]] * len(hidden) + [p["output_activation"]]
    if logits:
        acts[-1] = "linear"
    modules = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}
    layers = []
    for (W, b), act in zip(model.get_weights(), acts):
        linear = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
        if act != "linear":
            layers.append(modules[act]())
    return torch.nn.Sequential(*layers)


def torch_inference(torch, model, part):
    """f(x): NumPy rows in, the result as a tensor (a zero-copy view away from NumPy), under
    torch.inference_mode()."""
    net = torch_network(torch, model, part).eval()

    def run(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x))
    return run
