"""Independent oracles for the building blocks the kernels trust:

- the counter-based noise hash against the published splitmix64 (Vigna's splitmix64.c), written
  here in plain Python integers, and its known answers;
- the vectorizable exp/log/log1p/sincos of cpu_math against NumPy's libm over their documented
  domains, compiled (inside a small njit loop, as the kernels use them);
- the in-kernel normal noise against its definition (splitmix64 + Box-Muller) in Python floats.
"""
import math

import numba
import numpy as np
import pytest

from fastae.kernels import cpu, cpu_math
from fastae.kernels import elementwise as ew

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
# splitmix64.c seeded with 1234567: its first five outputs (published known answers)
KNOWN_1234567 = [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431,
                 16408922859458223821]


def splitmix64_reference(seed, count):
    """Vigna's splitmix64.c next(): z = (x += golden); z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb; return z ^ (z >> 31) -- in Python ints mod 2**64."""
    x, out = seed & MASK, []
    for _ in range(count):
        x = (x + GOLDEN) & MASK
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        out.append(z ^ (z >> 31))
    return out


_MIX64 = cpu._ew.mix64  # the compiled copy the cpu kernels call (a global, for Numba to resolve)


@numba.njit
def _mix64_stream(seed, count, out):
    golden = np.uint64(0x9E3779B97F4A7C15)
    x = np.uint64(seed)
    for k in range(count):
        x = x + golden
        out[k] = _MIX64(x)


def test_splitmix64_reference_gives_the_published_answers():
    assert splitmix64_reference(1234567, 5) == KNOWN_1234567


@pytest.mark.parametrize("seed", [1234567, 0, 1, 2 ** 63, MASK, 0xDEADBEEFCAFEF00D])
def test_mix64_is_the_splitmix64_finalizer(seed):
    want = splitmix64_reference(seed, 64)
    if seed == 1234567:
        assert want[:5] == KNOWN_1234567
    states = [(seed + k * GOLDEN) & MASK for k in range(1, 65)]
    with np.errstate(over="ignore"):
        # Python (NumPy uint64 scalars), as the CUDA simulator runs it
        assert [int(ew.mix64(np.uint64(s))) for s in states] == want
        # NumPy arrays, as the reference noise (reference.noise_from_key) runs it
        assert [int(v) for v in ew.mix64(np.array(states, dtype=np.uint64))] == want
        # the stream key of a seed is splitmix64's first output
        assert int(ew.noise_key(seed)) == want[0]
    # compiled for the cpu kernels: the dispatcher called directly, and inside compiled code
    assert [int(cpu._ew.mix64(np.uint64(s))) for s in states] == want
    out = np.empty(64, np.uint64)
    _mix64_stream(np.uint64(seed), 64, out)
    assert [int(v) for v in out] == want
    assert int(cpu._ew.seed_key(np.uint64(seed))) == want[0]


# ---------------------------------------------------------------------------------------------
# cpu_math accuracy, compiled


def _compiled_loop(fn):
    @numba.njit(error_model="numpy")
    def apply(a, out):
        for i in range(a.size):
            out[i] = fn(a[i])
    return apply


@numba.njit(error_model="numpy")
def _sincos_loop(a, s, c):
    for i in range(a.size):
        s[i], c[i] = cpu_math.sincos(a[i])


RNG = np.random.default_rng(20260)


def ulps(got, want, dtype=np.float64):
    """|got - want| in units in the last place of want (in `dtype`), want computed in float64."""
    spacing = np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


def run(fn, x):
    out = np.empty_like(x)
    _compiled_loop(fn)(x, out)
    return out


def test_exp_float64():
    x = np.concatenate([np.linspace(-708.3, 709.78, 1_000_001), RNG.uniform(-708, 709, 100_000),
                        RNG.uniform(-1, 1, 100_000), np.linspace(-1e-8, 1e-8, 1001),
                        [0.0, -0.0, 5e-324, -5e-324, 1e-300, 709.782712893384, -708.3964185322641]])
    got, want = run(cpu_math.exp, x), np.exp(x)
    assert np.max(ulps(got, want)) <= 2
    assert run(cpu_math.exp, np.array([0.0]))[0] == 1.0
    # the extremes, exactly as NumPy: overflow, gradual underflow, zero, inf, nan
    edge = np.concatenate([np.linspace(-760, -700, 60_001), np.linspace(700, 720, 20_001),
                           [709.7827128933841, 1e300, -1e300, np.inf, -np.inf, np.nan]])
    with np.errstate(over="ignore", under="ignore"):
        want = np.exp(edge)
    got = run(cpu_math.exp, edge)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got == 0, want == 0)
    normal = np.isfinite(want) & (want >= np.finfo(np.float64).tiny)
    assert np.max(ulps(got[normal], want[normal])) <= 2
    subnormal = (want > 0) & (want < np.finfo(np.float64).tiny)
    assert subnormal.sum() > 1000 and np.max(np.abs(got[subnormal] - want[subnormal])) <= 5e-324


def test_exp32():
    x = np.concatenate([np.linspace(-87.3, 88.72, 1_000_001), RNG.uniform(-20, 20, 100_000),
                        [0.0, 1e-30, -1e-30]]).astype(np.float32)
    got = run(cpu_math.exp32, x)
    assert got.dtype == np.float32
    assert np.max(ulps(got, np.exp(x.astype(np.float64)), np.float32)) <= 2
    edge = np.concatenate([np.linspace(-110, -80, 30_001), np.linspace(85, 95, 10_001),
                           [np.inf, -np.inf, np.nan, 3e38, -3e38]]).astype(np.float32)
    with np.errstate(over="ignore", under="ignore"):
        want = np.exp(edge)
    got = run(cpu_math.exp32, edge)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got == 0, want == 0)
    normal = np.isfinite(want) & (want >= np.finfo(np.float32).tiny)
    assert np.max(ulps(got[normal], np.exp(edge[normal].astype(np.float64)), np.float32)) <= 2


def _tanh_points(dtype):
    x = np.concatenate([np.linspace(-20, 20, 1_000_001), RNG.uniform(-1, 1, 100_000), np.geomspace(1e-30, 1, 10_001),
                        np.linspace(0.62, 0.63, 10_001)]).astype(dtype)
    return np.concatenate([x, -x[::7]])


@pytest.mark.parametrize("fn,dtype,bound", [(cpu_math.tanh, np.float64, 3), (cpu_math.tanh32, np.float32, 3)])
def test_tanh(fn, dtype, bound):
    """The vectorizable tanh against the C library's, in ulps of the result (relative accuracy
    near 0 too, where 1 - 2 / (exp(2x) + 1) would cancel); the extremes exactly."""
    x = _tanh_points(dtype)
    got = run(fn, x)
    assert got.dtype == dtype
    assert np.max(ulps(got, np.tanh(x.astype(np.float64)), dtype)) <= bound
    edge = np.array([0.0, -0.0, 19.1, 25.0, 44.5, 89.0, 1e30, -1e30, np.inf, -np.inf, np.nan,
                     np.finfo(dtype).tiny, -np.finfo(dtype).tiny], dtype)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(run(fn, edge), np.tanh(edge))
    assert np.signbit(run(fn, np.array([-0.0], dtype))[0])


def test_log_over_positive_normals():
    tiny, huge = np.finfo(np.float64).tiny, np.finfo(np.float64).max
    x = np.concatenate([np.exp(np.linspace(np.log(tiny), np.log(huge), 1_000_001)).clip(tiny, huge), np.linspace(0.5, 2.0, 100_001),
                        RNG.uniform(0, 1, 100_000) + tiny, 1 + np.linspace(-1e-6, 1e-6, 2001),
                        [tiny, huge, 1.0, 2.0, 0.5, np.sqrt(2.0), np.nextafter(1.0, 2.0), np.nextafter(1.0, 0.0),
                         1.0 - 2.0 ** -53, 2.0 ** -53]])  # 1 - 2**-53 .. 1: the uniforms Box-Muller logs
    got, want = run(cpu_math.log, x), np.log(x)
    assert np.max(ulps(got, want)) <= 4
    assert run(cpu_math.log, np.array([1.0]))[0] == 0.0


def test_log1p_on_zero_to_one():
    x = np.concatenate([np.linspace(0, 1, 1_000_001), np.geomspace(1e-300, 1, 10_001), RNG.uniform(0, 1, 100_000),
                        [0.0, 5e-324, 1e-20, 1.0]])
    got, want = run(cpu_math.log1p, x), np.log1p(x)
    assert np.max(ulps(got, want)) <= 4
    assert run(cpu_math.log1p, np.array([0.0]))[0] == 0.0
    # log1p of exp(-|a|), as the BCE uses it, where a float32 1 + x would lose x entirely
    assert abs(run(cpu_math.log1p, np.array([1e-17]))[0] / 1e-17 - 1) < 1e-15


def test_log1p32_on_zero_to_one():
    x = np.concatenate([np.linspace(0, 1, 1_000_001), np.geomspace(1e-38, 1, 10_001)]).astype(np.float32)
    got = run(cpu_math.log1p32, x)
    assert got.dtype == np.float32
    assert np.max(ulps(got, np.log1p(x.astype(np.float64)), np.float32)) <= 4


def test_sincos_up_to_a_million():
    x = np.concatenate([np.linspace(-10, 10, 1_000_001), np.linspace(-1e6, 1e6, 1_000_001),
                        RNG.uniform(-1e6, 1e6, 100_000), RNG.uniform(0, 2 * np.pi, 100_000),
                        np.pi / 4 * np.arange(-64, 65), [0.0, -0.0, 1e-300, np.pi, 1e6, -1e6]])
    s, c = np.empty_like(x), np.empty_like(x)
    _sincos_loop(x, s, c)
    eps = np.finfo(np.float64).eps
    # values in [-1, 1]: absolute error in units of eps (= ulp(1))
    assert np.max(np.abs(s - np.sin(x))) <= 2 * eps
    assert np.max(np.abs(c - np.cos(x))) <= 2 * eps
    assert np.all(np.abs(s) <= 1) and np.all(np.abs(c) <= 1)
    # near zero, where sin(x) ~ x, the error is relative
    small = (np.abs(x) <= 1) & (x != 0)
    assert np.max(ulps(s[small], np.sin(x[small]))) <= 2
    assert np.max(ulps(c[small], np.cos(x[small]))) <= 2
    s0, c0 = np.empty(1), np.empty(1)
    _sincos_loop(np.array([0.0]), s0, c0)
    assert s0[0] == 0.0 and c0[0] == 1.0
    # cos as the kernels' separate entry point
    np.testing.assert_array_equal(run(cpu_math.cos, x[:1000]), c[:1000])


def test_log32_over_positive_normals():
    tiny, huge = np.finfo(np.float32).tiny, np.finfo(np.float32).max
    uniforms = 1 - np.arange(0, 2 ** 24, 97) / 2 ** 24  # the Box-Muller radius uniforms, 1 down to 2^-24
    x = np.concatenate([np.geomspace(tiny, huge, 1_000_001), np.linspace(0.5, 2.0, 100_001), uniforms,
                        1 - np.arange(1, 2 ** 12) / 2 ** 24, RNG.uniform(0, 1, 100_000),
                        [tiny, huge, 1.0, 2.0, 0.5, np.sqrt(0.5), np.sqrt(2.0), 2.0 ** -24]]).astype(np.float32)
    x = x[x >= tiny]
    got = run(cpu_math.log32, x)
    assert got.dtype == np.float32
    want = np.log(x.astype(np.float64))
    assert np.max(ulps(got[want != 0], want[want != 0], np.float32)) <= 2
    assert run(cpu_math.log32, np.array([1.0], np.float32))[0] == 0.0


@numba.njit(error_model="numpy")
def _sincos_small_loop(a, s, c):
    for i in range(a.size):
        s[i], c[i] = cpu_math.sincos_small_in(a[i])


@pytest.mark.parametrize("dtype,most", [(np.float32, 2), (np.float64, 2)])
def test_sincos_small_on_a_quarter_turn(dtype, most):
    # the angles Box-Muller reduces to, m * (pi / 2) / 2^22 for |m| <= 2^21, and a sweep of |a| <= pi / 4
    grid = np.arange(-2 ** 21, 2 ** 21 + 1) * (np.pi / 2 / 2 ** 22)
    a = np.concatenate([grid, np.linspace(-np.pi / 4, np.pi / 4, 100_001), [0.0, 1e-30]]).astype(dtype)
    s, c = np.empty_like(a), np.empty_like(a)
    _sincos_small_loop(a, s, c)
    assert s.dtype == c.dtype == dtype
    exact = a.astype(np.float64)
    nonzero = exact != 0
    assert np.max(ulps(s[nonzero], np.sin(exact[nonzero]), dtype)) <= most
    assert np.max(ulps(c, np.cos(exact), dtype)) <= most
    _sincos_small_loop(np.zeros(1, dtype), s[:1], c[:1])
    assert s[0] == 0.0 and c[0] == 1.0


def test_log_in_and_sincos_small_in_keep_the_precision():
    x32 = np.linspace(0.01, 2, 1001).astype(np.float32)
    np.testing.assert_array_equal(run(cpu_math.log_in, x32), run(cpu_math.log32, x32))
    x64 = x32.astype(np.float64)
    np.testing.assert_array_equal(run(cpu_math.log_in, x64), run(cpu_math.log, x64))


def normal_pairs_reference(seed, pairs):
    """The noise's definition in Python ints and floats: pair p is Box-Muller of one splitmix64
    finalizer hash h of key + p * golden (key: splitmix64's first output for the seed), with
    u1 = 1 - (h >> 40) / 2^24 and u2 = (h & 0xFFFFFF) / 2^24."""
    key = splitmix64_reference(seed, 1)[0]
    out = []
    for p in range(pairs):
        h = splitmix64_reference((key + p * GOLDEN - GOLDEN) & MASK, 1)[0]  # the finalizer of key + p * golden
        u1, u2 = 1 - (h >> 40) / 2 ** 24, (h & 0xFFFFFF) / 2 ** 24
        r = math.sqrt(-2 * math.log(u1))
        out += [r * math.cos(2 * math.pi * u2), r * math.sin(2 * math.pi * u2)]
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2026, MASK])
def test_noise_is_splitmix64_box_muller(seed):
    from fastae import kernels
    want = normal_pairs_reference(seed, 300)
    for dtype, tol in ((np.float64, 1e-14), (np.float32, 1e-6)):
        zeros = np.zeros((20, 30), dtype)
        for backend in ("cpu", "numpy"):
            got = kernels.reparam_forward(zeros, zeros, seed=seed, backend=backend)[0].ravel()  # z = eps
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=f"{backend} {dtype.__name__}")
