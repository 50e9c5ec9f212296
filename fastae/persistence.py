"""save / load: one .npz file holding the configuration as JSON plus the arrays; no pickle.

The file is written to a temporary name beside the target and renamed into place, so a crash
mid-save never leaves a half-written file where a good one was. Loading reads arrays with
allow_pickle=False and builds the model from known classes only: nothing in the file is executed.
"""
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "fastae-model"
VERSION = 1


def _classes():
    from .autoencoder import Autoencoder
    from .pca import PCA
    from .vae import VAE
    return {"Autoencoder": Autoencoder, "VAE": VAE, "PCA": PCA}


def _jsonable_params(model):
    """Constructor parameters as JSON values; a callback (code) is not saved."""
    params = model.get_params()
    if "callback" in params:
        params["callback"] = None
    if "hidden" in params:
        params["hidden"] = list(model._hidden)
    return params


def save(model, path):
    """Write `model` to exactly `path` (str or pathlib.Path)."""
    path = Path(path)
    if not path.parent.exists():
        raise ValueError(f"path: the folder {str(path.parent)!r} does not exist")
    header = {"format": FORMAT, "version": VERSION, "class": type(model).__name__,
              "params": _jsonable_params(model), "state": {}}
    arrays = {}
    if type(model).__name__ == "PCA":
        model._check_fitted()
        arrays.update(components=model.components_, mean=model.mean_,
                      explained_variance=model.explained_variance_,
                      explained_variance_ratio=model.explained_variance_ratio_)
        header["state"]["n_features_in"] = int(model.n_features_in_)
    else:
        model._check_fitted()
        to_host = (lambda a: a.get()) if model._xp is not np else (lambda a: a)
        arrays.update(params=to_host(model._net.params), opt_a=to_host(model._opt_a), opt_b=to_host(model._opt_b))
        header["state"].update(n_features_in=int(model.n_features_in_), t=int(model.t_), n_iter=int(model.n_iter_),
                               history={k: [float(x) for x in v] for k, v in model.history_.items()},
                               rng=_rng_state(model._rng))
    arrays["header"] = np.array(json.dumps(header))
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _rng_state(rng):
    state = rng.bit_generator.state
    return {"bit_generator": state["bit_generator"], "state": {k: int(v) for k, v in state["state"].items()},
            "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


def load(path):
    """A model equal to the saved one (its transform is bit-identical). A truncated, tampered,
    pickled or foreign file raises ValueError; nothing from the file is executed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: {str(path)!r} is not a file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{str(path)!r} is not a readable fastae model file ({type(exc).__name__}: {exc})") from None
    try:
        header = json.loads(str(arrays.pop("header")))
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise ValueError("not a fastae model (format/version)")
        cls = _classes()[header["class"]]
        params = dict(header["params"])
        if "hidden" in params:
            params["hidden"] = tuple(params["hidden"])
        model = cls(**params)
        return _restore(model, header["state"], arrays)
    except (KeyError, TypeError, ValueError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not a valid fastae model file: {exc}") from None


def _finite(a, name, shape, dtype):
    if a.dtype != dtype or a.shape != shape or not np.isfinite(a).all():
        raise ValueError(f"array {name!r} must be finite {dtype} of shape {shape}, got {a.dtype} {a.shape}")
    return a


def _restore(model, state, arrays):
    d = int(state["n_features_in"])
    if type(model).__name__ == "PCA":
        from . import validation
        dtype = validation.dtype(model.dtype)
        k = int(model.n_components)
        model.components_ = _finite(arrays["components"], "components", (k, d), dtype)
        model.mean_ = _finite(arrays["mean"], "mean", (d,), dtype)
        model.explained_variance_ = _finite(arrays["explained_variance"], "explained_variance", (k,), dtype)
        model.explained_variance_ratio_ = _finite(arrays["explained_variance_ratio"], "explained_variance_ratio", (k,), dtype)
        model.n_features_in_ = d
        return model
    model._check_training_params()
    model._fresh_state(d)
    n = model._net.n_params
    xp = model._xp
    model._net.params[...] = xp.asarray(_finite(arrays["params"], "params", (n,), model._dtype))
    model._opt_a[...] = xp.asarray(_finite(arrays["opt_a"], "opt_a", (n,), model._dtype))
    model._opt_b[...] = xp.asarray(_finite(arrays["opt_b"], "opt_b", (n,), model._dtype))
    model.t_, model.n_iter_ = int(state["t"]), int(state["n_iter"])
    model.history_ = {"loss": [float(x) for x in state["history"]["loss"]],
                      "val_loss": [float(x) for x in state["history"]["val_loss"]]}
    rng = state["rng"]
    if rng["bit_generator"] != model._rng.bit_generator.state["bit_generator"]:
        raise ValueError("unknown random generator state")
    model._rng.bit_generator.state = rng
    return model
