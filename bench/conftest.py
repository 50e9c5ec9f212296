"""Benchmark plumbing: thread counts, correctness before timing, and the speed-up table.

Each benchmark group is one op at one shape and thread count; its contenders are the naive NumPy
reference ("numpy"), every available backend, and where it matters a "floor" (the same BLAS calls
alone). At the end of the run the suite prints, per group, each median and its ratio to numpy.
"""
import platform
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg.cython_blas  # noqa: F401  the BLAS Numba calls: loaded before threads are limited

import fastae

RESULTS = Path(__file__).parent / "latest.md"


def contenders(*extra):
    """The implementations to time: the reference, every fast backend here, and `extra` ones."""
    return ["numpy"] + [b for b in fastae.backends() if b != "numpy"] + list(extra)


def pytest_sessionstart(session):
    fastae.warmup()  # compile (or load) every kernel before anything is timed


@pytest.fixture(params=[1, 2], ids=lambda n: f"{n}thr")
def threads(request):
    """Every contender runs with the same BLAS thread count (our element-wise kernels are serial)."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=request.param):
        yield request.param


def assert_same(got, want, rtol=2e-4, atol=2e-5):
    """Validate a contender against the reference before it is timed."""
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        scale = max(1.0, float(np.max(np.abs(w))))
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol * scale)


def _machine():
    import os
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}"


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups = {}
    for bench in session.benchmarks:
        impl = bench.params.get("impl", bench.name) if bench.params else bench.name
        groups.setdefault(bench.group, {})[impl] = bench.stats.median
    lines = [f"Machine: {_machine()}", "",
             "| group | contender | median (us) | speed-up over numpy | time / floor |",
             "|---|---|---:|---:|---:|"]
    for group, medians in groups.items():
        base, floor = medians.get("numpy"), medians.get("floor")
        for impl, median in medians.items():
            speedup = f"{base / median:.2f}x" if base else ""
            over_floor = f"{median / floor:.3f}" if floor and impl != "floor" else ""
            lines.append(f"| {group} | {impl} | {median * 1e6:.1f} | {speedup} | {over_floor} |")
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    terminalreporter.write_sep("=", "fastae speed-ups (medians, same run)")
    terminalreporter.write(text)
    terminalreporter.write_line(f"(written to {RESULTS})")
