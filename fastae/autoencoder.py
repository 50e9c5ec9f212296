"""Autoencoder: plain, sparse (L1 proximal code) and denoising, trained by the engine."""
from . import dask_support, validation
from .estimator import NeuralEstimator, store_params
from .fitted import Spec


class Autoencoder(NeuralEstimator):
    """Dense autoencoder `D -> hidden -> code -> reversed(hidden) -> D`.

    l1 > 0 makes it sparse (the code is the L1 proximal operator of the code layer's output, so
    codes are exactly sparse, and the objective adds l1 * ||h||_1 per row); noise > 0 makes it
    denoising (the encoder sees corrupted rows during fit, the loss compares with the clean ones).
    """

    _TABLE = validation.AUTOENCODER
    _CODE_NAME = "C"

    def __init__(self, hidden=(256,), code=32, activation="relu", code_activation="relu",
                 output_activation="linear", loss="mse", l1=0.0, noise=0.0, noise_type="gaussian",
                 optimizer="adam", lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, momentum=0.9,
                 batch_size=128, epochs=10, shuffle=True, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, tol=1e-4, warm_start=False, callback=None, seed=None,
                 backend="auto", dtype="float32", verbose=False):
        store_params(self, locals())

    def _spec(self, p, n_features):
        if p["loss"] == "bce" and p["output_activation"] != "sigmoid":
            raise ValueError("loss='bce' needs output_activation='sigmoid' (cross-entropy compares "
                             f"probabilities), got output_activation={p['output_activation']!r}")
        if p["noise_type"] == "mask" and p["noise"] >= 1:
            raise ValueError(f"noise must be < 1 for noise_type='mask' (the share of entries zeroed), got {p['noise']}")
        return Spec("autoencoder", n_features, p["hidden"], p["code"], p["activation"], p["code_activation"],
                    p["output_activation"], p["loss"], p["dtype"], l1=p["l1"], noise=p["noise"],
                    noise_type=p["noise_type"])

    def _check_data(self, spec, Xc, name):
        if spec.loss == "bce" and not validation.in_unit_interval(Xc):
            raise ValueError(f"{name} must lie in [0, 1] for loss='bce' (binary cross-entropy compares "
                             "probabilities): scale the data, or use loss='mse'")

    # ---- inference
    def transform(self, X, out=None):
        """Codes of X: (n, code), the whole encoder in one compiled call per chunk of rows.
        `out=` takes a preallocated C-contiguous result."""
        state = self._state()
        if dask_support.is_dask(X):
            return dask_support.apply(self, "encode", X, out)
        return self._apply(state, "encode", X, "X", state.spec.n_features, state.spec.width, out)

    encode = transform

    def score_samples(self, X):
        """Minus the per-row objective (reconstruction loss + l1 * ||code||_1): higher is better."""
        if dask_support.is_dask(X):
            return dask_support.apply(self, "score", X)
        state, _, rows = self._objective(X)
        return self._as_caller(state, -rows, X)

    def score(self, X, y=None):
        """Minus the mean per-row objective, penalty included (higher is better)."""
        return float(self.score_samples(X).mean())

    def value_and_grad(self, X):
        """(loss, grads) at the fitted weights without noise: the mean per-row objective and its
        gradient, shaped like get_weights(). Each call has its own gradient buffer."""
        state, Xc, (rows, grads) = self._objective(X, with_grads=True)
        return float(rows.sum()) / Xc.shape[0], self._grads_like_weights(state, grads)
