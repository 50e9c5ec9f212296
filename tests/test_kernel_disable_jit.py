"""Under NUMBA_DISABLE_JIT=1 the cpu kernels cannot run (Numba compiles nothing): the defaults pick
the numpy backend and an explicit backend="cpu" says why it cannot run."""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import numpy as np
    import pytest
    import fastae
    from fastae import kernels
    from fastae.kernels import backend

    assert backend.jit_disabled()
    assert fastae.backends() == ["numpy"], fastae.backends()
    assert backend.resolve(None, np.ones(2)) == "numpy"
    assert backend.resolve("auto") == "numpy"
    h = np.linspace(-1, 1, 12).reshape(3, 4)
    want = np.sign(h) * np.maximum(np.abs(h) - 0.25, 0)
    np.testing.assert_allclose(kernels.l1_prox(h, 0.25), want)
    np.testing.assert_allclose(kernels.l1_prox(h, 0.25, backend="auto"), want)
    z, kl = kernels.reparam_forward(h, h, seed=1)
    assert np.isfinite(z).all() and kl.shape == (3,)
    p, m, v = np.ones(4), np.zeros(4), np.zeros(4)
    kernels.adam_step(p, np.ones(4), m, v, step=1, lr=0.1)
    np.testing.assert_allclose(p, 0.9)
    model = fastae.Autoencoder(hidden=(3,), code=2, epochs=1, seed=0).fit(h)
    with pytest.raises(RuntimeError, match="compiled.. needs Numba's compiler, but NUMBA_DISABLE_JIT=1"):
        model.compiled("encode")
    for call in (lambda: kernels.l1_prox(h, 0.25, backend="cpu"),
                 lambda: kernels.adam_step(p, np.ones(4), m, v, step=1, backend="cpu")):
        with pytest.raises(RuntimeError, match="NUMBA_DISABLE_JIT=1 is set.*use backend='numpy' or unset"):
            call()
    print("OK")
""")


@pytest.mark.parametrize("value", ["1", "2"])
def test_disable_jit_falls_back_to_numpy(tmp_path, value):
    env = dict(os.environ, NUMBA_DISABLE_JIT=value, NUMBA_CACHE_DIR=str(tmp_path))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(__file__))
    assert run.returncode == 0 and "OK" in run.stdout, run.stdout + run.stderr


def test_disable_jit_zero_or_unset_keeps_cpu(monkeypatch):
    from fastae.kernels import backend
    for value in ("0", "", " 0 "):
        monkeypatch.setenv("NUMBA_DISABLE_JIT", value)
        assert not backend.jit_disabled()
        assert backend.resolve("auto") in ("cpu", "cuda")
        assert backend.resolve("cpu") == "cpu"
    monkeypatch.delenv("NUMBA_DISABLE_JIT")
    assert not backend.jit_disabled()
    assert "cpu" in backend.backends()
