"""The training and inference passes of every model, written once for every backend.

These functions are plain Python over flat arrays, integer layouts and two named records, in the
subset Numba compiles. `for_backend("cpu")` compiles them with Numba against the fused CPU
kernels, so a run of minibatch steps (gather, forward, backward, optimizer update) is one compiled
call over workspaces allocated once; `"numpy"` runs the same code in Python over the naive
reference (the baseline), `"cuda"` over the GPU kernels and CuPy arrays.

Conventions: `params`/`grads` are flat buffers; `layout[l] = (W offset, out, in, b offset)`;
`acts[l]` is layer l's activation code. Two records cross into compiled code, each a one-element
NumPy structured array (as cheap to pass as any array; `config[0].l1` reads a field):
- `config` (CONFIG): what the passes compute (loss, L1 weight, noise, optimizer, ...);
- `plan` (PLAN): where each workspace slot starts in the flat buffer `work`, for up to `rows` rows.
Every entry point (ENTRY_POINTS)
checks the shapes it is handed against the layout and the plan before touching memory: compiled
code does not trust its caller.

The kernel names below (affine_forward, mse_loss, ...) are imported from the reference and bound
per backend in one place: `for_backend` puts the functions named in OPS, taken from that backend's
kernel module (fastae.kernels.cpu, .reference_out or .gpu), into its copy of the engine.
"""
import functools
import os
import types

import numpy as np

from .kernels import elementwise as ew
# The kernels the passes call (OPS). Bound here to the naive reference, in the calling convention
# of every backend, so that a reader and a linter find them; `for_backend` runs each backend's
# copy of the engine with these names bound to that backend's kernels (kernels/cpu.py, gpu.py).
from .kernels.reference_out import (adam_step, affine_backward, affine_forward, all_finite,  # noqa: F401
                                    bce_logits_loss, corrupt, fold_rows, gather_rows, l1_code_grad,
                                    l1_penalty_rows, l1_prox, mse_loss, repeat_rows, reparam_backward,
                                    reparam_forward, row_sum, sgd_step)

LINEAR = ew.LINEAR
MSE, BCE = 0, 1
ADAM, SGD = 0, 1
TRAIN, SCORE, GRADIENT = 0, 1, 2  # what a pass over minibatches does (ae_pass, vae_pass)
MAX_LAYERS = 64  # layer output slots a plan can hold

CONFIG = np.dtype([
    ("split", np.int64),        # index of the code layer (AE) or of the fused [mu | logvar] heads (VAE)
    ("loss", np.int64),         # MSE or BCE (BCE from logits)
    ("out_act", np.int64),      # activation of the last layer in the objective (LINEAR for logits)
    ("nonneg", np.bool_),       # the L1 prox keeps codes >= 0 (relu code layer)
    ("l1", np.float64),         # L1 weight on the code (0: no prox)
    ("noise", np.float64),      # denoising corruption level (0: none; always 0 for inference)
    ("noise_kind", np.int64),   # 0 gaussian, 1 mask
    ("samples", np.int64),      # VAE draws per row, stacked as rows
    ("beta", np.float64),       # VAE KL weight
    ("loss_scale", np.float64), # 1, or 0.5 for the gaussian likelihood
    ("optimizer", np.int64),    # ADAM or SGD
    ("lr", np.float64), ("beta_1", np.float64), ("beta_2", np.float64), ("epsilon", np.float64),
    ("momentum", np.float64),
], align=True)

SLOTS = ("delta", "dy_a", "dy_b", "code", "noisy", "batch", "rows_out", "grad_out", "mu_rep", "lv_rep",
         "z", "kl", "dmu_rep", "dlv_rep", "dheads", "target", "scratch")
PLAN = np.dtype([("rows", np.int64), ("size", np.int64), ("samples", np.int64)]
                + [(name, np.int64) for name in SLOTS]
                + [("layer_out", np.int64, (MAX_LAYERS,)), ("scratch_end", np.int64)], align=True)


def record(dtype, **fields):
    """A one-element structured array of `dtype` with `fields` set (the rest zero)."""
    rec = np.zeros(1, dtype)
    for name, value in fields.items():
        rec[name] = value
    return rec


def view(work, offset, rows, cols):
    return work[offset:offset + rows * cols].reshape((rows, cols))


def layer(params, layout, l):
    w, out, inp, b = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
    return params[w:w + out * inp].reshape((out, inp)), params[b:b + out]


def scratch(work, p):
    """The kernels' per-row scratch (loss terms, noise rows): part of the workspace, so a step
    allocates nothing."""
    return work[p.scratch:p.scratch_end]


def layer_out(work, p, layout, l, n):
    return view(work, p.layer_out[l], n, layout[l, 1])


# ---- boundary checks: every entry point runs these before it reads or writes anything

def check_network(params, grads, layout, acts):
    if layout.shape[0] < 1 or layout.shape[0] > MAX_LAYERS or layout.shape[1] != 4:
        raise ValueError("layout must be (layers, 4) with at most MAX_LAYERS layers")
    if acts.shape[0] != layout.shape[0]:
        raise ValueError("acts must have one activation per layer")
    for l in range(layout.shape[0]):
        w, out, inp, b = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
        if out < 1 or inp < 1 or w < 0 or b < w + out * inp or b + out > params.size:
            raise ValueError("layout does not fit the parameter buffer")
    if grads.size != params.size:
        raise ValueError("grads must have the size of params")


def check_chain(layout, first, last):
    """Layers first .. last - 1 exist and each takes the previous one's output."""
    if first < 0 or last > layout.shape[0] or first >= last:
        raise ValueError("no such layers")
    for l in range(first + 1, last):
        if layout[l, 2] != layout[l - 1, 1]:
            raise ValueError("layer widths do not chain")


def check_model(layout, c, is_vae):
    """The encoder and the decoder chain, and the code (or z) fits the decoder's input."""
    if c.split < 0 or c.split + 1 >= layout.shape[0] or c.samples < 1:
        raise ValueError("config does not match the layout")
    check_chain(layout, 0, c.split + 1)
    check_chain(layout, c.split + 1, layout.shape[0])
    code = layout[c.split, 1] // 2 if is_vae else layout[c.split, 1]
    if layout[c.split + 1, 2] != code or (is_vae and layout[c.split, 1] % 2 != 0):
        raise ValueError("the code layer does not fit the decoder")
    if layout[layout.shape[0] - 1, 1] != layout[0, 2]:
        raise ValueError("the output width differs from the input width")


def check_plan(work, p, layout, n):
    if n < 0 or n > p.rows * p.samples or p.size > work.size or p.scratch_end > work.size:
        raise ValueError("the workspace is too small for this many rows")
    for l in range(layout.shape[0]):
        if p.layer_out[l] + n * layout[l, 1] > work.size:
            raise ValueError("the workspace is too small for this layout")


def check_rows(x, n_features):
    if x.shape[1] != n_features:
        raise ValueError("x has the wrong number of columns for this model")


def check_out(out, n, cols):
    if out.shape[0] != n or out.shape[1] != cols:
        raise ValueError("out has the wrong shape for this model")


def copy_into(src, dst):
    """dst[:, :] = src for two arrays of one shape (checked by the callers), as a plain loop:
    Numba's slice assignment compiles a formatted shape-mismatch error, seconds of cold start."""
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[i, j] = src[i, j]


def copy_vector(src, dst):
    """dst[:] = src for two 1-D arrays of one length (see copy_into)."""
    for i in range(src.shape[0]):
        dst[i] = src[i]


# ---- the passes

def forward_layers(params, layout, acts, first, last, x, work, p, n, last_act):
    """Layers first .. last - 1 on the n rows of x; the last one uses `last_act` (LINEAR gives
    logits). Each output stays in its slot for the backward pass; returns the last."""
    W, b = layer(params, layout, first)
    y = layer_out(work, p, layout, first, n)
    affine_forward(x, W, b, acts[first] if first < last - 1 else last_act, y)
    for l in range(first + 1, last):
        W, b = layer(params, layout, l)
        h = layer_out(work, p, layout, l - 1, n)
        y = layer_out(work, p, layout, l, n)
        affine_forward(h, W, b, acts[l] if l < last - 1 else last_act, y)
    return y


def backward_layers(params, grads, layout, acts, first, last, x, work, p, n, dy, last_act,
                    need_dx, write_a):
    """Backpropagate dy (the gradient at layer last - 1's output) down to layer `first`, whose
    input was x, writing the weight gradients into `grads`. Input gradients alternate between
    slots dy_a and dy_b, starting with a if `write_a`; returns (dx of layer first, whether it is
    in a). With need_dx False the first layer's dx is skipped."""
    current = dy
    in_a = not write_a
    for l in range(last - 1, first - 1, -1):
        W, b = layer(params, layout, l)
        dW, db = layer(grads, layout, l)
        y = layer_out(work, p, layout, l, n)
        act = acts[l] if l < last - 1 else last_act
        delta = current if act == LINEAR else view(work, p.delta, n, layout[l, 1])
        in_a = not in_a
        rows = n if (l > first or need_dx) else 0
        dx = view(work, p.dy_a if in_a else p.dy_b, rows, layout[l, 2])
        if l > first:
            affine_backward(current, layer_out(work, p, layout, l - 1, n), y, W, act, delta, dx, dW, db)
        else:
            affine_backward(current, x, y, W, act, delta, dx, dW, db)
        current = dx
    return current, in_a


def optimizer_update(params, grads, opt_a, opt_b, c, step):
    """One update; returns whether every parameter and moment is still finite."""
    if c.optimizer == ADAM:
        return adam_step(params, grads, opt_a, opt_b, step, c.lr, c.beta_1, c.beta_2, c.epsilon)
    return sgd_step(params, grads, opt_a, c.lr, c.momentum)


def reconstruction_loss(out, target, n, work, p, c):
    """Per-row reconstruction loss into slot rows_out and its gradient into grad_out."""
    rows = work[p.rows_out:p.rows_out + n]
    grad = view(work, p.grad_out, n, out.shape[1])
    if c.loss == MSE:
        mse_loss(out, target, c.loss_scale, rows, grad, scratch(work, p))
    else:
        bce_logits_loss(out, target, c.loss_scale, rows, grad, scratch(work, p))
    return rows, grad


# ---- Autoencoder: layers 0 .. split are the encoder (split = the code layer), then the decoder.

def ae_code(params, layout, acts, work, p, x, n, c):
    """Encoder (and the L1 prox) on n rows; returns the code (slot `code` when prox applies)."""
    v = forward_layers(params, layout, acts, 0, c.split + 1, x, work, p, n, acts[c.split])
    if c.l1 > 0:
        code = view(work, p.code, n, layout[c.split, 1])
        l1_prox(v.ravel(), c.l1, c.nonneg, code.ravel())
        return code
    return v


def ae_objective(params, grads, layout, acts, work, p, x, target, n, c, with_grads):
    """Sum over the n rows of the objective (reconstruction + L1 penalty on the code); with
    `with_grads` also writes the gradient of its mean into `grads`."""
    split, last = c.split, layout.shape[0]
    code = ae_code(params, layout, acts, work, p, x, n, c)
    out = forward_layers(params, layout, acts, split + 1, last, code, work, p, n, c.out_act)
    rows, grad = reconstruction_loss(out, target, n, work, p, c)
    if c.l1 > 0:
        l1_penalty_rows(code, c.l1, rows)
    total = row_sum(rows)
    if with_grads:
        dcode, in_a = backward_layers(params, grads, layout, acts, split + 1, last, code, work, p, n,
                                      grad, c.out_act, True, True)
        if c.l1 > 0:
            l1_code_grad(dcode, code, c.l1 / n, dcode)
        backward_layers(params, grads, layout, acts, 0, split + 1, x, work, p, n, dcode, acts[split],
                        False, not in_a)
    return total


# ---- VAE: layers 0 .. split - 1 are the trunk, layer split the two heads [mu | logvar] fused
# into one affine layer, then the decoder. `samples` draws are stacked as extra rows.

def vae_heads(params, layout, acts, work, p, x, n, c):
    heads = forward_layers(params, layout, acts, 0, c.split + 1, x, work, p, n, LINEAR)
    k = layout[c.split, 1] // 2
    return heads[:, :k], heads[:, k:]


def vae_objective(params, grads, layout, acts, work, p, x, n, c, eps, has_eps, key, with_grads):
    """Sum over the n rows of (1/S) sum_s -log p(x | z_s) + beta * KL(q(z | x) || N(0, I)), z_s
    from eps (S * n rows, sample-major) or from the stream `key`; slot rows_out gets the per-row
    reconstruction terms, kl the per-row KL. With `with_grads` the gradient of the mean goes
    into `grads`."""
    split, last, samples = c.split, layout.shape[0], c.samples
    k = layout[split, 1] // 2
    stacked = n * samples
    mu, logvar = vae_heads(params, layout, acts, work, p, x, n, c)
    mu_rep = view(work, p.mu_rep, stacked, k)
    lv_rep = view(work, p.lv_rep, stacked, k)
    repeat_rows(mu, samples, mu_rep)
    repeat_rows(logvar, samples, lv_rep)
    z = view(work, p.z, stacked, k)
    kl = work[p.kl:p.kl + stacked]
    reparam_forward(mu_rep, lv_rep, eps, has_eps, key, z, kl, scratch(work, p))
    out = forward_layers(params, layout, acts, split + 1, last, z, work, p, stacked, c.out_act)
    target = x
    if samples > 1:
        target = view(work, p.target, stacked, x.shape[1])
        repeat_rows(x, samples, target)
    rows, grad = reconstruction_loss(out, target, stacked, work, p, c)
    total = row_sum(rows) / samples + c.beta * row_sum(kl[:n])
    if with_grads:
        dz, in_a = backward_layers(params, grads, layout, acts, split + 1, last, z, work, p, stacked,
                                   grad, c.out_act, True, True)
        dmu_rep = view(work, p.dmu_rep, stacked, k)
        dlv_rep = view(work, p.dlv_rep, stacked, k)
        # the kernels give gradients of f(z) + beta' * sum(kl) over all S * n stacked rows;
        # the objective is a mean over n rows of beta * KL: beta' = beta / (S * n)
        reparam_backward(dz, mu_rep, lv_rep, eps, has_eps, key, c.beta / stacked, dmu_rep, dlv_rep,
                         scratch(work, p))
        dheads = view(work, p.dheads, n, 2 * k)
        fold_rows(dmu_rep, samples, dheads[:, :k])
        fold_rows(dlv_rep, samples, dheads[:, k:])
        backward_layers(params, grads, layout, acts, 0, split + 1, x, work, p, n, dheads, LINEAR,
                        False, True)
    return total


# ---- entry points (called from Python; each checks what it is handed)

def check_pass_args(params, grads, opt_a, opt_b, layout, acts, work, p, c, X, index, batch_size,
                    first_batch, stop_batch, keys, totals, values, mode, is_vae):
    check_network(params, grads, layout, acts)
    n_rows, dim = X.shape
    steps = (index.shape[0] + batch_size - 1) // batch_size
    rows = min(batch_size, index.shape[0])
    if (opt_a.size != params.size or opt_b.size != params.size or layout[0, 2] != dim or batch_size < 1
            or rows > p.rows or first_batch < 0 or stop_batch > steps or keys.shape[0] < steps
            or totals.shape[0] < steps or mode < TRAIN or mode > GRADIENT
            or (mode != TRAIN and values.shape[0] < index.shape[0])):
        raise ValueError("pass: arguments do not match the network")
    check_model(layout, c, is_vae)
    check_plan(work, p, layout, rows * c.samples)
    lo, hi = first_batch * batch_size, min(stop_batch * batch_size, index.shape[0])
    for i in range(lo, hi):
        if index[i] < 0 or index[i] >= n_rows:
            raise ValueError("pass: row index out of range")


def ae_pass(params, grads, opt_a, opt_b, layout, acts, work, plan, X, index, batch_size, first_batch,
            stop_batch, config, keys, first_step, totals, values, mode):
    """Autoencoder minibatches first_batch .. stop_batch - 1 of one pass over X in the order
    `index` (each gathered into the workspace); totals[b] gets minibatch b's summed objective.
    mode TRAIN: the denoising corruption (drawn from keys[b]), forward, backward and optimizer
    update; returns the number of steps whose update left every weight and moment finite (it
    stops at the first that did not). mode SCORE: no noise, the per-row objective of row
    index[r] into values[r]; GRADIENT: the same, and the gradient of the minibatch mean into
    `grads` (opt_a and opt_b are not used)."""
    p, c = plan[0], config[0]
    check_pass_args(params, grads, opt_a, opt_b, layout, acts, work, p, c, X, index, batch_size,
                    first_batch, stop_batch, keys, totals, values, mode, False)
    dim = X.shape[1]
    for b in range(first_batch, stop_batch):
        start = b * batch_size
        n = min(batch_size, index.shape[0] - start)
        batch = view(work, p.batch, n, dim)
        gather_rows(X, index, start, batch)
        inputs = batch
        if mode == TRAIN and c.noise > 0:
            inputs = view(work, p.noisy, n, dim)
            corrupt(batch, c.noise, c.noise_kind, keys[b], inputs)
        # one call site: the objective is typed into this function once
        totals[b] = ae_objective(params, grads, layout, acts, work, p, inputs, batch, n, c, mode != SCORE)
        if mode != TRAIN:
            copy_vector(work[p.rows_out:p.rows_out + n], values[start:start + n])
        elif not optimizer_update(params, grads, opt_a, opt_b, c, first_step + b + 1):
            return b - first_batch
    return stop_batch - first_batch


def vae_pass(params, grads, opt_a, opt_b, layout, acts, work, plan, X, index, batch_size, first_batch,
             stop_batch, config, keys, first_step, totals, values, mode, eps, has_eps):
    """VAE minibatches, as ae_pass; minibatch b draws z's noise from keys[b] inside the kernels,
    or (has_eps, one minibatch) takes it from eps (samples * n rows, sample-major). In SCORE and
    GRADIENT modes values[r] gets row index[r]'s (1/S) sum_s -log p(x|z_s) + beta * KL."""
    p, c = plan[0], config[0]
    check_pass_args(params, grads, opt_a, opt_b, layout, acts, work, p, c, X, index, batch_size,
                    first_batch, stop_batch, keys, totals, values, mode, True)
    if has_eps and (stop_batch - first_batch != 1 or eps.shape[0] != min(batch_size, index.shape[0]) * c.samples
                    or eps.shape[1] != layout[c.split, 1] // 2):
        raise ValueError("pass: eps has the wrong shape")
    dim, samples = X.shape[1], c.samples
    for b in range(first_batch, stop_batch):
        start = b * batch_size
        n = min(batch_size, index.shape[0] - start)
        batch = view(work, p.batch, n, dim)
        gather_rows(X, index, start, batch)
        totals[b] = vae_objective(params, grads, layout, acts, work, p, batch, n, c, eps, has_eps, keys[b],
                                  mode != SCORE)
        if mode != TRAIN:
            rec, kl = work[p.rows_out:p.rows_out + n * samples], work[p.kl:p.kl + n]
            for i in range(n):
                acc = rec[i]
                for s in range(1, samples):
                    acc += rec[s * n + i]
                values[start + i] = acc / samples + c.beta * kl[i]
        elif not optimizer_update(params, grads, opt_a, opt_b, c, first_step + b + 1):
            return b - first_batch
    return stop_batch - first_batch


def encode_into(params, layout, acts, work, plan, x, n, config, out):
    """Autoencoder codes of n rows, written into `out` (one compiled call for the whole encoder).
    Returns False, having written nothing, when x holds NaN or inf (the latency path's only
    check of the data: one read of x in the same call)."""
    p, c = plan[0], config[0]
    check_network(params, params, layout, acts)
    check_model(layout, c, False)
    check_rows(x, layout[0, 2])
    check_plan(work, p, layout, n)
    check_out(out, n, layout[c.split, 1])
    if x.shape[0] < n or not all_finite(x[:n].ravel()):
        return False
    if c.l1 > 0:
        v = forward_layers(params, layout, acts, 0, c.split + 1, x, work, p, n, acts[c.split])
        l1_prox(v.ravel(), c.l1, c.nonneg, out.ravel())
    else:
        copy_into(forward_layers(params, layout, acts, 0, c.split + 1, x, work, p, n, acts[c.split]), out)
    return True


def layers_into(params, layout, acts, first, last, x, work, plan, n, out):
    """Layers first .. last - 1 (each with its own activation) on n rows, written into `out`."""
    p = plan[0]
    check_network(params, params, layout, acts)
    check_chain(layout, first, last)
    check_rows(x, layout[first, 2])
    check_plan(work, p, layout, n)
    check_out(out, n, layout[last - 1, 1])
    copy_into(forward_layers(params, layout, acts, first, last, x, work, p, n, acts[last - 1]), out)


def heads_into(params, layout, acts, work, plan, x, n, config, mu, logvar):
    """VAE encoder: mu and logvar of n rows, written into the given arrays."""
    p, c = plan[0], config[0]
    check_network(params, params, layout, acts)
    check_model(layout, c, True)
    check_rows(x, layout[0, 2])
    check_plan(work, p, layout, n)
    k = layout[c.split, 1] // 2
    check_out(mu, n, k)
    check_out(logvar, n, k)
    m, lv = vae_heads(params, layout, acts, work, p, x, n, c)
    copy_into(m, mu)
    copy_into(lv, logvar)


ENGINE = ("view", "layer", "scratch", "layer_out", "copy_into", "copy_vector", "check_network", "check_chain",
          "check_model", "check_plan", "check_rows", "check_out", "check_pass_args", "forward_layers",
          "backward_layers", "optimizer_update", "reconstruction_loss", "ae_code", "ae_objective", "vae_heads",
          "vae_objective", "ae_pass", "vae_pass", "encode_into", "layers_into", "heads_into")
OPS = ("affine_forward", "affine_backward", "l1_prox", "reparam_forward", "reparam_backward",
       "mse_loss", "bce_logits_loss", "adam_step", "sgd_step", "corrupt", "gather_rows",
       "l1_code_grad", "l1_penalty_rows", "repeat_rows", "fold_rows", "row_sum", "all_finite")
# Small helpers are typed into their callers (Numba IR inlining) rather than compiled on their own:
# each separately compiled function costs ~0.1 s of cold start. The passes themselves stay separate
# functions: inlining them multiplies the code LLVM optimizes.
INLINE = ("view", "layer", "scratch", "layer_out", "copy_into", "copy_vector", "check_network", "check_chain",
          "check_model", "check_plan", "check_rows", "check_out", "check_pass_args", "ae_code",
          "reconstruction_loss", "optimizer_update", "vae_heads", "ae_objective", "vae_objective")
ENTRY_POINTS = ("ae_pass", "vae_pass", "encode_into", "layers_into", "heads_into")


DEFER = True  # False: models compile the engine in this process (warmup, fastae.precompile)
# FASTAE_BACKGROUND_COMPILE=0: compile the engine in the process that needs it, as plain Numba does
BACKGROUND_COMPILE = os.environ.get("FASTAE_BACKGROUND_COMPILE", "1") not in ("0", "")


def for_model(backend, dtype):
    """The engine a model of `dtype` runs on. On the cpu backend: the compiled engine when its
    machine code for this dtype is at hand (compiled in this process or in the disk cache);
    until then the same engine code run in Python over the compiled kernels (bit-identical
    results, slower steps), while a background process compiles the engine into the disk cache
    (`python -m fastae.precompile`). So a first fit or transform on a new machine waits for the
    kernels (seconds), not for the whole engine (half a minute)."""
    if backend != "cpu" or not DEFER:
        return for_backend(backend)
    return _deferred(str(dtype))


@functools.lru_cache(maxsize=None)
def _deferred(dtype):
    return _Deferred(for_backend("cpu"), for_backend("cpu-python"), dtype)


class _Deferred:
    """Entry points that switch from Python to compiled code once the compiled code is ready."""

    def __init__(self, compiled, python, dtype):
        from . import compiled as chains
        self._compiled, self._python, self._dtype = compiled, python, dtype
        self._process, self._looked = None, set()
        for name in ENTRY_POINTS:
            setattr(self, name, self._entry(name, getattr(compiled, name), getattr(python, name)))
        # cpu inference (compiled.chain_into) likewise; run in Python it keeps to one thread (the
        # same results) so as not to compile the parallel kernel in this process either
        self.chain_into = self._entry("chain_into", chains.chain_into, _one_thread(chains))

    def _entry(self, name, jitted, python):

        def call(*args):
            if self._ready(name, jitted, args):
                setattr(self, name, jitted)  # from now on the attribute is the compiled function
                return jitted(*args)
            return python(*args)
        return call

    def _ready(self, name, jitted, args):
        from .kernels import jit
        if not DEFER or not jit.caching_enabled(jitted) or not BACKGROUND_COMPILE:
            if name == "chain_into" and DEFER and jit.caching_enabled(jitted) and "native" not in self._looked:
                # no background compile: build the native chain here (later processes start
                # without Numba); this call runs in Python, the next one natively
                self._looked.add("native")
                from . import native_chain
                if native_chain.build(np.dtype(self._dtype)) and native_chain.function(np.dtype(self._dtype)):
                    return False
            return True  # compile here, as plain Numba would
        if name not in self._looked:  # the disk cache is read once, then when the compile is done
            self._looked.add(name)
            if jit.load_cached(jitted, args):
                return True
        if self._process is None:
            self._process = _start_precompile(self._dtype)
        status = self._process.poll()
        if status is None:
            return False
        # done: load what it compiled (or, had it failed, compile here)
        if name == "chain_into":
            from . import native_chain
            if "native" not in self._looked:
                self._looked.add("native")
                native_chain.forget()  # it built the native chain: from the next call on, inference runs that
            if status == 0 and not jit.load_cached(jitted, args) and native_chain.function(np.dtype(self._dtype)):
                return False  # (it did not compile this one: it is not needed then)
        return status != 0 or jit.load_cached(jitted, args) or True


def _one_thread(chains):
    """chain_into run in Python over the compiled kernels: one thread, the finite check and the
    scratch in NumPy (the same answer, no compile but the kernels')."""
    from .kernels import packed

    def call(params, layout, acts, prox, l1, packed_w, packed_at, threads, check, x, out):
        if check and x.size and not np.isfinite(x).all():
            return False
        work = packed.scratch(chains.chain_work(layout, min(max(x.shape[0], 1), chains.CHUNK)), params)
        part = packed.scratch(packed.BLOCK_ROWS * packed.panel_outputs(params), params)
        chains.chain_rows.py_func(params, layout, acts, prox, l1, packed_w, packed_at, None, None, x, out, work, part)
        return True
    return call


def _start_precompile(dtype):
    import subprocess
    import sys
    return subprocess.Popen([sys.executable, "-m", "fastae.precompile", dtype], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@functools.lru_cache(maxsize=None)
def for_backend(backend):
    """The engine functions bound to one backend's kernels (compiled with Numba for "cpu").

    On Python backends the records are handed over as `np.recarray` views, so that `plan[0].z`
    reads a field there as it does in compiled code."""
    from .kernels import backend as _backend
    ops = _backend.module({"numpy": "numpy_out", "cpu-python": "cpu"}.get(backend, backend))
    if backend == "cpu":
        from .kernels.jit import cpu_jit, plain_argument_types

        def jit(fn):
            # small helpers are typed into their callers rather than compiled on their own: each
            # separately compiled function costs ~0.1 s of cold start
            return cpu_jit(fn, inline="always") if fn.__name__ in INLINE else plain_argument_types(cpu_jit(fn))
    else:
        def jit(fn):
            return fn
    namespace = dict(globals())
    namespace.update({name: getattr(ops, name) for name in OPS})
    for name in ENGINE:
        fn = globals()[name]
        namespace[name] = jit(types.FunctionType(fn.__code__, namespace, name, fn.__defaults__))
    entries = {name: namespace[name] for name in ENTRY_POINTS}
    if backend != "cpu":
        entries = {name: _with_recarrays(fn) for name, fn in entries.items()}
    return types.SimpleNamespace(**entries)


def _with_recarrays(fn):
    def call(*args):
        return fn(*(a.view(np.recarray) if isinstance(a, np.ndarray) and a.dtype in (CONFIG, PLAN) else a
                    for a in args))
    return call
