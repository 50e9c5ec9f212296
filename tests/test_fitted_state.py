"""A fitted model is one frozen state: set_params, failed refits, warm starts, interrupts,
divergence and threads cannot leave it half changed or make it disagree with itself."""
import _thread
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastae


@pytest.fixture
def X(rng):
    return rng.uniform(size=(60, 6))


def test_set_params_after_fit_changes_nothing_until_the_next_fit(rng):
    X = rng.uniform(size=(5000, 6)).astype(np.float32)
    model = fastae.Autoencoder(hidden=(8,), code=12, l1=0.01, epochs=1, seed=0).fit(X)
    codes, score, few = model.transform(X), model.score(X), model.transform(X[:3])
    for change in (dict(code=4), dict(l1=0.5), dict(code=16), dict(hidden=(3,), activation="tanh"),
                   dict(dtype="float64"), dict(backend="numpy"), dict(loss="bce")):
        model.set_params(**change)
        np.testing.assert_array_equal(model.transform(X), codes)
        np.testing.assert_array_equal(model.transform(X[:3]), few)  # another cached row count
        assert model.score(X) == score
        assert model.n_features_in_ == 6 and model.transform(X).shape == (5000, 12)
    model.set_params(code=4, l1=0.0, hidden=(8,), activation="relu", dtype="float32", backend="auto",
                     loss="mse").fit(X)
    assert model.transform(X).shape == (5000, 4)


def test_vae_set_params_after_fit_changes_nothing(X):
    model = fastae.VAE(hidden=(8,), latent=2, epochs=1, seed=0).fit(X)
    score, mu = model.score(X), model.transform(X)
    for latent in (4, 1):
        model.set_params(latent=latent, n_samples=3, beta=5.0)
        assert model.score(X) == score
        np.testing.assert_array_equal(model.transform(X), mu)
        assert model.sample(3, seed=0).shape == (3, 6)


def test_a_refit_that_fails_validation_leaves_the_model_as_it_was(X):
    model = fastae.Autoencoder(hidden=(4,), code=2, epochs=2, seed=0).fit(X)
    before = (model.transform(X), model.get_weights(), model.t_, model.n_iter_, model.history_)
    bad_data = X.copy()
    bad_data[3, 2] = np.nan
    for params, data, error in [(dict(hidden=(8,), code=0), X, "code"),
                                (dict(hidden=(8,), lr=-1.0), X, "lr"),
                                (dict(dtype="float64"), bad_data, "NaN"),
                                (dict(loss="bce", output_activation="linear"), X, "bce")]:
        with pytest.raises(ValueError, match=error):
            model.set_params(**params).fit(data)
        model.set_params(hidden=(4,), code=2, lr=1e-3, dtype="float32", loss="mse", output_activation="linear")
        np.testing.assert_array_equal(model.transform(X), before[0])
        for (W, b), (W0, b0) in zip(model.get_weights(), before[1]):
            np.testing.assert_array_equal(W, W0)
            np.testing.assert_array_equal(b, b0)
        assert (model.t_, model.n_iter_, model.history_) == before[2:]


@pytest.mark.parametrize("change,named", [(dict(hidden=(5,)), "hidden"), (dict(code=3), "code"),
                                          (dict(activation="tanh"), "activation"), (dict(dtype="float64"), "dtype")])
def test_warm_start_and_partial_fit_refuse_a_changed_architecture(X, change, named):
    model = fastae.Autoencoder(hidden=(4,), code=2, epochs=1, seed=0).fit(X)
    codes = model.transform(X)
    model.set_params(warm_start=True, **change)
    with pytest.raises(ValueError, match=named):
        model.fit(X)
    with pytest.raises(ValueError, match=named):
        model.partial_fit(X)
    np.testing.assert_array_equal(model.transform(X), codes)
    assert model.n_iter_ == 1


def test_warm_start_may_change_the_objective_and_the_optimizer(X):
    model = fastae.Autoencoder(hidden=(4,), code=2, epochs=2, seed=0).fit(X)
    model.set_params(warm_start=True, l1=0.01, lr=1e-2, epochs=1).fit(X)
    assert model.n_iter_ == 3 and len(model.history_["loss"]) == 3


def test_save_load_reads_the_fitted_state_not_the_parameters(tmp_path, X):
    model = fastae.Autoencoder(hidden=(4,), code=2, l1=0.01, epochs=2, seed=0).fit(X)
    model.set_params(code=3, hidden=(7,))
    model.save(tmp_path / "m.npz")
    loaded = fastae.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))
    assert loaded.get_params()["code"] == 2  # the file records the parameters it was fitted with
    pca = fastae.PCA(3).fit(X).set_params(n_components=5, dtype="float64")
    pca.save(tmp_path / "p.npz")
    assert fastae.load(tmp_path / "p.npz").get_params() == {"n_components": 3, "dtype": "float32"}
    model.set_params(lr=float("nan"), dtype=np.float64).save(tmp_path / "m.npz")  # not part of the model yet
    with pytest.raises(fastae.NotFittedError):
        fastae.VAE().save(tmp_path / "v.npz")


def test_value_and_grad_is_safe_from_many_threads(X):
    model = fastae.Autoencoder(hidden=(6,), code=3, epochs=1, seed=0, dtype="float64").fit(X)
    want_loss, want = model.value_and_grad(X)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: model.value_and_grad(X), range(64)))
    for loss, grads in results:
        assert loss == want_loss
        for (dW, db), (eW, eb) in zip(grads, want):
            np.testing.assert_array_equal(dW, eW)
            np.testing.assert_array_equal(db, eb)


def test_transform_from_threads_while_another_thread_fits(rng):
    X = rng.uniform(size=(2000, 6)).astype(np.float32)
    model = fastae.Autoencoder(hidden=(8,), code=3, epochs=1, seed=0).fit(X)
    model.set_params(epochs=30, warm_start=True)
    states = set()
    fitting = threading.Thread(target=model.fit, args=(X,))
    fitting.start()
    while fitting.is_alive():
        codes = model.transform(X[:7])
        assert codes.shape == (7, 3) and np.isfinite(codes).all()
        states.add(model.n_iter_)
    fitting.join()
    assert model.n_iter_ == 31
    assert len(states) > 1  # inference saw training progress, one consistent state at a time


def test_vae_eps_must_be_exactly_n_by_latent_or_s_by_n_by_latent(X):
    model = fastae.VAE(hidden=(4,), latent=2, epochs=1, seed=0, dtype="float64").fit(X)
    n = X.shape[0]
    eps = np.random.default_rng(0).standard_normal((2, n, 2))
    assert model.elbo(X, eps=eps).shape == (n,)
    for bad in [np.zeros((1, n, 4)), np.zeros((2, n // 2, 2)), np.zeros((n, 4)), np.zeros((2 * n, 2)),
                np.zeros((0, n, 2))]:
        with pytest.raises(ValueError, match="eps must have shape"):
            model.elbo(X, eps=bad)
        with pytest.raises(ValueError, match="eps must have shape"):
            model.value_and_grad(X, bad)


def test_adam_with_a_huge_learning_rate_stops_with_a_consistent_finite_model(X, tmp_path):
    model = fastae.Autoencoder(hidden=(4,), code=2, epochs=1, seed=0).fit(X)
    model.set_params(lr=1e30, batch_size=len(X), warm_start=True)
    before = model.transform(X)
    with pytest.raises(FloatingPointError, match="epoch 2"):
        model.fit(X)
    np.testing.assert_array_equal(model.transform(X), before)
    assert model.n_iter_ == 1 and len(model.history_["loss"]) == 1
    assert np.isfinite(model.score(X))
    model.save(tmp_path / "m.npz")
    fastae.load(tmp_path / "m.npz")


def test_divergence_is_caught_in_the_optimizer_state(X, tmp_path):
    """lr=100 leaves a finite loss but infinite Adam moments: that is divergence too, and every
    model that saves, loads."""
    model = fastae.Autoencoder(hidden=(4,), code=2, epochs=3, lr=100.0, seed=0)
    try:
        model.fit(X * 1e18)
    except FloatingPointError:
        pass
    if model.__sklearn_is_fitted__():
        model.save(tmp_path / "m.npz")
        loaded = fastae.load(tmp_path / "m.npz")
        np.testing.assert_array_equal(loaded.transform(X), model.transform(X))


def test_pca_that_would_save_an_overflowing_variance_is_refused_at_fit(rng):
    with pytest.raises(ValueError, match="overflow"):
        fastae.PCA(2).fit(rng.uniform(size=(20, 4)) * 1e20)


def test_bce_autoencoder_refuses_targets_outside_the_unit_interval(X):
    model = fastae.Autoencoder(hidden=(4,), code=2, loss="bce", output_activation="sigmoid", epochs=1, seed=0)
    for bad in (X * 1.5, X - 0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            model.fit(bad)
    model.fit(X)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.score(X * 1.5)


def test_seeds_are_none_or_ints_below_2_to_the_64(X):
    for seed in (2 ** 64, -1, 1.5, "x", True):
        with pytest.raises(ValueError, match="seed"):
            fastae.VAE(hidden=(4,), latent=2, epochs=1, seed=seed).fit(X)
    model = fastae.VAE(hidden=(4,), latent=2, epochs=1, seed=2 ** 64 - 1).fit(X)
    assert np.isfinite(model.score(X))
    for seed, error in ((1.5, TypeError), ("x", TypeError), (-1, ValueError), (2 ** 64, ValueError)):
        with pytest.raises(error, match="seed"):
            model.elbo(X, seed=seed)
    assert not np.array_equal(model.elbo(X, seed=None), model.elbo(X, seed=None))  # None: fresh noise
    np.testing.assert_array_equal(model.elbo(X, seed=3), model.elbo(X, seed=3))


def test_vae_score_chunks_use_independent_noise(rng):
    X = np.tile(rng.uniform(size=(1, 6)), (8192, 1))  # one row repeated: only the noise differs
    model = fastae.VAE(hidden=(4,), latent=2, epochs=1, seed=0, dtype="float64").fit(X[:50])
    first, second = model.elbo(X, seed=5), model.elbo(X, seed=6)
    assert not np.array_equal(first[4096:], second[:4096])
    assert not np.array_equal(first[4096:], first[:4096])


def test_big_endian_and_object_inputs_are_converted(X):
    model = fastae.Autoencoder(hidden=(4,), code=2, epochs=1, seed=0).fit(X)
    native = X.astype(np.float32)
    want = model.transform(native)
    np.testing.assert_array_equal(model.transform(native.astype(">f4")), want)
    np.testing.assert_array_equal(model.transform(X.astype(">f8")), want)
    np.testing.assert_array_equal(model.transform(native.astype(object)), want)
    fastae.Autoencoder(hidden=(4,), code=2, epochs=1, seed=0).fit(X.astype(">f8"))


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler: a process started in the background (CI runners, `cmd &`)
    inherits SIGINT ignored, and then Ctrl-C, like _thread.interrupt_main, does nothing."""
    import signal
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt_after(seconds):
    """Ctrl-C in the main thread after `seconds`, unless landed["cancel"] is set first."""
    landed = {"cancel": threading.Event()}

    def fire():
        if not landed["cancel"].wait(seconds):
            landed["sent"] = time.perf_counter()
            _thread.interrupt_main()
    threading.Thread(target=fire, daemon=True).start()
    return landed


def test_ctrl_c_lands_within_half_a_second(rng, ctrl_c_raises):
    X = rng.uniform(size=(200_000, 64)).astype(np.float32)
    timers = []

    def interrupt_during_epoch_2(model, epoch, logs):
        if epoch == 1:  # epoch 2 is 25,000 steps: far longer than 0.1 s on any engine
            timers.append(_interrupt_after(0.1))
    model = fastae.Autoencoder(hidden=(64,), code=8, epochs=3, batch_size=8, seed=0,
                               callback=interrupt_during_epoch_2)
    try:
        with pytest.raises(KeyboardInterrupt):
            model.fit(X)
    finally:
        for timer in timers:
            timer["cancel"].set()
    delay = time.perf_counter() - timers[0]["sent"]
    assert delay < 0.5, f"Ctrl-C took {delay:.2f} s to land"
    assert model.n_iter_ == 1 and len(model.history_["loss"]) == 1 and model.t_ == 25_000


def test_an_interrupted_fit_is_consistent_and_resumes_to_the_uninterrupted_model(rng, monkeypatch):
    """Ctrl-C between two compiled calls of epoch 3 (where Python delivers it): the model keeps
    epoch 2, and partial_fit from there gives the model of a run that was never interrupted."""
    from fastae import training
    from fastae.training import Trainer
    monkeypatch.setattr(training, "CALL_SECONDS", 1e-9)  # one step per compiled call
    X = rng.uniform(size=(5000, 16)).astype(np.float32)
    epochs = 5
    make = lambda: fastae.Autoencoder(hidden=(32,), code=4, epochs=epochs, batch_size=16, seed=0)  # noqa: E731
    straight = make().fit(X)
    steps = -(-len(X) // 16)
    original, calls = Trainer._steps, []

    def steps_then_interrupt(self, *args, **kwargs):
        if self.committed.train.n_iter == 2:
            calls.append(1)
            if len(calls) == 10:  # ten steps into epoch 3
                raise KeyboardInterrupt
        return original(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, "_steps", steps_then_interrupt)
    model = make()
    with pytest.raises(KeyboardInterrupt):
        model.fit(X)
    monkeypatch.setattr(Trainer, "_steps", original)
    # weights, moments, steps, epochs and history all describe the end of epoch 2
    assert model.n_iter_ == 2 and model.t_ == 2 * steps and len(model.history_["loss"]) == 2
    for _ in range(epochs - 2):
        model.partial_fit(X)
    for (W, b), (sW, sb) in zip(model.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(W, sW)
        np.testing.assert_array_equal(b, sb)
    assert model.history_ == straight.history_ and model.t_ == straight.t_


def test_early_stopping_restores_the_best_epoch_and_does_not_copy_X(rng):
    X = rng.uniform(size=(200000, 20)).astype(np.float32)  # scoring works in chunks of 4096 rows
    seen = []
    model = fastae.Autoencoder(hidden=(8,), code=3, epochs=30, lr=0.5, early_stopping=True, n_iter_no_change=2,
                               tol=0.0, seed=0, callback=lambda m, epoch, logs: seen.append(m.get_weights()))
    model.fit(X[:100])  # compile first
    seen.clear()
    tracemalloc.start()
    model.fit(X)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.5 * X.nbytes, f"fit with early_stopping allocated {peak / X.nbytes:.2f} x the data"
    val = model.history_["val_loss"]
    best = int(np.argmin(val))
    assert best < len(val) - 1  # it stopped after epochs without improvement
    for (W, b), (bW, bb) in zip(model.get_weights(), seen[best]):
        np.testing.assert_array_equal(W, bW)
        np.testing.assert_array_equal(b, bb)
