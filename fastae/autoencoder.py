"""Autoencoder: plain, sparse (L1 proximal code) and denoising, trained by the engine."""
import numpy as np

from . import engine, validation
from .estimator import NeuralEstimator, store_params
from .kernels.elementwise import ACTIVATIONS
from .network import Network

_CHUNK = 4096  # inference rows per compiled call: bounds the workspace


class Autoencoder(NeuralEstimator):
    """Dense autoencoder `D -> hidden -> code -> reversed(hidden) -> D`.

    l1 > 0 makes it sparse (the code is the L1 proximal operator of the code layer's output, so
    codes are exactly sparse, and the objective adds l1 * ||h||_1 per row); noise > 0 makes it
    denoising (the encoder sees corrupted rows during fit, the loss compares with the clean ones).
    """

    def __init__(self, hidden=(256,), code=32, activation="relu", code_activation="relu",
                 output_activation="linear", loss="mse", l1=0.0, noise=0.0, noise_type="gaussian",
                 optimizer="adam", lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, momentum=0.9,
                 batch_size=128, epochs=10, shuffle=True, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, tol=1e-4, warm_start=False, callback=None, seed=None,
                 backend="auto", dtype="float32", verbose=False):
        store_params(self, locals())

    # ---- description of the network
    def _check_params(self):
        v = validation
        self._hidden = v.sizes(self.hidden, "hidden")
        v.integer(self.code, "code", 1)
        names = tuple(ACTIVATIONS)
        for name in ("activation", "code_activation", "output_activation"):
            v.one_of(getattr(self, name), name, names)
        v.one_of(self.loss, "loss", ("mse", "bce"))
        if self.loss == "bce" and self.output_activation != "sigmoid":
            raise ValueError("loss='bce' needs output_activation='sigmoid' (cross-entropy compares "
                             f"probabilities), got output_activation={self.output_activation!r}")
        v.real(self.l1, "l1", 0)
        v.one_of(self.noise_type, "noise_type", ("gaussian", "mask"))
        v.real(self.noise, "noise", 0, 1 if self.noise_type == "mask" else None, high_open=self.noise_type == "mask")

    def _build_network(self, n_features):
        h = self._hidden
        sizes = [n_features, *h, self.code, *reversed(h), n_features]
        acts = ([ACTIVATIONS[self.activation]] * len(h) + [ACTIVATIONS[self.code_activation]]
                + [ACTIVATIONS[self.activation]] * len(h) + [ACTIVATIONS[self.output_activation]])
        return Network(list(zip(sizes[:-1], sizes[1:])), acts, self._dtype, self._xp)

    def _fill_cfg(self, cfg_f, cfg_i, training=True):
        cfg_i[engine.I_SPLIT] = len(self._hidden)
        cfg_i[engine.I_LOSS] = engine.BCE if self.loss == "bce" else engine.MSE
        cfg_i[engine.I_NONNEG] = self.code_activation == "relu"
        cfg_i[engine.I_NOISE_KIND] = 0 if self.noise_type == "gaussian" else 1
        # BCE is computed from the logits: the output layer runs linear in the objective
        cfg_i[engine.I_OUT_ACT] = engine.LINEAR if self.loss == "bce" else ACTIVATIONS[self.output_activation]
        cfg_f[engine.F_L1] = self.l1
        cfg_f[engine.F_NOISE] = self.noise if training else 0.0
        cfg_f[engine.F_LOSS_SCALE] = 1.0

    def _plan(self, rows):
        return self._net.plan(rows, code=self.code)

    def _public_layers(self, buffer=None):
        return [self._net.layer(l, buffer) for l in range(self._net.n_layers)]

    # ---- training
    def _epoch(self, X, index, keys):
        return self._run_epoch(X, index, keys, is_vae=False)

    def _objective_rows(self, Xc, with_grads=False):
        """Per-row objective (no corruption) of checked rows; with_grads: all rows in one batch."""
        cfg_f, cfg_i = self._cfg()
        self._fill_cfg(cfg_f, cfg_i, training=False)
        n = Xc.shape[0]
        chunk = n if with_grads else min(n, _CHUNK)
        work, plan = self._workspace(chunk)
        rows = self._xp.empty(n, self._dtype)
        eng, net = engine.for_backend(self._backend_name), self._net
        for start in range(0, n, chunk):
            x = Xc[start:start + chunk]
            eng.ae_objective(net.params, self._grads, net.layout, net.acts, work, plan, x, x, x.shape[0],
                             cfg_f, cfg_i, with_grads)
            rows[start:start + x.shape[0]] = work[plan[engine.S_ROWS]:plan[engine.S_ROWS] + x.shape[0]]
        return rows

    def _score_rows(self, Xc):
        return -self._objective_rows(Xc)

    # ---- inference
    def transform(self, X, out=None):
        """Codes of X: (n, code), the whole encoder in one compiled call per chunk of rows.
        `out=` takes a preallocated C-contiguous result."""
        space = self._fast_rows(X, self.__dict__.get("n_features_in_")) if out is None else None
        if space is not None:  # latency path: one small NumPy array, no chunking
            work, plan, cfg_f, cfg_i, eng, _ = space
            net = self._net
            result = np.empty((X.shape[0], self.code), self._dtype)
            eng.encode_into(net.params, net.layout, net.acts, work, plan, X, X.shape[0], cfg_f, cfg_i, result)
            return result
        self._check_fitted()
        eng, net = engine.for_backend(self._backend_name), self._net

        def run(x, work, plan, cfg_f, cfg_i, result):
            eng.encode_into(net.params, net.layout, net.acts, work, plan, x, x.shape[0], cfg_f, cfg_i, result)
        return self._infer(X, "X", self.n_features_in_, self.code, out, run)

    encode = transform

    def decode(self, C, out=None):
        """Reconstructions (n, D) from codes C (n, code)."""
        return self._decode(C, "C", out)

    inverse_transform = decode

    def score_samples(self, X):
        """Minus the per-row objective (reconstruction loss + l1 * ||code||_1): higher is better."""
        self._check_fitted()
        return self._as_caller(-self._objective_rows(self._data(X)), X)

    def score(self, X, y=None):
        """Minus the mean per-row objective, penalty included (higher is better)."""
        return float(self.score_samples(X).mean())

    def value_and_grad(self, X):
        """(loss, grads) at the current weights without noise: the mean per-row objective and its
        gradient, shaped like get_weights()."""
        self._check_fitted()
        Xc = self._data(X)
        loss = float(self._objective_rows(Xc, with_grads=True).sum()) / Xc.shape[0]
        return loss, self._grads_like_weights()
