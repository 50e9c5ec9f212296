"""The one place that checks what users hand to the estimators: input arrays (`data`) and every
constructor parameter, from one table per estimator (as scikit-learn's `_parameter_constraints`).
Errors name the argument and what it must be."""
import numbers

import numpy as np

from .kernels import backend as _backend
from .kernels.checks import kernel_array
from .kernels.elementwise import ACTIVATIONS


class NotFittedError(ValueError, AttributeError):
    """The model is used before `fit` (the same bases as scikit-learn's NotFittedError)."""


# ---- input arrays

def data(X, name, dtype, n_features=None, owner=None, xp=np):
    """X as a C-contiguous 2-D array of `dtype` (native byte order) on `xp`, checked: numeric,
    finite, non-empty and with the expected number of columns. Never modifies X (conversion
    copies). Object arrays holding numbers are converted, as scikit-learn does."""
    if X is None:
        raise TypeError(f"{name} must be a 2-D array of numbers, got None")
    if not _backend.is_cupy(X):
        if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
            raise TypeError(f"{name} is a sparse matrix; fastae needs dense data (use X.toarray())")
        if isinstance(X, np.ma.MaskedArray):
            raise TypeError(f"{name} is a masked array; fastae would ignore the mask: fill it first "
                            f"({name}.filled(value))")
        X = np.asarray(X)
        if X.dtype.kind == "O":
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name} must hold numbers, got an object array with other values "
                                f"({exc})") from None
    kind = X.dtype.kind
    if kind == "c":
        raise ValueError(f"{name} holds complex numbers (dtype {X.dtype}): Complex data not supported")
    if kind not in "fiub":
        raise TypeError(f"{name} must be a numeric array, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, features), got shape {tuple(X.shape)}. Reshape your "
                         "data: X.reshape(1, -1) for a single row, X.reshape(-1, 1) for a single feature")
    check_shape(X.shape, name, n_features, owner)
    with np.errstate(over="ignore"):  # a finite value too large for dtype is said below, not warned
        converted = kernel_array(X, dtype, xp)
    if not all_finite(converted, xp):
        if converted is not X and all_finite(X, _backend.array_module_of(X)):  # X may be on the host
            raise ValueError(f"{name} holds values too large for {np.dtype(dtype).name} (beyond "
                             f"{np.finfo(dtype).max:.4g} in magnitude)")
        raise ValueError(f"{name} contains NaN or infinity")
    return converted


def check_shape(shape, name, n_features=None, owner=None):
    """Rows and features present, and the expected number of features (scikit-learn's wording)."""
    if shape[0] == 0:
        raise ValueError(f"{name} has 0 sample(s) (shape={tuple(shape)}) while a minimum of 1 is required.")
    if shape[1] == 0:
        raise ValueError(f"{name} has 0 feature(s) (shape={tuple(shape)}) while a minimum of 1 is required.")
    if n_features is not None and shape[1] != n_features:
        raise ValueError(f"{name} has {shape[1]} features, but {owner} is expecting {n_features} "
                         "features as input")


def all_finite(X, xp=np, rows=16384):
    """Whether every entry is finite, a block of rows at a time (no array the size of X)."""
    for start in range(0, X.shape[0], rows):
        if not bool(xp.isfinite(X[start:start + rows]).all()):
            return False
    return True


def in_unit_interval(X, rows=16384):
    """Whether every entry lies in [0, 1], a block of rows at a time."""
    for start in range(0, X.shape[0], rows):
        block = X[start:start + rows]
        if not (bool((block >= 0).all()) and bool((block <= 1).all())):
            return False
    return True


# ---- parameter checks: each takes (value, name) and returns the checked value

def one_of(*options):
    def check(value, name):
        if not isinstance(value, str) or value not in options:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
        return value
    return check


def integer(minimum, maximum=None):
    def check(value, name):
        if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum
                or (maximum is not None and value > maximum)):
            bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise ValueError(f"{name} must be an int {bound}, got {value!r}")
        return int(value)
    return check


def real(low=None, high=None, low_open=False, high_open=False):
    def check(value, name):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
            raise ValueError(f"{name} must be a finite real number, got {value!r}")
        value = float(value)
        if low is not None and (value < low or (low_open and value == low)):
            raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
        if high is not None and (value > high or (high_open and value == high)):
            raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
        return value
    return check


def boolean(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


MAX_HIDDEN = 30  # the engine's workspace plan holds at most 64 layers


def sizes(value, name):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    try:
        value = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of layer widths, got {value!r}") from None
    if len(value) > MAX_HIDDEN:
        raise ValueError(f"{name} may hold at most {MAX_HIDDEN} layer widths, got {len(value)}")
    return tuple(integer(1)(v, f"each width in {name}") for v in value)


def seed(value, name="seed"):
    """None (fresh entropy) or an int in [0, 2**64): the one meaning of a seed everywhere."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be None or an int in [0, 2**64), got {value!r}")
    if not 0 <= int(value) < 2 ** 64:
        raise ValueError(f"{name} must be None or an int in [0, 2**64), got {value!r}")
    return int(value)


def dtype(value, name="dtype"):
    try:
        dt = np.dtype(value)
    except TypeError:
        raise ValueError(f"{name} must be 'float32' or 'float64', got {value!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"{name} must be 'float32' or 'float64', got {value!r}")
    return dt.name


def callback(value, name):
    if value is not None and not callable(value):
        raise ValueError(f"{name} must be None or callable(model, epoch, logs), got {value!r}")
    return value


ACTIVATION = one_of(*ACTIVATIONS)

TRAINING = {
    "optimizer": one_of("adam", "sgd"), "lr": real(0, low_open=True), "beta_1": real(0, 1, high_open=True),
    "beta_2": real(0, 1, high_open=True), "epsilon": real(0, low_open=True), "momentum": real(0, 1),
    "batch_size": integer(1), "epochs": integer(1), "shuffle": boolean, "early_stopping": boolean,
    "validation_fraction": real(0, 1, low_open=True, high_open=True), "n_iter_no_change": integer(1),
    "tol": real(0), "warm_start": boolean, "callback": callback, "seed": seed,
    "backend": one_of("auto", "cpu", "numpy", "cuda"), "dtype": dtype, "verbose": boolean,
}
AUTOENCODER = {
    "hidden": sizes, "code": integer(1), "activation": ACTIVATION, "code_activation": ACTIVATION,
    "output_activation": ACTIVATION, "loss": one_of("mse", "bce"), "l1": real(0),
    "noise": real(0), "noise_type": one_of("gaussian", "mask"), **TRAINING,
}
VAE = {
    "hidden": sizes, "latent": integer(1), "activation": ACTIVATION,
    "likelihood": one_of("bernoulli", "gaussian"), "beta": real(0), "n_samples": integer(1), **TRAINING,
}
PCA = {"n_components": integer(1), "dtype": dtype}


def params(estimator, table):
    """Every constructor parameter of `estimator` checked against `table`: a dict of clean values."""
    return {name: check(getattr(estimator, name), name) for name, check in table.items()}
