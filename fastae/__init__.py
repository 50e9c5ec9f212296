"""fastae: fused compiled kernels and scikit-learn-style estimators for autoencoders.

`import fastae` is cheap: Numba is imported (and kernels compiled or loaded from the disk cache)
only when a `cpu` kernel first runs, CuPy only when the `cuda` backend is asked for, scikit-learn
never (it is only needed by the tests and the demo).
"""
import importlib.util as _util
import os as _os

if _util.find_spec(f"{__name__}.kernels") is None:  # a source checkout run without installing:
    __path__.append(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))))  # ../kernels

from . import kernels  # noqa: E402
from .autoencoder import Autoencoder  # noqa: E402
from .kernels import backends
from .pca import PCA
from .persistence import load
from .validation import NotFittedError
from .vae import VAE

__version__ = "0.1.0"


def warmup(backend: str = "cpu", dtypes: tuple[str, ...] = ("float32", "float64")) -> None:
    """Compile (or load from the disk cache) every kernel and the models' training and inference
    passes for `dtypes` now, and build the native inference chain, so that no later call of the
    estimators or kernels pays for it (`model.compiled()` compiles its function on request).

    Parameters
    ----------
    backend : {'cpu', 'numpy', 'cuda', 'auto'}, default='cpu'
        The backend whose kernels and model passes to compile.
    dtypes : tuple of str, default=('float32', 'float64')
        The float dtypes to compile for.
    """
    from . import precompile
    precompile.warmup(backend, dtypes)


__all__ = ["PCA", "Autoencoder", "VAE", "load", "backends", "warmup", "kernels", "NotFittedError",
           "__version__"]
