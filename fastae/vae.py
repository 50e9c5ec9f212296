"""Variational autoencoder: Gaussian encoder, reparameterization, KL to N(0, I), trained by the
engine with the noise drawn (and regenerated for the backward) inside the kernels."""
import numpy as np

from . import dask_support, validation
from .estimator import NeuralEstimator, store_params
from .fitted import Spec
from .kernels import checks


class VAE(NeuralEstimator):
    """q(z|x) = N(mu(x), diag(exp(logvar(x)))) from a shared trunk `hidden` and two affine heads;
    prior N(0, I); the decoder mirrors `hidden`. likelihood="bernoulli" (sigmoid output, binary
    cross-entropy, data in [0, 1]) or "gaussian" (linear output, 0.5 * ||x - G(z)||^2)."""

    _TABLE = validation.VAE
    _CODE_NAME = "Z"

    def __init__(self, hidden=(400,), latent=20, activation="relu", likelihood="bernoulli", beta=1.0,
                 n_samples=1, optimizer="adam", lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 momentum=0.9, batch_size=128, epochs=10, shuffle=True, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, tol=1e-4, warm_start=False, callback=None,
                 seed=None, backend="auto", dtype="float32", verbose=False):
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
    def elbo(self, X, eps=None, seed=None):
        """Per-row ELBO (beta = 1): exact for given eps (n, latent) or (S, n, latent), else a mean
        over n_samples draws from `seed` (None: fresh random noise)."""
        state = self._state()
        seed = checks.seed(seed)  # None draws fresh entropy, as in the kernels
        if dask_support.is_dask(X):
            return dask_support.elbo(self, X, eps, seed)
        Xc = self._rows(state, X, "X", state.spec.n_features)
        self._check_data(state.spec, Xc, "X")
        eps = self._eps(state, eps, Xc.shape[0])
        rows = state.objective_rows(Xc, eps=eps, seed=seed, beta=1.0)
        return self._as_caller(state, -rows, X)

    def score_samples(self, X):
        """Per-row ELBO, with a fixed noise seed (the model's seed, or 0) so it is repeatable."""
        return self.elbo(X, seed=self._state().spec.score_seed)

    def score(self, X, y=None):
        """Mean ELBO over the rows of X (higher is better)."""
        return float(self.score_samples(X).mean())

    def value_and_grad(self, X, eps):
        """(loss, grads): the training objective mean_rows(-log p(x|z) + beta * KL) with the given
        eps and its gradient, shaped like get_weights(). Each call has its own gradient buffer."""
        state = self._state()
        Xc = self._rows(state, X, "X", state.spec.n_features)
        self._check_data(state.spec, Xc, "X")
        if eps is None:
            raise ValueError("eps is required: the gradient is taken at fixed noise")
        rows, grads = state.objective_rows(Xc, eps=self._eps(state, eps, Xc.shape[0]), with_grads=True)
        return float(rows.sum()) / Xc.shape[0], self._grads_like_weights(state, grads)

    def encode(self, X):
        """(mu, logvar) of q(z|x), each (n, latent), from one pass of the encoder."""
        state = self._state()
        if dask_support.is_dask(X):
            return dask_support.apply(self, "heads", X)
        Xc = self._rows(state, X, "X", state.spec.n_features)
        mu, logvar = state.heads(Xc)
        return self._as_caller(state, mu, X), self._as_caller(state, logvar, X)

    def transform(self, X, out=None):
        """mu(x), the mean code: (n, latent)."""
        state = self._state()
        if dask_support.is_dask(X):
            return dask_support.apply(self, "mean", X, out)
        return self._apply(state, "mean", X, "X", state.spec.n_features, state.spec.width, out)

    def sample(self, n, seed=None):
        """n draws of decode(z), z ~ N(0, I): (n, D)."""
        state = self._state()
        n = validation.integer(1)(n, "n")
        seed = validation.seed(seed)
        z = np.random.default_rng(seed).standard_normal((n, state.spec.width)).astype(state.dtype)
        return self.decode(state.xp.asarray(z))
