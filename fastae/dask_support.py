"""Dask arrays in and out (`pip install "fastae[dask]"`).

Inference (`transform`, `encode`, `decode`, `inverse_transform`, `reconstruct`, `score_samples`, a
VAE's `elbo`) on a `dask.array.Array` returns lazy dask arrays, one task per row block: the
fitted state (a `FittedModel` or PCA's state, never the estimator) enters the graph once, as one
key that every block task depends on, so it travels to each worker once, however many blocks
there are. The compiled kernels load from each worker's Numba disk cache on first use.

Training (`fit`, `partial_fit` of Autoencoder and VAE) is out of core: each epoch visits the row
blocks once each in an order drawn from the model's random stream, computing one block at a time
in the calling process (the next block is computed meanwhile, on the cluster when a
`dask.distributed` client is active), shuffling the rows within each block; data checks happen
per block as it arrives and name the block.

Nothing here imports dask until a dask array is handed over: `is_dask` looks in `sys.modules`.
"""
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import validation
from .fitted import CHUNK, _chunk_seed

LOADS = 0  # how many times this process has unpickled a shipped model (see `Shipped`)


def is_dask(X):
    """Whether X is a dask array (without importing dask: if dask.array was never imported, it
    cannot be one)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(X, da.Array)


class Shipped:
    """A fitted state as it travels in a task graph: one object, one key. Unpickling counts in
    LOADS (per process), so tests can see that a model reaches each worker once."""

    __slots__ = ("state",)

    def __init__(self, state):
        self.state = state

    def __getstate__(self):
        return self.state

    def __setstate__(self, state):
        global LOADS
        LOADS += 1
        self.state = state


def _shipped(state):
    """The state as one `dask.delayed` key, named after its contents: calls on the same fitted
    model (transform then decode in `reconstruct`) share the key, so the graph holds it once."""
    import dask
    from dask.base import tokenize
    if getattr(state, "backend", "cpu") not in ("cpu", "numpy"):
        state = state.to_backend("cpu")  # workers compute on their CPUs and return NumPy
    if hasattr(state, "params"):
        token = tokenize("fastae-model", type(state).__name__, state.spec, state.host(state.params))
    else:  # PCA
        token = tokenize("fastae-pca", state.components, state.mean)
    return dask.delayed(Shipped(state), name=f"fastae-model-{token}", pure=True, traverse=False)


# ---- checks of dask input (what is known without computing)

def _rows_array(X, name, n_features, owner):
    """X as a 2-D dask array with one column chunk, its dtype, shape and chunks checked."""
    kind = X.dtype.kind
    if kind == "c":
        raise ValueError(f"{name} holds complex numbers (dtype {X.dtype}): Complex data not supported")
    if kind not in "fiubO":
        raise TypeError(f"{name} must be a numeric array, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, features), got shape {tuple(X.shape)}")
    if any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError(f"{name} has unknown chunk sizes (rows): call {name}.compute_chunk_sizes() first")
    validation.check_shape(X.shape, name, n_features, owner)
    return X.rechunk({1: -1}) if X.numblocks[1] > 1 else X


def _where(name, block, start, stop):
    return f"{name} block {block} (rows {start} to {stop - 1})"


def checked_block(x, name, dtype, n_features, owner, unit, block, start):
    """One computed block, converted and checked as in-memory input is; errors name the block.
    `unit`: the model needs data in [0, 1] (bernoulli likelihood, bce loss)."""
    where = _where(name, block, start, start + np.shape(x)[0])
    try:
        xc = validation.data(x, name, dtype, n_features, owner)
    except (TypeError, ValueError) as exc:
        message = str(exc)  # "X contains NaN" -> "X block 3 (rows ...) contains NaN"
        message = message[len(name) + 1:] if message.startswith(name + " ") else f": {message}"
        raise type(exc)(f"{where} {message}") from None
    if unit and not validation.in_unit_interval(xc):
        raise ValueError(f"{where} has values outside [0, 1], which {owner} needs ({unit}): scale the data")
    return xc


def _unit(owner, spec):
    """Why the model needs data in [0, 1], or None."""
    if getattr(spec, "likelihood", None) == "bernoulli":
        return "likelihood='bernoulli'"
    if getattr(spec, "kind", None) == "autoencoder" and spec.loss == "bce":
        return "loss='bce'"
    return None


# ---- inference: one task per row block, the model one key

def _block(x, shipped, op, label, n_in, owner, unit, n_total=0, seed=0, block_info=None):
    """The body of every inference task: check the block (`label`: the argument's name), run `op`."""
    state = shipped.state
    (start, stop), _ = block_info[0]["array-location"]
    block = block_info[0]["chunk-location"][0]
    if x.shape[0] == 0:
        return _empty(state, op, 0)
    dtype = state.components.dtype if op.startswith("pca") else state.dtype
    xc = checked_block(x, label, dtype, n_in, owner, unit, block, start)
    if op == "encode":
        return state.encode(xc)
    if op == "mean":
        return state.mean(xc)
    if op == "heads":
        mu, logvar = state.heads(xc)
        return np.concatenate([mu, logvar], axis=1)
    if op == "decode":
        return state.decode(xc)
    if op == "score":
        return -state.objective_rows(xc)
    if op == "elbo":
        return -objective_at(state, xc, start, n_total, seed, beta=1.0)
    if op == "objective":  # validation loss: the spec's beta
        return objective_at(state, xc, start, n_total, seed)
    from .pca import _rowwise  # PCA: the in-memory formulas, row by row
    comps = state.components
    if op == "pca_inverse":
        return (_rowwise(xc, 0.0, comps) + state.mean).astype(comps.dtype)
    codes = _rowwise(xc, state.mean, comps.T).astype(comps.dtype)
    if op == "pca_transform":
        return codes
    rec = (_rowwise(codes, 0.0, comps) + state.mean).astype(comps.dtype)
    return -np.sum((xc - rec) ** 2, axis=1)  # pca_score


def _empty(state, op, rows):
    if op.startswith("pca"):
        k, d = state.components.shape
        width = {"pca_transform": k, "pca_inverse": d}.get(op)
        dtype = state.components.dtype
    else:
        spec, dtype = state.spec, state.dtype
        width = {"encode": spec.width, "mean": spec.width, "heads": 2 * spec.width,
                 "decode": spec.n_features}.get(op)
    return np.empty((rows,) if width is None else (rows, width), dtype)


def objective_at(state, x, first_row, n_total, seed, beta=None):
    """`state.objective_rows` of rows first_row .. first_row + len(x) - 1 of an n_total-row array,
    with exactly the Monte Carlo noise the in-memory call on the whole array gives those rows.

    In memory, rows are scored in chunks of CHUNK rows, chunk c drawing from the stream
    `_chunk_seed(seed, c)` with counters set by a row's place in its chunk (and, with several
    samples, by the chunk's length). A block is cut where it crosses a chunk boundary, and each
    piece is scored inside a copy of its whole chunk's extent, padded with zero rows (rows do not
    interact), so every row keeps its in-memory noise whatever the blocks: at most 2 * CHUNK
    padding rows per block (CHUNK on the leading side only with one sample)."""
    spec = state.spec
    if not spec.is_vae:
        return state.objective_rows(x, beta=beta)
    m = x.shape[0]
    out = np.empty(m, state.dtype)
    stacked = spec.n_samples > 1  # the noise counter of a row depends on its chunk's length
    r, end = first_row, first_row + m
    while r < end:
        c = r // CHUNK
        c0, c1 = c * CHUNK, min((c + 1) * CHUNK, n_total)
        stop = min(c1, end)
        lead, trail = r - c0, (c1 - stop) if stacked else 0
        piece = x[r - first_row:stop - first_row]
        if lead or trail:
            padded = np.zeros((lead + piece.shape[0] + trail, x.shape[1]), state.dtype)
            padded[lead:lead + piece.shape[0]] = piece
            piece = padded
        rows = state.objective_rows(piece, seed=_chunk_seed(seed, c), beta=beta)
        out[r - first_row:stop - first_row] = rows[lead:lead + stop - r]
        r = stop
    return out


def _map(state, X, op, name, n_in, owner, unit, width, **kwargs):
    """op over the row blocks of X (checked, one column chunk): lazy, nothing computed."""
    X = _rows_array(X, name, n_in, owner)
    dtype = state.components.dtype if op.startswith("pca") else state.dtype
    model = _shipped(state)
    common = dict(dtype=dtype, meta=np.empty((0,) * (1 if width is None else 2), dtype), op=op, label=name,
                  n_in=n_in, owner=owner, unit=unit, **kwargs)
    if width is None:
        return X.map_blocks(_block, model, drop_axis=1, chunks=(X.chunks[0],), **common)
    return X.map_blocks(_block, model, chunks=(X.chunks[0], (width,)), **common)


def apply(estimator, op, X, out=None):
    """estimator.<op>(X) for a dask array X, lazily. `op`: encode, mean, heads (a VAE's encode,
    a pair), decode, score; pca_transform, pca_inverse, pca_score."""
    if out is not None:
        raise TypeError("out= cannot be used with a dask array: the result is a lazy dask array")
    state = estimator._state()
    owner = type(estimator).__name__
    if op.startswith("pca"):
        k, d = state.components.shape
        n_in, name, width = (k, "C", d) if op == "pca_inverse" else (d, "X", {"pca_transform": k}.get(op))
        return _map(state, X, op, name, n_in, owner, None, width)
    spec = state.spec
    if op == "decode":
        return _map(state, X, op, estimator._CODE_NAME, spec.width, owner, None, spec.n_features)
    unit = _unit(owner, spec) if op == "score" else None
    width = {"encode": spec.width, "mean": spec.width, "heads": 2 * spec.width}.get(op)
    result = _map(state, X, op, "X", spec.n_features, owner, unit, width)
    if op == "heads":
        return result[:, :spec.width], result[:, spec.width:]
    return result


def elbo(estimator, X, eps, seed):
    """A VAE's per-row ELBO of a dask array X: exact for given eps (NumPy or dask; (n, latent) or
    (S, n, latent)), else the Monte Carlo estimate with the noise the in-memory call draws."""
    state = estimator._state()
    spec, owner = state.spec, type(estimator).__name__
    unit = _unit(owner, spec)
    if eps is None:
        return _map(state, X, "elbo", "X", spec.n_features, owner, unit, None, n_total=X.shape[0], seed=seed)
    import dask.array as da
    X = _rows_array(X, "X", spec.n_features, owner)
    n, k = X.shape[0], spec.width
    shape = tuple(eps.shape)
    if shape == (n, k):
        samples = 1
        flat = eps
    elif len(shape) == 3 and shape[1:] == (n, k) and shape[0] >= 1:
        samples = shape[0]  # (S, n, k) -> (n, S * k): one row block holds all of a row's draws
        flat = (eps if is_dask(eps) else da.from_array(np.asarray(eps), chunks=shape)).transpose(1, 0, 2)
        flat = flat.reshape(n, samples * k)
    else:
        raise ValueError(f"eps must have shape ({n}, {k}) or (S, {n}, {k}), got {shape}")
    if not is_dask(flat):
        flat = da.from_array(np.asarray(flat), chunks=(X.chunks[0], (samples * k,)))
    flat = flat.rechunk((X.chunks[0], (samples * k,)))
    return da.map_blocks(_elbo_eps_block, X, flat, _shipped(state), samples, owner, unit, drop_axis=1,
                         chunks=(X.chunks[0],), dtype=state.dtype, meta=np.empty((0,), state.dtype))


def _elbo_eps_block(x, e, shipped, samples, owner, unit, block_info=None):
    state = shipped.state
    (start, _), _ = block_info[0]["array-location"]
    block = block_info[0]["chunk-location"][0]
    if x.shape[0] == 0:
        return np.empty(0, state.dtype)
    k = state.spec.width
    xc = checked_block(x, "X", state.dtype, state.spec.n_features, owner, unit, block, start)
    ec = checked_block(e, "eps", state.dtype, samples * k, owner, None, block, start)
    ec = np.ascontiguousarray(ec.reshape(x.shape[0], samples, k).transpose(1, 0, 2))
    return -state.objective_rows(xc, eps=ec, beta=1.0)


def computed(X, name):
    """X brought into memory (PCA's fit)."""
    return _rows_array(X, name, None, "PCA").compute()


# ---- training out of core

def fit(estimator, X, X_val, partial):
    """fit / partial_fit of an Autoencoder or VAE on a dask array X (or X_val): epochs over the
    row blocks, one block in memory at a time (and the next one being computed)."""
    import dask.array as da
    p = estimator._checked_params()
    owner = type(estimator).__name__
    if not is_dask(X):  # in-memory X with dask X_val: X is one block
        X = da.from_array(validation.data(X, "X", p["dtype"], None, owner), chunks=-1)
    X = _rows_array(X, "X", None, owner)
    spec = estimator._spec(p, X.shape[1])
    unit = _unit(owner, spec)
    Xv = None
    if X_val is not None:
        if is_dask(X_val):
            Xv = _rows_array(X_val, "X_val", spec.n_features, owner)
        else:
            Xv = validation.data(X_val, "X_val", p["dtype"], spec.n_features, owner)
            if unit and not validation.in_unit_interval(Xv):
                raise ValueError(f"X_val must lie in [0, 1] for {unit}: scale the data")
    start = estimator._starting_state(p, spec, partial)
    blocks = np.arange(X.numblocks[0])
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(np.int64)
    train_ids, holdout = blocks, None
    if Xv is None and p["early_stopping"] and not partial:
        # whole row blocks are held out: validation_fraction of the blocks, at least one
        if len(blocks) < 2:
            raise ValueError("early_stopping on a dask array holds out whole row blocks: X needs at least 2 "
                             "row blocks (rechunk it), or pass X_val")
        rng = np.random.default_rng()
        rng.bit_generator.state = start.train.rng_state
        order = rng.permutation(len(blocks))
        n_val = min(len(blocks) - 1, max(1, int(round(p["validation_fraction"] * len(blocks)))))
        holdout, train_ids = np.sort(order[:n_val]), order[n_val:]
        start = start.replace(rng_state=rng.bit_generator.state)
        Xv = da.concatenate([X.blocks[int(i)] for i in holdout], axis=0)

    def commit(state):
        estimator._fitted = state.with_settings(p)

    source = _Blocks(X, starts, spec.dtype, spec.n_features, owner, unit, start.xp)
    trainer = _BlockTrainer(start, p, commit, callback=p["callback"], owner=estimator, verbose=p["verbose"])
    trainer.source, trainer.unit, trainer.owner_name = source, unit, owner
    trainer.run(source, 1 if partial else p["epochs"], train_ids, Xv, None)
    return estimator


class _Blocks:
    """The row blocks of a dask array, computed one at a time with the next one prefetched."""

    def __init__(self, X, starts, dtype, n_features, owner, unit, xp):
        self.X, self.starts, self.dtype, self.n_features = X, starts, dtype, n_features
        self.owner, self.unit, self.xp = owner, unit, xp
        self.delayed = X.to_delayed().ravel()

    def _compute(self, i):
        import dask
        return dask.compute(self.delayed[i])[0]

    def iterate(self, ids):
        """Yield the checked blocks `ids` in that order; at most the current one and the next
        are held here."""
        if len(ids) == 0:
            return
        pool = ThreadPoolExecutor(1, thread_name_prefix="fastae-prefetch")
        try:
            pending = pool.submit(self._compute, int(ids[0]))
            for pos, i in enumerate(ids):
                x = pending.result()
                pending = pool.submit(self._compute, int(ids[pos + 1])) if pos + 1 < len(ids) else None
                x = checked_block(x, "X", self.dtype, self.n_features, self.owner, self.unit, int(i),
                                  int(self.starts[i]))
                yield x if self.xp is np else self.xp.asarray(x)
                del x
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


from .training import Trainer as _Trainer  # noqa: E402  (training imports nothing of dask)


class _BlockTrainer(_Trainer):
    """The Trainer over a `_Blocks` source: `train_index` holds block ids, not rows."""

    def _epoch(self, source, block_ids):
        return self._epoch_blocks(len(block_ids), lambda order: source.iterate(block_ids[order]))

    def _check_outputs(self, state, source):
        rows = self._last_rows
        self._last_batch = np.arange(rows.shape[0]) if state.xp is np else state.xp.arange(rows.shape[0])
        _Trainer._check_outputs(self, state, rows)

    def _val_loss(self, state, source, X_val, val_index):
        if not is_dask(X_val):
            return _Trainer._val_loss(self, state, source, X_val, None)
        seed, n = state.spec.score_seed, X_val.shape[0]
        model = state.to_backend("cpu") if state.backend not in ("cpu", "numpy") else state
        rows = _map(model, X_val, "objective", "X_val", state.spec.n_features, self.owner_name, self.unit,
                    None, n_total=n, seed=seed)
        return float(rows.sum().compute()) / n
