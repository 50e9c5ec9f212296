"""Per-element math written once, compiled by Numba for the CPU and for CUDA.

Plain Python on purpose: `cpu.py` wraps these in `numba.njit`, `gpu.py` in `cuda.jit(device=True)`.
Integer codes stand for activations because both targets dispatch on them cheaply.
"""
import math
import types
from math import exp, log, log1p, sqrt, tanh  # each target may bind faster versions

import numpy as np

RELU, SIGMOID, TANH, LINEAR = 0, 1, 2, 3
ACTIVATIONS = {"relu": RELU, "sigmoid": SIGMOID, "tanh": TANH, "linear": LINEAR}

# splitmix64 constants; uint64 scalars so Numba keeps every step in unsigned 64-bit arithmetic.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_ONE, _TWO = np.uint64(1), np.uint64(2)
_MASK_SALT = np.uint64(0x632BE59BD9B4E019)
_TWO_POW_53 = 1.0 / 9007199254740992.0


def sigmoid(v):
    e = exp(-abs(v))  # never overflows
    s = 1.0 / (1.0 + e)
    return s if v >= 0 else e * s


def activate(v, act):
    if act == RELU:
        return v if v > 0 else v - v  # +0.0, in the dtype of v
    if act == SIGMOID:
        return sigmoid(v)
    if act == TANH:
        return tanh(v)
    return v


def activation_grad(y, act):
    """d act / d pre-activation, from the activation's output y (no pre-activation stored)."""
    if act == RELU:
        return 1.0 if y > 0 else 0.0
    if act == SIGMOID:
        return y * (1.0 - y)
    if act == TANH:
        return 1.0 - y * y
    return 1.0


def soft_threshold(v, t, nonneg):
    if nonneg:
        return v - t if v > t else v - v
    if v > t:
        return v - t
    if v < -t:
        return v + t
    return v - v


def mix64(x):
    """splitmix64 finalizer: a bijective hash of a 64-bit counter."""
    x = (x ^ (x >> _S30)) * _MUL1
    x = (x ^ (x >> _S27)) * _MUL2
    return x ^ (x >> _S31)


def seed_key(seed):
    return mix64(np.uint64(seed) + _GOLDEN)


def noise_key(seed):
    """The 64-bit stream key of a user's seed, computed on the host (wrapping is intended)."""
    with np.errstate(over="ignore"):
        return seed_key(seed)


def sincos(x):
    return math.sin(x), math.cos(x)


def normal_pair(key, pair):
    """Standard normal numbers 2 * pair and 2 * pair + 1 of the stream `key`: Box-Muller's cos and
    sin halves of two hashed uniforms.

    Counter-based: element (i, j) of a batch always is number i * K + j, so any thread layout draws
    the same numbers and a backward pass can regenerate them instead of storing them.
    """
    c = pair * _TWO
    h1 = mix64(key + c * _GOLDEN)
    h2 = mix64(key + (c + _ONE) * _GOLDEN)
    u1 = 1.0 - float(h1 >> _S11) * _TWO_POW_53  # in (0, 1], so log is finite
    u2 = float(h2 >> _S11) * _TWO_POW_53
    r = sqrt(-2.0 * log(u1))
    s, c = sincos(2.0 * math.pi * u2)
    return r * c, r * s


def normal_at(key, counter):
    """Standard normal number `counter` of the stream `key` (one half of its Box-Muller pair)."""
    a, b = normal_pair(key, counter >> _ONE)
    return b if counter & _ONE else a


def uniform_at(key, counter):
    """Uniform number in [0, 1) number `counter` of the stream `key` (its own hash sequence)."""
    return float(mix64(key + counter * _GOLDEN + _MASK_SALT) >> _S11) * _TWO_POW_53


def bce_with_logits(a, t):
    """(loss, d loss / d a) of binary cross-entropy of sigmoid(a) against t, from the logit a:
    finite for any finite logit, one exp for both."""
    e = exp(-abs(a))
    s = 1.0 / (1.0 + e)
    p = s if a >= 0 else e * s
    return (a if a > 0 else 0.0) - a * t + log1p(e), p - t


SHARED = ("sigmoid", "activate", "activation_grad", "soft_threshold", "mix64", "seed_key", "sincos",
          "normal_pair", "normal_at", "uniform_at", "bce_with_logits")


def compiled(jit, math_functions=None):
    """Compile the shared functions with `jit` (njit, or cuda.jit(device=True)).

    Each copy gets a namespace in which the other shared names are compiled too, so `normal_at`
    calls the compiled `mix64`; `math_functions` replaces exp, log, ... for that target.
    This module itself imports neither numba nor cupy.
    """
    math_functions = math_functions or {}
    namespace = dict(globals(), **math_functions)
    for name in (n for n in SHARED if n not in math_functions):
        fn = globals()[name]
        namespace[name] = jit(types.FunctionType(fn.__code__, namespace, name, fn.__defaults__))
    return types.SimpleNamespace(**{name: namespace[name] for name in SHARED})
