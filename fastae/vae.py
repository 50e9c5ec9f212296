"""Variational autoencoder: Gaussian encoder, reparameterization, KL to N(0, I), trained by the
engine with the noise drawn (and regenerated for the backward) inside the kernels."""
from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from . import dask_support, validation
from .estimator import (NEURAL_ATTRIBUTES_DOC, TRAINING_PARAMETERS_DOC, Activation, Backend, Callback,
                        NeuralEstimator, Optimizer, Weights, splice_doc, store_params)
from .fitted import Spec
from .kernels import checks


class VAE(NeuralEstimator):
    """Variational autoencoder with a Gaussian encoder and the prior N(0, I).

    q(z|x) = N(mu(x), diag(exp(logvar(x)))) from a shared trunk `hidden` and two affine heads;
    prior N(0, I); the decoder mirrors `hidden`. likelihood="bernoulli" (sigmoid output, binary
    cross-entropy, data in [0, 1]) or "gaussian" (linear output, 0.5 * ||x - G(z)||^2).

    The training objective per row is ``-log p(x|z) + beta * KL(q(z|x) || N(0, I))``, averaged
    over ``n_samples`` draws of ``z`` by the reparameterization ``z = mu + exp(logvar / 2) * eps``,
    with the noise drawn (and regenerated for the backward pass) inside the compiled kernels.

    Parameters
    ----------
    hidden : int or tuple of int, default=(400,)
        Widths of the encoder's hidden layers (ints >= 1, or one int; at most 30); the decoder
        mirrors them.
    latent : int, default=20
        Size of ``z``, >= 1.
    activation : {'relu', 'sigmoid', 'tanh', 'linear'}, default='relu'
        Activation of the hidden layers.
    likelihood : {'bernoulli', 'gaussian'}, default='bernoulli'
        'bernoulli': sigmoid output, binary cross-entropy, data must lie in [0, 1]. 'gaussian':
        linear output, ``0.5 * ||x - G(z)||^2``.
    beta : float, default=1.0
        Weight of the KL term, >= 0; ``beta != 1`` is a beta-VAE.
    n_samples : int, default=1
        Draws of ``z`` per row and training step, >= 1.
    {training_parameters}

    Attributes
    ----------
    {attributes}

    See Also
    --------
    Autoencoder : The deterministic (plain, sparse or denoising) autoencoder.
    PCA : The linear autoencoder baseline, solved by one SVD.
    fastae.load : Read a model written by ``save``.

    Examples
    --------
    >>> import numpy as np
    >>> import fastae
    >>> X = np.random.default_rng(0).random((100, 8))
    >>> vae = fastae.VAE(hidden=(16,), latent=2, epochs=2, seed=0).fit(X)
    >>> vae.transform(X).shape
    (100, 2)
    >>> vae.sample(5, seed=0).shape
    (5, 8)
    >>> vae.score_samples(X).shape
    (100,)
    """
    __doc__ = splice_doc(__doc__, training_parameters=TRAINING_PARAMETERS_DOC, attributes=NEURAL_ATTRIBUTES_DOC)

    _TABLE = validation.VAE
    _CODE_NAME = "Z"

    def __init__(self, hidden: int | tuple[int, ...] = (400,), latent: int = 20, activation: Activation = "relu",
                 likelihood: Literal["bernoulli", "gaussian"] = "bernoulli", beta: float = 1.0,
                 n_samples: int = 1, optimizer: Optimizer = "adam", lr: float = 1e-3, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-8, momentum: float = 0.9, batch_size: int = 128,
                 epochs: int = 10, shuffle: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, n_iter_no_change: int = 10, tol: float = 1e-4,
                 warm_start: bool = False, callback: Callback = None, seed: int | None = None,
                 backend: Backend = "auto", dtype: str = "float32", verbose: bool = False) -> None:
        store_params(self, locals())

    def _spec(self, p, n_features):
        bernoulli = p["likelihood"] == "bernoulli"
        return Spec("vae", n_features, p["hidden"], p["latent"], p["activation"], "linear",
                    "sigmoid" if bernoulli else "linear", "bce" if bernoulli else "mse", p["dtype"],
                    likelihood=p["likelihood"], beta=p["beta"], n_samples=p["n_samples"],
                    score_seed=0 if p["seed"] is None else p["seed"])

    def _check_data(self, spec, Xc, name):
        if spec.likelihood == "bernoulli" and not validation.in_unit_interval(Xc):
            raise ValueError(f"{name} must lie in [0, 1] for likelihood='bernoulli' (scale the data, "
                             "or use likelihood='gaussian')")

    def _eps(self, state, eps, n):
        """eps as (S, n, latent): given as (n, latent) or exactly (S, n, latent)."""
        k = state.spec.width
        if eps is None:
            return None
        shape = np.shape(eps)
        if len(shape) == 3:
            if shape[1:] != (n, k) or shape[0] < 1:
                raise ValueError(f"eps must have shape ({n}, {k}) or (S, {n}, {k}), got {shape}")
            flat = validation.data(np.reshape(eps, (-1, k)), "eps", state.dtype, k, type(self).__name__, state.xp)
            return flat.reshape(shape)
        if shape != (n, k):
            raise ValueError(f"eps must have shape ({n}, {k}) or (S, {n}, {k}), got {shape}")
        return validation.data(eps, "eps", state.dtype, k, type(self).__name__, state.xp).reshape(1, n, k)

    # ---- public API
    def elbo(self, X: ArrayLike, eps: ArrayLike | None = None, seed: int | None = None) -> np.ndarray:
        """Per-row ELBO (beta = 1): exact for given eps (n, latent) or (S, n, latent), else a mean
        over n_samples draws from `seed` (None: fresh random noise).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to score.
        eps : array-like of shape (n, latent) or (S, n, latent), default=None
            Standard normal noise to use (then the result is exact and `seed` is not used).
        seed : int or None, default=None
            Seed of the noise when `eps` is None: an int in [0, 2**64), or None for fresh noise.

        Returns
        -------
        ndarray of shape (n_samples,)
            The per-row ELBO (higher is better).

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        ValueError
            If `X`, `eps` or `seed` is invalid (for the bernoulli likelihood: `X` outside [0, 1]).
        """
        state = self._state()
        seed = checks.seed(seed)  # None draws fresh entropy, as in the kernels
        if dask_support.is_dask(X):
            return dask_support.elbo(self, X, eps, seed)
        Xc = self._rows(state, X, "X", state.spec.n_features)
        self._check_data(state.spec, Xc, "X")
        eps = self._eps(state, eps, Xc.shape[0])
        rows = state.objective_rows(Xc, eps=eps, seed=seed, beta=1.0)
        return self._as_caller(state, -rows, X)

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Per-row ELBO, with a fixed noise seed (the model's seed, or 0) so it is repeatable.

        A Monte Carlo estimate whose noise is indexed by row position: it changes with row order.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to score.

        Returns
        -------
        ndarray of shape (n_samples,)
            The per-row ELBO.

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        """
        return self.elbo(X, seed=self._state().spec.score_seed)

    def value_and_grad(self, X: ArrayLike, eps: ArrayLike) -> tuple[float, Weights]:
        """(loss, grads): the training objective mean_rows(-log p(x|z) + beta * KL) with the given
        eps and its gradient, shaped like get_weights(). Each call has its own gradient buffer.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to evaluate.
        eps : array-like of shape (n, latent) or (S, n, latent)
            The standard normal noise, fixed so that the gradient is deterministic.

        Returns
        -------
        loss : float
            The mean per-row training objective (with ``beta``).
        grads : list of (ndarray, ndarray)
            Its gradient with respect to every ``(W, b)``, shaped like ``get_weights()``.

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        ValueError
            If `eps` is None or has the wrong shape, or `X` is invalid.
        """
        state = self._state()
        Xc = self._rows(state, X, "X", state.spec.n_features)
        self._check_data(state.spec, Xc, "X")
        if eps is None:
            raise ValueError("eps is required: the gradient is taken at fixed noise")
        rows, grads = state.objective_rows(Xc, eps=self._eps(state, eps, Xc.shape[0]), with_grads=True)
        return float(rows.sum()) / Xc.shape[0], self._grads_like_weights(state, grads)

    def encode(self, X: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(mu, logvar) of q(z|x), each (n, latent), from one pass of the encoder.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to encode.

        Returns
        -------
        mu : ndarray of shape (n_samples, latent)
            The means of q(z|x).
        logvar : ndarray of shape (n_samples, latent)
            The log-variances of q(z|x).

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        """
        state = self._state()
        if dask_support.is_dask(X):
            return dask_support.apply(self, "heads", X)
        Xc = self._rows(state, X, "X", state.spec.n_features, finite_checked_later=state.chains)
        mu, logvar = state.heads(Xc)
        return self._as_caller(state, mu, X), self._as_caller(state, logvar, X)

    def transform(self, X: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """mu(x), the mean code: (n, latent).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to encode.
        out : ndarray of shape (n_samples, latent), default=None
            A preallocated C-contiguous result of the model's dtype and backend.

        Returns
        -------
        ndarray of shape (n_samples, latent)
            The mean codes (``out`` when given; a lazy dask array for dask input).

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        ValueError
            If `X` has the wrong number of features or holds NaN/inf, or `out` does not fit.
        """
        state = self._state()
        if dask_support.is_dask(X):
            return dask_support.apply(self, "mean", X, out)
        return self._apply(state, "mean", X, "X", state.spec.n_features, state.spec.width, out,
                           finite_checked_later=state.chains)

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """n draws of decode(z), z ~ N(0, I): (n, D).

        Parameters
        ----------
        n : int
            Number of rows to draw, >= 1.
        seed : int or None, default=None
            Seed of ``z``: an int in [0, 2**64), or None for fresh randomness.

        Returns
        -------
        ndarray of shape (n, n_features)
            The new rows.

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        ValueError
            If `n` or `seed` is invalid.
        """
        state = self._state()
        n = validation.integer(1)(n, "n")
        seed = validation.seed(seed)
        z = np.random.default_rng(seed).standard_normal((n, state.spec.width)).astype(state.dtype)
        return self.decode(state.xp.asarray(z))
