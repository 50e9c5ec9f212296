"""Checks for estimator input and hyperparameters: errors name the argument and the fix."""
import numbers

import numpy as np

from .kernels import backend as _backend


class NotFittedError(ValueError, AttributeError):
    """The model is used before `fit` (the same bases as scikit-learn's NotFittedError)."""


def data(X, name, dtype, n_features=None, owner=None, xp=np):
    """X as a C-contiguous 2-D array of `dtype` on `xp`, checked: numeric, finite, non-empty and
    with the expected number of columns. Never modifies X (conversion copies)."""
    if X is None:
        raise TypeError(f"{name} must be a 2-D array of numbers, got None")
    cupy_in = _backend.is_cupy(X)
    if not cupy_in:
        if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
            raise TypeError(f"{name} is a sparse matrix; fastae needs dense data (use X.toarray())")
        X = np.asarray(X)
    kind = X.dtype.kind
    if kind == "c":
        raise ValueError(f"{name} holds complex numbers (dtype {X.dtype}): Complex data not supported")
    if kind not in "fiub":
        raise TypeError(f"{name} must be a numeric array, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, features), got shape {tuple(X.shape)}. Reshape your "
                         "data: X.reshape(1, -1) for a single row, X.reshape(-1, 1) for a single feature")
    if X.shape[0] == 0:
        raise ValueError(f"{name} has 0 sample(s) (shape={tuple(X.shape)}) while a minimum of 1 is required.")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has 0 feature(s) (shape={tuple(X.shape)}) while a minimum of 1 is required.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features, but {owner} is expecting {n_features} "
                         "features as input")
    X = xp.ascontiguousarray(xp.asarray(X), dtype=dtype)
    if not bool(xp.isfinite(X).all()):
        raise ValueError(f"{name} contains NaN or infinity")
    return X


def one_of(value, name, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def integer(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def real(value, name, low=None, high=None, low_open=False, high_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def boolean(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def sizes(value, name):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    try:
        value = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of layer widths, got {value!r}") from None
    for v in value:
        integer(v, f"each width in {name}", 1)
    return tuple(int(v) for v in value)


def seed(value, name="seed"):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be None or a non-negative int, got {value!r}")
    return int(value)


def dtype(value, name="dtype"):
    try:
        dt = np.dtype(value)
    except TypeError:
        raise ValueError(f"{name} must be 'float32' or 'float64', got {value!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"{name} must be 'float32' or 'float64', got {value!r}")
    return dt
