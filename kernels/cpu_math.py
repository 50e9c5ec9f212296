"""exp, log, log1p (on [0, 1]), sin, cos and tanh for the CPU kernels, written so that LLVM vectorizes the loops that use them.

Numba calls the scalar libm for math.exp and friends (pip's llvmlite has no SVML), which leaves the
fused loops several times slower than NumPy's SIMD ufuncs. These are branch-free float64 versions
(Cody-Waite range reduction + polynomials, relative error ~1e-16 over the ranges the kernels use)
built on an int64 <-> float64 bit cast. exp and exp32 take any input and agree with np.exp at
the extremes (inf, subnormals, 0, NaN); log, log1p and sincos take the domains their docstrings
give. The float32 versions (exp32, log32, log1p32, sincos_small32) keep float32 data in float32
(twice the SIMD lanes); log_in and sincos_small_in pick the version by argument type. The GPU
kernels use CUDA's own math.
"""
import math

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

from .jit import cpu_jit

jit = cpu_jit(inline="always")

_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_SQRT2 = 1.4142135623730951
_TWO_PI = 2.0 * math.pi


@intrinsic
def _float_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def _bits_from_float(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@jit
def exp(x):
    """exp of a float64, as np.exp at the extremes too: inf above ~709.78, subnormal below
    ~-708.4, 0 below ~-745.1, inf for inf, 0 for -inf and NaN for NaN.

    Branch-free: x is clamped just beyond the finite range (where exp is already inf or 0, so the
    clamp changes no result) and 2^k is applied as two normal factors 2^(k >> 1) * 2^(k - k >> 1),
    so that p * 2^k overflows to inf or rounds to a subnormal or 0 exactly once, in the last
    multiply, like a correctly rounded exp."""
    x = float(x)
    xc = min(max(x, -746.0), 710.0)
    k = math.floor(xc * _LOG2E + 0.5)
    r = (xc - k * _LN2_HI) - k * _LN2_LO  # |r| <= ln(2) / 2
    p = 1.0 / 6227020800.0
    for c in (1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0,
              1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0):
        p = p * r + c
    ki = np.int64(k)  # in [-1076, 1024]: each half in [-538, 512], a normal power of two
    k1 = ki >> 1
    y = (p * _float_from_bits((k1 + 1023) << 52)) * _float_from_bits((ki - k1 + 1023) << 52)
    return y if x == x else x  # NaN stays NaN (the clamp would not keep it)


@jit
def log(x):
    """Natural log of a positive normal float64."""
    bits = _bits_from_float(float(x))
    e = float((bits >> 52) - 1023)
    m = _float_from_bits((bits & 0xFFFFFFFFFFFFF) | (1023 << 52))  # mantissa in [1, 2)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = e + 1.0 if big else e
    s = (m - 1.0) / (m + 1.0)  # |s| <= 0.172: log(m) = 2 atanh(s)
    s2 = s * s
    p = 1.0 / 23.0
    for c in (1.0 / 21.0, 1.0 / 19.0, 1.0 / 17.0, 1.0 / 15.0, 1.0 / 13.0, 1.0 / 11.0, 1.0 / 9.0,
              1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0):
        p = p * s2 + c
    return e * _LN2_HI + (2.0 * s * p + e * _LN2_LO)


@jit
def log1p(x):
    """log(1 + x) for 0 <= x <= 1 (all the kernels need: x = exp(-|a|)), accurate for tiny x:
    2 atanh(s) with s = x / (2 + x) <= 1/3, by its series."""
    s = x / (2.0 + x)
    s2 = s * s
    # Two short Horner loops: LLVM unrolls (and so vectorizes) a loop over at most ~13 constants.
    p = 1.0 / 33.0
    for c in (1.0 / 31.0, 1.0 / 29.0, 1.0 / 27.0, 1.0 / 25.0, 1.0 / 23.0, 1.0 / 21.0, 1.0 / 19.0,
              1.0 / 17.0):
        p = p * s2 + c
    for c in (1.0 / 15.0, 1.0 / 13.0, 1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0):
        p = p * s2 + c
    return 2.0 * s * p


@jit
def sincos(x):
    """(sin(x), cos(x)) by reduction to a multiple of pi/2 plus |a| <= pi/4 (for |x| up to ~1e6)."""
    q = math.floor(x * (2.0 / math.pi) + 0.5)
    a = (x - q * 1.5707963267341256) - q * 6.077100506506192e-11
    s, c = sincos_small(a)
    quadrant = np.int64(q) & 3  # sin(a + quadrant * pi / 2) is s, c, -s, -c; cos is c, -s, -c, s
    sin_v = c if quadrant & 1 else s
    cos_v = s if quadrant & 1 else c
    return (-sin_v if quadrant & 2 else sin_v), (-cos_v if (quadrant + 1) & 2 else cos_v)


@jit
def sincos_small(a):
    """(sin(a), cos(a)) of a float64 with |a| <= pi/4: Taylor polynomials, no reduction."""
    a2 = a * a
    c = 1.0 / 20922789888000.0
    for k in (-1.0 / 87178291200.0, 1.0 / 479001600.0, -1.0 / 3628800.0, 1.0 / 40320.0,
              -1.0 / 720.0, 1.0 / 24.0, -0.5, 1.0):
        c = c * a2 + k
    s = 1.0 / 355687428096000.0
    for k in (-1.0 / 1307674368000.0, 1.0 / 6227020800.0, -1.0 / 39916800.0, 1.0 / 362880.0,
              -1.0 / 5040.0, 1.0 / 120.0, -1.0 / 6.0, 1.0):
        s = s * a2 + k
    return s * a, c


@jit
def cos(x):
    return sincos(x)[1]


# float32 versions for float32 data: half the polynomial, twice the SIMD lanes. Every constant is a
# float32 global so that no step is promoted to float64.
_F32 = np.float32
_LOG2E_32, _HALF_32, _ONE_32, _TWO_32, _ZERO_32 = _F32(_LOG2E), _F32(0.5), _F32(1.0), _F32(2.0), _F32(0.0)
_LN2_HI_32, _LN2_LO_32 = _F32(0.693359375), _F32(-2.12194440e-4)
_EXP_LO_32, _EXP_HI_32 = _F32(-104.0), _F32(89.0)  # just beyond where float32 exp is 0 / inf
_EXP32 = tuple(_F32(1.0 / math.factorial(k)) for k in range(8, -1, -1))
_MAGIC_32, _MAGIC_BITS_32, _BIAS_32 = _F32(12582912.0), np.int32(0x4B400000), np.int32(127)  # 1.5 * 2^23
_ATANH32 = tuple(_F32(1.0 / k) for k in range(17, 0, -2))


@intrinsic
def _bits_from_float32(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@intrinsic
def _float32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@jit
def exp32(x):
    """exp of a float32 in float32 (relative error ~1e-7), as np.exp on float32 at the extremes:
    inf above ~88.72, subnormal below ~-87.3, 0 below ~-103.97, NaN for NaN (see `exp`)."""
    xc = min(max(x, _EXP_LO_32), _EXP_HI_32)
    # k = xc log2(e) rounded to the nearest integer by adding 1.5 * 2^23: k lands in t's low
    # mantissa bits, so it is read off t's bits in int32 lanes (no float <-> int64 conversions)
    t = xc * _LOG2E_32 + _MAGIC_32
    kf = t - _MAGIC_32
    k = _bits_from_float32(t) - _MAGIC_BITS_32
    r = (xc - kf * _LN2_HI_32) - kf * _LN2_LO_32
    p = _EXP32[0]
    for c in _EXP32[1:]:
        p = p * r + c
    k1 = k >> 1  # k in [-150, 128]: each half a normal float32 power of two
    y = (p * _float32_from_bits(np.int32((k1 + _BIAS_32) << 23))) * _float32_from_bits(np.int32((k - k1 + _BIAS_32) << 23))
    return y if x == x else x


_SQRT_HALF_32 = _F32(math.sqrt(0.5))
# Cephes logf's minimax polynomial: log(1 + f) = f - f^2 / 2 + f^3 P(f) for sqrt(1/2) - 1 <= f < sqrt(2) - 1
_LOG32 = tuple(_F32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                                 1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                                 3.3333331174e-1))
_SIN32 = tuple(_F32(v) for v in (1 / 362880, -1 / 5040, 1 / 120, -1 / 6, 1.0))
_COS32 = tuple(_F32(v) for v in (-1 / 3628800, 1 / 40320, -1 / 720, 1 / 24, -0.5, 1.0))


@jit
def log32(x):
    """Natural log of a positive normal float32, in float32 (as `log`), without a division (a
    vector division is slow): x = m 2^e with m in [sqrt(1/2), sqrt(2)), then a polynomial in
    f = m - 1 (exact, so log of 1 - tiny keeps its relative accuracy)."""
    bits = _bits_from_float32(x)
    e = _F32((bits >> 23) - 126)
    m = _float32_from_bits(np.int32((bits & 0x7FFFFF) | (126 << 23)))  # mantissa in [0.5, 1)
    small = m < _SQRT_HALF_32
    f = (m + m - _ONE_32) if small else (m - _ONE_32)
    e = e - _ONE_32 if small else e
    z = f * f
    p = _LOG32[0]
    for c in _LOG32[1:]:
        p = p * f + c
    y = p * f * z + e * _LN2_LO_32 - _HALF_32 * z
    return (f + y) + e * _LN2_HI_32


@jit
def sincos_small32(a):
    """(sin(a), cos(a)) of a float32 with |a| <= pi/4, in float32."""
    a2 = a * a
    s = _SIN32[0]
    for k in _SIN32[1:]:
        s = s * a2 + k
    c = _COS32[0]
    for k in _COS32[1:]:
        c = c * a2 + k
    return s * a, c


# Cephes' tanh: for |x| < 0.625 x + x^3 P(x^2) / Q(x^2) (float64) or x + x^3 P(x^2) (float32),
# beyond it 1 - 2 / (exp(2|x|) + 1), where the subtraction loses no relative accuracy (tanh > 0.55)
_TANH_P = (-9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3)
_TANH_Q = (1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3)
_TANH32 = tuple(_F32(c) for c in (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
                                  -3.33332819422e-1))
_TANH_SPLIT, _TANH_SPLIT_32 = 0.625, _F32(0.625)


@jit
def tanh(x):
    """tanh of a float64 (relative error ~3e-16), branch-free so that loops over it vectorize
    (math.tanh is a call into the C library per element): both of Cephes' forms are computed on
    |x| and one is kept, with the sign of x. Exactly +-1 from |x| ~19.07 on (float32: ~9.01) and
    at +-inf, NaN for NaN, -0.0 for -0.0."""
    a = abs(x)
    z = a * a
    p = (_TANH_P[0] * z + _TANH_P[1]) * z + _TANH_P[2]
    q = ((z + _TANH_Q[0]) * z + _TANH_Q[1]) * z + _TANH_Q[2]
    small = a + a * z * (p / q)
    big = 1.0 - 2.0 / (exp(a + a) + 1.0)
    return math.copysign(small if a < _TANH_SPLIT else big, x)


@jit
def tanh32(x):
    """tanh of a float32 in float32 (relative error ~2e-7), as `tanh`."""
    a = abs(x)
    z = a * a
    p = _TANH32[0]
    for c in _TANH32[1:]:
        p = p * z + c
    small = p * z * a + a
    big = _ONE_32 - _TWO_32 / (exp32(a + a) + _ONE_32)
    return math.copysign(small if a < _TANH_SPLIT_32 else big, x)


def tanh_in(x):
    """tanh in the precision of x: `tanh32` for float32, `tanh` otherwise (compiled code only)."""


# forceinline (LLVM's alwaysinline): past LLVM's size threshold the picked function would stay a
# call per element, and a loop around it would not vectorize (float32: 3.8 -> 0.9 ns an element)
@overload(tanh_in, jit_options={"error_model": "numpy", "forceinline": True})
def _tanh_in(x):
    if x == types.float32:
        return lambda x: tanh32(x)
    return lambda x: tanh(x)


def log_in(x):
    """log in the precision of x: `log32` for float32, `log` otherwise (compiled code only)."""


@overload(log_in, jit_options={"error_model": "numpy"})
def _log_in(x):
    if x == types.float32:
        return lambda x: log32(x)
    return lambda x: log(x)


def sincos_small_in(a):
    """`sincos_small` in the precision of a (compiled code only)."""


@overload(sincos_small_in, jit_options={"error_model": "numpy"})
def _sincos_small_in(a):
    if a == types.float32:
        return lambda a: sincos_small32(a)
    return lambda a: sincos_small(a)


@jit
def log1p32(x):
    """log(1 + x) in float32 for 0 <= x <= 1, as `log1p`."""
    s = x / (_TWO_32 + x)
    s2 = s * s
    p = _ATANH32[0]
    for c in _ATANH32[1:]:
        p = p * s2 + c
    return _TWO_32 * s * p


@jit
def bce_with_logits32(a, t):
    """`elementwise.bce_with_logits` for float32 logits and targets, all in float32."""
    e = exp32(-abs(a))
    s = _ONE_32 / (_ONE_32 + e)
    p = s if a >= _ZERO_32 else e * s
    return (a if a > _ZERO_32 else _ZERO_32) - a * t + log1p32(e), p - t
