"""Model behaviour: gradients against float64 central differences, cpu against the numpy
backend, fit against partial_fit, warm starts, weights, threads."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastae

AE_CONFIGS = [
    dict(hidden=(5,), code=3),
    dict(hidden=(5, 4), code=3, activation="tanh", code_activation="sigmoid", output_activation="tanh"),
    dict(hidden=(5,), code=3, activation="sigmoid", code_activation="linear", l1=0.05),
    dict(hidden=(5,), code=3, code_activation="relu", output_activation="sigmoid", loss="bce", l1=0.02),
    dict(hidden=(), code=2, activation="linear", code_activation="tanh", output_activation="linear"),
]
VAE_CONFIGS = [
    dict(hidden=(5,), latent=3, likelihood="bernoulli"),
    dict(hidden=(4,), latent=2, likelihood="gaussian", activation="tanh", beta=0.5),
    dict(hidden=(), latent=2, likelihood="bernoulli", n_samples=3),
]
BACKENDS = [b for b in fastae.backends() if b != "cuda" or not fastae.kernels.backend.simulated()]


def data(rng, n=7, d=6):
    return rng.uniform(0.05, 0.95, size=(n, d))


def numeric_grads(model, loss_of, h=1e-6):
    weights = model.get_weights()
    grads = []
    for i, (W, b) in enumerate(weights):
        pair = []
        for j, a in enumerate((W, b)):
            g = np.empty_like(a)
            for idx in np.ndindex(a.shape):
                vals = []
                for sign in (1, -1):
                    trial = [(w.copy(), c.copy()) for w, c in weights]
                    trial[i][j][idx] += sign * h
                    model.set_weights(trial)
                    vals.append(loss_of(model))
                g[idx] = (vals[0] - vals[1]) / (2 * h)
            pair.append(g)
        grads.append(tuple(pair))
    model.set_weights(weights)
    return grads


def assert_grads_match(analytic, numeric):
    for (dW, db), (nW, nb) in zip(analytic, numeric):
        np.testing.assert_allclose(dW, nW, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(db, nb, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", AE_CONFIGS, ids=str)
def test_autoencoder_value_and_grad_matches_central_differences(rng, config, backend):
    X = data(rng)
    model = fastae.Autoencoder(**config, dtype="float64", seed=1, backend=backend, epochs=1).fit(X)
    loss, grads = model.value_and_grad(X)
    assert np.isclose(loss, -model.score(X))
    assert [(g.shape, c.shape) for g, c in grads] == [(w.shape, b.shape) for w, b in model.get_weights()]
    assert_grads_match(grads, numeric_grads(model, lambda m: m.value_and_grad(X)[0]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", VAE_CONFIGS, ids=str)
def test_vae_value_and_grad_matches_central_differences(rng, config, backend):
    X = data(rng)
    model = fastae.VAE(**config, dtype="float64", seed=1, backend=backend, epochs=1).fit(X)
    samples = config.get("n_samples", 1)
    eps = rng.standard_normal((samples, 7, config["latent"]))
    eps_arg = eps[0] if samples == 1 else eps
    loss, grads = model.value_and_grad(X, eps_arg)
    assert_grads_match(grads, numeric_grads(model, lambda m: m.value_and_grad(X, eps_arg)[0]))
    # with beta = 1 the loss is minus the ELBO for the same eps
    if model.beta == 1.0:
        assert np.isclose(loss, -model.elbo(X, eps=eps_arg).mean())


def _train_steps(model, X, passes):
    for _ in range(passes):
        model.partial_fit(X)
    return model


@pytest.mark.parametrize("make", [
    lambda b: fastae.Autoencoder(hidden=(8,), code=3, l1=0.01, noise=0.1, batch_size=16, seed=3, backend=b, dtype="float64"),
    lambda b: fastae.Autoencoder(hidden=(8,), code=3, noise=0.3, noise_type="mask", loss="bce",
                                 output_activation="sigmoid", optimizer="sgd", lr=0.05, batch_size=16, seed=3,
                                 backend=b, dtype="float64"),
    lambda b: fastae.VAE(hidden=(8,), latent=2, n_samples=2, batch_size=16, seed=3, backend=b, dtype="float64"),
], ids=["sparse-denoising-adam", "mask-bce-sgd", "vae"])
def test_cpu_trajectory_matches_the_numpy_backend(rng, make):
    X = rng.uniform(size=(40, 6))
    cpu, ref = _train_steps(make("cpu"), X, 3), _train_steps(make("numpy"), X, 3)
    np.testing.assert_allclose(cpu.history_["loss"], ref.history_["loss"], rtol=1e-9)
    for (W1, b1), (W2, b2) in zip(cpu.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(W1, W2, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(b1, b2, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("cls,kwargs", [(fastae.Autoencoder, dict(code=3, noise=0.1)), (fastae.VAE, dict(latent=2))])
def test_fit_equals_repeated_partial_fit(rng, cls, kwargs):
    X = rng.uniform(size=(50, 6))
    fitted = cls(hidden=(8,), epochs=4, batch_size=16, seed=5, **kwargs).fit(X)
    stepped = cls(hidden=(8,), epochs=4, batch_size=16, seed=5, **kwargs)
    for _ in range(4):
        stepped.partial_fit(X)
    assert fitted.history_["loss"] == stepped.history_["loss"]
    for (W1, b1), (W2, b2) in zip(fitted.get_weights(), stepped.get_weights()):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)


def test_same_seed_same_model_and_fit_restarts_unless_warm_start(rng):
    X = rng.uniform(size=(50, 6))
    a = fastae.Autoencoder(hidden=(8,), code=3, epochs=3, seed=9).fit(X)
    b = fastae.Autoencoder(hidden=(8,), code=3, epochs=3, seed=9).fit(X)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    first = a.get_weights()
    a.fit(X)  # fresh weights again: same result
    np.testing.assert_array_equal(a.get_weights()[0][0], first[0][0])
    assert len(a.history_["loss"]) == 3
    a.set_params(warm_start=True).fit(X)  # continues
    assert len(a.history_["loss"]) == 6
    assert a.history_["loss"][-1] < a.history_["loss"][0]
    assert not np.array_equal(a.get_weights()[0][0], first[0][0])


def test_set_weights_on_unfitted_model_and_optimizer_reset(rng):
    X = rng.uniform(size=(20, 6))
    donor = fastae.Autoencoder(hidden=(4,), code=2, epochs=2, seed=0).fit(X)
    fresh = fastae.Autoencoder(hidden=(4,), code=2, seed=0).set_weights(donor.get_weights())
    np.testing.assert_array_equal(fresh.transform(X), donor.transform(X))
    assert fresh.t_ == 0
    with pytest.raises(ValueError, match="weights must hold 4"):
        fresh.set_weights(donor.get_weights()[:2])
    with pytest.raises(ValueError, match=r"weights\[0\] must have shapes \(5, 6\)"):
        fastae.Autoencoder(hidden=(5,), code=2).set_weights(donor.get_weights())
    transposed = [(W.T, b) if i == 0 else (W, b) for i, (W, b) in enumerate(donor.get_weights())]
    with pytest.raises(ValueError, match=r"weights\[0\] must be W of shape \(outputs, inputs\) .* got \(6, 4\) "
                                         r"and \(4,\) \(is W transposed\? it would be \(4, 6\)\)"):
        fresh.set_weights(transposed)
    words = [(W.astype(str), b) if i == 0 else (W, b) for i, (W, b) in enumerate(donor.get_weights())]
    with pytest.raises(TypeError, match=r"weights\[0\] W must be real numbers, got dtype <U"):
        fresh.set_weights(words)


def test_history_validation_and_callback(rng):
    X, X_val = rng.uniform(size=(60, 6)), rng.uniform(size=(20, 6))
    seen = []
    model = fastae.Autoencoder(hidden=(8,), code=3, epochs=5, seed=0,
                               callback=lambda m, epoch, logs: seen.append((epoch, sorted(logs))) or epoch == 3)
    model.fit(X, X_val)
    assert [e for e, _ in seen] == [1, 2, 3]  # returning True stops training
    assert seen[0][1] == ["loss", "rows_per_s", "val_loss"]
    assert len(model.history_["loss"]) == len(model.history_["val_loss"]) == 3
    assert np.isclose(model.history_["val_loss"][-1], -model.score(X_val))


def test_early_stopping_restores_the_best_weights(rng):
    X = rng.uniform(size=(80, 6))
    model = fastae.Autoencoder(hidden=(8,), code=3, epochs=200, lr=0.05, early_stopping=True,
                               n_iter_no_change=3, tol=0.0, seed=0).fit(X)
    val = model.history_["val_loss"]
    assert len(val) < 200
    best = int(np.argmin(val))
    assert best == len(val) - 1 - 3  # stopped after 3 epochs without improvement
    held_out_score = model.history_["val_loss"][best]
    assert held_out_score == min(val)


def test_divergence_stops_with_a_clear_error_and_keeps_finite_weights(rng):
    X = rng.uniform(size=(40, 6)) * 100
    model = fastae.Autoencoder(hidden=(16,), code=4, activation="linear", code_activation="linear",
                               optimizer="sgd", lr=10.0, momentum=0.9, epochs=50, seed=0)
    model.set_params(lr=1e-4, epochs=1).fit(X)
    model.set_params(lr=10.0, epochs=50, warm_start=True)
    with pytest.raises(FloatingPointError, match=r"epoch \d+.*learning rate"):
        model.fit(X)
    assert all(np.isfinite(W).all() and np.isfinite(b).all() for W, b in model.get_weights())
    assert all(np.isfinite(model.history_["loss"])) and len(model.history_["loss"]) == model.n_iter_ >= 1
    assert np.isfinite(model.score(X))


def test_verbose_shows_a_progress_bar(rng, capsys):
    fastae.Autoencoder(hidden=(4,), code=2, epochs=2, seed=0, verbose=True).fit(rng.uniform(size=(20, 6)))
    err = capsys.readouterr().err
    assert "Autoencoder" in err and "2/2" in err and "loss=" in err and "rows_per_s=" in err


def test_out_arguments_and_numpy_in_numpy_out(rng):
    X = rng.uniform(size=(10, 6)).astype(np.float32)
    model = fastae.Autoencoder(hidden=(4,), code=2, epochs=1, seed=0).fit(X)
    out = np.empty((10, 2), np.float32)
    assert model.transform(X, out=out) is out
    np.testing.assert_array_equal(out, model.encode(X))
    dec = np.empty((10, 6), np.float32)
    assert model.decode(out, out=dec) is dec
    np.testing.assert_array_equal(dec, model.reconstruct(X))
    assert type(model.transform(X.tolist())) is np.ndarray
    with pytest.raises(ValueError, match="out must have shape"):
        model.transform(X, out=np.empty((10, 3), np.float32))


def test_vae_api(rng):
    X = rng.uniform(size=(30, 6))
    model = fastae.VAE(hidden=(8,), latent=2, epochs=2, seed=0).fit(X)
    mu, logvar = model.encode(X)
    assert mu.shape == logvar.shape == (30, 2)
    np.testing.assert_array_equal(model.transform(X), mu)
    np.testing.assert_array_equal(model.reconstruct(X), model.decode(mu))
    samples = model.sample(5, seed=1)
    assert samples.shape == (5, 6) and np.all((samples >= 0) & (samples <= 1))
    np.testing.assert_array_equal(samples, model.sample(5, seed=1))
    assert model.elbo(X, seed=3).shape == (30,)
    np.testing.assert_array_equal(model.elbo(X, seed=3), model.elbo(X, seed=3))
    eps = rng.standard_normal((4, 30, 2))
    np.testing.assert_allclose(model.elbo(X, eps=eps), np.mean([model.elbo(X, eps=e) for e in eps], axis=0), rtol=1e-6)
    assert len(model.get_weights()) == 1 + 2 + 2  # trunk, mu head, logvar head, decoder hidden, output


def test_eight_threads_calling_transform_agree_with_sequential(rng):
    X = rng.uniform(size=(300, 6))
    model = fastae.Autoencoder(hidden=(16,), code=4, l1=0.01, epochs=2, seed=0).fit(X)
    chunks = [X[i::8] for i in range(8)]
    sequential = [model.transform(c) for c in chunks]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            concurrent = list(pool.map(model.transform, chunks))
            for s, c in zip(sequential, concurrent):
                np.testing.assert_array_equal(s, c)


@pytest.mark.skipif("cuda" not in fastae.backends(), reason="no GPU and no CUDA simulator")
@pytest.mark.parametrize("make", [
    lambda b: fastae.Autoencoder(hidden=(4,), code=2, l1=0.01, noise=0.1, batch_size=4, seed=3, backend=b, dtype="float64"),
    lambda b: fastae.VAE(hidden=(3,), latent=2, n_samples=2, batch_size=4, seed=3, backend=b, dtype="float64"),
], ids=["autoencoder", "vae"])
def test_cuda_backend_trains_and_infers_like_numpy(make):
    X = np.random.default_rng(0).uniform(size=(6, 5))
    gpu, ref = _train_steps(make("cuda"), X, 2), _train_steps(make("numpy"), X, 2)
    np.testing.assert_allclose(gpu.history_["loss"], ref.history_["loss"], rtol=1e-9)
    np.testing.assert_allclose(gpu.transform(X), ref.transform(X), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(gpu.reconstruct(X), ref.reconstruct(X), rtol=1e-8, atol=1e-10)


def test_refitting_with_other_parameters_rebuilds_workspaces_and_config(rng):
    X = rng.uniform(size=(40, 6))
    model = fastae.Autoencoder(hidden=(8,), code=3, epochs=2, seed=0).fit(X)
    model.transform(X[:1])
    model.set_params(hidden=(16, 4), code=5).fit(X)  # same batch size, other architecture
    fresh = fastae.Autoencoder(hidden=(16, 4), code=5, epochs=2, seed=0).fit(X)
    np.testing.assert_array_equal(model.transform(X[:1]), fresh.transform(X[:1]))
    np.testing.assert_array_equal(model.get_weights()[0][0], fresh.get_weights()[0][0])
    model.set_params(l1=5.0, warm_start=True, epochs=1).fit(X)  # same network, new l1
    assert np.all(model.transform(X[:1]) == 0)  # the huge threshold zeroes every code
