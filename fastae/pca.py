"""PCA by SVD: the linear autoencoder of the seed (encoder A, decoder A^T, A with orthonormal rows)."""
import numpy as np

from . import validation
from .estimator import Estimator


class PCA(Estimator):
    def __init__(self, n_components, dtype="float32"):
        self.n_components = n_components
        self.dtype = dtype

    def fit(self, X, y=None):
        dtype = validation.dtype(self.dtype)
        X = validation.data(X, "X", dtype)
        n, d = X.shape
        k = validation.integer(self.n_components, "n_components", 1)
        if k > min(n, d):
            raise ValueError(f"n_components must be <= min(n_samples, n_features) = {min(n, d)}, got {k}")
        X64 = X.astype(np.float64)  # solve in float64, store in the model dtype
        mean = X64.mean(axis=0)
        _, s, Vt = np.linalg.svd(X64 - mean, full_matrices=False)
        # a deterministic sign: each component's largest entry is positive
        signs = np.sign(Vt[np.arange(len(Vt)), np.argmax(np.abs(Vt), axis=1)])
        Vt *= signs[:, None]
        variance = s ** 2 / max(n - 1, 1)
        self.components_ = Vt[:k].astype(dtype)
        self.mean_ = mean.astype(dtype)
        self.explained_variance_ = variance[:k].astype(dtype)
        total = variance.sum()
        self.explained_variance_ratio_ = (variance[:k] / total if total > 0 else np.zeros(k)).astype(dtype)
        self.n_features_in_ = d
        return self

    def _checked(self, X, name, n_features=None):
        self._check_fitted()
        n_features = self.n_features_in_ if n_features is None else n_features
        return validation.data(X, name, self.components_.dtype, n_features, "PCA")

    def transform(self, X):
        """Codes (n, k): (X - mean_) @ components_.T."""
        return (self._checked(X, "X") - self.mean_) @ self.components_.T

    def inverse_transform(self, C):
        """Reconstructions (n, D) from codes: C @ components_ + mean_."""
        return self._checked(C, "C", self.components_.shape[0]) @ self.components_ + self.mean_

    def reconstruct(self, X):
        return self.inverse_transform(self.transform(X))

    def score_samples(self, X):
        """Minus the per-row squared reconstruction error (higher is better)."""
        X = self._checked(X, "X")
        return -np.sum((X - self.reconstruct(X)) ** 2, axis=1)

    def score(self, X, y=None):
        return float(self.score_samples(X).mean())
