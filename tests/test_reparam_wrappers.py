"""The public reparameterization ops on the cpu backend: the NaN/inf check the kernels do in their
own pass names the argument as the up-front checks do, inputs that need no conversion take a
shortcut that changes nothing, and the reused per-thread scratch never leaks between calls."""
import threading

import numpy as np
import pytest

from fastae import kernels
from parity import backends_under_test

BACKENDS = ["numpy"] + backends_under_test()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_is_named_in_argument_order(backend, dtype, bad):
    good = {name: np.full((5, 7), 0.25, dtype) for name in ("dz", "mu", "logvar", "eps")}
    order = {"forward": ["mu", "logvar", "eps"], "backward": ["dz", "mu", "logvar", "eps"]}
    for op in ("forward", "backward"):
        fn = getattr(kernels, f"reparam_{op}")
        for seeded in (True, False):
            names = order[op][:-1] if seeded else order[op]
            for i, name in enumerate(names):
                arrays = {k: v.copy() for k, v in good.items()}
                arrays[name][3, 6] = bad
                for later in names[i + 1:]:  # a later argument broken too: the first is named
                    arrays[later][0, 0] = bad
                args = [arrays[n] for n in names]
                kwargs = {"seed": 3} if seeded else {}
                with pytest.raises(ValueError, match=f"^{name} contains NaN or infinity"):
                    fn(*args, backend=backend, **kwargs)


def test_converted_inputs_give_the_results_of_ready_ones(rng):
    mu, logvar, dz = (rng.standard_normal((6, 9)).astype(np.float32) for _ in range(3))
    want_f = kernels.reparam_forward(mu, logvar, seed=5, backend="cpu")
    want_b = kernels.reparam_backward(dz, mu, logvar, seed=5, backend="cpu")
    frozen = mu.copy()
    frozen.setflags(write=False)
    variants = {
        "non-contiguous": np.asfortranarray(mu),
        "big-endian": mu.astype(">f4"),
        "read-only": frozen,
        "subclass": mu.view(np.matrix),
    }
    for what, m in variants.items():
        for got, want in zip(kernels.reparam_forward(m, logvar, seed=5, backend="cpu"), want_f):
            np.testing.assert_array_equal(got, want, err_msg=what)
        for got, want in zip(kernels.reparam_backward(dz, m, logvar, seed=5, backend="cpu"), want_b):
            np.testing.assert_array_equal(got, want, err_msg=what)
    with pytest.raises(TypeError, match="mu is float64 but logvar is float32"):
        kernels.reparam_forward(mu.tolist(), logvar, seed=5, backend="cpu")
    # integer input converts to the other arrays' float dtype
    ints = np.arange(54).reshape(6, 9) % 3 - 1
    np.testing.assert_array_equal(kernels.reparam_forward(ints, logvar, seed=5, backend="cpu")[0],
                                  kernels.reparam_forward(ints.astype(np.float32), logvar, seed=5, backend="cpu")[0])


def test_results_are_fresh_arrays(rng):
    mu, logvar = (rng.standard_normal((4, 3)) for _ in range(2))
    z1, kl1 = kernels.reparam_forward(mu, logvar, seed=1, backend="cpu")
    keep = z1.copy(), kl1.copy()
    z2, kl2 = kernels.reparam_forward(mu * 2, logvar, seed=2, backend="cpu")
    assert not np.shares_memory(z1, z2) and not np.shares_memory(kl1, kl2)
    np.testing.assert_array_equal(z1, keep[0])
    np.testing.assert_array_equal(kl1, keep[1])


def test_threads_calling_at_once_get_their_own_results(rng):
    shapes = [(300, 7), (50, 64), (1000, 3), (7, 1500)]
    inputs = [tuple(rng.standard_normal(s).astype(np.float32) for _ in range(3)) for s in shapes]

    def run(mu, logvar, dz, seed):
        return (kernels.reparam_forward(mu, logvar, seed=seed, backend="cpu")
                + kernels.reparam_backward(dz, mu, logvar, seed=seed, backend="cpu"))

    want = [run(*x, seed) for seed, x in enumerate(inputs)]
    got = [[None] * len(inputs) for _ in range(3)]

    def worker(t):
        for _ in range(20):
            for seed, x in enumerate(inputs):
                got[t][seed] = run(*x, seed)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for results in got:
        for g, w in zip(results, want):
            for a, b in zip(g, w):
                np.testing.assert_array_equal(a, b)
