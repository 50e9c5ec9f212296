"""Per-element math written once, compiled by Numba for the CPU and for CUDA.

Plain Python on purpose: `cpu.py` wraps these in `numba.njit`, `gpu.py` in `cuda.jit(device=True)`.
Integer codes stand for activations because both targets dispatch on them cheaply.
"""
import functools
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
_ONE = np.uint64(1)
_MASK_SALT = np.uint64(0x632BE59BD9B4E019)
_TWO_POW_53 = 1.0 / 9007199254740992.0
_S40, _LOW24 = np.uint64(40), np.uint64(0xFFFFFF)  # a pair's hash: radius bits 40-63, angle bits 0-23
_TWO_POW_24 = 1.0 / 16777216.0
_QUARTER_STEP = math.pi / 2 / 4194304.0  # 2^-22 of a quarter turn, in radians


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


@functools.lru_cache(maxsize=256)  # a training loop or a benchmark asks for the same few seeds again
def noise_key(seed):
    """The 64-bit stream key of a user's seed, computed on the host: `seed_key` in Python integers
    (wrapping is intended; NumPy scalar arithmetic would cost microseconds a call)."""
    mask = (1 << 64) - 1
    x = (int(seed) + 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return np.uint64(x ^ (x >> 31))


def sincos_small(a):
    """(sin(a), cos(a)) for |a| <= pi / 4, in a's precision (the CPU binds polynomials)."""
    return math.sin(a), math.cos(a)


def normal_pair(key, pair, one):
    """Standard normal numbers 2 * pair (cos half) and 2 * pair + 1 (sin half) of the stream `key`,
    computed in the precision of `one` (1.0: float64; np.float32(1): float32 math for float32 data).

    Box-Muller from one splitmix64 hash h of the pair: its top 24 bits m1 give the radius' uniform
    u1 = 1 - m1 / 2^24 in (0, 1] (so log is finite), its low 24 bits m2 the angle 2 pi m2 / 2^24.
    24-bit uniforms are exact in float32 and float64, so float32 math draws the float64 numbers
    rounded; the angle is reduced to |a| <= pi / 4 in integers, exactly, so sin and cos keep their
    relative accuracy. The radius is at most sqrt(2 log 2^24) = 5.77 (a normal exceeds it with
    probability 8e-9): 24 bits are plenty for Monte Carlo noise.

    Counter-based: element (i, j) of a batch always is number i * K + j, so any thread layout draws
    the same numbers and a backward pass can regenerate them instead of storing them.
    """
    return box_muller(mix64(key + pair * _GOLDEN), one)


def box_muller(h, one):
    """The pair of normal numbers of the 64-bit hash h, in the precision of `one` (see
    `normal_pair`)."""
    F = type(one)
    m1 = np.int32(h >> _S40)  # 24-bit fields: exact in an int32, a float32 and a float64
    m2 = np.int32(h & _LOW24)
    r = sqrt(F(-2.0) * log(one - F(m1) * F(_TWO_POW_24)))  # 1 - m1 / 2^24 is exact
    q = (m2 + 2097152) >> 22  # the nearest quarter turn, 0 .. 4
    s, c = sincos_small(F(m2 - (q << 22)) * F(_QUARTER_STEP))
    quadrant = q & 3  # sin(a + quadrant * pi / 2) is s, c, -s, -c; cos is c, -s, -c, s
    sin_v = c if quadrant & 1 else s
    cos_v = s if quadrant & 1 else c
    return r * (-cos_v if (quadrant + 1) & 2 else cos_v), r * (-sin_v if quadrant & 2 else sin_v)


def normal_in(key, counter, one):
    """Standard normal number `counter` of the stream `key` (one half of its Box-Muller pair), in
    the precision of `one`."""
    a, b = normal_pair(key, counter >> _ONE, one)
    return b if counter & _ONE else a


def normal_at(key, counter):
    """`normal_in` in float64."""
    return normal_in(key, counter, 1.0)


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


SHARED = ("sigmoid", "activate", "activation_grad", "soft_threshold", "mix64", "seed_key",
          "sincos_small", "box_muller", "normal_pair", "normal_in", "normal_at", "uniform_at", "bce_with_logits")


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
