"""`python -m fastae.precompile DTYPE...`: compile every kernel and model pass of the cpu backend
for DTYPE into Numba's disk cache. fastae starts it in the background the first time a model
runs on a machine whose cache lacks the compiled engine; `fastae.warmup()` runs the same code in
the calling process."""
import sys

import numpy as np


def run(dtype, backend="cpu"):
    """Fit, encode, decode and score tiny models of every kind in `dtype` on `backend`, with the
    engine compiled in this process: every kernel and engine entry point is compiled (or loaded
    from the disk cache) for the array types fastae normalises its inputs to."""
    from . import engine
    from .autoencoder import Autoencoder
    from .vae import VAE
    defer, engine.DEFER = engine.DEFER, False
    try:
        X = np.random.default_rng(0).uniform(size=(8, 3))
        common = dict(epochs=1, batch_size=4, seed=0, backend=backend, dtype=dtype)
        for model in (Autoencoder(hidden=(2,), code=2, l1=0.1, noise=0.1, **common),
                      Autoencoder(hidden=(2,), code=2, output_activation="sigmoid", loss="bce", **common),
                      VAE(hidden=(2,), latent=2, **common)):
            model.fit(X).transform(X)
            model.decode(model.transform(X))
            model.score(X)
            if isinstance(model, VAE):
                model.encode(X)
                model.value_and_grad(X, np.zeros((8, 2)))
            else:
                model.value_and_grad(X)
    finally:
        engine.DEFER = defer


def _lock_path(dtype):
    """One lock per user, cache location, code version and dtype: concurrent processes wait for
    the one compiling, then find its work in the cache."""
    import hashlib
    import os
    import tempfile
    from .kernels.jit import tree_stamp
    where = hashlib.sha256(f"{os.environ.get('NUMBA_CACHE_DIR', '')}|{__file__}|{tree_stamp()}".encode())
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"fastae-precompile-{uid}-{where.hexdigest()[:16]}-{dtype}.lock")


def main(dtypes):
    for dtype in dtypes:
        try:
            import fcntl
            lock = open(_lock_path(dtype), "w")
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process compiling: wait, then load its work
        except (ImportError, OSError):
            lock = None
        try:
            run(dtype)
        finally:
            if lock is not None:
                lock.close()


if __name__ == "__main__":
    main(sys.argv[1:] or ["float32", "float64"])
