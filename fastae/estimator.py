"""What every fastae model shares: scikit-learn-style parameters, and for the neural models the
training loop (epochs, shuffling, validation, early stopping, history, callback, progress bar,
divergence guard). The math lives in `engine.py`; the models only describe their networks."""
import inspect
import threading
import time

import numpy as np

from . import engine, validation
from .kernels import backend as _backend
from .kernels import elementwise as ew


class Estimator:
    """get_params / set_params / repr from the constructor's signature, as scikit-learn's."""

    @classmethod
    def _param_names(cls):
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{name!r} is not a parameter of {type(self).__name__}; "
                                 f"valid parameters: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = inspect.signature(type(self).__init__).parameters
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if not _same(v, defaults[k].default)]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self):
        from sklearn.utils import Tags, TargetTags, TransformerTags  # only scikit-learn calls this
        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(preserves_dtype=[]), requires_fit=True)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "n_features_in_")

    def _check_fitted(self):
        if not self.__sklearn_is_fitted__():
            raise validation.NotFittedError(f"This {type(self).__name__} is not fitted yet: call fit first")

    def save(self, path):
        """Write the model to one .npz file at exactly `path` (no pickle); read it with fastae.load."""
        from .persistence import save
        save(self, path)

    def fit_transform(self, X, y=None, **fit_params):
        return self.fit(X, **fit_params).transform(X)


def _result_array(out, shape, dtype, xp):
    """The caller's checked `out=`, or a new result array."""
    if out is None:
        return xp.empty(shape, dtype)
    if not isinstance(out, xp.ndarray):  # the kernels write into it on the model's backend
        raise TypeError(f"out must be a {xp.__name__} array for this model's backend, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"out must have shape {tuple(shape)} and dtype {np.dtype(dtype)}, got "
                         f"{tuple(out.shape)} {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writeable C-contiguous array")
    return out


def store_params(estimator, params):
    """Keep every constructor argument as given (scikit-learn's convention: no validation here)."""
    for name in estimator._param_names():
        setattr(estimator, name, params[name])


def _same(a, b):
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return a is b


def _validation_rows(y, X_val):
    """fit(X, y=None, X_val=None): the second positional argument is the validation rows (2-D, as
    in the API) or scikit-learn's y (1-D, passed by Pipeline and GridSearchCV; ignored)."""
    if X_val is not None:
        return X_val
    if y is not None and np.asarray(y).ndim == 2:
        return y
    return None


class NeuralEstimator(Estimator):
    """The training loop shared by Autoencoder and VAE. Subclasses provide `_check_params`,
    `_build_network`, `_epoch` and `_objective_rows`."""

    _TRAINING = dict(optimizer="adam", lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, momentum=0.9,
                     batch_size=128, epochs=10, shuffle=True, early_stopping=False,
                     validation_fraction=0.1, n_iter_no_change=10, tol=1e-4, warm_start=False,
                     callback=None, seed=None, backend="auto", dtype="float32", verbose=False)

    # ---- parameters
    def _check_training_params(self):
        v = validation
        self._opt_code = {"adam": engine.ADAM, "sgd": engine.SGD}[v.one_of(self.optimizer, "optimizer", ("adam", "sgd"))]
        self._lr = v.real(self.lr, "lr", 0, low_open=True)
        self._beta_1 = v.real(self.beta_1, "beta_1", 0, 1, high_open=True)
        self._beta_2 = v.real(self.beta_2, "beta_2", 0, 1, high_open=True)
        self._epsilon = v.real(self.epsilon, "epsilon", 0, low_open=True)
        self._momentum = v.real(self.momentum, "momentum", 0, 1)
        v.integer(self.batch_size, "batch_size", 1)
        v.integer(self.epochs, "epochs", 1)
        v.boolean(self.shuffle, "shuffle")
        v.boolean(self.early_stopping, "early_stopping")
        v.real(self.validation_fraction, "validation_fraction", 0, 1, low_open=True, high_open=True)
        v.integer(self.n_iter_no_change, "n_iter_no_change", 1)
        v.real(self.tol, "tol", 0)
        v.boolean(self.warm_start, "warm_start")
        if self.callback is not None and not callable(self.callback):
            raise ValueError(f"callback must be None or callable(model, epoch, logs), got {self.callback!r}")
        v.seed(self.seed)
        self._dtype = v.dtype(self.dtype)
        self._backend_name = _backend.resolve(v.one_of(self.backend, "backend", ("auto", "cpu", "numpy", "cuda")))
        self._check_params()
        # inference caches hold a config and workspaces for the previous parameters
        self._local = threading.local()

    @property
    def _xp(self):
        """The array module of the backend (a property: modules do not pickle)."""
        return _backend.array_module(self._backend_name)

    # ---- input
    def _data(self, X, name="X", check_features=True):
        return validation.data(X, name, self._dtype, self.n_features_in_ if check_features else None,
                               type(self).__name__, self._xp)

    def _as_caller(self, result, like):
        """NumPy in, NumPy out: results computed on a GPU go back to the host for NumPy callers."""
        if self._xp is not np and not _backend.is_cupy(like):
            return result.get()
        return result

    # ---- state
    def _fresh_state(self, n_features):
        self._rng = np.random.default_rng(self.seed)
        self.n_features_in_ = n_features
        self._net = self._build_network(n_features)
        self._net.init(self._rng, self._xp)
        self._train_rows = None  # workspaces are sized for one architecture: drop the old ones
        self._reset_optimizer()
        self.history_ = {"loss": [], "val_loss": []}
        self.n_iter_ = 0

    def _reset_optimizer(self):
        xp, p = self._xp, self._net.n_params
        self._grads = xp.zeros(p, self._dtype)
        self._opt_a, self._opt_b = xp.zeros(p, self._dtype), xp.zeros(p, self._dtype)
        self.t_ = 0  # optimizer steps taken

    def _cfg(self):
        cfg_f = np.zeros(9)
        cfg_f[[engine.F_LR, engine.F_BETA_1, engine.F_BETA_2, engine.F_EPSILON, engine.F_MOMENTUM]] = (
            self._lr, self._beta_1, self._beta_2, self._epsilon, self._momentum)
        cfg_i = np.zeros(7, dtype=np.int64)
        cfg_i[engine.I_OPT] = self._opt_code
        self._fill_cfg(cfg_f, cfg_i)
        return cfg_f, cfg_i

    # ---- training
    def fit(self, X, y=None, X_val=None):
        """Train for `epochs` passes (from fresh weights unless warm_start); returns self.
        X_val (the second positional argument when 2-D) gives val_loss per epoch."""
        X_val = _validation_rows(y, X_val)
        self._check_training_params()
        Xc = validation.data(X, "X", self._dtype, None, type(self).__name__, self._xp)
        if not (self.warm_start and self.__sklearn_is_fitted__() and self.n_features_in_ == Xc.shape[1]):
            self._fresh_state(Xc.shape[1])
        Xv = self._data(X_val, "X_val") if X_val is not None else None
        if Xv is None and self.early_stopping:
            if Xc.shape[0] < 2:
                raise ValueError("early_stopping needs at least 2 rows in X to hold out a validation set")
            order = self._rng.permutation(Xc.shape[0])
            n_val = max(1, int(round(self.validation_fraction * Xc.shape[0])))
            Xv, Xc = Xc[order[:n_val]], Xc[order[n_val:]]
        self._train(Xc, Xv, self.epochs)
        return self

    def partial_fit(self, X, y=None, X_val=None):
        """One pass over X in minibatches, continuing from the current weights and optimizer state."""
        X_val = _validation_rows(y, X_val)
        self._check_training_params()
        if not self.__sklearn_is_fitted__():
            Xc = validation.data(X, "X", self._dtype, None, type(self).__name__, self._xp)
            self._fresh_state(Xc.shape[1])
        else:
            Xc = self._data(X)
        self._train(Xc, self._data(X_val, "X_val") if X_val is not None else None, 1)
        return self

    def _train(self, X, X_val, epochs):
        bar = self._progress(epochs)
        best, best_state, stale = np.inf, None, 0
        try:
            for epoch in range(epochs):
                saved = (self._net.params.copy(), self._opt_a.copy(), self._opt_b.copy(), self.t_)
                start = time.perf_counter()
                loss = self._one_pass(X)
                if not np.isfinite(loss):
                    self._net.params[...], self._opt_a[...], self._opt_b[...], self.t_ = saved
                    raise FloatingPointError(
                        f"training diverged in epoch {self.n_iter_ + 1}: the loss became {loss}; the "
                        f"learning rate (lr={self.lr}) is likely too high. The weights of the last "
                        "finite epoch were kept.")
                self.n_iter_ += 1
                self.history_["loss"].append(loss)
                logs = {"loss": loss, "rows_per_s": X.shape[0] / (time.perf_counter() - start)}
                if X_val is not None:
                    logs["val_loss"] = -float(self._score_rows(X_val).mean())
                    self.history_["val_loss"].append(logs["val_loss"])
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
                    bar.update(1)
                if self.early_stopping and X_val is not None:
                    if logs["val_loss"] < best - self.tol:
                        best, stale = logs["val_loss"], 0
                        best_state = (self._net.params.copy(), self._opt_a.copy(), self._opt_b.copy(), self.t_)
                    else:
                        stale += 1
                    if stale >= self.n_iter_no_change:
                        break
                if self.callback is not None and self.callback(self, self.n_iter_, dict(logs)) is True:
                    break
        finally:
            if bar is not None:
                bar.close()
        if best_state is not None:
            self._net.params[...], self._opt_a[...], self._opt_b[...], self.t_ = best_state

    def _progress(self, epochs):
        if not self.verbose:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=epochs, desc=type(self).__name__, unit="epoch")

    def _one_pass(self, X):
        """One shuffled pass over X through the engine; the mean per-row objective."""
        n = X.shape[0]
        index = self._rng.permutation(n) if self.shuffle else np.arange(n)
        steps = (n + self.batch_size - 1) // self.batch_size
        base = np.uint64(self._rng.integers(0, 2 ** 63))
        with np.errstate(over="ignore"):
            keys = ew.mix64(base + np.arange(steps, dtype=np.uint64) * ew._GOLDEN)
        if self._xp is not np:
            index = self._xp.asarray(index)
        total = self._epoch(X, index.astype(np.int64) if self._xp is np else index, keys)
        self.t_ += steps
        return float(total) / n

    def _workspace(self, rows):
        plan, size = self._plan(rows)
        return self._xp.empty(size, self._dtype), plan

    def _run_epoch(self, X, index, keys, is_vae, samples=1):
        """engine.train_epoch over a training workspace kept for the batch size."""
        rows = min(self.batch_size, X.shape[0])
        if getattr(self, "_train_rows", None) != (rows, samples):
            self._train_work, self._train_plan = self._workspace(rows)
            self._train_rows = (rows, samples)
        cfg_f, cfg_i = self._cfg()
        net = self._net
        placeholder = self._xp.zeros((1, 1), self._dtype)  # eps is drawn in the kernels
        return engine.for_backend(self._backend_name).train_epoch(
            net.params, self._grads, self._opt_a, self._opt_b, net.layout, net.acts, self._train_work,
            self._train_plan, X, index, self.batch_size, cfg_f, cfg_i, keys, self.t_, is_vae, placeholder)

    def _decode(self, codes, name, out):
        """The decoder (the layers after the code) on `codes`, in one compiled call per chunk."""
        self._check_fitted()
        eng, net = engine.for_backend(self._backend_name), self._net
        split = len(self._hidden)

        def run(z, work, plan, cfg_f, cfg_i, result):
            eng.layers_into(net.params, net.layout, net.acts, split + 1, net.n_layers, z, work, plan,
                            z.shape[0], result)
        return self._infer(codes, name, int(net.layout[split + 1, 2]), self.n_features_in_, out, run)

    def reconstruct(self, X):
        """decode(transform(X)): (n, D)."""
        return self.decode(self.transform(X))

    # ---- inference
    def _inference_workspace(self, rows):
        return self._workspace(rows)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_local", None)  # per-thread inference workspaces are not part of the model
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "_net" in state:
            self._local = threading.local()

    def _inference_space(self, rows):
        """A workspace for `rows` rows and the inference config, cached per thread (so concurrent
        calls never share a workspace) and per model state."""
        cache = self._local.__dict__.setdefault("spaces", {})
        key = (rows, id(self._net))
        if key not in cache:
            if len(cache) > 8:
                cache.clear()
            cfg_f, cfg_i = self._cfg()
            self._fill_cfg(cfg_f, cfg_i, training=False)
            finite = _backend.module("cpu").all_finite if self._backend_name == "cpu" else None
            cache[key] = self._inference_workspace(rows) + (cfg_f, cfg_i, engine.for_backend(self._backend_name), finite)
        return cache[key]

    def _fast_rows(self, X, n_features):
        """The latency path's test: a small C-contiguous NumPy array of the model dtype, on the
        cpu backend, with no NaN/inf (checked by a compiled pass). Anything else: None."""
        if (type(X) is np.ndarray and X.ndim == 2 and X.dtype == self.__dict__.get("_dtype")
                and self.__dict__.get("_backend_name") == "cpu" and "_net" in self.__dict__
                and X.shape[1] == n_features and 0 < X.shape[0] <= 256 and X.flags.c_contiguous):
            space = self._inference_space(X.shape[0])
            if space[5](X.reshape(-1)):
                return space
        return None

    def _checked_rows(self, X, name, n_features):
        """X for inference: the fast path takes a C-contiguous NumPy array of the model dtype as it
        is (after a compiled NaN/inf check); anything else goes through the full conversion."""
        if (type(X) is np.ndarray and self._backend_name == "cpu" and X.dtype == self._dtype
                and X.ndim == 2 and X.shape[1] == n_features and X.shape[0] > 0 and X.flags.c_contiguous):
            from .kernels import cpu
            if cpu.all_finite(X.reshape(-1)):
                return X
        return validation.data(X, name, self._dtype, n_features, type(self).__name__, self._xp)

    def _infer(self, X, name, n_in, n_out, out, run, chunk=4096):
        """run(x, work, plan, cfg_f, cfg_i, result_rows) over chunks of the checked rows of X."""
        self._check_fitted()
        Xc = self._checked_rows(X, name, n_in)
        n = Xc.shape[0]
        result = _result_array(out, (n, n_out), self._dtype, self._xp)
        rows = min(n, chunk)
        work, plan, cfg_f, cfg_i = self._inference_space(rows)[:4]
        for start in range(0, n, rows):
            x = Xc[start:start + rows]
            run(x, work, plan, cfg_f, cfg_i, result[start:start + x.shape[0]])
        return self._as_caller(result, X) if out is None else out

    # ---- weights
    def get_weights(self):
        """[(W, b), ...] in forward order, as copies."""
        self._check_fitted()
        return [(W.copy(), b.copy()) for W, b in self._public_layers()]

    def set_weights(self, weights):
        """Set every (W, b) from `weights` (shapes must match the architecture); resets the
        optimizer state. Works on an unfitted model: sizes are read from the shapes."""
        self._check_training_params()
        try:
            pairs = [(np.asarray(W), np.asarray(b)) for W, b in weights]
        except (TypeError, ValueError):
            raise ValueError("weights must be a list of (W, b) pairs") from None
        if not pairs or pairs[0][0].ndim != 2:
            raise ValueError("weights must be a non-empty list of (W, b) pairs with 2-D W")
        if not self.__sklearn_is_fitted__() or self.n_features_in_ != pairs[0][0].shape[1]:
            self._fresh_state(pairs[0][0].shape[1])
        targets = self._public_layers()
        if len(pairs) != len(targets):
            raise ValueError(f"weights must hold {len(targets)} (W, b) pairs for this architecture, got {len(pairs)}")
        for i, ((W, b), (tW, tb)) in enumerate(zip(pairs, targets)):
            if W.shape != tW.shape or b.shape != tb.shape:
                raise ValueError(f"weights[{i}] must have shapes {tW.shape} and {tb.shape}, got {W.shape} and {b.shape}")
            for name, a in (("W", W), ("b", b)):
                if a.dtype.kind not in "fiu" or not np.isfinite(a).all():
                    raise ValueError(f"weights[{i}] {name} must be finite real numbers")
        for (W, b), (tW, tb) in zip(pairs, targets):
            tW[...], tb[...] = self._xp.asarray(W, dtype=self._dtype), self._xp.asarray(b, dtype=self._dtype)
        self._reset_optimizer()
        return self

    def _grads_like_weights(self):
        return [(dW.copy(), db.copy()) for dW, db in self._public_layers(self._grads)]
