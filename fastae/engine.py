"""The training and inference passes of every model, written once for every backend.

These functions are plain Python over flat arrays and integer layouts, in the subset Numba
compiles. `for_backend("cpu")` compiles them with Numba against the fused CPU kernels, so a whole
pass over the data (shuffled minibatches, forward, backward, optimizer update) is one compiled call
over workspaces allocated once; `"numpy"` runs the same code in Python over the naive reference
(the baseline), `"cuda"` over the GPU kernels and CuPy arrays.

The kernel names used below (affine_forward, mse_loss, ...) are not imported: `for_backend` binds
them to one backend's kernels (the names in OPS).

Conventions: `params`/`grads` are flat buffers; `layout[l] = (W offset, out, in, b offset)`;
`acts[l]` is layer l's activation code; `work` is one flat float buffer and `plan[s]` the offset of
workspace slot s in it (layer l's output is slot N_SLOTS + l).
"""
import functools
import types

from .kernels import elementwise as ew

LINEAR = ew.LINEAR

# cfg_i entries
I_SPLIT, I_LOSS, I_NONNEG, I_NOISE_KIND, I_OPT, I_SAMPLES, I_OUT_ACT = range(7)
# cfg_f entries
F_L1, F_NOISE, F_LR, F_BETA_1, F_BETA_2, F_EPSILON, F_MOMENTUM, F_BETA, F_LOSS_SCALE = range(9)
MSE, BCE = 0, 1
ADAM, SGD = 0, 1
# workspace slots
(S_DELTA, S_DY_A, S_DY_B, S_CODE, S_NOISY, S_BATCH, S_ROWS, S_GRAD_OUT, S_MU_REP, S_LV_REP, S_Z,
 S_KL, S_DMU_REP, S_DLV_REP, S_DHEADS, S_TARGET, S_SCRATCH) = range(17)
N_SLOTS = 17


def view(work, offset, rows, cols):
    return work[offset:offset + rows * cols].reshape((rows, cols))


def layer(params, layout, l):
    w, out, inp, b = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
    return params[w:w + out * inp].reshape((out, inp)), params[b:b + out]


def scratch(work, plan):
    """The kernels' per-row scratch (loss terms, noise rows): part of the workspace, so a step
    allocates nothing."""
    return work[plan[S_SCRATCH]:plan[S_SCRATCH + 1]]


def layer_out(work, plan, layout, l, n):
    return view(work, plan[N_SLOTS + l], n, layout[l, 1])


def forward_layers(params, layout, acts, first, last, x, work, plan, n, last_act):
    """Layers first .. last - 1 on the n rows of x; the last one uses `last_act` (LINEAR gives
    logits). Each output stays in its slot for the backward pass; returns the last."""
    W, b = layer(params, layout, first)
    y = layer_out(work, plan, layout, first, n)
    affine_forward(x, W, b, acts[first] if first < last - 1 else last_act, y)
    for l in range(first + 1, last):
        W, b = layer(params, layout, l)
        h = layer_out(work, plan, layout, l - 1, n)
        y = layer_out(work, plan, layout, l, n)
        affine_forward(h, W, b, acts[l] if l < last - 1 else last_act, y)
    return y


def backward_layers(params, grads, layout, acts, first, last, x, work, plan, n, dy, last_act,
                    need_dx, write_a):
    """Backpropagate dy (the gradient at layer last - 1's output) down to layer `first`, whose
    input was x, writing the weight gradients into `grads`. Input gradients alternate between
    slots DY_A and DY_B, starting with A if `write_a`; returns (dx of layer first, whether it is
    in A). With need_dx False the first layer's dx is skipped."""
    current = dy
    in_a = not write_a
    for l in range(last - 1, first - 1, -1):
        W, b = layer(params, layout, l)
        dW, db = layer(grads, layout, l)
        y = layer_out(work, plan, layout, l, n)
        act = acts[l] if l < last - 1 else last_act
        delta = current if act == LINEAR else view(work, plan[S_DELTA], n, layout[l, 1])
        in_a = not in_a
        rows = n if (l > first or need_dx) else 0
        dx = view(work, plan[S_DY_A] if in_a else plan[S_DY_B], rows, layout[l, 2])
        if l > first:
            affine_backward(current, layer_out(work, plan, layout, l - 1, n), y, W, act, delta, dx, dW, db)
        else:
            affine_backward(current, x, y, W, act, delta, dx, dW, db)
        current = dx
    return current, in_a


def optimizer_update(params, grads, opt_a, opt_b, cfg_f, cfg_i, step):
    if cfg_i[I_OPT] == ADAM:
        adam_step(params, grads, opt_a, opt_b, step, cfg_f[F_LR], cfg_f[F_BETA_1], cfg_f[F_BETA_2],
                  cfg_f[F_EPSILON])
    else:
        sgd_step(params, grads, opt_a, cfg_f[F_LR], cfg_f[F_MOMENTUM])


def reconstruction_loss(out, target, n, work, plan, cfg_f, cfg_i):
    """Per-row reconstruction loss into slot ROWS and its gradient into GRAD_OUT."""
    rows = work[plan[S_ROWS]:plan[S_ROWS] + n]
    grad = view(work, plan[S_GRAD_OUT], n, out.shape[1])
    if cfg_i[I_LOSS] == MSE:
        mse_loss(out, target, cfg_f[F_LOSS_SCALE], rows, grad, scratch(work, plan))
    else:
        bce_logits_loss(out, target, cfg_f[F_LOSS_SCALE], rows, grad, scratch(work, plan))
    return rows, grad


# ---- Autoencoder: layers 0 .. split are the encoder (split = the code layer), then the decoder.

def ae_code(params, layout, acts, work, plan, x, n, cfg_f, cfg_i):
    """Encoder (and the L1 prox) on n rows; returns the code (slot CODE when prox applies)."""
    split = cfg_i[I_SPLIT]
    v = forward_layers(params, layout, acts, 0, split + 1, x, work, plan, n, acts[split])
    if cfg_f[F_L1] > 0:
        code = view(work, plan[S_CODE], n, layout[split, 1])
        l1_prox(v.ravel(), cfg_f[F_L1], cfg_i[I_NONNEG] != 0, code.ravel())
        return code
    return v


def ae_objective(params, grads, layout, acts, work, plan, x, target, n, cfg_f, cfg_i, with_grads):
    """Sum over the n rows of the objective (reconstruction + L1 penalty on the code); with
    `with_grads` also writes the gradient of its mean into `grads`."""
    split, last = cfg_i[I_SPLIT], layout.shape[0]
    code = ae_code(params, layout, acts, work, plan, x, n, cfg_f, cfg_i)
    out = forward_layers(params, layout, acts, split + 1, last, code, work, plan, n, cfg_i[I_OUT_ACT])
    rows, grad = reconstruction_loss(out, target, n, work, plan, cfg_f, cfg_i)
    lam = cfg_f[F_L1]
    if lam > 0:
        l1_penalty_rows(code, lam, rows)
    total = row_sum(rows)
    if with_grads:
        dcode, in_a = backward_layers(params, grads, layout, acts, split + 1, last, code, work, plan, n,
                                      grad, cfg_i[I_OUT_ACT], True, True)
        if lam > 0:
            l1_code_grad(dcode, code, lam / n, dcode)
        backward_layers(params, grads, layout, acts, 0, split + 1, x, work, plan, n, dcode, acts[split],
                        False, not in_a)
    return total


def encode_into(params, layout, acts, work, plan, x, n, cfg_f, cfg_i, out):
    """Autoencoder codes of n rows, written into `out` (one compiled call for the whole encoder)."""
    split = cfg_i[I_SPLIT]
    if cfg_f[F_L1] > 0:
        v = forward_layers(params, layout, acts, 0, split + 1, x, work, plan, n, acts[split])
        l1_prox(v.ravel(), cfg_f[F_L1], cfg_i[I_NONNEG] != 0, out.ravel())
    else:
        out[:, :] = forward_layers(params, layout, acts, 0, split + 1, x, work, plan, n, acts[split])


def layers_into(params, layout, acts, first, last, x, work, plan, n, out):
    """Layers first .. last - 1 (each with its own activation) on n rows, written into `out`."""
    out[:, :] = forward_layers(params, layout, acts, first, last, x, work, plan, n, acts[last - 1])


def heads_into(params, layout, acts, work, plan, x, n, cfg_i, mu, logvar):
    """VAE encoder: mu and logvar of n rows, written into the given arrays."""
    m, lv = vae_heads(params, layout, acts, work, plan, x, n, cfg_i)
    mu[:, :] = m
    logvar[:, :] = lv


# ---- VAE: layers 0 .. split - 1 are the trunk, layer split the two heads [mu | logvar] fused
# into one affine layer, then the decoder. n_samples draws are stacked as extra rows.

def vae_heads(params, layout, acts, work, plan, x, n, cfg_i):
    split = cfg_i[I_SPLIT]
    heads = forward_layers(params, layout, acts, 0, split + 1, x, work, plan, n, LINEAR)
    k = layout[split, 1] // 2
    return heads[:, :k], heads[:, k:]


def vae_objective(params, grads, layout, acts, work, plan, x, n, cfg_f, cfg_i, eps, has_eps, key,
                  with_grads):
    """Sum over the n rows of (1/S) sum_s -log p(x | z_s) + beta * KL(q(z | x) || N(0, I)), z_s
    from eps (S * n rows, sample-major) or from the stream `key`; slot ROWS gets the per-row
    reconstruction terms, KL the per-row KL. With `with_grads` the gradient of the mean goes
    into `grads`."""
    split, last, samples = cfg_i[I_SPLIT], layout.shape[0], cfg_i[I_SAMPLES]
    k = layout[split, 1] // 2
    stacked = n * samples
    mu, logvar = vae_heads(params, layout, acts, work, plan, x, n, cfg_i)
    mu_rep = view(work, plan[S_MU_REP], stacked, k)
    lv_rep = view(work, plan[S_LV_REP], stacked, k)
    repeat_rows(mu, samples, mu_rep)
    repeat_rows(logvar, samples, lv_rep)
    z = view(work, plan[S_Z], stacked, k)
    kl = work[plan[S_KL]:plan[S_KL] + stacked]
    reparam_forward(mu_rep, lv_rep, eps, has_eps, key, z, kl, scratch(work, plan))
    out = forward_layers(params, layout, acts, split + 1, last, z, work, plan, stacked, cfg_i[I_OUT_ACT])
    target = x
    if samples > 1:
        target = view(work, plan[S_TARGET], stacked, x.shape[1])
        repeat_rows(x, samples, target)
    rows, grad = reconstruction_loss(out, target, stacked, work, plan, cfg_f, cfg_i)
    beta = cfg_f[F_BETA]
    total = row_sum(rows) / samples + beta * row_sum(kl[:n])
    if with_grads:
        dz, in_a = backward_layers(params, grads, layout, acts, split + 1, last, z, work, plan, stacked,
                                   grad, cfg_i[I_OUT_ACT], True, True)
        dmu_rep = view(work, plan[S_DMU_REP], stacked, k)
        dlv_rep = view(work, plan[S_DLV_REP], stacked, k)
        # the kernels give gradients of f(z) + beta' * sum(kl) over all S * n stacked rows;
        # the objective is a mean over n rows of beta * KL: beta' = beta / (S * n)
        reparam_backward(dz, mu_rep, lv_rep, eps, has_eps, key, beta / stacked, dmu_rep, dlv_rep,
                         scratch(work, plan))
        dheads = view(work, plan[S_DHEADS], n, 2 * k)
        fold_rows(dmu_rep, samples, dheads[:, :k])
        fold_rows(dlv_rep, samples, dheads[:, k:])
        backward_layers(params, grads, layout, acts, 0, split + 1, x, work, plan, n, dheads, LINEAR,
                        False, True)
    return total


def train_epoch(params, grads, opt_a, opt_b, layout, acts, work, plan, X, index, batch_size, cfg_f,
                cfg_i, keys, first_step, is_vae, eps_placeholder):
    """One pass over X in the order `index`: per minibatch a gather into the workspace, (the
    denoising corruption), forward, backward and optimizer update. Step b draws its noise from
    keys[b]. Returns the sum of the per-row objectives."""
    total = 0.0
    n_rows, dim = X.shape
    for b in range((n_rows + batch_size - 1) // batch_size):
        start = b * batch_size
        n = min(batch_size, n_rows - start)
        batch = view(work, plan[S_BATCH], n, dim)
        gather_rows(X, index, start, batch)
        if is_vae:
            total += vae_objective(params, grads, layout, acts, work, plan, batch, n, cfg_f, cfg_i,
                                   eps_placeholder, False, keys[b], True)
        elif cfg_f[F_NOISE] > 0:
            noisy = view(work, plan[S_NOISY], n, dim)
            corrupt(batch, cfg_f[F_NOISE], cfg_i[I_NOISE_KIND], keys[b], noisy)
            total += ae_objective(params, grads, layout, acts, work, plan, noisy, batch, n, cfg_f, cfg_i, True)
        else:
            total += ae_objective(params, grads, layout, acts, work, plan, batch, batch, n, cfg_f, cfg_i, True)
        optimizer_update(params, grads, opt_a, opt_b, cfg_f, cfg_i, first_step + b + 1)
    return total


ENGINE = ("view", "layer", "scratch", "layer_out", "forward_layers", "backward_layers", "optimizer_update",
          "reconstruction_loss", "ae_code", "ae_objective", "encode_into", "layers_into",
          "vae_heads", "heads_into", "vae_objective", "train_epoch")
OPS = ("affine_forward", "affine_backward", "l1_prox", "reparam_forward", "reparam_backward",
       "mse_loss", "bce_logits_loss", "adam_step", "sgd_step", "corrupt", "gather_rows",
       "l1_code_grad", "l1_penalty_rows", "repeat_rows", "fold_rows", "row_sum")


@functools.lru_cache(maxsize=None)
def for_backend(backend):
    """The engine functions bound to one backend's kernels (compiled with Numba for "cpu")."""
    from .kernels import backend as _backend
    ops = _backend.module("numpy_out" if backend == "numpy" else backend)
    if backend == "cpu":
        from .kernels.jit import cpu_jit
        jit = cpu_jit
    else:
        def jit(fn):
            return fn
    namespace = dict(globals())
    namespace.update({name: getattr(ops, name) for name in OPS})
    for name in ENGINE:
        fn = globals()[name]
        namespace[name] = jit(types.FunctionType(fn.__code__, namespace, name, fn.__defaults__))
    return types.SimpleNamespace(**{name: namespace[name] for name in ENGINE})
