"""Numba's disk cache stamps a function with its own file only; fastae's cached functions are
stamped with every file their compiled code may come from (kernels/*.py, fastae/engine.py), so an
edit to a callee's file recompiles the caller instead of loading stale machine code."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from fastae import kernels

SCRIPT = """
import json, numpy as np
from fastae.kernels import cpu, jit
out = np.empty((1, 3))
# cpu.py's affine_forward calling elementwise.activate (relu: code 0)
cpu.affine_forward(np.array([[5.0, -5.0, 0.5]]), np.eye(3), np.full(3, -1.0), 0, out)
stats = cpu.affine_forward.stats
print(json.dumps({"out": out[0].tolist(), "hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values()), "file": cpu.__file__,
                  "stamped": [__import__("os").path.basename(p) for p in getattr(jit, "stamped_files", list)()]}))
"""


@pytest.fixture
def package(tmp_path):
    """A copy of the kernels and the engine in the installed layout (fastae/kernels/), under an
    empty fastae/__init__.py: only the compiled code and the stamped files matter here."""
    site = tmp_path / "site"
    (site / "fastae").mkdir(parents=True)
    (site / "fastae" / "__init__.py").write_text("")
    shutil.copytree(Path(kernels.__file__).parent, site / "fastae" / "kernels",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(importlib.util.find_spec("fastae.engine").origin, site / "fastae" / "engine.py")
    return site


def run(site, cache):
    env = {**os.environ, "PYTHONPATH": str(site), "NUMBA_CACHE_DIR": str(cache)}
    env.pop("NUMBA_DISABLE_JIT", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                            cwd=site, timeout=300)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["file"].startswith(str(site))  # the copy, not the development tree
    return info


def edit(path, old, new):
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not found once in {path}"
    path.write_text(text.replace(old, new))


def test_editing_a_callee_file_recompiles_its_callers(package, tmp_path):
    cache = tmp_path / "cache"
    first = run(package, cache)
    assert first["out"] == [4.0, 0.0, 0.0] and first["misses"] >= 1 and first["hits"] == 0
    again = run(package, cache)
    assert again["out"] == first["out"] and again["hits"] >= 1 and again["misses"] == 0  # cached
    # an edit to elementwise.py only (cpu.py, which holds affine_forward, is untouched)
    edit(package / "fastae" / "kernels" / "elementwise.py",
         "        return v if v > 0 else v - v", "        return v - 1.0 if v > 0 else v - v")
    edited = run(package, cache)
    assert edited["out"] == [3.0, 0.0, 0.0], "stale machine code loaded from the cache"
    assert edited["misses"] >= 1 and edited["hits"] == 0
    assert run(package, cache)["hits"] >= 1  # and the new code is cached in turn
    # any stamped file: a comment in the engine recompiles the kernels too
    with open(package / "fastae" / "engine.py", "a") as f:
        f.write("\n# edited\n")
    after_engine = run(package, cache)
    assert after_engine["out"] == [3.0, 0.0, 0.0] and after_engine["misses"] >= 1 and after_engine["hits"] == 0
    assert {"elementwise.py", "cpu_math.py", "cpu.py", "jit.py", "engine.py"} <= set(first["stamped"])


def test_no_usable_cache_location_compiles_in_memory(monkeypatch):
    """Where Numba finds no locator (no writable cache directory) cpu_jit still compiles."""
    from fastae.kernels import jit
    monkeypatch.setattr(jit._TreeStampedImpl, "_locator_classes", [])
    monkeypatch.setattr(jit, "_uncached", [])

    def triple(x):
        return 3 * x

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn = jit.cpu_jit(triple)
    assert fn(np.float64(2.0)) == 6.0
    assert any("no writable Numba cache directory" in str(w.message) for w in caught)
    assert jit._uncached == ["triple"]


def test_cache_stamp_covers_every_kernel_file_and_the_engine():
    from fastae.kernels import jit
    names = {os.path.basename(p) for p in jit.stamped_files()}
    here = {p.name for p in Path(kernels.__file__).parent.glob("*.py")}
    assert here <= names and "engine.py" in names
    assert len(jit.tree_stamp()) == 64


def test_each_vector_width_keeps_its_own_cache_files(tmp_path):
    """AVX2 and AVX-512 hosts (or FASTAE_VECTOR_BYTES) sharing one cache folder: each width writes
    and finds its own index, so switching back finds the code still cached."""
    script = ("import numpy as np\n"
              "from fastae.kernels import packed\n"
              "x = np.ones((2, 3), np.float32)\n"
              "Wp = np.ones(packed.packed_size(5, 3, np.float32), np.float32)\n"
              "packed.affine_forward(x, Wp, np.zeros(5, np.float32), 0, np.empty((2, 5), np.float32))\n"
              "print(packed.affine_forward.stats.cache_hits)\n")
    hits = []
    for width in ("32", "64", "32"):
        env = dict(os.environ, FASTAE_VECTOR_BYTES=width, NUMBA_CACHE_DIR=str(tmp_path))
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        hits.append(done.stdout.strip())
    assert hits[0] == "Counter()" and hits[2] != "Counter()"  # the third run loads what the first wrote
    names = {p.name for p in tmp_path.rglob("packed.affine_forward-*.nbi")}
    assert {n.split(".")[-2] for n in names} == {"v32", "v64"}
