"""Training: epochs of minibatch steps over working copies of a fitted state, committed as a new
`FittedModel` at the end of every completed epoch.

Consistency after any exception, Ctrl-C included: the estimator only ever holds a committed
state, in which the weights, the optimizer moments, the step count `t`, the epoch count, the
history and the random stream all describe the end of the same epoch. An epoch runs as several
compiled calls of at most about CALL_SECONDS each, so an interrupt lands quickly and simply
discards the unfinished epoch. Divergence is caught from the weights and moments themselves (the
optimizer kernels report non-finite values in the same pass) and from the loss.
"""
import contextlib
import time

import numpy as np

from . import engine, network
from .fitted import FittedModel, TrainState
from .kernels import backend as _backend
from .kernels import elementwise as ew

CALL_SECONDS = 0.1  # target length of one compiled call: bounds the wait for Ctrl-C


def initial_state(spec, backend, rng):
    """A fresh FittedModel: Glorot-initialised weights from `rng`, zero optimizer state."""
    xp = _backend.array_module(backend)
    net = spec.network(xp)
    net.init(rng, xp)
    moments = (network.zeros(net.n_params, spec.dtype, xp), network.zeros(net.n_params, spec.dtype, xp))
    return FittedModel(spec, net.params, TrainState(*moments, rng_state=rng.bit_generator.state),
                       backend)


class Trainer:
    """Runs epochs from a starting FittedModel; `commit(state)` is called with each new state."""

    def __init__(self, start, training, commit, callback=None, owner=None, verbose=False):
        """`training`: the checked training parameters (optimizer, lr, ..., batch_size, shuffle,
        early_stopping, n_iter_no_change, tol); `owner`: the estimator passed to the callback."""
        self.start, self.p, self.commit = start, training, commit
        self.callback, self.owner, self.verbose = callback, owner, verbose
        self.config = start.spec.config(training)
        xp, state = start.xp, start.train
        # working copies: the committed states are never written to
        self.params, self.opt_a, self.opt_b = (network.copy(a, xp) for a in (start.params, state.opt_a, state.opt_b))
        self.grads = network.zeros(self.params.shape[0], self.params.dtype, xp)
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state.rng_state
        self.committed = start
        self._seconds_per_step = None

    def run(self, X, epochs, train_index, X_val=None, val_index=None):
        """Train for up to `epochs` epochs over the rows `train_index` of X (validation: X_val, or
        the rows `val_index` of X). Returns the final committed state."""
        bar = self._progress(epochs)
        best, best_state, stale = np.inf, None, 0
        try:
            for _ in range(epochs):
                start = time.perf_counter()
                loss = self._epoch(X, train_index)
                logs = {"loss": loss, "rows_per_s": self._epoch_rows / (time.perf_counter() - start)}
                state = self._snapshot(loss)
                self._check_outputs(state, X)
                if X_val is not None or val_index is not None:
                    logs["val_loss"] = self._val_loss(state, X, X_val, val_index)
                    state = state.replace(val_loss=state.train.val_loss + (logs["val_loss"],))
                self.committed = state
                self.commit(state)
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
                    bar.update(1)
                if self.p["early_stopping"] and "val_loss" in logs:
                    if logs["val_loss"] < best - self.p["tol"]:
                        best, best_state, stale = logs["val_loss"], state, 0
                    else:
                        stale += 1
                    if stale >= self.p["n_iter_no_change"]:
                        break
                if self.callback is not None and self.callback(self.owner, state.train.n_iter, dict(logs)) is True:
                    break
        finally:
            if bar is not None:
                bar.close()
        if best_state is not None and best_state is not self.committed:
            # the best epoch's weights and optimizer state; the history and epochs run stay
            final = self.committed
            self.committed = best_state.replace(t=best_state.train.t, n_iter=final.train.n_iter,
                                                loss=final.train.loss, val_loss=final.train.val_loss,
                                                rng_state=final.train.rng_state)
            self.commit(self.committed)
        return self.committed

    def _val_loss(self, state, X, X_val, val_index):
        """The validation objective of a new state: X_val, or the rows `val_index` of X."""
        rows = state.objective_rows(X if X_val is None else X_val, index=val_index, seed=state.spec.score_seed)
        return float(rows.mean())

    def _epoch(self, X, train_index):
        """One shuffled pass over the rows `train_index` of X; the mean per-row objective. On
        divergence the working copies are reset to the committed state and FloatingPointError
        raised; on any other exception the unfinished epoch is simply not committed."""
        with self._epoch_guard():
            n = train_index.shape[0]
            order = train_index[self.rng.permutation(n)] if self.p["shuffle"] else train_index
            order, totals = self._pass(X, order, 0)
            self._last_batch = order[(totals.shape[0] - 1) * self.p["batch_size"]:]
            self._epoch_steps, self._epoch_rows = totals.shape[0], n
            return _finite_loss(float(totals.sum()) / n)

    def _epoch_blocks(self, n_blocks, fetch):
        """One pass over data held as `n_blocks` row blocks (out of core): the block order is drawn
        from the random stream (in order when shuffle=False), `fetch(order)` yields each block as a
        checked array of the model dtype on the backend, one at a time, and the rows of each block
        are shuffled and cut into minibatches (none spans two blocks). Same guarantees as `_epoch`:
        on any exception, a failing block included, the working copies and the random stream go
        back to the committed state. Returns the mean per-row objective."""
        total, rows, taken = 0.0, 0, 0
        with self._epoch_guard():
            shuffle = self.p["shuffle"]
            for X in fetch(self.rng.permutation(n_blocks) if shuffle else np.arange(n_blocks)):
                n = X.shape[0]
                if n == 0:
                    continue
                index, totals = self._pass(X, self.rng.permutation(n) if shuffle else np.arange(n), taken)
                # a copy: the block itself is let go
                self._last_rows = X[index[(totals.shape[0] - 1) * self.p["batch_size"]:]]
                total, rows, taken = total + float(totals.sum()), rows + n, taken + totals.shape[0]
            if rows == 0:
                raise ValueError("X has no rows")
            self._epoch_steps, self._epoch_rows = taken, rows
            return _finite_loss(total / rows)

    def _pass(self, X, order, offset):
        """The minibatch steps over the rows `order` of X (`offset` steps into the epoch), with
        noise keys from the random stream, in compiled calls of about CALL_SECONDS each; returns
        the order (on the backend) and the per-step objective totals."""
        batch = self.p["batch_size"]
        steps = -(-order.shape[0] // batch)
        base = np.uint64(self.rng.integers(0, 2 ** 63))
        with np.errstate(over="ignore"):
            keys = ew.mix64(base + np.arange(steps, dtype=np.uint64) * ew._GOLDEN)
        order = self.start.xp.asarray(order.astype(np.int64))
        totals = np.zeros(steps)
        done = 0
        while done < steps:
            stop = min(steps, done + self._steps_per_call())
            began = time.perf_counter()
            good = self._steps(X, order, keys, totals, done, stop, offset)
            if good < stop - done:
                raise FloatingPointError(f"the weights or optimizer state became non-finite in step "
                                         f"{self.committed.train.t + offset + done + good + 1}")
            self._seconds_per_step = (time.perf_counter() - began) / (stop - done)
            done = stop
        return order, totals

    @contextlib.contextmanager
    def _epoch_guard(self):
        """On any exception the working copies and the random stream go back to the committed
        state; divergence is reported as FloatingPointError with the learning rate."""
        try:
            yield
        except FloatingPointError as exc:
            self._reset()
            raise FloatingPointError(
                f"training diverged in epoch {self.committed.train.n_iter + 1}: {exc}; the learning rate "
                f"(lr={self.p['lr']}) is likely too high. The model keeps the state of the last "
                "completed epoch.") from None
        except BaseException:
            self._reset()
            raise

    def _check_outputs(self, state, X):
        """Finite weights can still overflow in the layers (lr=1e30 gives weights near 1e30): the
        new state's objective on the epoch's last minibatch must be finite too."""
        rows = state.objective_rows(X, index=self._last_batch, seed=0)
        if not bool(state.xp.isfinite(rows).all()):
            self._reset()
            raise FloatingPointError(
                f"training diverged in epoch {state.train.n_iter}: the new weights give a non-finite "
                f"objective; the learning rate (lr={self.p['lr']}) is likely too high. The model keeps "
                "the state of the last completed epoch.")

    def _steps(self, X, order, keys, totals, first, stop, offset=0):
        """Steps first .. stop - 1 of the pass `order` over X; `offset`: steps already taken in
        this epoch (out-of-core epochs run one pass per block)."""
        c = self.committed
        net = c.net
        rows = min(self.p["batch_size"], order.shape[0])
        if getattr(self, "_work_rows", None) != rows:
            self._work, self._plan = c.workspace(rows, c.spec.n_samples if c.spec.is_vae else 1)
            self._work_rows = rows
            self._placeholder = c.xp.zeros((1, 1), c.dtype)  # eps is drawn in the kernels
        args = (self.params, self.grads, self.opt_a, self.opt_b, net.layout, net.acts, self._work, self._plan, X,
                order, self.p["batch_size"], first, stop, self.config, keys, c.train.t + offset, totals,
                self._placeholder[0], engine.TRAIN)  # values: not used in training
        with c.flushed():
            if c.spec.is_vae:
                return c.engine.vae_pass(*args, self._placeholder, False)
            return c.engine.ae_pass(*args)

    def _steps_per_call(self):
        if self._seconds_per_step is None:
            return 4
        return max(1, int(CALL_SECONDS / max(self._seconds_per_step, 1e-9)))

    def _snapshot(self, loss):
        """The committed state after one more completed epoch (copies of the working arrays)."""
        c, train = self.committed, self.committed.train
        xp = c.xp
        return FittedModel(c.spec, network.copy(self.params, xp), TrainState(
            network.copy(self.opt_a, xp), network.copy(self.opt_b, xp), t=train.t + self._epoch_steps, n_iter=train.n_iter + 1,
            loss=train.loss + (loss,), val_loss=train.val_loss, rng_state=self.rng.bit_generator.state), c.backend)

    def _reset(self):
        """Working copies back to the committed state (after a failed or interrupted epoch)."""
        c = self.committed
        self.params[...] = c.params
        self.opt_a[...], self.opt_b[...] = c.train.opt_a, c.train.opt_b
        self.rng.bit_generator.state = c.train.rng_state

    def _progress(self, epochs):
        if not self.verbose:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=epochs, desc=type(self.owner).__name__, unit="epoch")


def _finite_loss(loss):
    if not np.isfinite(loss):
        raise FloatingPointError(f"the loss became {loss}")
    return loss
