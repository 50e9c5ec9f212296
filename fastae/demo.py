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


def _models(epochs, verbose, seed):
    import fastae
    common = dict(hidden=(64,), code=CODE, lr=3e-3, batch_size=64, epochs=epochs, seed=seed, verbose=verbose)
    return {
        "PCA": lambda backend: fastae.PCA(CODE),
        "Autoencoder": lambda backend: fastae.Autoencoder(**common, backend=backend),
        "Sparse AE (l1=0.03)": lambda backend: fastae.Autoencoder(**common, l1=0.03, backend=backend),
        "Denoising AE (noise=0.2)": lambda backend: fastae.Autoencoder(**common, noise=0.2, backend=backend),
        "VAE": lambda backend: fastae.VAE(hidden=(64,), latent=CODE, lr=3e-3, batch_size=64, epochs=epochs,
                                          seed=seed, verbose=verbose, backend=backend),
    }


def _error(model, X, target=None):
    target = X if target is None else target
    return float(np.mean(np.sum((target - model.reconstruct(X)) ** 2, axis=1)))


def _timed_fit(make, backend, X, X_val):
    """The fit time; the neural models also score the held-out rows after every epoch (their
    validation curve), on either backend alike."""
    model = make(backend)
    start = time.perf_counter()
    model.fit(X) if type(model).__name__ == "PCA" else model.fit(X, X_val=X_val)
    return model, time.perf_counter() - start


def machine(seed=None):
    """One line: CPU model and cores, Python, NumPy, Numba (and the seed when given)."""
    import os
    import platform
    from importlib.metadata import PackageNotFoundError, version
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    if platform.system() == "Darwin":
        import subprocess
        try:
            cpu = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5).stdout.strip() or cpu
        except (OSError, subprocess.SubprocessError):
            pass

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    line = (f"Machine: {cpu}, {cores} cores available ({platform.system()} {platform.machine()}); "
            f"Python {platform.python_version()}, NumPy {v('numpy')}, Numba {v('numba')}, "
            f"scikit-learn {v('scikit-learn')}, matplotlib {v('matplotlib')}")
    return line + (f"; seed {seed}." if seed is not None else ".")


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
    for name, make in _models(epochs, verbose, seed).items():
        model, seconds = _timed_fit(make, "cpu", Xtr, Xte)
        _, numpy_seconds = (None, None) if name == "PCA" else _timed_fit(
            lambda b: make(b).set_params(verbose=False), "numpy", Xtr, Xte)
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
    figures = _figures(out, fitted, Xte, yte, noisy, seed)
    table = format_table(rows)
    report = ["# fastae demo: autoencoders on scikit-learn's digits", "",
              f"Held-out set: {len(Xte)} of 1797 digits (8x8, scaled to [0, 1]); code size {CODE}; "
              f"{epochs} epochs; seed {seed}; fit times on this machine, cpu backend against the naive numpy "
              "backend (each fit also scores the held-out rows after every epoch, for the validation curves).",
              "", machine(seed), "",
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


def _images(ax_row, images, title=None, labels=None):
    """One row of 8x8 digits; `title` labels the row (its y axis), `labels` the columns (x axes)."""
    for c, (ax, img) in enumerate(zip(ax_row, images)):
        ax.imshow(np.clip(img.reshape(8, 8), 0, 1), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if labels is not None:
            ax.set_xlabel(labels[c], fontsize=8)
    if title:
        ax_row[0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)


def _figures(out, fitted, Xte, yte, noisy, seed=0):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.ticker import FuncFormatter

    import fastae
    paths = []

    def save(fig, name, title):
        path = out / name
        fig.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(fig)
        paths.append((title, path))

    shown = Xte[:10]
    digits = [f"digit {d}" for d in yte[:10]]
    fig, axes = plt.subplots(len(fitted) + 1, 10, figsize=(10, 1.1 * (len(fitted) + 1)))
    _images(axes[0], shown, "original")
    for row, (name, model) in zip(axes[1:], fitted.items()):
        _images(row, model.reconstruct(shown), name)
    for ax, label in zip(axes[-1], digits):
        ax.set_xlabel(label, fontsize=8)
    fig.suptitle("Held-out digits (top row) and their reconstructions by PCA, the Autoencoders and the VAE")
    save(fig, "reconstructions.png", "Originals against each model's reconstructions")

    name = "Denoising AE (noise=0.2)"
    denoiser = fitted[name]
    fig, axes = plt.subplots(3, 10, figsize=(10, 3.3))
    _images(axes[0], shown, "clean")
    _images(axes[1], noisy[:10], "noisy (sigma 0.2)")
    _images(axes[2], denoiser.reconstruct(noisy[:10]), "denoised", labels=digits)
    fig.suptitle(f"{name}: noisy held-out digits and its reconstructions of them")
    save(fig, "denoising.png", f"{name}: noisy against denoised")

    fig, axes = plt.subplots(4, 10, figsize=(10, 4.4))
    samples = fitted["VAE"].sample(40, seed=seed)
    for r in range(4):
        _images(axes[r], samples[10 * r:10 * (r + 1)], f"draws {10 * r + 1}-{10 * r + 10}")
    fig.suptitle(f"VAE samples: decode(z), z ~ N(0, I), seed {seed}")
    save(fig, "vae_samples.png", "VAE samples")

    names = [n for n in fitted if n != "PCA"] + ["PCA"]
    colours = ListedColormap(plt.get_cmap("tab10").colors)
    bands = BoundaryNorm(np.arange(-0.5, 10), colours.N)  # one colour band per digit, ticks at the centres
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), layout="constrained")
    for ax, name in zip(axes, names):
        codes = fitted[name].transform(Xte)
        flat = fastae.PCA(2).fit(codes).transform(codes)  # a 2-D view of the codes
        scatter = ax.scatter(flat[:, 0], flat[:, 1], c=yte, cmap=colours, norm=bands, s=8)
        ax.set_title(f"{name}: {codes.shape[1]}-d codes", fontsize=10)
        ax.set_xlabel("1st principal component of the codes", fontsize=9)
        ax.set_ylabel("2nd principal component", fontsize=9)
        ax.tick_params(labelsize=7)
    bar = fig.colorbar(scatter, ax=axes, ticks=np.arange(10), fraction=0.02, pad=0.01, aspect=30)
    bar.set_label("digit")
    fig.suptitle("Held-out codes of each model in 2-D (PCA of the codes), coloured by digit")
    save(fig, "codes_2d.png", "Codes in 2-D (PCA of the codes), coloured by digit")

    neural = [(n, m) for n, m in fitted.items() if hasattr(m, "history_")]
    fig, (ae_ax, vae_ax) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.6, 1]},
                                        layout="constrained")
    for i, (name, model) in enumerate(neural):
        ax = vae_ax if name == "VAE" else ae_ax
        colour = plt.get_cmap("tab10")(i)
        loss, val = np.asarray(model.history_["loss"]), np.asarray(model.history_.get("val_loss", []))
        ax.plot(np.arange(1, len(loss) + 1), loss, color=colour,
                label=f"{name}, training" + (" (corrupted rows)" if getattr(model, "noise", 0) else ""))
        if len(val):
            ax.plot(np.arange(1, len(val) + 1), val, color=colour, linestyle="--", label=f"{name}, held-out")
    ae_ax.set_title("Autoencoders: squared error (+ l1 * |code|_1 for the sparse one)", fontsize=10)
    ae_ax.set_ylabel("mean per-row objective")
    vae_ax.set_title("VAE: negative ELBO (cross-entropy + KL)", fontsize=10)
    vae_ax.set_ylabel("mean per-row negative ELBO")
    for ax in (ae_ax, vae_ax):
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="both", labelsize=7)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Training curves: training loss (solid) and held-out loss after each epoch (dashed)")
    save(fig, "training_curves.png", "Training curves")
    return paths
