"""Benchmark plumbing: thread counts, peers, correctness before timing, and the summary tables.

Each benchmark group is one case (an op at one shape and dtype) at one thread count, named
`"{case} {n}thr"`. Its contenders are the naive NumPy reference ("numpy"), fastae's own ways of
computing it (see FASTAE), where it matters a "floor" (the same BLAS calls, or the same bytes
moved, alone), and peers (see PEERS): other ways to do the same work, ONNX Runtime and PyTorch
skipped when not installed. At the end of the run the suite prints a headline table (one row per headline
case and thread count) and a detailed one, and writes both to bench/latest.md.
"""
import os
import platform
import re
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
import scipy.linalg.cython_blas  # noqa: F401  the BLAS Numba calls: loaded before threads are limited

import fastae
from peers import torch_default_threads

RESULTS = Path(__file__).parent / "latest.md"

BASELINE, FLOOR = "numpy", "floor"
# fastae's contenders, all through its public API: a backend with fresh outputs, the cpu backend
# with preallocated outputs (out=), and the function model.compiled() returns
FASTAE = ("cpu", "cpu_out", "compiled", "cuda")
# peers: other ways to do the same work, optional libraries (bench/peers.py) and NumPy code as a
# user would write it with Generator noise
PEERS = ("onnxruntime", "torch", "numpy_rng")

# The headline cases, in the order the headline table lists them (each at every thread count)
BIG_NET, DIGITS_NET = "784-512-256-32-256-512-784", "64-32-16-8-16-32-64"
HEADLINE = [
    f"AE train step {BIG_NET} b256 bce adam f32",
    *(f"encode 784-512-256-32 {rows} rows f32" for rows in (1, 16, 256)),
    *(f"reconstruct {BIG_NET} {rows} rows f32" for rows in (1, 16, 256)),
    "encode 64-32-16-8 1 rows f32",
    *(f"reconstruct {DIGITS_NET} {rows} rows f32" for rows in (1, 16)),
    "reparam fwd+bwd 4096x64 in-kernel noise f32",
    "reparam fwd+bwd 256x20 in-kernel noise f32",
    f"AE train step {DIGITS_NET} b64 bce adam f32",
    "l1_prox 4096x512 f32",
]


# Paired rounds (test_bench_paired.py): {(case, threads, "fastae / floor"): {ratio, fastae, other,
# rounds}}, medians of per-round ratios
PAIRED = {}


def group(case, threads):
    """The group name of `case` at `threads` threads (the summary splits it back)."""
    return f"{case} {threads}thr"


def contenders(*extra):
    """The implementations to time: the reference, every fast backend here, and `extra` ones."""
    return ["numpy"] + [b for b in fastae.backends() if b != "numpy"] + list(extra)


def pytest_sessionstart(session):
    fastae.warmup()  # compile (or load) every kernel before anything is timed


@pytest.fixture(params=[1, 2], ids=lambda n: f"{n}thr")
def threads(request):
    """Every contender runs with the same thread count: BLAS (threadpoolctl), Numba's parallel
    layer and, when it is loaded, PyTorch; ONNX Runtime sessions get it as intra_op_num_threads.
    The previous settings come back afterwards."""
    from threadpoolctl import threadpool_limits
    n = request.param
    numba_before = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    torch = sys.modules.get("torch")
    if torch is not None:  # a torch contender imports it through peers.import_torch, which sets it too
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield n
    finally:
        numba.set_num_threads(numba_before)
        torch = sys.modules.get("torch")
        if torch is not None and torch_default_threads() is not None:
            torch.set_num_threads(torch_default_threads())


def assert_same(got, want, rtol=2e-4, atol=2e-5):
    """Validate a contender against the reference before it is timed."""
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want), f"{len(got)} results against {len(want)}"
    for g, w in zip(got, want):
        scale = max(1.0, float(np.max(np.abs(w))))
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol * scale)


def _machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = [f"Python {platform.python_version()}", f"NumPy {np.__version__}", f"Numba {numba.__version__}"]
    for name, label in (("onnxruntime", "ONNX Runtime"), ("torch", "PyTorch")):
        if name in sys.modules:
            versions.append(f"{label} {sys.modules[name].__version__}")
    return f"{cpu}, {os.cpu_count()} cores, " + ", ".join(versions)


def _kind(impl):
    return {BASELINE: "baseline", FLOOR: "floor"}.get(impl) or (
        "fastae" if impl in FASTAE else "peer" if impl in PEERS else "")


def _best(medians, kind):
    """(name, median) of the fastest contender of `kind` in a group, or (None, None)."""
    found = [(m, impl) for impl, m in medians.items() if _kind(impl) == kind]
    return (min(found)[1], min(found)[0]) if found else (None, None)


def _split(name):
    """(case, thread count) of a group name; (name, "") when it has no thread count."""
    match = re.fullmatch(r"(.*) (\d+)thr", name or "")
    return (match[1], match[2]) if match else (name, "")


def _us(seconds):
    return f"{seconds * 1e6:.1f}" if seconds is not None else ""


def _ratio(a, b, fmt="{:.3f}"):
    return fmt.format(a / b) if a is not None and b else ""


def summary(groups):
    """The headline and detailed tables (markdown) of {group: {contender: median seconds}}."""
    order = {case: i for i, case in enumerate(HEADLINE)}
    head = sorted((g for g in groups if _split(g)[0] in order),
                  key=lambda g: (order[_split(g)[0]], int(_split(g)[1] or 0)))
    lines = ["### Headline cases", "",
             "| case | threads | numpy | best peer | floor | fastae best | fastae speed-up over numpy "
             "| fastae / peer | fastae / floor |",
             "|---|---:|---:|---|---:|---|---:|---:|---:|"]
    for name in head:
        medians = groups[name]
        case, n = _split(name)
        base = medians.get(BASELINE)
        peer, peer_t = _best(medians, "peer")
        ours, ours_t = _best(medians, "fastae")
        floor = medians.get(FLOOR)
        lines.append(f"| {case} | {n} | {_us(base)} | {f'{_us(peer_t)} ({peer})' if peer else ''} | {_us(floor)} "
                     f"| {f'{_us(ours_t)} ({ours})' if ours else ''} | {_ratio(base, ours_t, '{:.2f}x')} "
                     f"| {_ratio(ours_t, peer_t)} | {_ratio(ours_t, floor)} |")
    lines += ["", "### Every group", "",
              "| group | contender | kind | median (us) | speed-up over numpy | time / floor | time / best peer |",
              "|---|---|---|---:|---:|---:|---:|"]
    for name, medians in groups.items():
        base, floor = medians.get(BASELINE), medians.get(FLOOR)
        peer, peer_t = _best(medians, "peer")
        ours, _ = _best(medians, "fastae")
        for impl, median in medians.items():
            kind = _kind(impl)
            if impl in (peer, ours) and len([i for i in medians if _kind(i) == kind]) > 1:
                kind += ", best"
            lines.append(f"| {name} | {impl} | {kind} | {_us(median)} | {_ratio(base, median, '{:.2f}x')} "
                         f"| {_ratio(median, floor) if impl != FLOOR else ''} "
                         f"| {_ratio(median, peer_t) if _kind(impl) == 'fastae' else ''} |")
    if PAIRED:
        lines += ["", "### Paired rounds", "",
                  "fastae and the other contender called alternately, one call each per round; the median of the "
                  "per-round ratios (test_bench_paired.py).", "",
                  "| case | threads | of | median of the per-round ratios | fastae (us) | other (us) | rounds |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        for (case, threads, what), r in sorted(PAIRED.items()):
            lines.append(f"| {case} | {threads} | {what} | {r['ratio']:.3f} | {_us(r['fastae'])} | {_us(r['other'])} "
                         f"| {r['rounds']} |")
    return "\n".join(lines) + "\n"


LEGEND = ("Medians in microseconds. fastae / peer: the time of fastae's best contender over the best "
          "peer's (below 1: fastae is faster); fastae / floor: over the floor's (1.0: at the floor).")


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not (session.benchmarks or PAIRED):
        return
    groups = {}
    for bench in session.benchmarks:
        params = bench.params or {}
        impl = params.get("impl") or params.get("cache") or bench.name  # cache: the cold-start cases
        groups.setdefault(bench.group, {})[impl] = bench.stats.median
    text = (f"Machine: {_machine()}\n\n{LEGEND}\n\n{summary(groups)}")
    RESULTS.write_text(text)
    terminalreporter.write_sep("=", "fastae against numpy, its peers and the floor (medians, same run)")
    terminalreporter.write(text)
    terminalreporter.write_line(f"(written to {RESULTS})")
