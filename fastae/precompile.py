"""`python -m fastae.precompile [--kind KIND[,KIND...]] DTYPE...` (kinds: autoencoder, autoencoder-bce, vae,
vae-passes, kernels): compile every kernel and model
pass of the cpu backend for DTYPE into Numba's disk cache. fastae starts it in the background the first time a model
runs on a machine whose cache lacks the compiled engine; `fastae.warmup()` runs the same code in
the calling process."""
import sys

import numpy as np


KINDS = ("native", "autoencoder", "autoencoder-bce", "vae")  # and "vae-passes": a VAE's training and
# scoring only, "kernels": the public kernels' own signatures (fastae.kernels.warmup); "native": the
# inference chain as an object file that later processes run without Numba (fastae.native_chain)


def run(dtype, backend="cpu", kinds=KINDS):
    """Fit, encode, decode and score tiny models of `kinds` in `dtype` on `backend`, with the
    engine compiled in this process: every kernel and engine entry point they use is compiled
    (or loaded from the disk cache) for the array types fastae normalises its inputs to."""
    from . import engine
    from .autoencoder import Autoencoder
    from .vae import VAE
    defer, engine.DEFER = engine.DEFER, False
    try:
        if "native" in kinds and backend == "cpu":
            from . import native_chain
            native_chain.build(dtype)
        if "kernels" in kinds:
            from .kernels import warmup as kernels_warmup
            kernels_warmup(backend, (dtype,))
        X = np.random.default_rng(0).uniform(size=(8, 3))
        common = dict(epochs=1, batch_size=4, seed=0, backend=backend, dtype=dtype)
        if "autoencoder" in kinds:  # the training pass, then inference
            model = Autoencoder(hidden=(2,), code=2, l1=0.1, noise=0.1, **common).fit(X)
            model.decode(model.transform(X))
            if backend == "cpu" and not _native_splits(dtype):
                _threaded_chain(model)
            model.score(X)
            model.value_and_grad(X)
        if "autoencoder-bce" in kinds:
            Autoencoder(hidden=(2,), code=2, output_activation="sigmoid", loss="bce", **common).fit(X).score(X)
        if "vae" in kinds or "vae-passes" in kinds:
            model = VAE(hidden=(2,), latent=2, **common).fit(X)
            model.score(X)
            model.value_and_grad(X, np.zeros((8, 2)))
            if "vae" in kinds:  # inference: the chains an autoencoder compiles too
                model.encode(X)
                model.decode(model.transform(X))
    finally:
        engine.DEFER = defer


def _native_splits(dtype):
    """Whether inference here runs the native chain, threads included (fastae.native_chain)."""
    from . import native_chain
    return native_chain.function(np.dtype(dtype)) is not None and native_chain.POOL_OK


def _threaded_chain(model):
    """Compile the Numba chain, with its split of layers between Numba's threads: what inference
    runs where the native chain cannot (a tiny call would not compile the split)."""
    from . import compiled
    chain = model._state()._chain("encode")
    x = np.zeros((1, chain.n_in), chain.params.dtype)
    out = np.empty((1, chain.n_out), chain.params.dtype)
    compiled.chain_into(chain.params, chain.layout, chain.acts, chain.prox, chain.l1, chain.packed, chain.packed_at,
                        2, True, x, out)


def warmup(backend, dtypes):
    """fastae.warmup: on the cpu backend with a disk cache, a second process compiles the public
    kernels and then the VAE's passes while this one builds the native inference chain and
    compiles the autoencoder's passes (two cores, about half the wait; the helper starts with
    the kernels, which share nothing with the passes, so that by the time it needs the layers
    both passes call, this process has put them in the cache); then this process loads that
    work from the cache."""
    import subprocess
    from . import engine
    from .kernels import jit
    for dtype in dtypes:
        helper = None
        if backend == "cpu" and jit.caching_enabled(engine.for_backend("cpu").ae_pass):
            helper = subprocess.Popen([sys.executable, "-m", "fastae.precompile", "--kind", "kernels,vae-passes",
                                       dtype], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        try:
            run(dtype, backend, ("native", "autoencoder"))
        finally:
            if helper is not None:
                helper.wait()
        # loaded from the cache by now (compiled here if the helper failed or there is no cache)
        run(dtype, backend, ("autoencoder-bce", "vae", "kernels"))


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


def main(dtypes, kinds=KINDS):
    for dtype in dtypes:
        try:
            import fcntl
            lock = open(_lock_path(dtype), "w")
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process compiling: wait, then load its work
        except (ImportError, OSError):
            lock = None
        try:
            run(dtype, kinds=kinds)
        finally:
            if lock is not None:
                lock.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    kinds = KINDS
    if args[:1] == ["--kind"]:
        kinds, args = tuple(args[1].split(",")), args[2:]
    main(args or ["float32", "float64"], kinds)
