"""What users of compiled kernels run into: import cost, disk caches, read-only installs, threads."""
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import fastae
from fastae import kernels

PACKAGE = Path(fastae.__file__).parent


def run_python(code, env=None, cwd=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=300)


def test_import_is_lazy_and_numpy_backend_needs_no_numba():
    result = run_python("""
        import sys, numpy as np
        import fastae
        assert "numba" not in sys.modules, "import fastae imported numba"
        x = np.ones((2, 3))
        fastae.kernels.affine_forward(x, np.ones((4, 3)), np.zeros(4), "relu", backend="numpy")
        fastae.kernels.reparam_forward(x, x, seed=1, backend="numpy")
        assert "numba" not in sys.modules and "cupy" not in sys.modules, "numpy backend imported numba/cupy"
        fastae.kernels.l1_prox(x, 0.5)
        assert "numba" in sys.modules and "cupy" not in sys.modules
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_kernels_are_cached_on_disk(tmp_path):
    code = "import fastae, numpy as np; print(fastae.kernels.l1_prox(np.array([-2.0, 0.1, 3.0]), 1.0))"
    result = run_python(code, env={"NUMBA_CACHE_DIR": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[-1.", "0.", "2.]"]
    index_files = list(tmp_path.rglob("*.nbi"))
    assert index_files, "no Numba cache index was written"
    # a second process loads from that cache rather than compiling again
    again = run_python(code + "; import fastae.kernels.cpu as c; print(c.l1_prox.stats.cache_hits)",
                       env={"NUMBA_CACHE_DIR": str(tmp_path)}, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Counter()" not in again.stdout.splitlines()[-1]


def test_read_only_install_caches_once_per_machine_under_the_temp_dir(tmp_path):
    """The package, HOME and NUMBA_CACHE_DIR all on a read-only mount (root: a private mount
    namespace). Numba would raise 'cannot cache function'; fastae caches under the temp dir, so a
    second process loads instead of compiling, and warns at the caller's line."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to make a read-only mount")
    root = tmp_path / "ro"
    shutil.copytree(PACKAGE, root / "site" / "fastae", ignore=shutil.ignore_patterns("__pycache__"))
    if not (root / "site" / "fastae" / "kernels").exists():  # installed as fastae.kernels from kernels/
        shutil.copytree(Path(kernels.__file__).parent, root / "site" / "fastae" / "kernels",
                        ignore=shutil.ignore_patterns("__pycache__"))
    (root / "home").mkdir()
    (root / "cache").mkdir()
    writable_tmp = tmp_path / "tmp"
    writable_tmp.mkdir()
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare is not permitted here: {probe.stderr.decode().strip()}")
    code = ("import fastae, numpy as np; from fastae.kernels import cpu; "
            "print(fastae.kernels.l1_prox(np.array([-2.0, 0.1, 3.0]), 1.0)); "
            "print(dict(cpu.l1_prox.stats.cache_hits))")

    def run(tmpdir):
        script = (f"mount --bind {root} {root} && mount -o remount,ro,bind {root} {root} && "
                  f"touch {root}/probe 2>/dev/null && echo WRITABLE; "
                  f"cd {root} && {sys.executable} -c \"{code}\"")
        env = {**os.environ, "HOME": str(root / "home"), "NUMBA_CACHE_DIR": str(root / "cache"),
               "PYTHONPATH": str(root / "site"), "TMPDIR": str(tmpdir)}
        result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                                env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "WRITABLE" not in result.stdout
        assert result.stdout.split()[:3] == ["[-1.", "0.", "2.]"]
        return result
    first, second = run(writable_tmp), run(writable_tmp)
    assert "{}" in first.stdout and "{}" not in second.stdout  # the second process loaded the cache
    for result in (first, second):
        assert "<string>:1: RuntimeWarning" in result.stderr and "NUMBA_CACHE_DIR" in result.stderr
        assert str(writable_tmp) in result.stderr


def test_warmup_compiles_every_kernel_and_the_model_passes():
    fastae.warmup(dtypes=("float64",))
    from fastae import engine
    from fastae.kernels import cpu
    for name in ("affine_forward", "affine_backward", "l1_prox", "reparam_forward", "reparam_backward",
                 "mse_loss", "bce_logits_loss", "adam_step"):
        assert getattr(cpu, name).signatures, name
    compiled = engine.for_backend("cpu")
    # cpu inference (encode, heads, decode, reconstruct) runs compiled.chain_into over packed
    # weights; encode_into, layers_into and heads_into serve the other backends
    for name in ("ae_pass", "vae_pass"):
        assert getattr(compiled, name).signatures, name
    from fastae.compiled import chain_into
    assert chain_into.signatures
    # models use the compiled engine from now on: no Python steps, no background compile
    deferred = engine.for_model("cpu", "float64")
    X = np.random.default_rng(0).uniform(size=(8, 3))
    fastae.Autoencoder(hidden=(2,), code=2, epochs=1, dtype="float64").fit(X).transform(X)
    assert deferred.ae_pass is compiled.ae_pass


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_eight_threads_calling_kernels_at_once(backend):
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(8):
        x = rng.standard_normal((64, 96)).astype(np.float32)
        W = rng.standard_normal((48, 96)).astype(np.float32)
        jobs.append((x, W, rng.standard_normal(48).astype(np.float32), i))

    def work(job):
        x, W, b, seed = job
        out = []
        for _ in range(20):
            y = kernels.affine_forward(x, W, b, "tanh", backend=backend)
            grads = kernels.affine_backward(y, x, y, W, "tanh", backend=backend)
            z, kl = kernels.reparam_forward(y, y * 0, seed=seed, backend=backend)
            out = [y, *grads, z, kl, kernels.l1_prox(y, 0.2, backend=backend)]
        return out

    sequential = [work(job) for job in jobs]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(work, jobs))
    for seq, con in zip(sequential, concurrent):
        for a, b in zip(seq, con):
            np.testing.assert_array_equal(a, b)


def test_gpu_detection_never_raises_and_is_cached(monkeypatch):
    from fastae.kernels import backend
    backend.gpu_status.cache_clear()
    monkeypatch.setitem(sys.modules, "cupy", None)  # "import cupy" now raises ImportError
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    try:
        usable, reason = backend.gpu_status()
        assert usable is False and "import of cupy halted" in reason
        assert backend.backends() == ["cpu", "numpy"]
        assert backend.resolve("auto") == "cpu"
        with pytest.raises(RuntimeError, match="import of cupy halted"):
            backend.resolve("cuda")
        assert backend.gpu_status.cache_info().hits >= 1
    finally:
        backend.gpu_status.cache_clear()


def test_plain_pytest_runs_tests_and_benchmark_flag_runs_the_suite():
    root = Path(__file__).parent.parent
    plain = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q"], cwd=root,
                           capture_output=True, text=True, timeout=300)
    bench = subprocess.run([sys.executable, "-m", "pytest", "--benchmark", "--collect-only", "-q"],
                           cwd=root, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and bench.returncode == 0, plain.stderr + bench.stderr
    assert "tests/test_kernels.py" in plain.stdout and "bench/" not in plain.stdout
    assert "bench/test_bench_kernels.py" in bench.stdout and "tests/" not in bench.stdout
