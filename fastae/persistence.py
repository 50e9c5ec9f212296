"""save / load: one .npz (zip) file, a JSON header plus plain .npy members; no pickle.

Format 2. `header.json` holds the class, the constructor parameters (without `callback` and
`backend`: neither is part of a model) and the fitted state's description (spec, steps, history,
random stream). The arrays are the weights layer by layer (`W0.npy`, `b0.npy`, ... in
`get_weights()` order) and the optimizer moments (`opt_a.npy`, `opt_b.npy`); PCA stores its four
arrays. Members are stored uncompressed.

Loading checks the zip directory, the header and every member's npy header (shape, dtype) against
the shapes the header's spec implies before it reads any array data, so a small file cannot make
it allocate or decompress more than the file holds. `save` runs exactly the same checks on what it
is about to write, before writing: a model that saves, loads. Files are written to an anonymous
temporary file beside the target and renamed into place: a crash or kill mid-save leaves the old
file (and no stray temporary) behind.
"""
from __future__ import annotations

import errno
import json
import math
import numbers
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import numpy as np

from . import network, validation
from .fitted import FittedModel, Spec, TrainState
from .kernels import backend as _backend

if TYPE_CHECKING:
    from .autoencoder import Autoencoder
    from .pca import PCA
    from .vae import VAE

    Model = Union[Autoencoder, VAE, PCA]

FORMAT = "fastae-model"
VERSION = 2
MAX_HEADER = 1 << 20  # bytes of JSON a header may have
_NOT_SAVED = ("callback", "backend")


def _classes():
    from .autoencoder import Autoencoder
    from .pca import PCA
    from .vae import VAE
    return {"Autoencoder": Autoencoder, "VAE": VAE, "PCA": PCA}


class _Invalid(ValueError):
    pass


# ---- what goes into a file

def _contents(model):
    """(header, arrays) of a fitted model."""
    name = type(model).__name__
    if name not in _classes():
        raise TypeError(f"cannot save a {name}: only fastae's PCA, Autoencoder and VAE")
    state = model._state()  # NotFittedError (a ValueError) for an unfitted model
    # the parameters the model was fitted with: what set_params did since does not reach the file
    settings = state.settings if state.settings is not None else model.get_params()
    params = {k: _jsonable(v) for k, v in settings.items() if k not in _NOT_SAVED}
    header = {"format": FORMAT, "version": VERSION, "class": name, "params": params}
    if name == "PCA":
        arrays = {"components": state.components, "mean": state.mean,
                  "explained_variance": state.explained_variance,
                  "explained_variance_ratio": state.explained_variance_ratio}
        return header, arrays
    train = state.train
    header["spec"] = {f.name: _jsonable(getattr(state.spec, f.name)) for f in _spec_fields()}
    header["train"] = {"t": train.t, "n_iter": train.n_iter, "loss": list(train.loss),
                       "val_loss": list(train.val_loss), "rng": _jsonable(train.rng_state)}
    arrays = {}
    for i, (W, b) in enumerate(state.layers()):
        arrays[f"W{i}"], arrays[f"b{i}"] = state.host(W), state.host(b)
    arrays["opt_a"], arrays["opt_b"] = state.host(train.opt_a), state.host(train.opt_b)
    return header, arrays


def _jsonable(value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"cannot save the parameter value {value!r} (not a number, string or list)")


def _spec_fields():
    import dataclasses
    return dataclasses.fields(Spec)


# ---- save

def save(model: Model, path: str | os.PathLike[str]) -> None:
    """Write `model` to exactly `path` (str or pathlib.Path); a symlink is written through.

    Parameters
    ----------
    model : Autoencoder, VAE or PCA
        A fitted model.
    path : str or os.PathLike
        The file to write (no suffix is added); its folder must exist. Written through a
        temporary file renamed into place, so a crash never leaves a half-written file.

    Raises
    ------
    NotFittedError
        If `model` is not fitted.
    ValueError
        If the folder does not exist or the model cannot be saved.
    """
    target = _replacing(path)  # checks the path before anything else
    header, arrays = _contents(model)
    try:
        text = json.dumps(header, allow_nan=False)
        _model_from(json.loads(text), {k: lambda a=a: a for k, a in arrays.items()},
                    {k: (a.shape, a.dtype) for k, a in arrays.items()}, "numpy")
    except _Invalid as exc:
        raise ValueError(f"this model cannot be saved: {exc}") from None
    except ValueError as exc:  # json: NaN or inf in the history
        raise ValueError(f"this model cannot be saved: {exc}") from None
    with target as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.writestr("header.json", text)
            for key, a in arrays.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(a), allow_pickle=False)


_USER_ERRORS = {errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR,
                errno.ENOENT, errno.ELOOP}


class _replacing:
    """A file object whose content replaces `path` atomically when the block ends without error.
    Linux: an anonymous O_TMPFILE file, linked in only when complete (a kill leaves nothing);
    elsewhere a fixed hidden name beside the target, which the next save reuses."""

    def __init__(self, path):
        """Checks `path` (str or PathLike): its folder exists and whatever is there is a regular
        file (a symlink is followed); a folder, device, FIFO or symlink loop is never replaced."""
        given = os.fspath(path)
        if "\0" in str(given):
            raise ValueError(f"path: {given!r} contains a NUL byte")
        self.given = given
        self.path = Path(os.path.realpath(given))
        if not self.path.parent.is_dir():
            raise ValueError(f"path: the folder {str(self.path.parent)!r} does not exist")
        try:
            longest = os.pathconf(self.path.parent, "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):
            longest = 255
        if len(os.fsencode(self.path.name)) + 16 > longest:  # room for the temporary name
            raise ValueError(f"path: the file name {self.path.name[:40]!r}... is too long")
        if os.path.lexists(self.path) and not self.path.is_file():
            raise ValueError(f"path: {str(given)!r} exists and is not a regular file (a folder, device, FIFO or "
                             "symlink loop); fastae writes only to regular files")

    def __enter__(self):
        try:
            return self._open()
        except OSError as exc:
            if exc.errno in _USER_ERRORS:
                raise ValueError(f"path: cannot write {str(self.given)!r}: {exc.strerror}") from None
            raise

    def _open(self):
        directory = str(self.path.parent)
        self.anonymous = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
        if self.anonymous:
            try:
                fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o666)  # the umask applies
            except OSError:
                self.anonymous = False
        if not self.anonymous:
            self.tmp = self.path.parent / f".{self.path.name}.fastae-partial"
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self.file = os.fdopen(fd, "wb")
        return self.file

    def __exit__(self, kind, exc, tb):
        try:
            if kind is None:
                self.file.flush()
                os.fsync(self.file.fileno())
                if self.anonymous:
                    self.tmp = Path(tempfile.mktemp(prefix=f".{self.path.name}.", dir=self.path.parent))
                    # linkat with AT_SYMLINK_FOLLOW (os.link uses it only given a dir fd)
                    folder = os.open(self.path.parent, os.O_RDONLY)
                    try:
                        os.link(f"/proc/self/fd/{self.file.fileno()}", self.tmp.name, src_dir_fd=folder,
                                dst_dir_fd=folder, follow_symlinks=True)
                    finally:
                        os.close(folder)
                os.replace(self.tmp, self.path)
        finally:
            self.file.close()
            if (kind is not None or not self.anonymous) and getattr(self, "tmp", None) and self.tmp.exists():
                self.tmp.unlink()
        return False


# ---- load

def load(path: str | os.PathLike[str], backend: Literal["auto", "cpu", "numpy", "cuda"] = "auto") -> Model:
    """The model saved at `path`, with its arrays on `backend` ("auto": a GPU if there is one,
    else the cpu; also the loaded estimator's `backend` parameter). A missing path raises
    FileNotFoundError; any file that is not a valid fastae model ValueError. Nothing from the file
    is executed or unpickled.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``model.save`` (or ``fastae.persistence.save``).
    backend : {'auto', 'cpu', 'numpy', 'cuda'}, default='auto'
        Where the loaded model's arrays live; 'auto' is the GPU if one is usable, else 'cpu'.

    Returns
    -------
    Autoencoder, VAE or PCA
        The fitted model; its ``transform`` is bit-identical to the saved one's on the same
        backend.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If the file is not a valid fastae model (not a zip, truncated, tampered, another
        program's .npz, a newer format), or `backend` is invalid.
    """
    resolved = _backend.resolve(validation.one_of("auto", "cpu", "numpy", "cuda")(backend, "backend"))
    path = Path(os.fspath(path))
    try:
        os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"path: {str(path)!r} does not exist") from None
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte, a symlink loop, no access
        raise ValueError(f"path: cannot read {str(path)!r} ({exc})") from None
    if not path.is_file():
        raise ValueError(f"path: {str(path)!r} is not a file")
    try:
        with zipfile.ZipFile(path) as zf:
            return _read(zf, path.stat().st_size, resolved, backend)
    except _Invalid as exc:
        raise ValueError(f"{str(path)!r} is not a valid fastae model file: {exc}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError,
            NotImplementedError, OverflowError, RuntimeError) as exc:
        raise ValueError(f"{str(path)!r} is not a readable fastae model file ({type(exc).__name__}: {exc})") from None


def _read(zf, file_size, resolved, backend):
    infos = {info.filename: info for info in zf.infolist()}
    total = 0
    for info in infos.values():
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise _Invalid(f"member {info.filename!r} is compressed (fastae stores members as they are)")
        total += info.file_size
    if total > file_size:
        raise _Invalid("the zip directory declares more data than the file holds")
    if "header.json" not in infos and "header.npy" in infos:
        raise _Invalid("a format 1 file (fastae 0.1.0); this fastae reads format 2: refit and save again")
    if "header.json" not in infos or infos["header.json"].file_size > MAX_HEADER:
        raise _Invalid("no header.json of at most 1 MiB")
    try:
        header = json.loads(zf.read("header.json").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Invalid(f"header.json is not JSON ({exc})") from None
    names = {name[:-4] for name in infos if name.endswith(".npy")}
    if set(infos) != {"header.json"} | {f"{n}.npy" for n in names}:
        raise _Invalid("unexpected members in the archive")
    declared = {}
    for name in names:
        with zf.open(f"{name}.npy") as f:
            shape, dtype = declared[name] = _npy_header(f, name)
            data = infos[f"{name}.npy"].file_size - f.tell()
        if data != math.prod(shape) * dtype.itemsize:
            # a header may declare any shape: only data actually in the file is ever allocated
            raise _Invalid(f"{name}: the header declares {shape} {dtype}, the file holds {data} bytes of data")
    readers = {name: (lambda name=name: _npy_data(zf, name)) for name in names}
    model = _model_from(header, readers, declared, resolved)
    if "backend" in model.get_params():
        model.set_params(backend=backend)
    return model


def _npy_header(f, name):
    """(shape, dtype) declared by a .npy member, read from its header alone."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise _Invalid(f"{name}: unsupported .npy version {version}")
    except _Invalid:
        raise
    except Exception as exc:
        raise _Invalid(f"{name}: not a .npy array ({exc})") from None
    if fortran or dtype.hasobject:
        raise _Invalid(f"{name}: must be a C-ordered numeric array")
    return tuple(shape), dtype


def _npy_data(zf, name):
    with zf.open(f"{name}.npy") as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _model_from(header, readers, declared, backend):
    """The estimator described by `header` and the arrays (`readers[name]()` reads one; only
    after `declared[name]`, its (shape, dtype), was checked). Raises _Invalid."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _Invalid("not a fastae model (no fastae header)")
    if header.get("version") != VERSION:
        raise _Invalid(f"format version {header.get('version')!r}; this fastae reads version {VERSION}")
    classes = _classes()
    cls = classes.get(header.get("class")) if isinstance(header.get("class"), str) else None
    if cls is None:
        raise _Invalid(f"unknown class {header.get('class')!r}")
    params = header.get("params")
    names = [n for n in cls._param_names() if n not in _NOT_SAVED]
    if not isinstance(params, dict) or sorted(params) != sorted(names):
        raise _Invalid(f"params must name exactly the parameters of {cls.__name__}")
    params = {k: tuple(v) if k == "hidden" and isinstance(v, list) else v for k, v in params.items()}
    model = cls(**params, **({"callback": None} if "callback" in cls._param_names() else {}))
    table = {"PCA": validation.PCA, "Autoencoder": validation.AUTOENCODER, "VAE": validation.VAE}[cls.__name__]
    try:
        checked = validation.params(model, {k: v for k, v in table.items() if k != "callback"})
    except (ValueError, TypeError) as exc:
        raise _Invalid(f"params: {exc}") from None
    if cls.__name__ == "PCA":
        return _pca_from(model, readers, declared, checked)
    spec = _spec_from(header.get("spec"), cls)
    try:
        implied = model._spec({**checked, "backend": backend}, spec.n_features)
    except ValueError as exc:
        raise _Invalid(f"params: {exc}") from None
    if implied != spec:
        raise _Invalid("params do not describe the network in the file")
    train = header.get("train")
    if not isinstance(train, dict) or sorted(train) != ["loss", "n_iter", "rng", "t", "val_loss"]:
        raise _Invalid("train must hold t, n_iter, loss, val_loss and rng")
    t, n_iter = _count(train["t"], "t"), _count(train["n_iter"], "n_iter")
    loss, val_loss = _losses(train["loss"], "loss"), _losses(train["val_loss"], "val_loss")
    if len(loss) != n_iter or len(val_loss) > n_iter:
        raise _Invalid("the history does not match n_iter")
    rng_state = _rng_state(train["rng"])
    shapes, n_params = spec.public_shapes()
    expected = {"opt_a": (n_params,), "opt_b": (n_params,)}
    for i, (W, b) in enumerate(shapes):
        expected[f"W{i}"], expected[f"b{i}"] = W, b
    _check_declared(declared, expected, spec.dtype)  # before anything the size of the model exists
    host = FittedModel(spec, network.zeros(n_params, spec.dtype), TrainState(None, None), "numpy")
    for i, (W, b) in enumerate(host.layers()):
        W[...], b[...] = _finite(readers[f"W{i}"](), f"W{i}"), _finite(readers[f"b{i}"](), f"b{i}")
    opt_a, opt_b = (network.copy(_finite(readers[k](), k)) for k in ("opt_a", "opt_b"))
    state = FittedModel(spec, host.params, TrainState(opt_a, opt_b, t, n_iter, loss, val_loss, rng_state), "numpy")
    model._fitted = state.to_backend(backend).with_settings(checked)
    return model


def _pca_from(model, readers, declared, checked):
    from .pca import PCAState
    k, dtype = checked["n_components"], checked["dtype"]
    if "components" not in declared or len(declared["components"][0]) != 2:
        raise _Invalid("no components array")
    d = declared["components"][0][1]
    if d < 1 or k > d:
        raise _Invalid("components must have at least n_components columns")
    _check_declared(declared, {"components": (k, d), "mean": (d,), "explained_variance": (k,),
                               "explained_variance_ratio": (k,)}, dtype)
    arrays = [_finite(readers[n](), n) for n in ("components", "mean", "explained_variance",
                                                 "explained_variance_ratio")]
    if (arrays[2] < 0).any() or (arrays[3] < 0).any() or (arrays[3] > 1).any():
        raise _Invalid("explained variances must be >= 0 and their ratios in [0, 1]")
    model._fitted = PCAState(*arrays, settings=dict(checked))
    return model


def _check_declared(declared, expected, dtype):
    if sorted(declared) != sorted(expected):
        raise _Invalid(f"the arrays must be exactly {', '.join(sorted(expected))}")
    for name, shape in expected.items():
        got_shape, got_dtype = declared[name]
        if tuple(got_shape) != tuple(shape) or got_dtype != np.dtype(dtype):
            raise _Invalid(f"array {name!r} must be {dtype} of shape {tuple(shape)}, got {got_dtype} {tuple(got_shape)}")


def _finite(a, name):
    if not np.isfinite(a).all():
        raise _Invalid(f"array {name!r} holds NaN or infinity")
    return a


def _spec_from(raw, cls):
    fields = {f.name for f in _spec_fields()}
    if not isinstance(raw, dict) or set(raw) != fields:
        raise _Invalid("spec must hold exactly " + ", ".join(sorted(fields)))
    kind = {"Autoencoder": "autoencoder", "VAE": "vae"}[cls.__name__]
    if raw["kind"] != kind:
        raise _Invalid(f"spec kind {raw['kind']!r} does not match class {cls.__name__}")
    v = validation
    try:
        checked = dict(
            kind=kind, n_features=v.integer(1, 1 << 24)(raw["n_features"], "n_features"),
            hidden=v.sizes(raw["hidden"], "hidden"), width=v.integer(1, 1 << 24)(raw["width"], "width"),
            activation=v.ACTIVATION(raw["activation"], "activation"),
            code_activation=v.ACTIVATION(raw["code_activation"], "code_activation"),
            output_activation=v.ACTIVATION(raw["output_activation"], "output_activation"),
            loss=v.one_of("mse", "bce")(raw["loss"], "loss"), dtype=v.dtype(raw["dtype"]),
            l1=v.real(0)(raw["l1"], "l1"), noise=v.real(0)(raw["noise"], "noise"),
            noise_type=v.one_of("gaussian", "mask")(raw["noise_type"], "noise_type"),
            likelihood=None if raw["likelihood"] is None else v.one_of("bernoulli", "gaussian")(raw["likelihood"], "likelihood"),
            beta=v.real(0)(raw["beta"], "beta"), n_samples=v.integer(1, 1 << 16)(raw["n_samples"], "n_samples"),
            score_seed=v.seed(raw["score_seed"], "score_seed"))
    except (ValueError, TypeError) as exc:
        raise _Invalid(str(exc)) from None
    if checked["hidden"] and max(checked["hidden"]) > 1 << 24:
        raise _Invalid("hidden widths must be at most 2**24")
    spec = Spec(**checked)
    if (spec.likelihood is None) == spec.is_vae:
        raise _Invalid("likelihood is set for a VAE and only for a VAE")
    if not spec.is_vae and spec.loss == "bce" and spec.output_activation != "sigmoid":
        raise _Invalid("loss 'bce' needs a sigmoid output")
    if spec.is_vae and (spec.code_activation != "linear" or spec.output_activation !=
                        ("sigmoid" if spec.likelihood == "bernoulli" else "linear")):
        raise _Invalid("a VAE's heads are linear and its output follows its likelihood")
    return spec


def _count(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 63:
        raise _Invalid(f"{name} must be an int in [0, 2**63)")
    return value


def _losses(values, name):
    if not isinstance(values, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in values):
        raise _Invalid(f"{name} must be a list of finite numbers")
    return tuple(float(x) for x in values)


def _rng_state(raw):
    """A PCG64 state, checked field by field (NumPy raises other errors for bad ones)."""
    try:
        inner = raw["state"]
        ok = (raw["bit_generator"] == "PCG64" and set(raw) == {"bit_generator", "state", "has_uint32", "uinteger"}
              and set(inner) == {"state", "inc"}
              and all(isinstance(inner[k], int) and not isinstance(inner[k], bool) and 0 <= inner[k] < 2 ** 128
                      for k in ("state", "inc"))
              and raw["has_uint32"] in (0, 1) and not isinstance(raw["has_uint32"], bool)
              and isinstance(raw["uinteger"], int) and 0 <= raw["uinteger"] < 2 ** 32)
    except (TypeError, KeyError):
        ok = False
    if not ok:
        raise _Invalid("rng must be a PCG64 state")
    return {"bit_generator": "PCG64", "state": {"state": inner["state"], "inc": inner["inc"]},
            "has_uint32": raw["has_uint32"], "uinteger": raw["uinteger"]}
