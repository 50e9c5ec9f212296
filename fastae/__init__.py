"""fastae: fused compiled kernels and scikit-learn-style estimators for autoencoders.

`import fastae` is cheap: Numba is imported (and kernels compiled or loaded from the disk cache)
only when a `cpu` kernel first runs, CuPy only when the `cuda` backend is asked for, scikit-learn
never (it is only needed by the tests and the demo).
"""
from . import kernels
from .autoencoder import Autoencoder
from .kernels import backends
from .pca import PCA
from .persistence import load
from .validation import NotFittedError
from .vae import VAE

__version__ = "0.1.0"


def warmup(backend="cpu", dtypes=("float32", "float64")):
    """Compile (or load from the disk cache) every kernel and the models' training and inference
    passes for `dtypes` now, so that no later call pays for it."""
    import numpy as np
    kernels.warmup(backend, dtypes)
    X = np.random.default_rng(0).uniform(size=(8, 3))
    for dtype in dtypes:
        common = dict(epochs=1, batch_size=4, seed=0, backend=backend, dtype=dtype)
        for model in (Autoencoder(hidden=(2,), code=2, l1=0.1, noise=0.1, **common),
                      Autoencoder(hidden=(2,), code=2, output_activation="sigmoid", loss="bce", **common),
                      VAE(hidden=(2,), latent=2, **common)):
            model.fit(X).transform(X)
            model.decode(model.transform(X))
            model.score(X)
__all__ = ["PCA", "Autoencoder", "VAE", "load", "backends", "warmup", "kernels", "NotFittedError",
           "__version__"]
