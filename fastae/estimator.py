"""What every fastae model shares: scikit-learn-style parameters (this module), and for the
neural models the orchestration of a fit: check every parameter from one table, build the
starting state aside, let the Trainer run, keep what it commits. The fitted network itself is a
`FittedModel` (fitted.py); training is `training.py`; the math is `engine.py`."""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Literal, Optional

import numpy as np
from numpy.typing import ArrayLike

from . import dask_support, validation
from .fitted import FittedModel, NotFinite, Spec, TrainState
from .kernels import backend as _backend
from .training import Trainer, initial_state

# ---- type aliases for the public signatures
Activation = Literal["relu", "sigmoid", "tanh", "linear"]
Optimizer = Literal["adam", "sgd"]
Backend = Literal["auto", "cpu", "numpy", "cuda"]
Callback = Optional[Callable[[Any, int, dict], Optional[bool]]]
Weights = list[tuple[np.ndarray, np.ndarray]]

# ---- numpydoc sections shared by the Autoencoder and VAE class docstrings (spliced in by
# `splice_doc`, so they are written once; the values come from validation.TRAINING)
TRAINING_PARAMETERS_DOC = """\
optimizer : {'adam', 'sgd'}, default='adam'
    The optimizer: Adam (``beta_1``, ``beta_2``, ``epsilon``) or SGD with ``momentum``.
lr : float, default=1e-3
    Learning rate, > 0.
beta_1 : float, default=0.9
    Adam's first-moment decay, in [0, 1).
beta_2 : float, default=0.999
    Adam's second-moment decay, in [0, 1).
epsilon : float, default=1e-8
    Adam's denominator term, > 0.
momentum : float, default=0.9
    SGD momentum, in [0, 1]. Used with ``optimizer='sgd'`` only.
batch_size : int, default=128
    Rows per optimizer step, >= 1.
epochs : int, default=10
    Passes over the data per ``fit``, >= 1 (``partial_fit`` makes one).
shuffle : bool, default=True
    Shuffle the rows every epoch.
early_stopping : bool, default=False
    Stop when the validation loss has not improved by ``tol`` for ``n_iter_no_change`` epochs,
    and keep the best epoch's weights. The validation rows are ``X_val`` when given, otherwise a
    random ``validation_fraction`` of ``X`` held out.
validation_fraction : float, default=0.1
    Share of ``X`` held out by ``early_stopping`` when no ``X_val`` is given, in (0, 1).
n_iter_no_change : int, default=10
    Epochs without improvement before early stopping, >= 1.
tol : float, default=1e-4
    Minimum improvement of the validation loss, >= 0.
warm_start : bool, default=False
    ``fit`` continues from the fitted weights and optimizer state instead of starting afresh
    (the architecture must be unchanged).
callback : callable or None, default=None
    ``callback(model, epoch, logs)`` after every epoch; ``logs`` holds ``loss``, ``rows_per_s``
    and, with validation rows, ``val_loss``. Returning True stops training. Not saved by ``save``.
seed : int or None, default=None
    None (fresh randomness) or an int in [0, 2**64): the same seed, data and calls give the same
    model. Seeds the weights, the shuffling and the noise.
backend : {'auto', 'cpu', 'numpy', 'cuda'}, default='auto'
    'cpu' (Numba kernels), 'numpy' (the naive reference), 'cuda' (CuPy + numba.cuda) or 'auto'
    ('cuda' when a GPU is usable, else 'cpu').
dtype : {'float32', 'float64'}, default='float32'
    The precision of the weights and of all computation.
verbose : bool, default=False
    Show a progress bar (tqdm) with the loss per epoch.
"""

NEURAL_ATTRIBUTES_DOC = """\
n_features_in_ : int
    Number of features seen by ``fit``.
t_ : int
    Optimizer steps taken in total.
n_iter_ : int
    Epochs completed in total.
history_ : dict
    ``{"loss": [...], "val_loss": [...]}``: the mean per-row training objective of each epoch,
    and the validation objective of each epoch when there are validation rows. Accumulates
    across ``warm_start`` fits and ``partial_fit`` calls.
"""


def splice_doc(doc, **sections):
    """`doc` with each line that holds only `{name}` replaced by `sections[name]`, indented like
    that line (so it works whether or not the compiler dedented the docstring). None (python -OO)
    stays None."""
    if doc is None:
        return None
    lines = []
    for line in doc.splitlines():
        name = line.strip()
        if name.startswith("{") and name.endswith("}") and name[1:-1] in sections:
            indent = line[:len(line) - len(line.lstrip())]
            lines.extend(indent + text if text else text for text in sections[name[1:-1]].splitlines())
        else:
            lines.append(line)
    return "\n".join(lines)


class Estimator:
    """get_params / set_params / repr from the constructor's signature, as scikit-learn's.
    Parameters are only stored; they are read by `fit` and by nothing else."""

    _fitted = None

    @classmethod
    def _param_names(cls):
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters, as stored.

        Parameters
        ----------
        deep : bool, default=True
            Accepted for scikit-learn compatibility; fastae models hold no sub-estimators.

        Returns
        -------
        dict
            Parameter name to value, for every constructor parameter.
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Estimator:
        """Set constructor parameters; a fitted model is unchanged until the next fit.

        Parameters
        ----------
        **params
            Constructor parameters by name. They are only stored: ``fit`` checks them.

        Returns
        -------
        self
            The model.

        Raises
        ------
        ValueError
            If a name is not a constructor parameter (the message lists the valid ones).
        """
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
        return self._fitted is not None

    def _state(self):
        """The fitted state, read once per call (a concurrent fit swaps in a new one)."""
        state = self._fitted
        if state is None:
            raise validation.NotFittedError(f"This {type(self).__name__} is not fitted yet: call fit first")
        return state

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to one .npz file at exactly `path` (no pickle); read it with fastae.load.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (no suffix is added); its folder must exist. The file is written
            through a temporary file renamed into place.

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        ValueError
            If the folder does not exist or the model cannot be saved.
        """
        from .persistence import save
        save(self, path)

    def score(self, X: ArrayLike, y: Any = None) -> float:
        """The mean of ``score_samples(X)`` (higher is better): minus the mean objective for an
        Autoencoder, the mean ELBO for a VAE, minus the mean squared reconstruction error for PCA.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to score.
        y : None, default=None
            Ignored (scikit-learn compatibility).

        Returns
        -------
        float
            The mean of ``score_samples(X)``.
        """
        return float(self.score_samples(X).mean())

    def fit_transform(self, X: ArrayLike, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit on `X`, then return its codes: ``fit(X, y, **fit_params).transform(X)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows.
        y : None or array-like, default=None
            As in ``fit``.
        **fit_params
            Further arguments of ``fit`` (``X_val`` for the neural models).

        Returns
        -------
        ndarray of shape (n_samples, n_codes)
            The codes of `X` under the fitted model.
        """
        return self.fit(X, y, **fit_params).transform(X)

    @property
    def n_features_in_(self) -> int:
        """Number of features seen by ``fit``."""
        return self._state().spec.n_features if self._fitted is not None else _missing(self, "n_features_in_")


def _missing(estimator, name):
    raise AttributeError(f"{type(estimator).__name__} has no attribute {name!r} before fit")


def result_array(out, shape, dtype, xp):
    """The caller's checked `out=`, or None for a new result array."""
    if out is None:
        return None
    if not isinstance(out, xp.ndarray):  # the kernels write into it on the model's backend
        raise TypeError(f"out must be a {xp.__name__} array for this model's backend, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"out must have shape {tuple(shape)} and dtype {np.dtype(dtype)}, got "
                         f"{tuple(out.shape)} {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable or not out.flags.aligned:
        raise ValueError("out must be a writeable, aligned C-contiguous array")
    return out if type(out) is xp.ndarray else out.view(xp.ndarray)  # one array type for Numba


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
    """fit(X, y=None, X_val=None): the second positional argument is the validation rows (2-D) or
    scikit-learn's y (1-D, passed by Pipeline and GridSearchCV; ignored)."""
    if X_val is not None:
        return X_val
    if y is not None and np.asarray(y).ndim == 2:
        return y
    return None


def _cpu_all_finite():
    """The compiled NaN/inf check of the cpu backend (numba is imported on first use)."""
    global _all_finite
    if _all_finite is None:
        from .kernels import cpu
        _all_finite = cpu.all_finite
    return _all_finite


_all_finite = None


class NeuralEstimator(Estimator):
    """fit / partial_fit and inference for Autoencoder and VAE. Subclasses give `_TABLE` (their
    parameter table) and `_spec(params, n_features)`."""

    # ---- fitted attributes: read from the fitted state only
    @property
    def t_(self) -> int:
        """Optimizer steps taken in total."""
        return self._state().train.t if self._fitted is not None else _missing(self, "t_")

    @property
    def n_iter_(self) -> int:
        """Epochs completed in total."""
        return self._state().train.n_iter if self._fitted is not None else _missing(self, "n_iter_")

    @property
    def history_(self) -> dict[str, list[float]]:
        """``{"loss": [...], "val_loss": [...]}``, one value per epoch (a copy)."""
        if self._fitted is None:
            _missing(self, "history_")
        train = self._fitted.train
        return {"loss": list(train.loss), "val_loss": list(train.val_loss)}

    # ---- training
    def _checked_params(self):
        p = validation.params(self, self._TABLE)
        p["backend"] = _backend.resolve(p["backend"])
        return p

    def _data(self, X, name, dtype, backend, n_features=None):
        return validation.data(X, name, dtype, n_features, type(self).__name__, _backend.array_module(backend))

    def fit(self, X: ArrayLike, y: ArrayLike | None = None, X_val: ArrayLike | None = None) -> NeuralEstimator:
        """Train for `epochs` passes (from fresh weights unless warm_start); returns self.
        X_val (the second positional argument when 2-D) gives val_loss per epoch.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows (NumPy, CuPy on the cuda backend, or a dask array: out of core).
        y : None or array-like, default=None
            A 2-D array is taken as validation rows (as ``X_val``); a 1-D one is a label vector
            (scikit-learn's ``y``) and is ignored.
        X_val : array-like of shape (n_val, n_features), default=None
            Validation rows: ``history_["val_loss"]`` gets one value per epoch, and
            ``early_stopping`` uses them.

        Returns
        -------
        self
            The fitted model.

        Raises
        ------
        ValueError
            If a parameter or the data is invalid (the previous model is then unchanged), or
            ``warm_start=True`` meets a changed architecture.
        TypeError
            If the data is not numeric (strings, objects, sparse matrices).
        FloatingPointError
            If the loss turns NaN/inf; the last finite epoch is kept.
        """
        return self._fit(X, _validation_rows(y, X_val), partial=False)

    def partial_fit(self, X: ArrayLike, y: ArrayLike | None = None,
                    X_val: ArrayLike | None = None) -> NeuralEstimator:
        """One pass over X in minibatches, continuing from the fitted weights and optimizer state
        (the architecture must be unchanged).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows.
        y : None or array-like, default=None
            As in ``fit``: 2-D is validation rows, 1-D is ignored.
        X_val : array-like of shape (n_val, n_features), default=None
            Validation rows for ``history_["val_loss"]``.

        Returns
        -------
        self
            The model, one epoch further (from fresh weights on an unfitted model).

        Raises
        ------
        ValueError
            If a parameter or the data is invalid, or the architecture changed since the fit.
        FloatingPointError
            If the loss turns NaN/inf.
        """
        return self._fit(X, _validation_rows(y, X_val), partial=True)

    def _fit(self, X, X_val, partial):
        if dask_support.is_dask(X) or dask_support.is_dask(X_val):
            return dask_support.fit(self, X, X_val, partial)  # out of core, block by block
        # everything is checked before anything changes: a failed check leaves the model as it was
        p = self._checked_params()
        Xc = self._data(X, "X", p["dtype"], p["backend"])
        spec = self._spec(p, Xc.shape[1])
        Xv = self._data(X_val, "X_val", p["dtype"], p["backend"], Xc.shape[1]) if X_val is not None else None
        self._check_data(spec, Xc, "X")
        if Xv is not None:
            self._check_data(spec, Xv, "X_val")
        start = self._starting_state(p, spec, partial)
        rng = np.random.default_rng()
        rng.bit_generator.state = start.train.rng_state
        n = Xc.shape[0]
        train_index, val_index = np.arange(n, dtype=np.int64), None
        if Xv is None and p["early_stopping"] and not partial:
            if n < 2:
                raise ValueError("early_stopping needs at least 2 rows in X to hold out a validation set")
            order = rng.permutation(n)
            n_val = max(1, int(round(p["validation_fraction"] * n)))
            val_index, train_index = order[:n_val], order[n_val:]
            start = start.replace(rng_state=rng.bit_generator.state)

        def commit(state):
            self._fitted = state.with_settings(p)
        trainer = Trainer(start, p, commit, callback=p["callback"], owner=self, verbose=p["verbose"])
        trainer.run(Xc, 1 if partial else p["epochs"], train_index, Xv, val_index)
        return self

    def _starting_state(self, p, spec, partial):
        """The state training starts from: the fitted one (partial_fit, warm_start; the
        architecture must be unchanged) on p's backend, or fresh weights from p's seed."""
        old = self._fitted
        if old is not None and (partial or p["warm_start"]):
            if spec.n_features != old.spec.n_features:
                raise ValueError(f"X has {spec.n_features} features, but {type(self).__name__} is expecting "
                                 f"{old.spec.n_features} features as input (partial_fit and warm_start continue "
                                 "the fitted network)")
            changed = spec.changed_architecture(old.spec)
            if changed:
                how = "partial_fit" if partial else "warm_start=True"
                raise ValueError(f"{how} continues the fitted network, but {', '.join(changed)} changed "
                                 f"since it was fitted; call fit (with warm_start=False) to start afresh")
            return FittedModel(spec, old.params, old.train, old.backend).to_backend(p["backend"])
        return initial_state(spec, p["backend"], np.random.default_rng(p["seed"]))

    def _check_data(self, spec, Xc, name):
        """Model-specific checks of training data (VAE: [0, 1] for the bernoulli likelihood)."""

    # ---- inference
    def _rows(self, state, X, name, n_in, finite_checked_later=False):
        """X for inference: an array compiled code takes as it is is used as it is, after a
        compiled NaN/inf check (unless the compiled call makes it: `finite_checked_later`);
        anything else is converted and checked."""
        if state.takes_as_is(X, n_in) and (finite_checked_later or _cpu_all_finite()(X.reshape(-1))):
            return X
        return validation.data(X, name, state.dtype, n_in, type(self).__name__, state.xp)

    def _as_caller(self, state, result, like):
        """NumPy in, NumPy out: results computed on a GPU go back to the host for NumPy callers."""
        if state.xp is not np and not _backend.is_cupy(like):  # noqa: SIM102
            return result.get()
        return result

    def _apply(self, state, method, X, name, n_in, n_out, out, *args, finite_checked_later=False):
        """state.<method>(checked X, *args, out) with the caller's checked `out=`."""
        Xc = self._rows(state, X, name, n_in, finite_checked_later)
        target = None
        if out is not None:
            target = result_array(out, (Xc.shape[0], n_out), state.dtype, state.xp)
            xp = state.xp
            if xp.may_share_memory(target, Xc) or (X is not Xc and isinstance(X, xp.ndarray)
                                                   and xp.may_share_memory(target, X)):
                raise ValueError(f"out must not overlap {name}")
        try:
            result = getattr(state, method)(Xc, *args, target)
        except NotFinite:  # found by the compiled chain's own check: name the argument
            raise NotFinite(name) from None
        if out is not None:
            return out
        return result if state.xp is np else self._as_caller(state, result, X)

    def decode(self, Z: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """Reconstructions (n, D) from codes (n, code) or latents (n, latent).

        Parameters
        ----------
        Z : array-like of shape (n_samples, code) or (n_samples, latent)
            Codes (Autoencoder) or latents (VAE).
        out : ndarray of shape (n_samples, n_features), default=None
            A preallocated C-contiguous result of the model's dtype and backend.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
            The reconstructed rows (``out`` when given; a lazy dask array for dask input).

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        ValueError
            If `Z` has the wrong width or holds NaN/inf, or `out` does not fit.
        """
        state = self._state()
        if dask_support.is_dask(Z):
            return dask_support.apply(self, "decode", Z, out)
        return self._apply(state, "decode", Z, self._CODE_NAME, state.spec.width, state.spec.n_features, out,
                           finite_checked_later=state.chains)

    inverse_transform = decode

    def reconstruct(self, X: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """decode(transform(X)): (n, D), the whole network in one compiled call per chunk of rows
        on the cpu backend.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to reconstruct.
        out : ndarray of shape (n_samples, n_features), default=None
            A preallocated C-contiguous result of the model's dtype and backend.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
            The reconstructions (``out`` when given; a lazy dask array for dask input).

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        ValueError
            If `X` has the wrong number of features or holds NaN/inf, or `out` does not fit.
        """
        state = self._state()
        if dask_support.is_dask(X):
            if out is not None:
                raise TypeError("out= cannot be used with a dask array: the result is a lazy dask array")
            return self.decode(self.transform(X))
        n = state.spec.n_features
        return self._apply(state, "reconstruct", X, "X", n, n, out, finite_checked_later=state.chains)

    def _objective(self, X, **kwargs):
        state = self._state()
        Xc = self._rows(state, X, "X", state.spec.n_features)
        self._check_data(state.spec, Xc, "X")
        return state, Xc, state.objective_rows(Xc, **kwargs)

    # ---- weights
    def get_weights(self) -> Weights:
        """[(W, b), ...] in forward order, as NumPy copies.

        Returns
        -------
        list of (ndarray, ndarray)
            One ``(W, b)`` pair per layer, ``W`` of shape (out, in) and ``b`` of shape (out,).
            For a VAE the heads come as two pairs, ``mu`` then ``logvar``.

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        """
        state = self._state()
        return [(state.host(W).copy(), state.host(b).copy()) for W, b in state.layers()]

    def set_weights(self, weights: Weights) -> NeuralEstimator:
        """A fitted model with every (W, b) from `weights` and fresh optimizer state. On an unfitted
        model (or one whose input width differs) the architecture is read from the parameters and
        the input width from the first W.

        Parameters
        ----------
        weights : list of (array-like, array-like)
            One ``(W, b)`` pair per layer in forward order, shaped as ``get_weights()`` returns:
            W is (outputs, inputs). (A square W given transposed cannot be told from a right one.)

        Returns
        -------
        self
            The model, now fitted with these weights.

        Raises
        ------
        ValueError
            If a parameter is invalid, or the pairs do not match the architecture (count, shapes)
            or hold non-finite values.
        TypeError
            If a W or b is not numeric.
        """
        p = self._checked_params()
        try:
            pairs = [(np.asarray(W), np.asarray(b)) for W, b in weights]
        except (TypeError, ValueError):
            raise ValueError("weights must be a list of (W, b) pairs") from None
        if not pairs or pairs[0][0].ndim != 2:
            raise ValueError("weights must be a non-empty list of (W, b) pairs with 2-D W")
        for i, (W, b) in enumerate(pairs):  # before the architecture is read off weights[0]
            if W.ndim != 2 or b.ndim != 1 or W.shape[0] != b.shape[0]:
                hint = ""
                if W.ndim == 2 and b.ndim == 1 and W.shape[1] == b.shape[0]:
                    hint = f" (is W transposed? it would be {W.shape[::-1]})"
                raise ValueError(f"weights[{i}] must be W of shape (outputs, inputs) and b of shape (outputs,), "
                                 f"got {W.shape} and {b.shape}{hint}")
        spec = self._spec(p, pairs[0][0].shape[1])
        base = initial_state(spec, p["backend"], np.random.default_rng(p["seed"]))
        targets = base.layers()
        if len(pairs) != len(targets):
            raise ValueError(f"weights must hold {len(targets)} (W, b) pairs for this architecture, got {len(pairs)}")
        for i, ((W, b), (tW, tb)) in enumerate(zip(pairs, targets)):
            if W.shape != tW.shape or b.shape != tb.shape:
                raise ValueError(f"weights[{i}] must have shapes {tW.shape} and {tb.shape}, got {W.shape} and {b.shape}")
            for name, a in (("W", W), ("b", b)):
                if a.dtype.kind not in "fiu":
                    raise TypeError(f"weights[{i}] {name} must be real numbers, got dtype {a.dtype}")
                if not np.isfinite(a).all():
                    raise ValueError(f"weights[{i}] {name} must be finite real numbers")
                if a.size and np.abs(a).max() > np.finfo(spec.dtype).max:  # would be inf in the model's dtype
                    raise ValueError(f"weights[{i}] {name} holds values too large for {np.dtype(spec.dtype).name}")
        xp = base.xp
        for (W, b), (tW, tb) in zip(pairs, targets):
            tW[...], tb[...] = xp.asarray(W, dtype=spec.dtype), xp.asarray(b, dtype=spec.dtype)
        self._fitted = base.with_settings(p)
        return self

    def _grads_like_weights(self, state, grads):
        return [(state.host(dW).copy(), state.host(db).copy()) for dW, db in state.layers(grads)]

    # ---- export
    def to_onnx(self, path, part="encode"):
        """Write `part` ("encode", "decode" or "reconstruct") of the fitted model to an ONNX file at
        exactly `path`, read from the fitted state (needs the onnx package: fastae[onnx])."""
        from .onnx_export import export
        export(self, path, part)

    def compiled(self, part="encode", c_abi=False):
        """`part` of the fitted model as a Numba-compiled `f(x, out)` with private weights, callable
        from Python and from @numba.njit code; with c_abi=True a numba.cfunc
        `int32 f(const T* x, int64 n_rows, T* out)`. Compiled on first request, then cached."""
        if _backend.jit_disabled():  # the compiled kernels do not exist then (not even importable)
            raise RuntimeError("compiled() needs Numba's compiler, but NUMBA_DISABLE_JIT=1 is set; unset it")
        from .compiled import compiled
        return compiled(self, part, c_abi)


__all__ = ["Estimator", "NeuralEstimator", "Spec", "TrainState", "store_params", "result_array"]
