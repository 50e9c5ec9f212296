"""PCA by SVD: the linear autoencoder of the seed (encoder A, decoder A^T, A with orthonormal rows)."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import dask_support, validation
from .estimator import Estimator


@dataclasses.dataclass(frozen=True)
class PCAState:
    """A fitted PCA: what transform and inverse_transform compute with."""
    components: np.ndarray            # (k, D), orthonormal rows
    mean: np.ndarray                  # (D,)
    explained_variance: np.ndarray    # (k,)
    explained_variance_ratio: np.ndarray
    settings: dict = None             # the constructor parameters it was fitted with (for save)

    @property
    def spec(self):
        return self  # n_features for Estimator.n_features_in_

    @property
    def n_features(self):
        return self.components.shape[1]


class PCA(Estimator):
    """PCA(n_components, dtype="float32"): the k leading principal directions of the centred data,
    found by SVD in float64 and stored in `dtype`.

    The linear autoencoder baseline: encoder ``(X - mean_) @ components_.T``, decoder
    ``C @ components_ + mean_``. Each component's largest entry is positive (a deterministic
    sign). There are no solvers or whitening, and ``n_components`` must be an int.

    Parameters
    ----------
    n_components : int
        Number of components, an int in [1, min(n_samples, n_features)] (checked by ``fit``).
    dtype : {'float32', 'float64'}, default='float32'
        The precision of the stored components and of the results.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The principal directions, orthonormal rows.
    mean_ : ndarray of shape (n_features,)
        The mean of the training rows.
    explained_variance_ : ndarray of shape (n_components,)
        The variance along each component.
    explained_variance_ratio_ : ndarray of shape (n_components,)
        Each component's share of the total variance.
    n_features_in_ : int
        Number of features seen by ``fit``.

    See Also
    --------
    Autoencoder : The non-linear (plain, sparse or denoising) autoencoder.
    VAE : The variational autoencoder.

    Examples
    --------
    >>> import numpy as np
    >>> import fastae
    >>> X = np.random.default_rng(0).random((100, 8))
    >>> pca = fastae.PCA(2).fit(X)
    >>> pca.components_.shape
    (2, 8)
    >>> pca.transform(X).shape
    (100, 2)
    >>> pca.reconstruct(X).shape
    (100, 8)
    """

    def __init__(self, n_components: int, dtype: str = "float32") -> None:
        self.n_components = n_components
        self.dtype = dtype

    def fit(self, X: ArrayLike, y: Any = None) -> PCA:
        """Principal directions of X by one SVD. A dask array X is computed (brought into this
        process's memory in full) first: PCA does not fit out of core.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows.
        y : None, default=None
            Ignored (scikit-learn compatibility).

        Returns
        -------
        self
            The fitted model.

        Raises
        ------
        ValueError
            If a parameter or the data is invalid, ``n_components`` exceeds
            ``min(n_samples, n_features)``, or the data overflows ``dtype``.
        TypeError
            If the data is not numeric.
        """
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
        self._fitted = dataclasses.replace(state, settings=dict(p))
        return self

    components_ = property(lambda self: self._state().components,
                           doc="(n_components, n_features): the principal directions, orthonormal rows.")
    mean_ = property(lambda self: self._state().mean, doc="(n_features,): the mean of the training rows.")
    explained_variance_ = property(lambda self: self._state().explained_variance,
                                   doc="(n_components,): the variance along each component.")
    explained_variance_ratio_ = property(lambda self: self._state().explained_variance_ratio,
                                         doc="(n_components,): each component's share of the total variance.")

    def _checked(self, state, X, name, n_features):
        return validation.data(X, name, state.components.dtype, n_features, "PCA")

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Codes (n, k): (X - mean_) @ components_.T, in float64 so that a row's code does not
        depend on the rows around it (BLAS blocks by position).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to encode.

        Returns
        -------
        ndarray of shape (n_samples, n_components)
            The codes, of the model's dtype (a lazy dask array for dask input).

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        ValueError
            If `X` has the wrong number of features or holds NaN/inf.
        """
        state = self._state()
        if dask_support.is_dask(X):
            return dask_support.apply(self, "pca_transform", X)
        X = self._checked(state, X, "X", state.n_features)
        return _rowwise(X, state.mean, state.components.T).astype(state.components.dtype)

    def inverse_transform(self, C: ArrayLike) -> np.ndarray:
        """Reconstructions (n, D) from codes: C @ components_ + mean_.

        Parameters
        ----------
        C : array-like of shape (n_samples, n_components)
            Codes.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
            The reconstructed rows.

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        ValueError
            If `C` has the wrong width or holds NaN/inf.
        """
        state = self._state()
        if dask_support.is_dask(C):
            return dask_support.apply(self, "pca_inverse", C)
        C = self._checked(state, C, "C", state.components.shape[0])
        return (_rowwise(C, 0.0, state.components) + state.mean).astype(state.components.dtype)

    def reconstruct(self, X: ArrayLike) -> np.ndarray:
        """inverse_transform(transform(X)): the projection of X onto the components.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to reconstruct.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
            The reconstructions.
        """
        return self.inverse_transform(self.transform(X))

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Minus the per-row squared reconstruction error (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to score.

        Returns
        -------
        ndarray of shape (n_samples,)
            ``-||x - reconstruct(x)||^2`` per row.

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        """
        state = self._state()
        if dask_support.is_dask(X):
            return dask_support.apply(self, "pca_score", X)
        X = self._checked(state, X, "X", state.n_features)
        return -np.sum((X - self.reconstruct(X)) ** 2, axis=1)

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
