"""`python -m fastae demo`: every model on scikit-learn's bundled digits, one table, and figures.

Trains PCA, a plain, a sparse and a denoising Autoencoder and a VAE at the same code size on a fixed
train/test split, times each fit against the same fit on the naive `numpy` backend, and writes PNG
figures plus `report.md` into a folder."""
import time
from pathlib import Path

import numpy as np

CODE = 16
EPOCHS = {"full": 150, "quick": 3}


def _data(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    return train_test_split((X / 16.0).astype(np.float32), y, test_size=0.25, random_state=seed)


def _models(epochs, verbose):
    import fastae
    common = dict(hidden=(64,), code=CODE, lr=3e-3, batch_size=64, epochs=epochs, seed=0, verbose=verbose)
    return {
        "PCA": lambda backend: fastae.PCA(CODE),
        "Autoencoder": lambda backend: fastae.Autoencoder(**common, backend=backend),
        "Sparse AE (l1=0.03)": lambda backend: fastae.Autoencoder(**common, l1=0.03, backend=backend),
        "Denoising AE (noise=0.2)": lambda backend: fastae.Autoencoder(**common, noise=0.2, backend=backend),
        "VAE": lambda backend: fastae.VAE(hidden=(64,), latent=CODE, lr=3e-3, batch_size=64, epochs=epochs,
                                          seed=0, verbose=verbose, backend=backend),
    }


def _error(model, X, target=None):
    target = X if target is None else target
    return float(np.mean(np.sum((target - model.reconstruct(X)) ** 2, axis=1)))


def _timed_fit(make, backend, X):
    start = time.perf_counter()
    model = make(backend).fit(X)
    return model, time.perf_counter() - start


def run(out="fastae-demo", quick=False, verbose=True, seed=0):
    """Train, measure, draw; returns the rows of the table (dicts) and writes `out`/report.md."""
    import fastae
    from sklearn.linear_model import LogisticRegression
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    Xtr, Xte, ytr, yte = _data(seed)
    epochs = EPOCHS["quick" if quick else "full"]
    noisy = (Xte + 0.2 * np.random.default_rng(1).standard_normal(Xte.shape)).astype(np.float32)
    rows, fitted = [], {}
    fastae.warmup(dtypes=("float32",))  # compile first: the fit times below are training only
    pca_error = None
    for name, make in _models(epochs, verbose).items():
        model, seconds = _timed_fit(make, "cpu", Xtr)
        _, numpy_seconds = (None, None) if name == "PCA" else _timed_fit(
            lambda b: make(b).set_params(verbose=False), "numpy", Xtr)
        fitted[name] = model
        codes_tr, codes_te = model.transform(Xtr), model.transform(Xte)
        error = _error(model, Xte)
        pca_error = error if name == "PCA" else pca_error
        accuracy = LogisticRegression(max_iter=3000).fit(codes_tr, ytr).score(codes_te, yte)
        rows.append({
            "model": name, "code": CODE, "error": error, "vs_pca": error / pca_error,
            "zeros": float(np.mean(codes_te == 0)),
            "denoise_gain": _error(model, noisy, Xte) / float(np.mean(np.sum((noisy - Xte) ** 2, axis=1))),
            "elbo": float(model.score(Xte)) if name == "VAE" else None,
            "accuracy": accuracy, "fit_s": seconds, "numpy_s": numpy_seconds,
            "speedup": numpy_seconds / seconds if numpy_seconds else None,
        })
    figures = _figures(out, fitted, Xte, yte, noisy)
    table = format_table(rows)
    report = ["# fastae demo: autoencoders on scikit-learn's digits", "",
              f"Held-out set: {len(Xte)} of 1797 digits (8x8, scaled to [0, 1]); code size {CODE}; "
              f"{epochs} epochs; fit times on this machine, cpu backend against the naive numpy backend.", "",
              table, "",
              "- error: mean squared reconstruction error per held-out row; vs PCA: that error over PCA's.",
              "- zeros: fraction of exactly zero code entries; denoise: error of reconstructing noisy rows "
              "(sigma 0.2) against the clean ones, over the error of the noisy rows themselves (< 1 helps).",
              "- accuracy: logistic regression trained on the training codes, scored on the held-out codes.", ""]
    report += [f"![{title}]({path.name})" for title, path in figures]
    (out / "report.md").write_text("\n".join(report) + "\n")
    return rows, table


def format_table(rows):
    def f(value, spec):
        return "-" if value is None else format(value, spec)
    lines = ["| model | code | error | vs PCA | zeros | denoise | ELBO | accuracy | fit (s) | numpy fit (s) | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['code']} | {f(r['error'], '.3f')} | {f(r['vs_pca'], '.2f')} | "
                     f"{f(r['zeros'], '.2f')} | {f(r['denoise_gain'], '.2f')} | {f(r['elbo'], '.2f')} | "
                     f"{f(r['accuracy'], '.3f')} | {f(r['fit_s'], '.2f')} | {f(r['numpy_s'], '.2f')} | "
                     f"{f(r['speedup'], '.1f')}{'' if r['speedup'] is None else 'x'} |")
    return "\n".join(lines)


def _images(ax_row, images, title=None):
    for ax, img in zip(ax_row, images):
        ax.imshow(np.clip(img.reshape(8, 8), 0, 1), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        ax_row[0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)


def _figures(out, fitted, Xte, yte, noisy):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import fastae
    paths = []

    def save(fig, name, title):
        path = out / name
        fig.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(fig)
        paths.append((title, path))

    shown = Xte[:10]
    fig, axes = plt.subplots(len(fitted) + 1, 10, figsize=(10, 1.1 * (len(fitted) + 1)))
    _images(axes[0], shown, "original")
    for row, (name, model) in zip(axes[1:], fitted.items()):
        _images(row, model.reconstruct(shown), name)
    fig.suptitle("Held-out digits and their reconstructions")
    save(fig, "reconstructions.png", "Originals against reconstructions")

    denoiser = fitted["Denoising AE (noise=0.2)"]
    fig, axes = plt.subplots(3, 10, figsize=(10, 3.3))
    _images(axes[0], shown, "clean")
    _images(axes[1], noisy[:10], "noisy")
    _images(axes[2], denoiser.reconstruct(noisy[:10]), "denoised")
    save(fig, "denoising.png", "Noisy against denoised")

    fig, axes = plt.subplots(4, 10, figsize=(10, 4.4))
    samples = fitted["VAE"].sample(40, seed=0)
    for r in range(4):
        _images(axes[r], samples[10 * r:10 * (r + 1)])
    fig.suptitle("VAE samples: decode(z), z ~ N(0, I)")
    save(fig, "vae_samples.png", "VAE samples")

    names = [n for n in fitted if n != "PCA"] + ["PCA"]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4))
    for ax, name in zip(axes, names):
        codes = fitted[name].transform(Xte)
        flat = fastae.PCA(2).fit(codes).transform(codes)  # a 2-D view of the codes
        scatter = ax.scatter(flat[:, 0], flat[:, 1], c=yte, cmap="tab10", s=8)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(scatter, ax=axes, label="digit")
    save(fig, "codes_2d.png", "Codes in 2-D (PCA of the codes), coloured by digit")

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, model in fitted.items():
        if hasattr(model, "history_"):
            loss = np.asarray(model.history_["loss"])
            ax.plot(np.arange(1, len(loss) + 1), loss / loss[0], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training objective / first epoch's")
    ax.legend(fontsize=8)
    save(fig, "training_curves.png", "Training curves")
    return paths
