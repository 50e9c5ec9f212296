"""fastae: fused compiled kernels and scikit-learn-style estimators for autoencoders.

`import fastae` is cheap: Numba is imported (and kernels compiled or loaded from the disk cache)
only when a `cpu` kernel first runs, CuPy only when the `cuda` backend is asked for.
"""
from . import kernels
from .kernels import backends, warmup

__version__ = "0.1.0"
__all__ = ["backends", "warmup", "kernels", "__version__"]
