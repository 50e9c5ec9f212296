"""The models learn something useful on real data: scikit-learn's bundled digits, fixed seeds."""
import numpy as np
import pytest

import fastae


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, random_state=0)


def held_out_error(model, X):
    return float(np.mean(np.sum((X - model.reconstruct(X)) ** 2, axis=1)))


def test_pca_components_are_orthonormal_and_match_scikit_learn(digits):
    from sklearn.decomposition import PCA as SkPCA
    Xtr, Xte, _, _ = digits
    ours = fastae.PCA(8, dtype="float64").fit(Xtr)
    np.testing.assert_allclose(ours.components_ @ ours.components_.T, np.eye(8), atol=1e-10)
    theirs = SkPCA(8).fit(Xtr)
    np.testing.assert_allclose(ours.explained_variance_, theirs.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(np.abs(ours.transform(Xte)), np.abs(theirs.transform(Xte)), rtol=1e-6, atol=1e-8)


def test_linear_autoencoder_reaches_pca(digits):
    Xtr, Xte, _, _ = digits
    pca = fastae.PCA(8).fit(Xtr)
    linear = fastae.Autoencoder(hidden=(), code=8, activation="linear", code_activation="linear",
                                output_activation="linear", lr=3e-3, epochs=200, batch_size=64, seed=0).fit(Xtr)
    assert held_out_error(linear, Xte) <= 1.05 * held_out_error(pca, Xte)


def test_relu_codes_classify_digits(digits):
    from sklearn.linear_model import LogisticRegression
    Xtr, Xte, ytr, yte = digits
    ae = fastae.Autoencoder(hidden=(64,), code=16, lr=3e-3, epochs=60, batch_size=64, seed=0).fit(Xtr)
    clf = LogisticRegression(max_iter=2000).fit(ae.transform(Xtr), ytr)
    assert clf.score(ae.transform(Xte), yte) >= 0.90


def test_sparsity_rises_with_l1(digits):
    Xtr, Xte, _, _ = digits
    zeros = []
    for l1 in (0.0, 0.01, 0.05):
        model = fastae.Autoencoder(hidden=(64,), code=16, l1=l1, lr=3e-3, epochs=30, batch_size=64, seed=0).fit(Xtr)
        zeros.append(float(np.mean(model.transform(Xte) == 0)))
    assert zeros[0] < zeros[1] < zeros[2]
    assert zeros[2] > 0.4


@pytest.mark.parametrize("noise_type,level", [("gaussian", 0.2), ("mask", 0.3)])
def test_denoising_brings_noisy_rows_closer_to_the_clean_ones(digits, noise_type, level):
    Xtr, Xte, _, _ = digits
    model = fastae.Autoencoder(hidden=(64,), code=16, noise=level, noise_type=noise_type, lr=3e-3, epochs=40,
                               batch_size=64, seed=0).fit(Xtr)
    rng = np.random.default_rng(1)
    if noise_type == "gaussian":
        noisy = Xte + level * rng.standard_normal(Xte.shape)
    else:
        noisy = Xte * (rng.uniform(size=Xte.shape) >= level)
    denoised_error = np.mean(np.sum((model.reconstruct(noisy) - Xte) ** 2, axis=1))
    noisy_error = np.mean(np.sum((noisy - Xte) ** 2, axis=1))
    assert denoised_error < 0.8 * noisy_error


def test_vae_held_out_elbo_improves_and_samples_are_digit_like(digits):
    Xtr, Xte, _, _ = digits
    vae = fastae.VAE(hidden=(64,), latent=8, lr=3e-3, epochs=1, batch_size=64, seed=0).fit(Xtr)
    start = vae.score(Xte)
    vae.set_params(warm_start=True, epochs=40).fit(Xtr)
    assert vae.score(Xte) > start + 3
    samples = vae.sample(200, seed=0)
    # samples look like digits: their pixel statistics are those of the data, far from noise
    assert abs(samples.mean() - Xtr.mean()) < 0.1
    assert np.corrcoef(samples.mean(axis=0), Xtr.mean(axis=0))[0, 1] > 0.9
