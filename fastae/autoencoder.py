"""Autoencoder: plain, sparse (L1 proximal code) and denoising, trained by the engine."""
from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from . import dask_support, validation
from .estimator import (NEURAL_ATTRIBUTES_DOC, TRAINING_PARAMETERS_DOC, Activation, Backend, Callback,
                        NeuralEstimator, Optimizer, Weights, splice_doc, store_params)
from .fitted import Spec


class Autoencoder(NeuralEstimator):
    """Dense autoencoder `D -> hidden -> code -> reversed(hidden) -> D`.

    l1 > 0 makes it sparse (the code is the L1 proximal operator of the code layer's output, so
    codes are exactly sparse, and the objective adds l1 * ||h||_1 per row); noise > 0 makes it
    denoising (the encoder sees corrupted rows during fit, the loss compares with the clean ones).

    Trained by minibatch Adam or SGD on compiled kernels (one compiled call per pass over the data
    on the cpu backend). Constructor arguments are only stored; ``fit`` checks them all before
    anything changes, and inference reads only what ``fit`` learned.

    Parameters
    ----------
    hidden : int or tuple of int, default=(256,)
        Widths of the encoder's hidden layers (ints >= 1, or one int; ``()`` for none, at most
        30). The decoder mirrors them.
    code : int, default=32
        Width of the code layer, >= 1.
    activation : {'relu', 'sigmoid', 'tanh', 'linear'}, default='relu'
        Activation of the hidden layers.
    code_activation : {'relu', 'sigmoid', 'tanh', 'linear'}, default='relu'
        Activation of the code layer. With 'relu' and ``l1 > 0`` the soft-thresholding is
        non-negative.
    output_activation : {'relu', 'sigmoid', 'tanh', 'linear'}, default='linear'
        Activation of the output layer.
    loss : {'mse', 'bce'}, default='mse'
        'mse': per-row squared error ``||x - x_hat||^2``. 'bce': binary cross-entropy computed
        from the logits; needs ``output_activation='sigmoid'`` and data in [0, 1].
    l1 : float, default=0.0
        L1 penalty on the code, >= 0; > 0 makes the codes exactly sparse.
    noise : float, default=0.0
        Corruption level during ``fit``, >= 0: the standard deviation of added Gaussian noise, or
        for ``noise_type='mask'`` the probability (< 1) that an entry is set to zero.
    noise_type : {'gaussian', 'mask'}, default='gaussian'
        The kind of corruption used when ``noise > 0``.
    {training_parameters}

    Attributes
    ----------
    {attributes}

    See Also
    --------
    VAE : The variational autoencoder.
    PCA : The linear autoencoder baseline, solved by one SVD.
    fastae.load : Read a model written by ``save``.

    Examples
    --------
    >>> import numpy as np
    >>> import fastae
    >>> X = np.random.default_rng(0).random((100, 8))
    >>> ae = fastae.Autoencoder(hidden=(16,), code=2, epochs=2, seed=0).fit(X)
    >>> ae.transform(X).shape
    (100, 2)
    >>> ae.reconstruct(X).shape
    (100, 8)
    >>> ae.n_iter_
    2
    """
    __doc__ = splice_doc(__doc__, training_parameters=TRAINING_PARAMETERS_DOC, attributes=NEURAL_ATTRIBUTES_DOC)

    _TABLE = validation.AUTOENCODER
    _CODE_NAME = "C"

    def __init__(self, hidden: int | tuple[int, ...] = (256,), code: int = 32, activation: Activation = "relu",
                 code_activation: Activation = "relu", output_activation: Activation = "linear",
                 loss: Literal["mse", "bce"] = "mse", l1: float = 0.0, noise: float = 0.0,
                 noise_type: Literal["gaussian", "mask"] = "gaussian", optimizer: Optimizer = "adam",
                 lr: float = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8,
                 momentum: float = 0.9, batch_size: int = 128, epochs: int = 10, shuffle: bool = True,
                 early_stopping: bool = False, validation_fraction: float = 0.1, n_iter_no_change: int = 10,
                 tol: float = 1e-4, warm_start: bool = False, callback: Callback = None, seed: int | None = None,
                 backend: Backend = "auto", dtype: str = "float32", verbose: bool = False) -> None:
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
    def transform(self, X: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """Codes of X: (n, code), the whole encoder in one compiled call per chunk of rows.
        `out=` takes a preallocated C-contiguous result. Also available as ``encode``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to encode.
        out : ndarray of shape (n_samples, code), default=None
            A preallocated C-contiguous result of the model's dtype and backend.

        Returns
        -------
        ndarray of shape (n_samples, code)
            The codes (``out`` when given; a lazy dask array for dask input).

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        ValueError
            If `X` has the wrong number of features or holds NaN/inf, or `out` does not fit.
        """
        state = self._state()
        if dask_support.is_dask(X):
            return dask_support.apply(self, "encode", X, out)
        # encode_into checks NaN/inf itself, in the same compiled call
        return self._apply(state, "encode", X, "X", state.spec.n_features, state.spec.width, out,
                           finite_checked_later=True)

    encode = transform

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Minus the per-row objective (reconstruction loss + l1 * ||code||_1): higher is better.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to score (no noise is added).

        Returns
        -------
        ndarray of shape (n_samples,)
            Minus each row's objective.

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        ValueError
            If `X` is invalid (for ``loss='bce'``: outside [0, 1]).
        """
        if dask_support.is_dask(X):
            return dask_support.apply(self, "score", X)
        state, _, rows = self._objective(X)
        return self._as_caller(state, -rows, X)

    def value_and_grad(self, X: ArrayLike) -> tuple[float, Weights]:
        """(loss, grads) at the fitted weights without noise: the mean per-row objective and its
        gradient, shaped like get_weights(). Each call has its own gradient buffer.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to evaluate.

        Returns
        -------
        loss : float
            The mean per-row objective.
        grads : list of (ndarray, ndarray)
            Its gradient with respect to every ``(W, b)``, shaped like ``get_weights()``.

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        """
        state, Xc, (rows, grads) = self._objective(X, with_grads=True)
        return float(rows.sum()) / Xc.shape[0], self._grads_like_weights(state, grads)
