"""A fitted network as data: what it is (`Spec`), its weights and its training state, frozen.

Every consumer of a fitted model (inference, scores, gradients, files) reads one `FittedModel`
and nothing else; the estimator's constructor parameters are never read after `fit`. A
`FittedModel` is never changed in place: training works on copies and hands over a new one at the
end of each completed epoch, so a reader (another thread, a file being written) always sees one
consistent state.
"""
import contextlib
import copy
import dataclasses
import functools
import threading
from typing import Optional

import numpy as np

from . import engine
from .kernels import backend as _backend
from .kernels.elementwise import ACTIVATIONS, LINEAR, SIGMOID, noise_key
from .kernels.threads import pool_threads
from . import network
from .chain import CHUNK  # noqa: F401 (inference rows per compiled call: bounds the workspace)
from .network import Network


# what makes two specs the same network (warm_start and partial_fit need it unchanged)
ARCHITECTURE = ("n_features", "hidden", "width", "activation", "code_activation", "output_activation",
                "likelihood", "dtype")


class NotFinite(ValueError):
    """Rows handed to a compiled chain hold NaN or inf (the estimator says which argument)."""

    def __init__(self, name="X"):
        super().__init__(f"{name} contains NaN or infinity")
        self.name = name

    def __reduce__(self):  # rebuilt from the name (pickled across processes), not the message
        return type(self), (self.name,)


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a fitted network computes: its architecture and its objective."""
    kind: str                 # "autoencoder" or "vae"
    n_features: int
    hidden: tuple
    width: int                # the code (Autoencoder) or latent (VAE) size
    activation: str
    code_activation: str      # VAE: "linear" (the heads)
    output_activation: str
    loss: str                 # "mse" or "bce"
    dtype: str                # "float32" or "float64"
    l1: float = 0.0
    noise: float = 0.0
    noise_type: str = "gaussian"
    likelihood: Optional[str] = None  # VAE: "bernoulli" or "gaussian"
    beta: float = 1.0
    n_samples: int = 1
    score_seed: int = 0       # VAE: the noise seed of score_samples

    @property
    def is_vae(self):
        return self.kind == "vae"

    def width_name(self):
        return "latent" if self.is_vae else "code"

    def changed_architecture(self, other):
        """The names of the architecture fields that differ from `other` (in the user's words)."""
        names = {"width": self.width_name(), "n_features": "number of features"}
        return [names.get(f, f) for f in ARCHITECTURE if getattr(self, f) != getattr(other, f)]

    def network(self, xp=np):
        """The layer stack (weights zero) of this spec."""
        h, act = self.hidden, ACTIVATIONS[self.activation]
        d = self.n_features
        if self.is_vae:
            trunk, decoder = [d, *h], [self.width, *reversed(h), d]
            dims = (list(zip(trunk[:-1], trunk[1:])) + [(trunk[-1], 2 * self.width)]  # heads [mu | logvar]
                    + list(zip(decoder[:-1], decoder[1:])))
            out = SIGMOID if self.likelihood == "bernoulli" else LINEAR
            acts = [act] * len(h) + [LINEAR] + [act] * len(h) + [out]
        else:
            sizes = [d, *h, self.width, *reversed(h), d]
            acts = ([act] * len(h) + [ACTIVATIONS[self.code_activation]] + [act] * len(h)
                    + [ACTIVATIONS[self.output_activation]])
            dims = list(zip(sizes[:-1], sizes[1:]))
        return Network(dims, acts, self.dtype, xp)

    def public_shapes(self):
        """The shapes of get_weights()' (W, b) pairs (a VAE's heads as two layers), and the size
        of the flat buffer, without allocating anything."""
        net = self.network(None)
        shapes = [((int(out), int(inp)), (int(out),)) for _, out, inp, _ in net.layout]
        if self.is_vae:
            split, k = len(self.hidden), self.width
            (_, inp), _ = shapes[split]
            shapes[split:split + 1] = [((k, inp), (k,)), ((k, inp), (k,))]
        return shapes, net.n_params

    def config(self, training=None):
        """The engine's CONFIG record: for inference (no noise), or with `training`'s optimizer
        settings (a dict of checked parameters)."""
        if self.is_vae:
            fields = dict(loss=engine.BCE if self.likelihood == "bernoulli" else engine.MSE, out_act=LINEAR,
                          samples=self.n_samples, beta=self.beta,
                          loss_scale=1.0 if self.likelihood == "bernoulli" else 0.5)
        else:
            # BCE is computed from the logits: the output layer runs linear in the objective
            fields = dict(loss=engine.BCE if self.loss == "bce" else engine.MSE,
                          out_act=LINEAR if self.loss == "bce" else ACTIVATIONS[self.output_activation],
                          nonneg=self.code_activation == "relu", l1=self.l1, samples=1, loss_scale=1.0,
                          noise_kind=0 if self.noise_type == "gaussian" else 1)
        fields["split"] = len(self.hidden)
        if training is not None:
            fields.update(noise=0.0 if self.is_vae else self.noise,
                          optimizer=engine.ADAM if training["optimizer"] == "adam" else engine.SGD,
                          **{k: training[k] for k in ("lr", "beta_1", "beta_2", "epsilon", "momentum")})
        return engine.record(engine.CONFIG, **fields)


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Where training stands: optimizer moments (Adam's m and v, or SGD's velocity in opt_a),
    steps taken, epochs run, the loss history and the random stream, all after the same step."""
    opt_a: object
    opt_b: object
    t: int = 0
    n_iter: int = 0
    loss: tuple = ()
    val_loss: tuple = ()
    rng_state: Optional[dict] = None


class FittedModel:
    """A fitted Autoencoder or VAE: spec, weights (one flat buffer) and training state, on one
    backend. Never modified after construction; inference workspaces are cached per thread."""

    settings = None  # the constructor parameters it was fitted with (what `save` writes)

    def with_settings(self, settings):
        """This state labelled with the checked constructor parameters it was fitted with."""
        labelled = copy.copy(self)
        labelled.settings = fit_settings(settings)
        return labelled

    def __init__(self, spec, params, train, backend):
        self.spec, self.train, self.backend = spec, train, backend
        self.net = spec.network(None)  # layout and activations (host); the weights are `params`
        if params.shape != (self.net.n_params,) or params.dtype != np.dtype(spec.dtype):
            raise ValueError(f"params must be {spec.dtype} of shape ({self.net.n_params},)")
        self.params = params
        self._inference_config = spec.config()
        self._local = threading.local()
        self.xp = _backend.array_module(backend)
        self.dtype = np.dtype(spec.dtype)
        self._layout, self._acts, self._code_width = self.net.layout, self.net.acts, spec.width

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_local"], state["xp"]  # per-thread workspaces and modules are not part of the model
        state.pop("_engine", None)
        state.pop("_chains", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state, _local=threading.local(), xp=_backend.array_module(state["backend"]))

    @property
    def engine(self):
        """The engine bound to this backend's kernels (looked up once: inference is latency bound)."""
        try:
            return self._engine
        except AttributeError:
            self._engine = engine.for_model(self.backend, self.dtype.name)
            return self._engine

    def replace(self, params=None, **train_fields):
        """A new FittedModel sharing this one's arrays except those given."""
        train = dataclasses.replace(self.train, **train_fields) if train_fields else self.train
        return FittedModel(self.spec, self.params if params is None else params, train, self.backend)

    def to_backend(self, backend):
        """The same model with its arrays on another backend."""
        if backend == self.backend:
            return self
        xp = _backend.array_module(backend)
        def move(a):
            return network.copy(self.host(a), xp) if xp is np else xp.asarray(self.host(a))
        train = dataclasses.replace(self.train, opt_a=move(self.train.opt_a), opt_b=move(self.train.opt_b))
        return FittedModel(self.spec, move(self.params), train, backend)

    def host(self, a):
        return a.get() if hasattr(a, "get") else np.asarray(a)

    # ---- weights as the user sees them
    def layers(self, buffer=None):
        """[(W, b), ...] in forward order, views of `buffer` (default: the weights); a VAE's
        fused heads appear as two layers (mu, then logvar)."""
        buf = self.params if buffer is None else buffer
        layers = [self.net.layer(l, buf) for l in range(self.net.n_layers)]
        if not self.spec.is_vae:
            return layers
        split, k = len(self.spec.hidden), self.spec.width
        W, b = layers[split]
        return layers[:split] + [(W[:k], b[:k]), (W[k:], b[k:])] + layers[split + 1:]

    # ---- workspaces
    def workspace(self, rows, samples=1):
        plan, size = self.net.plan(rows, samples, code=0 if self.spec.is_vae else self.spec.width,
                                   latent=self.spec.width if self.spec.is_vae else 0)
        return network.empty(size, self.dtype, self.xp), plan

    def _space(self, rows):
        """A workspace for `rows` rows, cached per thread: concurrent calls never share one."""
        try:
            return self._local.spaces[rows]
        except AttributeError:
            self._local.spaces = {}
        except KeyError:
            if len(self._local.spaces) > 8:
                self._local.spaces.clear()
        space = self._local.spaces[rows] = self.workspace(rows)
        return space

    # ---- inference on checked rows (C-contiguous arrays of the model dtype on the backend)
    def _chunks(self, X, n_out, out, run):
        n = X.shape[0]
        result = self.xp.empty((n, n_out), self.dtype) if out is None else out
        rows = min(n, CHUNK)
        work, plan = self._space(rows)
        for start in range(0, n, rows):
            x = X[start:start + rows]
            run(x, work, plan, result[start:start + x.shape[0]])
        return result

    def flushed(self):
        """The context the training and scoring passes run in: on the cpu backend subnormal
        floats flushed to zero (`kernels.denormals`: they cost ~100 cycles each); the numpy
        backend keeps IEEE arithmetic, as the reference."""
        if self.backend != "cpu":
            return contextlib.nullcontext()
        return _denormals().flushed()

    # ---- inference on the cpu backend: one compiled call over packed weights (compiled.chain_into)
    @property
    def chains(self):
        """Whether encode, mean, decode and reconstruct run as chains of packed layers."""
        return self.backend == "cpu"

    def _chain(self, part):
        """The layers of one part, with packed weights: built once per fitted state."""
        try:
            chains = self._chains
        except AttributeError:
            chains = self._chains = {}
        chain = chains.get(part)
        if chain is None:
            from .chain import Chain, chain_of
            if part == "heads":  # a VAE's trunk and its fused [mu | logvar] layer
                split = len(self.spec.hidden)
                acts = [int(a) for a in self.net.acts[:split]] + [LINEAR]
                chain = Chain([self.net.layer(l, self.params) for l in range(split + 1)], acts, self.dtype)
            else:
                chain = chain_of(self, part)
            chains[part] = chain
        return chain

    def run_chain(self, part, X, out=None):
        """encode (a VAE's: mu), heads, decode or reconstruct of checked rows X into out: the
        native chain where its machine code is at hand (fastae.native_chain: no Numba needed in
        the process, layers split between fastae's own threads), else the Numba chain (until the
        native one is built, or where it cannot be). The same bits either way."""
        try:
            chain = self._chains[part]
        except (AttributeError, KeyError):
            chain = self._chain(part)
        result = np.empty((X.shape[0], chain.n_out), self.dtype) if out is None else out
        done = _native().run(chain, X, result)
        if done is not None:
            if not done:
                raise NotFinite
            return result
        compiled = _compiled()
        run = getattr(self.engine, "chain_into", compiled.chain_into)  # deferred until compiled
        if not run(chain.params, chain.layout, chain.acts, chain.prox, chain.l1, chain.packed, chain.packed_at,
                   pool_threads(), True, X, result):
            raise NotFinite
        return result

    def encode(self, X, out=None):
        """Autoencoder codes (n, code)."""
        if self.chains:
            return self.run_chain("encode", X, out)
        n = X.shape[0]
        if n <= CHUNK:  # the latency path: one compiled call, no closures
            result = self.xp.empty((n, self._code_width), self.dtype) if out is None else out
            work, plan = self._space(n)
            if not self.engine.encode_into(self.params, self._layout, self._acts, work, plan, X, n,
                                           self._inference_config, result):
                raise ValueError("X contains NaN or infinity")
            return result
        eng, net, cfg = self.engine, self.net, self._inference_config

        def run(x, work, plan, r):
            if not eng.encode_into(self.params, net.layout, net.acts, work, plan, x, x.shape[0], cfg, r):
                raise ValueError("X contains NaN or infinity")
        return self._chunks(X, self.spec.width, out, run)

    def takes_as_is(self, X, n_in):
        """Whether X can go to compiled code as it is: the one array type it is compiled for
        (a base-class, aligned, writeable, C-contiguous 2-D array of the model dtype, cpu)."""
        return (type(X) is np.ndarray and X.dtype is self.dtype and self.backend == "cpu" and X.ndim == 2
                and X.shape[1] == n_in and X.shape[0] > 0 and X.flags.c_contiguous and X.flags.writeable
                and X.flags.aligned)

    def heads(self, X, mu=None, logvar=None):
        """VAE (mu, logvar) of q(z|x), each (n, latent)."""
        k = self.spec.width
        n = X.shape[0]
        if self.chains:  # mu as transform computes it, bit for bit
            both = self.run_chain("heads", X)
            return both[:, :k].copy() if mu is None else _put(mu, both[:, :k]), \
                both[:, k:].copy() if logvar is None else _put(logvar, both[:, k:])
        eng, net, cfg = self.engine, self.net, self._inference_config
        mu = self.xp.empty((n, k), self.dtype) if mu is None else mu
        logvar = self.xp.empty((n, k), self.dtype) if logvar is None else logvar
        rows = min(n, CHUNK)
        work, plan = self._space(rows)
        for start in range(0, n, rows):
            x = X[start:start + rows]
            m = x.shape[0]
            eng.heads_into(self.params, net.layout, net.acts, work, plan, x, m, cfg, mu[start:start + m],
                           logvar[start:start + m])
        return mu, logvar

    def mean(self, X, out=None):
        """VAE mu, (n, latent)."""
        if self.chains:
            return self.run_chain("encode", X, out)
        return self.heads(X, out)[0]

    def reconstruct(self, X, out=None):
        """decode(encode(X)) (a VAE's: decode(mu)), (n, D)."""
        if self.chains:
            return self.run_chain("reconstruct", X, out)
        return self.decode(self.mean(X) if self.spec.is_vae else self.encode(X), out)

    def decode(self, Z, out=None):
        """The layers after the code on Z (n, code or latent): (n, D)."""
        if self.chains:
            return self.run_chain("decode", Z, out)
        eng, net = self.engine, self.net
        first = len(self.spec.hidden) + 1
        return self._chunks(Z, self.spec.n_features, out, lambda z, work, plan, r: eng.layers_into(
            self.params, net.layout, net.acts, first, net.n_layers, z, work, plan, z.shape[0], r))

    def objective_rows(self, X, eps=None, seed=0, beta=None, with_grads=False, index=None):
        """Per-row objective without noise (Autoencoder: reconstruction + L1 penalty) or with eps
        (S, n, latent) or n_samples draws from `seed` (VAE: -log p(x|z) + beta * KL, beta given
        or the spec's), in minibatches of up to CHUNK rows of the engine's pass. `index` picks
        rows of X (no copy of X). With `with_grads`, also the gradient of the mean, in a buffer
        of its own: (rows, grads)."""
        spec = self.spec
        samples = eps.shape[0] if eps is not None else (spec.n_samples if spec.is_vae else 1)
        config = spec.config()
        config["samples"] = samples
        if beta is not None:
            config["beta"] = beta
        xp, eng, net = self.xp, self.engine, self.net
        n = X.shape[0] if index is None else index.shape[0]
        index = xp.arange(n, dtype=np.int64) if index is None else xp.asarray(index, dtype=np.int64)
        chunk = n if (with_grads or eps is not None) else min(n, CHUNK)
        steps = -(-n // chunk)
        work, plan = self.workspace(chunk, samples)
        grads = network.zeros(self.params.shape[0], self.dtype, xp)
        values, totals = xp.empty(n, self.dtype), np.zeros(steps)
        with np.errstate(over="ignore"):
            keys = np.array([noise_key(_chunk_seed(seed, c)) for c in range(steps)], dtype=np.uint64)
        mode = engine.GRADIENT if with_grads else engine.SCORE
        args = (self.params, grads, grads, grads, net.layout, net.acts, work, plan, X, index, chunk, 0, steps,
                config, keys, 0, totals, values, mode)  # opt_a, opt_b: not used outside training
        with self.flushed():
            if spec.is_vae:
                has_eps = eps is not None
                e = eps.reshape(samples * n, -1) if has_eps else xp.zeros((1, 1), self.dtype)
                eng.vae_pass(*args, e, has_eps)
            else:
                eng.ae_pass(*args)
        return (values, grads) if with_grads else values


@functools.lru_cache(maxsize=None)
def _denormals():
    """fastae.kernels.denormals, imported on first use (it imports Numba)."""
    from .kernels import denormals
    return denormals


def _native():
    """fastae.native_chain, imported on first use."""
    global _native_module
    if _native_module is None:
        from . import native_chain
        _native_module = native_chain
    return _native_module


_native_module = None


def _compiled():
    """fastae.compiled, imported on first use (it imports this module)."""
    global _compiled_module
    if _compiled_module is None:
        from . import compiled
        _compiled_module = compiled
    return _compiled_module


_compiled_module = None


def _put(out, values):
    out[...] = values
    return out


def _chunk_seed(seed, chunk):
    """The noise seed of chunk `chunk` of a scoring call: chunk 0 uses `seed` itself, later
    chunks hashed streams, so that no two (seed, chunk) pairs share noise."""
    if chunk == 0:
        return seed
    from .kernels.elementwise import mix64
    with np.errstate(over="ignore"):
        return int(mix64(np.uint64(seed) ^ mix64(np.uint64(chunk))))


def fit_settings(checked):
    """The checked constructor parameters as plain JSON values, without the two that are not part
    of a model: the callback (code) and the backend (a property of the machine)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in checked.items()
            if k not in ("callback", "backend")}
