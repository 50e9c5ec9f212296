"""Variational autoencoder: Gaussian encoder, reparameterization, KL to N(0, I), trained by the
engine with the noise drawn (and regenerated for the backward) inside the kernels."""
import numpy as np

from . import engine, validation
from .autoencoder import _CHUNK
from .estimator import NeuralEstimator, store_params
from .kernels.elementwise import ACTIVATIONS, LINEAR, SIGMOID, noise_key
from .network import Network


class VAE(NeuralEstimator):
    """q(z|x) = N(mu(x), diag(exp(logvar(x)))) from a shared trunk `hidden` and two affine heads;
    prior N(0, I); the decoder mirrors `hidden`. likelihood="bernoulli" (sigmoid output, binary
    cross-entropy, data in [0, 1]) or "gaussian" (linear output, 0.5 * ||x - G(z)||^2)."""

    def __init__(self, hidden=(400,), latent=20, activation="relu", likelihood="bernoulli", beta=1.0,
                 n_samples=1, optimizer="adam", lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 momentum=0.9, batch_size=128, epochs=10, shuffle=True, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, tol=1e-4, warm_start=False, callback=None,
                 seed=None, backend="auto", dtype="float32", verbose=False):
        store_params(self, locals())

    # ---- description of the network
    def _check_params(self):
        v = validation
        self._hidden = v.sizes(self.hidden, "hidden")
        v.integer(self.latent, "latent", 1)
        v.one_of(self.activation, "activation", tuple(ACTIVATIONS))
        v.one_of(self.likelihood, "likelihood", ("bernoulli", "gaussian"))
        v.real(self.beta, "beta", 0)
        v.integer(self.n_samples, "n_samples", 1)

    def _build_network(self, n_features):
        h, act = self._hidden, ACTIVATIONS[self.activation]
        trunk = [n_features, *h]
        decoder = [self.latent, *reversed(h), n_features]
        dims = (list(zip(trunk[:-1], trunk[1:])) + [(trunk[-1], 2 * self.latent)]  # heads [mu | logvar]
                + list(zip(decoder[:-1], decoder[1:])))
        acts = [act] * len(h) + [LINEAR] + [act] * len(h) + [SIGMOID if self.likelihood == "bernoulli" else LINEAR]
        return Network(dims, acts, self._dtype, self._xp)

    def _fill_cfg(self, cfg_f, cfg_i, samples=None, beta=None, training=True):
        cfg_i[engine.I_SPLIT] = len(self._hidden)
        cfg_i[engine.I_LOSS] = engine.BCE if self.likelihood == "bernoulli" else engine.MSE
        cfg_i[engine.I_SAMPLES] = self.n_samples if samples is None else samples
        cfg_i[engine.I_OUT_ACT] = LINEAR  # logits for bernoulli, the mean for gaussian
        cfg_f[engine.F_BETA] = self.beta if beta is None else beta
        cfg_f[engine.F_LOSS_SCALE] = 1.0 if self.likelihood == "bernoulli" else 0.5

    def _plan(self, rows, samples=None):
        return self._net.plan(rows, samples or self.n_samples, latent=self.latent)

    def _inference_workspace(self, rows):
        plan, size = self._plan(rows, 1)  # inference: no stacked samples
        return self._xp.empty(size, self._dtype), plan

    def _public_layers(self, buffer=None):
        net, split, k = self._net, len(self._hidden), self.latent
        layers = [net.layer(l, buffer) for l in range(net.n_layers)]
        W, b = layers[split]
        return layers[:split] + [(W[:k], b[:k]), (W[k:], b[k:])] + layers[split + 1:]

    def _data(self, X, name="X", check_features=True):
        Xc = super()._data(X, name, check_features)
        if self.likelihood == "bernoulli" and (bool((Xc < 0).any()) or bool((Xc > 1).any())):
            raise ValueError(f"{name} must lie in [0, 1] for likelihood='bernoulli' (scale the data, "
                             "or use likelihood='gaussian')")
        return Xc

    # ---- training
    def fit(self, X, y=None, X_val=None):
        self._check_training_params()
        self._data(X, check_features=False)  # the [0, 1] check before any work
        return super().fit(X, y, X_val)

    def _epoch(self, X, index, keys):
        return self._run_epoch(X, index, keys, is_vae=True, samples=self.n_samples)

    def _objective_rows(self, Xc, eps=None, seed=0, beta=None, with_grads=False):
        """Per-row objective (1/S) sum_s -log p(x|z_s) + beta * KL with eps (S, n, latent) or
        n_samples draws from `seed`."""
        samples = self.n_samples if eps is None else eps.shape[0]
        cfg_f, cfg_i = self._cfg()
        self._fill_cfg(cfg_f, cfg_i, samples, beta)
        n = Xc.shape[0]
        chunk = n if (with_grads or eps is not None) else min(n, _CHUNK)
        plan, size = self._plan(chunk, samples)
        work = self._xp.empty(size, self._dtype)
        out = self._xp.empty(n, self._dtype)
        eng, net = engine.for_backend(self._backend_name), self._net
        beta = cfg_f[engine.F_BETA]
        for c, start in enumerate(range(0, n, chunk)):
            x = Xc[start:start + chunk]
            m = x.shape[0]
            if eps is None:
                e, has_eps, key = self._xp.zeros((1, 1), self._dtype), False, noise_key(seed + c)
            else:
                e, has_eps, key = eps.reshape(samples * m, -1), True, np.uint64(0)
            eng.vae_objective(net.params, self._grads, net.layout, net.acts, work, plan, x, m, cfg_f, cfg_i,
                              e, has_eps, key, with_grads)
            rec = work[plan[engine.S_ROWS]:plan[engine.S_ROWS] + samples * m].reshape(samples, m)
            kl = work[plan[engine.S_KL]:plan[engine.S_KL] + m]
            out[start:start + m] = rec.mean(axis=0) + beta * kl
        return out

    def _score_rows(self, Xc):
        return -self._objective_rows(Xc, seed=self._score_seed())

    def _score_seed(self):
        return 0 if self.seed is None else self.seed

    def _eps(self, eps, n):
        eps = validation.data(np.asarray(eps).reshape(-1, self.latent) if np.ndim(eps) == 3 else eps,
                              "eps", self._dtype, self.latent, type(self).__name__, self._xp)
        if eps.shape[0] % n:
            raise ValueError(f"eps must have shape ({n}, {self.latent}) or (S, {n}, {self.latent})")
        return eps.reshape(eps.shape[0] // n, n, self.latent)

    # ---- public API
    def elbo(self, X, eps=None, seed=None):
        """Per-row ELBO (beta = 1): exact for given eps (n, latent) or (S, n, latent), else a mean
        over n_samples draws from `seed`."""
        self._check_fitted()
        Xc = self._data(X)
        if eps is not None:
            eps = self._eps(eps, Xc.shape[0])
        return self._as_caller(-self._objective_rows(Xc, eps=eps, seed=seed or 0, beta=1.0), X)

    def score_samples(self, X):
        """Per-row ELBO, with a fixed noise seed (the model's seed, or 0) so it is repeatable."""
        return self.elbo(X, seed=self._score_seed())

    def score(self, X, y=None):
        """Mean ELBO over the rows of X (higher is better)."""
        return float(self.score_samples(X).mean())

    def value_and_grad(self, X, eps):
        """(loss, grads): the training objective mean_rows(-log p(x|z) + beta * KL) with the given
        eps and its gradient, shaped like get_weights()."""
        self._check_fitted()
        Xc = self._data(X)
        rows = self._objective_rows(Xc, eps=self._eps(eps, Xc.shape[0]), with_grads=True)
        return float(rows.sum()) / Xc.shape[0], self._grads_like_weights()

    def _heads(self, X, out, which):
        """mu (which=0) or logvar (which=1) of q(z|x) through the compiled encoder."""
        self._check_fitted()
        eng, net = engine.for_backend(self._backend_name), self._net

        def run(x, work, plan, cfg_f, cfg_i, result):
            other = self._xp.empty_like(result)
            pair = (result, other) if which == 0 else (other, result)
            eng.heads_into(net.params, net.layout, net.acts, work, plan, x, x.shape[0], cfg_i, *pair)
        return self._infer(X, "X", self.n_features_in_, self.latent, out, run)

    def encode(self, X):
        """(mu, logvar) of q(z|x), each (n, latent)."""
        return self._heads(X, None, 0), self._heads(X, None, 1)

    def transform(self, X, out=None):
        """mu(x), the mean code: (n, latent)."""
        return self._heads(X, out, 0)

    def decode(self, Z, out=None):
        """Mean of p(x|z): (n, D)."""
        return self._decode(Z, "Z", out)

    inverse_transform = decode

    def sample(self, n, seed=None):
        """n draws of decode(z), z ~ N(0, I): (n, D)."""
        self._check_fitted()
        n = validation.integer(n, "n", 1)
        z = np.random.default_rng(seed).standard_normal((n, self.latent)).astype(self._dtype)
        return self.decode(self._xp.asarray(z))
