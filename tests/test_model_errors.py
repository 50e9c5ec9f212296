"""Bad hyperparameters and bad data get errors that name the argument; inputs are never modified."""
import numpy as np
import pytest

import fastae


@pytest.fixture
def X(rng):
    return rng.uniform(size=(20, 5))


@pytest.mark.parametrize("cls,params,message", [
    (fastae.Autoencoder, dict(code=0), "code must be an int >= 1"),
    (fastae.Autoencoder, dict(hidden=(4, -1)), "each width in hidden"),
    (fastae.Autoencoder, dict(activation="gelu"), "activation must be one of"),
    (fastae.Autoencoder, dict(loss="hinge"), "loss must be one of"),
    (fastae.Autoencoder, dict(loss="bce"), "loss='bce' needs output_activation='sigmoid'"),
    (fastae.Autoencoder, dict(l1=-1.0), "l1 must be >= 0"),
    (fastae.Autoencoder, dict(noise=1.0, noise_type="mask"), "noise must be < 1"),
    (fastae.Autoencoder, dict(noise_type="salt"), "noise_type must be one of"),
    (fastae.Autoencoder, dict(optimizer="rmsprop"), "optimizer must be one of"),
    (fastae.Autoencoder, dict(lr=0.0), "lr must be > 0"),
    (fastae.Autoencoder, dict(beta_1=1.0), "beta_1 must be < 1"),
    (fastae.Autoencoder, dict(batch_size=0), "batch_size must be an int >= 1"),
    (fastae.Autoencoder, dict(epochs=2.5), "epochs must be an int >= 1"),
    (fastae.Autoencoder, dict(validation_fraction=1.0), "validation_fraction must be < 1"),
    (fastae.Autoencoder, dict(seed=-3), r"seed must be None or an int in \[0, 2\*\*64\)"),
    (fastae.Autoencoder, dict(backend="tpu"), "backend must be one of"),
    (fastae.Autoencoder, dict(dtype="float16"), "dtype must be 'float32' or 'float64'"),
    (fastae.Autoencoder, dict(callback=3), "callback must be None or callable"),
    (fastae.VAE, dict(latent=0), "latent must be an int >= 1"),
    (fastae.VAE, dict(likelihood="poisson"), "likelihood must be one of"),
    (fastae.VAE, dict(beta=-1.0), "beta must be >= 0"),
    (fastae.VAE, dict(n_samples=0), "n_samples must be an int >= 1"),
    (fastae.PCA, dict(n_components=0), "n_components must be an int >= 1"),
    (fastae.PCA, dict(n_components=6), "n_components must be <= min"),
])
def test_bad_hyperparameters_are_reported_at_fit(X, cls, params, message):
    base = {"n_components": 2} if cls is fastae.PCA else {}
    model = cls(**{**base, **params})  # the constructor only stores
    assert model.get_params()[next(iter(params))] == params[next(iter(params))]
    with pytest.raises(ValueError, match=message):
        model.fit(X)


@pytest.mark.parametrize("cls", [fastae.Autoencoder, fastae.VAE, lambda **k: fastae.PCA(2, **k)])
def test_bad_data(X, cls):
    model = cls(dtype="float64")
    for bad, error, message in [
        (X[0], ValueError, "X must be 2-D"),
        (X[:0], ValueError, "0 sample"),
        (np.where(X > 0.9, np.nan, X), ValueError, "X contains NaN or infinity"),
        (np.where(X > 0.9, np.inf, X), ValueError, "X contains NaN or infinity"),
        (X + 1j, ValueError, "Complex data not supported"),
        (X.astype(str), TypeError, "X must be a numeric array"),
        (None, TypeError, "X must be a 2-D array"),
    ]:
        with pytest.raises(error, match=message):
            model.fit(bad)
    model.fit(X)
    with pytest.raises(ValueError, match="X has 4 features, but .* is expecting 5 features"):
        model.transform(X[:, :4])


def test_unfitted_models_say_so(X):
    for model in (fastae.Autoencoder(), fastae.VAE(), fastae.PCA(2)):
        with pytest.raises(fastae.NotFittedError, match="not fitted yet"):
            model.transform(X)


def test_bernoulli_vae_needs_data_in_unit_interval(X):
    with pytest.raises(ValueError, match=r"X must lie in \[0, 1\] for likelihood='bernoulli'"):
        fastae.VAE().fit(X * 3)
    model = fastae.VAE(hidden=(4,), latent=2, epochs=1).fit(X)
    with pytest.raises(ValueError, match="eps must have shape"):
        model.elbo(X, eps=np.zeros((7, 2)))
    with pytest.raises(ValueError, match="Z has 3 features"):
        model.decode(np.zeros((2, 3)))


def test_inputs_are_never_modified(X):
    X.setflags(write=False)
    X_val = X[:5].copy()
    X_val.setflags(write=False)
    before = X.copy()
    ae = fastae.Autoencoder(hidden=(4,), code=2, noise=0.5, l1=0.01, epochs=2, seed=0).fit(X, X_val)
    ae.partial_fit(X)
    codes = ae.transform(X)
    codes.setflags(write=False)
    ae.decode(codes)
    ae.score(X)
    ae.value_and_grad(X)
    vae = fastae.VAE(hidden=(4,), latent=2, epochs=2, seed=0).fit(X)
    eps = np.zeros((20, 2))
    eps.setflags(write=False)
    vae.elbo(X, eps=eps)
    vae.value_and_grad(X, eps)
    fastae.PCA(2).fit(X).transform(X)
    np.testing.assert_array_equal(X, before)
    np.testing.assert_array_equal(eps, 0)


def test_latency_path_still_rejects_nan_and_wrong_shapes(X):
    model = fastae.Autoencoder(hidden=(4,), code=2, epochs=1, seed=0).fit(X)
    row = X[:1].astype(np.float32)
    assert model.transform(row).shape == (1, 2)
    for bad, message in [(np.where(row > 0.5, np.nan, row), "NaN"), (row[:, :4].copy(), "X has 4 features"),
                         (np.asfortranarray(np.vstack([row, row]))[:, :3], "X has 3 features")]:
        with pytest.raises(ValueError, match=message):
            model.transform(bad)
    np.testing.assert_array_equal(model.transform(row.astype(np.float64)), model.transform(row))


def test_review_findings_are_clear_errors(tmp_path):
    X = np.random.default_rng(0).uniform(size=(20, 4))
    with pytest.raises(TypeError, match="masked array"):
        fastae.Autoencoder(hidden=(3,), code=2, epochs=1).fit(np.ma.masked_array(X, mask=X > 0.9))
    p = np.zeros(3)
    with pytest.raises(ValueError, match="step"):
        fastae.kernels.adam_step(p, p + 1, np.zeros(3), np.zeros(3), step=2 ** 70)
    with pytest.raises(ValueError, match="dtypes"):
        fastae.kernels.warmup(dtypes="float32")
    import subprocess
    import sys
    np.save(tmp_path / "x.npy", X)
    result = subprocess.run([sys.executable, "-m", "fastae", "fit", str(tmp_path / "x.npy"), "--hidden", "8,,3",
                             "-o", str(tmp_path / "m.npz")], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "8,,3" in result.stderr


@pytest.mark.parametrize("cls,code_name", [(fastae.Autoencoder, "C"), (fastae.VAE, "Z")])
def test_inference_errors_name_their_argument(X, cls, code_name):
    """The compiled chain finds NaN and inf itself; the error names the argument it came in
    (decode: the codes). A finite float64 too large for a float32 model is said to be so, with no
    overflow warning on the way."""
    import pickle
    import warnings
    model = cls(hidden=(4,), epochs=1, seed=0).fit(X)
    codes = model.transform(X)
    for rows in (1, 7):
        bad = codes[:rows].copy()
        bad[-1, 0] = np.nan
        with pytest.raises(ValueError, match=f"^{code_name} contains NaN or infinity") as raised:
            model.decode(bad)
        # as a process pool hands it back: the same message
        assert str(pickle.loads(pickle.dumps(raised.value))) == f"{code_name} contains NaN or infinity"
        with pytest.raises(ValueError, match=f"^{code_name} contains NaN or infinity"):
            model.decode(bad, out=np.empty((rows, X.shape[1]), np.float32))
        rows_x = X[:rows].astype(np.float32)
        rows_x[0, 0] = np.inf
        with pytest.raises(ValueError, match="^X contains NaN or infinity"):
            model.reconstruct(rows_x)
    huge = X.copy()
    huge[3, 2] = 1e39
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="^X holds values too large for float32"):
            model.transform(huge)
        with pytest.raises(ValueError, match="^X contains NaN or infinity"):
            model.transform(np.where(X > 0.9, np.inf, X))


def test_values_too_large_for_the_model_dtype_are_refused(X):
    """A float64 weight or threshold beyond float32's range would be inf inside a float32 model
    or kernel: a ValueError naming it, on every backend, instead of a warning and inf."""
    import warnings
    model = fastae.Autoencoder(hidden=(4,), code=2, epochs=1, seed=0).fit(X)
    weights = [(W.astype(np.float64), b) for W, b in model.get_weights()]
    weights[0][0][0, 0] = 1e39
    before = model.transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"weights\[0\] W holds values too large for float32"):
            model.set_weights(weights)
        np.testing.assert_array_equal(model.transform(X), before)  # unchanged
        for backend in ("numpy", "cpu"):
            with pytest.raises(ValueError, match="threshold is too large for float32"):
                fastae.kernels.l1_prox(np.ones((2, 3), np.float32), 1e39, backend=backend)
    assert np.isfinite(fastae.kernels.l1_prox(np.ones((2, 3)), 1e39)).all()  # float64 takes it
