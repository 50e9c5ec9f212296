"""Command line: `python -m fastae {demo,fit,encode,decode,reconstruct,sample,bench} ...`.

Data files are .npy (read without pickle) or .csv; models are fastae .npz files. Errors print one
line and exit with status 1 (2 for bad usage); --debug shows the traceback."""
import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np


class CliError(Exception):
    """A problem to report in one line, without a traceback."""


def read_array(path):
    path = Path(path)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".npy":
            data = np.load(path, allow_pickle=False)
        elif path.suffix.lower() == ".csv":
            try:
                data = np.loadtxt(path, delimiter=",", ndmin=2)
            except ValueError:
                data = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)  # a header row
        else:
            raise CliError(f"{path}: expected a .npy or .csv file")
    except CliError:
        raise
    except Exception as exc:
        raise CliError(f"{path}: cannot read it ({type(exc).__name__}: {exc})") from None
    if data.ndim != 2:
        raise CliError(f"{path}: expected a 2-D table (rows, features), got shape {data.shape}")
    return data


def write_array(path, data):
    path = Path(path)
    if path.suffix.lower() == ".csv":
        np.savetxt(path, data, delimiter=",", fmt="%.9g")
    elif path.suffix.lower() == ".npy":
        np.save(path, data, allow_pickle=False)
    else:
        raise CliError(f"{path}: the output must end in .npy or .csv")


def load_model(path):
    import fastae
    if not Path(path).is_file():
        raise CliError(f"{path}: no such file")
    try:
        return fastae.load(path)
    except ValueError as exc:
        raise CliError(f"{path}: not a usable fastae model ({exc})") from None


def _widths(text):
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths like 256,64, got {text!r}")


def cmd_fit(args):
    import fastae
    X = read_array(args.data)
    common = dict(seed=args.seed, backend=args.backend, dtype=args.dtype)
    if args.model == "pca":
        model = fastae.PCA(args.code, dtype=args.dtype)
    else:
        training = dict(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                        verbose=args.verbose, early_stopping=args.early_stopping, **common)
        hidden = args.hidden if args.hidden is not None else (256,)
        if args.model == "autoencoder":
            model = fastae.Autoencoder(hidden=hidden, code=args.code, activation=args.activation,
                                       code_activation=args.code_activation, output_activation=args.output_activation,
                                       loss=args.loss, l1=args.l1, noise=args.noise, noise_type=args.noise_type, **training)
        else:
            model = fastae.VAE(hidden=hidden, latent=args.code, activation=args.activation,
                               likelihood=args.likelihood, beta=args.beta, n_samples=args.n_samples, **training)
    model.fit(X)
    model.save(args.output)
    print(f"fitted {type(model).__name__} on {X.shape[0]} rows x {X.shape[1]} features -> {args.output}")


def cmd_encode(args):
    model = load_model(args.model)
    write_array(args.output, model.transform(read_array(args.data)))


def cmd_decode(args):
    model = load_model(args.model)
    if not hasattr(model, "decode") and not hasattr(model, "inverse_transform"):
        raise CliError(f"{args.model}: this model cannot decode")
    write_array(args.output, model.inverse_transform(read_array(args.codes)))


def cmd_reconstruct(args):
    model = load_model(args.model)
    write_array(args.output, model.reconstruct(read_array(args.data)))


def cmd_sample(args):
    model = load_model(args.model)
    if not hasattr(model, "sample"):
        raise CliError(f"{args.model}: only a VAE can sample (this is a {type(model).__name__})")
    write_array(args.output, model.sample(args.n, seed=args.seed))


def cmd_demo(args):
    from . import demo
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise CliError(f"the demo needs scikit-learn and matplotlib: pip install 'fastae[demo]' ({exc})") from None
    _, table = demo.run(args.out, quick=args.quick, verbose=not args.quiet)
    print(table)
    print(f"\nfigures and report.md written to {args.out}/")


def cmd_bench(args):
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench").is_dir():
        raise CliError("the benchmark suite lives in the source checkout (bench/); run this from a clone")
    command = [sys.executable, "-m", "pytest", "--benchmark", "-q", "-p", "no:cacheprovider"]
    if args.select:
        command += ["-k", args.select]
    code = subprocess.call(command, cwd=root)
    table = root / "bench" / "latest.md"
    if code == 0 and table.exists():
        print(table.read_text())
    if code:
        raise CliError(f"the benchmark suite failed (pytest exit status {code})")


def parser():
    p = argparse.ArgumentParser(prog="python -m fastae", description="Autoencoders with compiled kernels.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train every model on scikit-learn's digits; table and figures")
    demo.add_argument("--out", default="fastae-demo", help="folder for figures and report.md (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="a few epochs only (a smoke test)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=cmd_demo)

    fit = sub.add_parser("fit", help="train a model on a .npy/.csv file and save it")
    fit.add_argument("data", help="training data: .npy or .csv, rows x features")
    fit.add_argument("--model", required=True, choices=["autoencoder", "vae", "pca"])
    fit.add_argument("-o", "--output", required=True, help="where to write the model (.npz)")
    fit.add_argument("--hidden", type=_widths, help="hidden widths, e.g. 256,64 (default 256)")
    fit.add_argument("--code", type=int, default=32, help="code size (latent size for vae, components for pca)")
    fit.add_argument("--activation", default="relu")
    fit.add_argument("--code-activation", default="relu")
    fit.add_argument("--output-activation", default="linear")
    fit.add_argument("--loss", default="mse", choices=["mse", "bce"])
    fit.add_argument("--l1", type=float, default=0.0, help="sparse code penalty")
    fit.add_argument("--noise", type=float, default=0.0, help="denoising corruption level")
    fit.add_argument("--noise-type", default="gaussian", choices=["gaussian", "mask"])
    fit.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "gaussian"])
    fit.add_argument("--beta", type=float, default=1.0)
    fit.add_argument("--n-samples", type=int, default=1)
    fit.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    fit.add_argument("--lr", type=float, default=1e-3)
    fit.add_argument("--epochs", type=int, default=10)
    fit.add_argument("--batch-size", type=int, default=128)
    fit.add_argument("--early-stopping", action="store_true")
    fit.add_argument("--seed", type=int, default=None)
    fit.add_argument("--backend", default="auto", choices=["auto", "cpu", "numpy", "cuda"])
    fit.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    fit.add_argument("--verbose", action="store_true", help="progress bar")
    fit.set_defaults(run=cmd_fit)

    for name, helptext, field in [("encode", "codes of the rows of a data file", "data"),
                                  ("reconstruct", "reconstructions of the rows of a data file", "data"),
                                  ("decode", "rows decoded from a file of codes", "codes")]:
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("model", help="a model saved by fit (.npz)")
        cmd.add_argument(field, help=".npy or .csv")
        cmd.add_argument("-o", "--output", required=True, help="output .npy or .csv")
        cmd.set_defaults(run={"encode": cmd_encode, "reconstruct": cmd_reconstruct, "decode": cmd_decode}[name])

    sample = sub.add_parser("sample", help="draw new rows from a VAE")
    sample.add_argument("model", help="a VAE saved by fit (.npz)")
    sample.add_argument("-n", type=int, default=10, help="how many rows (default: %(default)s)")
    sample.add_argument("--seed", type=int, default=None)
    sample.add_argument("-o", "--output", required=True, help="output .npy or .csv")
    sample.set_defaults(run=cmd_sample)

    bench = sub.add_parser("bench", help="run the benchmark suite and print its table (source checkout)")
    bench.add_argument("-k", "--select", metavar="EXPR", help="only the benchmarks matching EXPR (pytest -k), "
                       "e.g. l1_prox")
    bench.set_defaults(run=cmd_bench)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except (CliError, ValueError, TypeError, FloatingPointError, OSError) as exc:
        if args.debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"fastae {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0
