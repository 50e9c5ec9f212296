"""An oracle for the engine that shares none of its code: one training epoch of an autoencoder
(minibatches in order, forward, mean loss + L1 penalty, backward, Adam or SGD with momentum)
written out by hand in NumPy. The compiled epoch (cpu) and the numpy backend must both match it."""
import numpy as np
import pytest

import fastae

ACT = {"relu": (lambda z: np.maximum(z, 0), lambda y: (y > 0).astype(y.dtype)),
       "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda y: y * (1 - y)),
       "tanh": (np.tanh, lambda y: 1 - y * y),
       "linear": (lambda z: z, lambda y: np.ones_like(y))}


def forward(layers, acts, x, l1, nonneg):
    """Outputs of every layer, and the code layer's activation before the L1 prox (the code
    layer's output goes through the prox when l1 > 0)."""
    split = len(layers) // 2 - 1
    outs, h, before_prox = [], x, None
    for i, ((W, b), act) in enumerate(zip(layers, acts)):
        y = ACT[act][0](h @ W.T + b)
        if i == split:
            before_prox = y
            if l1 > 0:
                y = np.maximum(y - l1, 0) if nonneg else np.sign(y) * np.maximum(np.abs(y) - l1, 0)
        outs.append(y)
        h = y
    return outs, before_prox


def loss_and_grads(layers, acts, x, l1, nonneg):
    n = x.shape[0]
    split = len(layers) // 2 - 1
    outs, before_prox = forward(layers, acts, x, l1, nonneg)
    out, code = outs[-1], outs[split]
    loss = (np.sum((out - x) ** 2) + l1 * np.abs(code).sum()) / n
    grads = [None] * len(layers)
    d_out = 2 * (out - x) / n
    for i in range(len(layers) - 1, -1, -1):
        W, _ = layers[i]
        y = outs[i]
        if i == split:
            if l1 > 0:  # the penalty's gradient, then through the prox: only surviving codes pass
                d_out = (d_out + l1 * np.sign(code) / n) * (code != 0)
            y = before_prox
        delta = d_out * ACT[acts[i]][1](y)
        inp = x if i == 0 else outs[i - 1]
        grads[i] = (delta.T @ inp, delta.sum(axis=0))
        d_out = delta @ W
    return loss, grads


def epoch(layers, acts, X, batch, l1, nonneg, opt, state):
    """One pass over X in order; updates `layers` and `state` in place; returns the summed loss."""
    total = 0.0
    for start in range(0, X.shape[0], batch):
        x = X[start:start + batch]
        loss, grads = loss_and_grads(layers, acts, x, l1, nonneg)
        total += loss * x.shape[0]
        state["t"] += 1
        t = state["t"]
        for i, (g_pair) in enumerate(grads):
            for j, g in enumerate(g_pair):
                p, a, b = layers[i][j], state["a"][i][j], state["b"][i][j]
                if opt["optimizer"] == "adam":
                    a[...] = opt["beta_1"] * a + (1 - opt["beta_1"]) * g
                    b[...] = opt["beta_2"] * b + (1 - opt["beta_2"]) * g * g
                    m_hat, v_hat = a / (1 - opt["beta_1"] ** t), b / (1 - opt["beta_2"] ** t)
                    p -= opt["lr"] * m_hat / (np.sqrt(v_hat) + opt["epsilon"])
                else:
                    a[...] = opt["momentum"] * a - opt["lr"] * g
                    p += a
    return total


CASES = [
    dict(hidden=(5,), code=3, activation="relu", code_activation="relu", output_activation="linear", l1=0.0),
    dict(hidden=(5, 4), code=2, activation="tanh", code_activation="sigmoid", output_activation="sigmoid", l1=0.0),
    dict(hidden=(5,), code=3, activation="relu", code_activation="relu", output_activation="linear", l1=0.02),
    dict(hidden=(4,), code=3, activation="sigmoid", code_activation="linear", output_activation="tanh", l1=0.05),
]


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_two_epochs_equal_the_hand_written_numpy_epoch(rng, case, optimizer, backend):
    X = rng.uniform(size=(37, 6))  # 37 rows, batch 16: a short last batch
    opt = dict(optimizer=optimizer, lr=0.01 if optimizer == "adam" else 0.1, beta_1=0.85, beta_2=0.99,
               epsilon=1e-7, momentum=0.7)
    model = fastae.Autoencoder(**case, **opt, batch_size=16, shuffle=False, seed=0, dtype="float64",
                               backend=backend)
    start = fastae.Autoencoder(**case, epochs=1, seed=1, dtype="float64").fit(X).get_weights()
    model.set_weights(start)
    layers = [(W.copy(), b.copy()) for W, b in start]
    acts = [case["activation"]] * len(case["hidden"]) + [case["code_activation"]]
    acts += [case["activation"]] * len(case["hidden"]) + [case["output_activation"]]
    state = {"t": 0, "a": [(np.zeros_like(W), np.zeros_like(b)) for W, b in layers]}
    state["b"] = [(np.zeros_like(W), np.zeros_like(b)) for W, b in layers]
    nonneg = case["code_activation"] == "relu"
    for _ in range(2):
        want_loss = epoch(layers, acts, X, 16, case["l1"], nonneg, opt, state) / X.shape[0]
        model.partial_fit(X)
        assert model.history_["loss"][-1] == pytest.approx(want_loss, rel=1e-12)
    assert model.t_ == state["t"] == 6
    for (W, b), (oW, ob) in zip(model.get_weights(), layers):
        np.testing.assert_allclose(W, oW, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b, ob, rtol=1e-10, atol=1e-12)


def test_a_float32_trajectory_follows_the_float64_oracle(rng):
    case = CASES[0]
    X = rng.uniform(size=(64, 6))
    opt = dict(optimizer="adam", lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-8, momentum=0.9)
    start = fastae.Autoencoder(**case, epochs=1, seed=1, dtype="float64").fit(X).get_weights()
    model = fastae.Autoencoder(**case, **opt, batch_size=16, shuffle=False, seed=0, dtype="float32")
    model.set_weights(start)
    layers = [(W.copy(), b.copy()) for W, b in start]
    acts = ["relu", "relu", "relu", "linear"]
    state = {"t": 0, "a": [(np.zeros_like(W), np.zeros_like(b)) for W, b in layers],
             "b": [(np.zeros_like(W), np.zeros_like(b)) for W, b in layers]}
    for _ in range(5):
        want = epoch(layers, acts, X, 16, 0.0, True, opt, state) / X.shape[0]
        model.partial_fit(X)
        assert model.history_["loss"][-1] == pytest.approx(want, rel=2e-4)
    for (W, b), (oW, ob) in zip(model.get_weights(), layers):
        assert W.dtype == np.float32
        np.testing.assert_allclose(W, oW, rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(b, ob, rtol=2e-3, atol=2e-4)
