"""PCA by SVD: the linear autoencoder of the seed (encoder A, decoder A^T, A with orthonormal rows)."""
import dataclasses

import numpy as np

from . import dask_support, validation
from .estimator import Estimator


@dataclasses.dataclass(frozen=True)
class PCAState:
    """A fitted PCA: what transform and inverse_transform compute with."""
    components: np.ndarray            # (k, D), orthonormal rows
    mean: np.ndarray                  # (D,)
    explained_variance: np.ndarray    # (k,)
    explained_variance_ratio: np.ndarray

    @property
    def spec(self):
        return self  # n_features for Estimator.n_features_in_

    @property
    def n_features(self):
        return self.components.shape[1]


class PCA(Estimator):
    """PCA(n_components, dtype="float32"): the k leading principal directions of the centred data,
    found by SVD in float64 and stored in `dtype`."""

    def __init__(self, n_components, dtype="float32"):
        self.n_components = n_components
        self.dtype = dtype

    def fit(self, X, y=None):
        """Principal directions of X by one SVD. A dask array X is computed (brought into this
        process's memory in full) first: PCA does not fit out of core."""
        p = validation.params(self, validation.PCA)
        if dask_support.is_dask(X):
            X = dask_support.computed(X, "X")
        X = validation.data(X, "X", p["dtype"])
        n, d = X.shape
        k = p["n_components"]
        if k > min(n, d):
            raise ValueError(f"n_components must be <= min(n_samples, n_features) = {min(n, d)}, got {k}")
        X64 = X.astype(np.float64)  # solve in float64, store in the model dtype
        mean = X64.mean(axis=0)
        with np.errstate(over="ignore", invalid="ignore"):
            _, s, Vt = np.linalg.svd(X64 - mean, full_matrices=False)
            variance = s ** 2 / max(n - 1, 1)
        # a deterministic sign: each component's largest entry is positive
        signs = np.sign(Vt[np.arange(len(Vt)), np.argmax(np.abs(Vt), axis=1)])
        Vt *= signs[:, None]
        total = variance.sum()
        ratio = variance[:k] / total if total > 0 else np.zeros(k)
        with np.errstate(over="ignore"):  # an overflow to inf is reported below
            state = PCAState(Vt[:k].astype(p["dtype"]), mean.astype(p["dtype"]), variance[:k].astype(p["dtype"]),
                             ratio.astype(p["dtype"]))
        for name in ("components", "mean", "explained_variance", "explained_variance_ratio"):
            if not np.isfinite(getattr(state, name)).all():
                raise ValueError(f"X is too large for PCA in {p['dtype']}: the {name.replace('_', ' ')} "
                                 "overflows (scale the data)")
        self._fitted = state
        return self

    components_ = property(lambda self: self._state().components)
    mean_ = property(lambda self: self._state().mean)
    explained_variance_ = property(lambda self: self._state().explained_variance)
    explained_variance_ratio_ = property(lambda self: self._state().explained_variance_ratio)

    def _checked(self, state, X, name, n_features):
        return validation.data(X, name, state.components.dtype, n_features, "PCA")

    def transform(self, X):
        """Codes (n, k): (X - mean_) @ components_.T, in float64 so that a row's code does not
        depend on the rows around it (BLAS blocks by position)."""
        state = self._state()
        if dask_support.is_dask(X):
            return dask_support.apply(self, "pca_transform", X)
        X = self._checked(state, X, "X", state.n_features)
        return _rowwise(X, state.mean, state.components.T).astype(state.components.dtype)

    def inverse_transform(self, C):
        """Reconstructions (n, D) from codes: C @ components_ + mean_."""
        state = self._state()
        if dask_support.is_dask(C):
            return dask_support.apply(self, "pca_inverse", C)
        C = self._checked(state, C, "C", state.components.shape[0])
        return (_rowwise(C, 0.0, state.components) + state.mean).astype(state.components.dtype)

    def reconstruct(self, X):
        return self.inverse_transform(self.transform(X))

    def score_samples(self, X):
        """Minus the per-row squared reconstruction error (higher is better)."""
        state = self._state()
        if dask_support.is_dask(X):
            return dask_support.apply(self, "pca_score", X)
        X = self._checked(state, X, "X", state.n_features)
        return -np.sum((X - self.reconstruct(X)) ** 2, axis=1)

    def score(self, X, y=None):
        return float(self.score_samples(X).mean())

    # ---- export
    def to_onnx(self, path, part="encode"):
        """Write `part` ("encode" = transform, "decode" = inverse_transform, or "reconstruct") to an
        ONNX file at exactly `path` (needs the onnx package: fastae[onnx])."""
        from .onnx_export import export
        export(self, path, part)

    def compiled(self, part="encode", c_abi=False):
        """`part` ("encode" = transform, "decode" = inverse_transform, or "reconstruct") as a
        Numba-compiled `f(x, out)`, or with c_abi=True a numba.cfunc (see NeuralEstimator.compiled)."""
        from .compiled import compiled
        return compiled(self, part, c_abi)


def _rowwise(X, shift, M):
    return (X.astype(np.float64) - shift) @ M.astype(np.float64)
