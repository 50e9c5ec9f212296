"""All GPU checks in one script, for a machine with an NVIDIA GPU (CuPy and numba.cuda installed:
`pip install -e ".[cuda,test]"`; PyTorch with CUDA optional):

    python bench/gpu_check.py               # the cuda tests, then the timing table
    python bench/gpu_check.py --no-tests    # the timing table only

1. runs the cuda tests (`pytest -q -k cuda`: every kernel against the NumPy reference, the
   launch layouts, bit-reproducible reductions, the cuda backend training models);
2. times each op of the cuda backend (fastae.kernels.gpu, the calling convention the model engine
   drives: preallocated device arrays) against the same cuBLAS products alone (affine layers)
   and, when `import torch` finds CUDA, the same work in PyTorch on the GPU, and prints a table.

Times are microseconds per call: CUDA events around `--inner` back-to-back calls on the default
stream after warm-up calls, the median of `--rounds` such rounds. A call's time is the larger of
its GPU time and its host launch cost (Numba launches cost the host several microseconds each).
Exits with one line and status 1 where no GPU is usable.
"""
import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def gpu_or_exit():
    sys.path.insert(0, str(ROOT))
    from fastae.kernels import backend
    usable, reason = backend.gpu_status()
    if not usable:
        raise SystemExit(f"gpu_check: no usable GPU here: {reason}")


def run_tests():
    print("== cuda tests: python -m pytest -q -k cuda", flush=True)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-k", "cuda"], cwd=ROOT).returncode


def timer(cp, warmup, rounds, inner):
    def median_us(fn):
        for _ in range(warmup):
            fn()
        cp.cuda.Device().synchronize()
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        times = []
        for _ in range(rounds):
            start.record()
            for _ in range(inner):
                fn()
            stop.record()
            stop.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, stop) * 1e3 / inner)
        return statistics.median(times)
    return median_us


def import_torch():
    try:
        import torch
        return torch if torch.cuda.is_available() else None
    except ImportError:
        return None


def cases(cp, gpu, torch):
    """(name, fastae call, cuBLAS-alone call or None, torch call or None) for each op, float32;
    the torch calls compute the same results from copies of the same inputs."""
    import numpy as np

    from fastae.kernels import elementwise as ew
    rng = np.random.default_rng(0)
    relu, key = ew.ACTIVATIONS["relu"], ew.noise_key(1)

    def normal(*shape, scale=1.0):
        host = (rng.standard_normal(shape) * scale).astype(np.float32)
        return cp.asarray(host), torch.as_tensor(host, device="cuda") if torch else None

    def empty(*shape):
        return cp.empty(shape, np.float32)

    def peer(fn, *args):  # no torch column without torch
        return (lambda: fn(*args)) if torch else None
    out = []

    for n, d_in, d_out in ((1, 784, 512), (256, 784, 512), (4096, 512, 512)):
        (x, tx), (W, tW), (b, tb), (dy, tdy) = (normal(n, d_in), normal(d_out, d_in, scale=0.05),
                                                normal(d_out), normal(n, d_out))
        y, delta, dx, dW, db = empty(n, d_out), empty(n, d_out), empty(n, d_in), empty(d_out, d_in), empty(d_out)

        def fastae(x=x, W=W, b=b, dy=dy, y=y, delta=delta, dx=dx, dW=dW, db=db):
            gpu.affine_forward(x, W, b, relu, y)
            gpu.affine_backward(dy, x, y, W, relu, delta, dx, dW, db)

        def cublas(x=x, W=W, dy=dy, y=y, dx=dx, dW=dW):  # the same three products, nothing else
            cp.matmul(x, W.T, out=y)
            cp.matmul(dy.T, x, out=dW)
            cp.matmul(dy, W, out=dx)

        def torch_affine(x, W, b, dy):
            y = torch.relu(torch.addmm(b, x, W.t()))
            dz = dy * (y > 0)
            return dz @ W, dz.t() @ x, dz.sum(0)
        out.append((f"affine fwd+bwd relu {n}x{d_in}->{d_out}", fastae, cublas,
                    peer(torch_affine, tx, tW, tb, tdy)))

    h, th = normal(4096, 512, scale=2.0)
    prox = empty(4096, 512)
    out.append(("l1_prox 4096x512", lambda: gpu.l1_prox(h.reshape(-1), 0.5, False, prox.reshape(-1)), None,
                peer(lambda: torch.nn.functional.softshrink(th, 0.5))))

    def torch_mse(p, t):
        d = p - t
        return (d * d).sum(1), d * (2 / p.shape[0])

    def torch_bce(a, t):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(a, t, reduction="none")
        return loss.sum(1), (torch.sigmoid(a) - t) / a.shape[0]
    for n in (256, 4096):
        (p, tp), (t, tt) = normal(n, 784), normal(n, 784)
        rows, grad = empty(n), empty(n, 784)
        out.append((f"mse_loss {n}x784", lambda p=p, t=t, r=rows, g=grad: gpu.mse_loss(p, t, 1.0, r, g),
                    None, peer(torch_mse, tp, tt)))
        out.append((f"bce_logits_loss {n}x784",
                    lambda p=p, t=t, r=rows, g=grad: gpu.bce_logits_loss(p, t, 1.0, r, g),
                    None, peer(torch_bce, tp, (tt > 0).float() if torch else None)))

    size = 1 << 20
    (param, tparam), (grad, tgrad) = normal(size), normal(size)
    m, v = cp.zeros(size, np.float32), cp.zeros(size, np.float32)
    adam_peer = sgd_peer = None
    if torch:
        tparam.requires_grad_()
        tparam.grad = tgrad
        try:
            adam = torch.optim.Adam([tparam], lr=1e-3, fused=True)  # PyTorch's fastest Adam
        except (TypeError, RuntimeError, ValueError):
            adam = torch.optim.Adam([tparam], lr=1e-3, foreach=True)
        adam_peer = adam.step
        sgd_peer = torch.optim.SGD([tparam], lr=1e-3, momentum=0.9, foreach=True).step
    step = [0]

    def adam_step():
        step[0] += 1
        gpu.adam_step(param, grad, m, v, step[0], 1e-3, 0.9, 0.999, 1e-8)
    # fastae's optimizer steps also report finiteness: reading that flag waits for the kernel
    out.append(("adam_step 1M params (+ finite flag read)", adam_step, None, adam_peer))
    out.append(("sgd_step 1M params (+ finite flag read)", lambda: gpu.sgd_step(param, grad, m, 1e-3, 0.9),
                None, sgd_peer))

    x, tx = normal(256, 784)
    noisy = empty(256, 784)
    out.append(("corrupt gaussian 256x784", lambda: gpu.corrupt(x, 0.1, 0, key, noisy), None,
                peer(lambda: tx + 0.1 * torch.randn_like(tx))))
    out.append(("corrupt mask 256x784", lambda: gpu.corrupt(x, 0.1, 1, key, noisy), None,
                peer(lambda: tx * (torch.rand_like(tx) >= 0.1))))

    X, tX = normal(60000, 784)
    order = rng.permutation(60000)
    index, tindex = cp.asarray(order), torch.as_tensor(order, device="cuda") if torch else None
    batch = empty(256, 784)
    out.append(("gather_rows 256 of 60000x784", lambda: gpu.gather_rows(X, index, 512, batch), None,
                peer(lambda: torch.index_select(tX, 0, tindex[512:768]))))

    (code, tcode), (dcode, tdcode) = normal(4096, 64), normal(4096, 64)
    code_grad, rows = empty(4096, 64), cp.zeros(4096, np.float32)
    out.append(("l1_code_grad 4096x64", lambda: gpu.l1_code_grad(dcode, code, 1e-3, code_grad), None,
                peer(lambda: (tdcode + 1e-3 * torch.sign(tcode)) * (tcode != 0))))
    out.append(("l1_penalty_rows 4096x64", lambda: gpu.l1_penalty_rows(code, 1e-3, rows), None,
                peer(lambda: 1e-3 * tcode.abs().sum(1))))

    (mu, tmu), (logvar, tlv), (dz, tdz) = normal(4096, 64), normal(4096, 64, scale=0.1), normal(4096, 64)
    z, kl, dmu, dlv = empty(4096, 64), empty(4096), empty(4096, 64), empty(4096, 64)

    def reparam():
        gpu.reparam_forward(mu, logvar, mu, False, key, z, kl)
        gpu.reparam_backward(dz, mu, logvar, mu, False, key, 1.0, dmu, dlv)

    def torch_reparam(mu, lv, dz):
        std = torch.exp(0.5 * lv)
        eps = torch.randn_like(mu)
        kl = -0.5 * (1 + lv - mu * mu - std * std).sum(1)
        return mu + std * eps, kl, dz + mu, 0.5 * (dz * eps * std + (std * std - 1))
    out.append(("reparam fwd+bwd 4096x64 in-kernel noise", reparam, None, peer(torch_reparam, tmu, tlv, tdz)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-tests", action="store_true", help="skip the cuda tests")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--inner", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    gpu_or_exit()
    failed = 0 if args.no_tests else run_tests()

    import cupy as cp
    from fastae.kernels import gpu
    torch = import_torch()
    print(f"== timings on {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}, float32, "
          f"us per call (median of {args.rounds} rounds of {args.inner} calls)"
          + ("" if torch else "; PyTorch with CUDA not importable: no torch column"), flush=True)
    median_us = timer(cp, args.warmup, args.rounds, args.inner)
    header = f"| {'op':<44} | {'fastae cuda':>11} | {'cuBLAS alone':>12} | {'torch':>9} | {'torch / fastae':>14} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, fastae, cublas, peer in cases(cp, gpu, torch):
        try:
            t_fastae = median_us(fastae)
            t_cublas = median_us(cublas) if cublas else None
            t_peer = median_us(peer) if peer else None
        except Exception as exc:  # one broken op must not hide the others' times
            print(f"| {name:<44} | error: {type(exc).__name__}: {exc}")
            failed = failed or 1
            continue

        def cell(t, width):
            return f"{t:>{width}.1f}" if t is not None else f"{'-':>{width}}"
        ratio = f"{t_peer / t_fastae:>14.2f}" if t_peer else f"{'-':>14}"
        print(f"| {name:<44} | {cell(t_fastae, 11)} | {cell(t_cublas, 12)} | {cell(t_peer, 9)} | {ratio} |",
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
