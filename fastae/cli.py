"""Command line: `python -m fastae {demo,fit,encode,decode,reconstruct,sample,export,bench} ...`.

Data files are .npy (read without pickle) or .csv; models are fastae .npz files. Errors print one
line and exit with status 1 (2 for bad usage); --debug shows the traceback."""
import argparse
import inspect
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np

MODELS = {"autoencoder": "Autoencoder", "vae": "VAE", "pca": "PCA"}
ACTIVATIONS = ("relu", "sigmoid", "tanh", "linear")
EXAMPLES = """examples:
  python -m fastae fit data.npy --model autoencoder --hidden 256,64 --code 16 --epochs 20 -o model.npz
  python -m fastae encode model.npz data.csv -o codes.npy
  python -m fastae decode model.npz codes.npy -o rows.csv
  python -m fastae sample vae.npz -n 16 --seed 0 -o samples.npy
  python -m fastae export model.npz -o encoder.onnx --part encode
  python -m fastae demo

`python -m fastae COMMAND --help` describes each command's options."""


class CliError(Exception):
    """A problem to report in one line, without a traceback (exit status 1)."""


class UsageError(CliError):
    """Options that cannot go together (exit status 2, as argparse's own usage errors)."""


def article(name):
    """'an Autoencoder', 'a VAE', 'a PCA'."""
    return ("an " if name[:1] in "AEIOU" else "a ") + name


# ---- files

def _exists(path):
    if not path.exists():
        raise CliError(f"{path}: no such file")
    if not path.is_file():
        raise CliError(f"{path}: is a folder, not a file")


def read_array(name):
    """The 2-D float table in a .npy or .csv file; `name` is the path as the user wrote it."""
    path = Path(name)
    _exists(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        data = read_csv(name)
    elif suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except ValueError as exc:
            if "pickle" in str(exc):
                raise CliError(f"{name}: holds Python objects (pickled data), not a table of numbers") from None
            raise CliError(f"{name}: not a readable .npy file ({exc})") from None
        except (OSError, EOFError) as exc:
            raise CliError(f"{name}: not a readable .npy file ({exc})") from None
        if data.ndim != 2:
            raise CliError(f"{name}: expected a 2-D table (rows, columns), got an array of shape {data.shape}")
        if data.dtype.kind not in "fiub":
            raise CliError(f"{name}: expected numbers, got an array of dtype {data.dtype}")
    else:
        raise CliError(f"{name}: expected a .npy or .csv file")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise CliError(f"{name}: the table is empty (shape {data.shape})")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        row = int(np.argwhere(~np.isfinite(data))[0, 0])
        raise CliError(f"{name}: contains NaN or infinity (row {row + 1})")
    return data


def _row(text):
    """The fields of one CSV line as floats, or None when a field is not a number."""
    try:
        return [float(field) for field in text.split(",")]
    except ValueError:
        return None


def read_csv(name):
    """A comma-separated table. Blank lines and lines starting with '#' are skipped. The first other
    line is a header (and skipped) only when it is not all numbers; after it every line must hold
    as many numbers as the first data line, or the error names the file and line."""
    try:
        text = Path(name).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{name}: cannot read it as text ({exc})") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    lines = [(number, line) for number, line in lines if line and not line.startswith("#")]
    if not lines:
        raise CliError(f"{name}: the file holds no rows")
    if _row(lines[0][1]) is None:
        lines = lines[1:]  # a header
        if not lines:
            raise CliError(f"{name}: a header line and no rows of data")
    width = len(lines[0][1].split(","))
    data = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = np.loadtxt([line for _, line in lines], delimiter=",", ndmin=2, comments=None)
    except ValueError:
        pass
    if data is None or data.shape != (len(lines), width):  # find the line at fault, or parse here
        rows = []
        for number, line in lines:
            row = _row(line)
            if row is None:
                bad = next(f for f in line.split(",") if _row(f) is None)
                raise CliError(f"{name}, line {number}: {bad.strip()!r} is not a number")
            if len(row) != width:
                raise CliError(f"{name}, line {number}: {len(row)} fields, but the first row of data "
                               f"(line {lines[0][0]}) has {width}")
            rows.append(row)
        data = np.array(rows, dtype=np.float64)
    return data


def write_array(name, data):
    """Write `data` to exactly `name` (np.save would add .npy to a name like codes.NPY)."""
    path = Path(name)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise CliError(f"{name}: the output must end in .npy or .csv")
    data = np.asarray(data)
    with open(path, "wb") as f:
        if suffix == ".csv":
            np.savetxt(f, data, delimiter=",", fmt="%.9g" if data.dtype == np.float32 else "%.17g")
        else:
            np.save(f, data, allow_pickle=False)


def _check_output_folder(name):
    folder = Path(name).parent
    if not folder.is_dir():
        raise CliError(f"{name}: the folder {str(folder)!r} does not exist")


def load_model(name):
    import fastae
    path = Path(name)
    _exists(path)
    if not zipfile.is_zipfile(path):
        raise CliError(f"{name}: not a fastae model file (models are the .npz files written by "
                       "`python -m fastae fit` or model.save)")
    try:
        return fastae.load(path)
    except (ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        found = re.search(r"is not a \w+ fastae model file[:( ]+(.*?)\)?$", reason)
        reason = found.group(1) if found else reason.replace(repr(str(path)), "the file")
        raise CliError(f"{name}: not a usable fastae model file: {reason}") from None


def _n_features(model):
    return int(model.n_features_in_)


def _code_width(model):
    """How many columns the model's codes have (read from the model: one tiny transform)."""
    return int(model.transform(np.zeros((1, _n_features(model)))).shape[1])


def _check_rows(model, name, data):
    name_of = type(model).__name__
    if data.shape[1] != _n_features(model):
        raise CliError(f"{name} has {data.shape[1]} columns but this {name_of} was fitted on data with "
                       f"{_n_features(model)} columns")


def _in_user_words(exc, names):
    """A model's ValueError about its argument 'X' (or a parameter) in the command line's words."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    first, _, rest = message.partition(" ")
    if first in names:
        message = f"{names[first]} {rest}"
    flags = {param: flags[0] for flags, param, *_ in FIT_OPTIONS}

    def option(match):  # likelihood='bernoulli' -> --likelihood bernoulli
        name, value = match.group(1), match.group(2)
        return f"{flags[name]} {value}" if name in flags else match.group(0)
    message = re.sub(r"\b([a-z_0-9]+)='([^']*)'", option, message)
    return message.replace("each width in hidden", "each width in --hidden")


# ---- fit: options, which models they apply to, and their defaults

def _defaults(model):
    import fastae
    cls = getattr(fastae, MODELS[model])
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self"}


def _show(value):
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "random" if value is None else str(value)


NEURAL, AE, VAE, ALL = ("autoencoder", "vae"), ("autoencoder",), ("vae",), ("autoencoder", "vae", "pca")

# (flags, parameter, models, argparse keywords, help). Defaults are the constructors' own.
FIT_OPTIONS = [
    (("--hidden",), "hidden", NEURAL, dict(type=lambda t: _widths(t), metavar="W1,W2,..."),
     "hidden layer widths of the encoder (the decoder mirrors them), e.g. 256,64"),
    (("--code",), "code", AE, dict(type=int, metavar="N"), "code size of the autoencoder"),
    (("--latent",), "latent", VAE, dict(type=int, metavar="N"), "latent size of the VAE"),
    (("--components",), "n_components", ("pca",), dict(type=int, metavar="N"),
     "number of principal components"),
    (("--activation",), "activation", NEURAL, dict(choices=ACTIVATIONS), "activation of the hidden layers"),
    (("--code-activation",), "code_activation", AE, dict(choices=ACTIVATIONS), "activation of the code layer"),
    (("--output-activation",), "output_activation", AE, dict(choices=ACTIVATIONS),
     "activation of the output layer; --loss bce makes it sigmoid unless given"),
    (("--loss",), "loss", AE, dict(choices=("mse", "bce")),
     "reconstruction loss: squared error, or binary cross-entropy for data in [0, 1]"),
    (("--l1",), "l1", AE, dict(type=float, metavar="PENALTY"),
     "L1 penalty on the code; > 0 makes a sparse autoencoder, whose codes are exactly sparse"),
    (("--noise",), "noise", AE, dict(type=float, metavar="LEVEL"),
     "corruption of the training rows; > 0 makes a denoising autoencoder: the standard deviation of "
     "the added noise for gaussian, the fraction of entries zeroed for mask"),
    (("--noise-type",), "noise_type", AE, dict(choices=("gaussian", "mask")), "kind of corruption"),
    (("--likelihood",), "likelihood", VAE, dict(choices=("bernoulli", "gaussian")),
     "p(x|z): bernoulli for data in [0, 1], cross-entropy; gaussian, squared error"),
    (("--beta",), "beta", VAE, dict(type=float), "weight of the KL term; != 1 makes a beta-VAE"),
    (("--n-samples",), "n_samples", VAE, dict(type=int, metavar="S"), "latent draws per row and step"),
    (("--optimizer",), "optimizer", NEURAL, dict(choices=("adam", "sgd")), "optimizer"),
    (("--lr",), "lr", NEURAL, dict(type=float), "learning rate"),
    (("--momentum",), "momentum", NEURAL, dict(type=float), "momentum of --optimizer sgd"),
    (("--epochs",), "epochs", NEURAL, dict(type=int, metavar="N"), "passes over the data"),
    (("--batch-size",), "batch_size", NEURAL, dict(type=int, metavar="N"), "rows per training step"),
    (("--early-stopping",), "early_stopping", NEURAL, dict(action="store_true"),
     "stop when the validation loss stops improving and keep the best epoch's weights; the "
     "validation rows are --validation, or else --validation-fraction of the data"),
    (("--validation-fraction",), "validation_fraction", NEURAL, dict(type=float, metavar="F"),
     "fraction of the rows held out by --early-stopping"),
    (("--n-iter-no-change",), "n_iter_no_change", NEURAL, dict(type=int, metavar="N"),
     "epochs without improvement before --early-stopping stops"),
    (("--seed",), "seed", NEURAL, dict(type=int), "random seed; the same seed gives the same model"),
    (("--backend",), "backend", NEURAL, dict(choices=("auto", "cpu", "numpy", "cuda")),
     "where to compute: auto is cuda when a GPU is usable, else cpu; cpu runs Numba kernels; "
     "numpy the naive reference"),
    (("--dtype",), "dtype", ALL, dict(choices=("float32", "float64")), "precision of the model"),
]


def _widths(text):
    try:
        parts = text.split(",")
        if text.strip() and not all(v.strip() for v in parts):
            raise ValueError("an empty width")
        return tuple(int(v) for v in parts if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths like 256,64, got {text!r}") from None


def _fit_help(param, models, help):
    found = {}
    for model in models:
        default = _defaults(model).get(param, inspect.Parameter.empty)
        if default is not inspect.Parameter.empty:
            found[model] = default
    if len(set(map(repr, found.values()))) == 1 and len(found) == len(models):
        shown = f"default: {_show(next(iter(found.values())))}"
    elif found:
        shown = "default: " + ", ".join(f"{_show(v)} for {m}" for m, v in found.items())
    else:
        shown = ""
    applies = "" if models == ALL else "; " + "/".join(models) + " only"
    suffix = f" ({shown or 'required'}{applies})"
    return help + suffix


_CODE_OPTION = {"autoencoder": "--code", "vae": "--latent", "pca": "--components"}


def _fit_params(args):
    """Constructor arguments from the options the user gave; an option that does not apply to the
    chosen model is an error naming both."""
    name = MODELS[args.model]
    given = {}
    for flags, param, models, _, _ in FIT_OPTIONS:
        value = getattr(args, param)
        if value is None:
            continue
        if args.model not in models:
            hint = f": use {_CODE_OPTION[args.model]}" if flags[0] in _CODE_OPTION.values() else ""
            raise UsageError(f"{flags[0]} does not apply to {article(name)} (--model {args.model}){hint}")
        given[param] = value
    if args.model == "pca":
        if "n_components" not in given:
            raise UsageError("--model pca needs --components N")
        return given
    if given.get("loss") == "bce" and "output_activation" not in given:
        given["output_activation"] = "sigmoid"
    given["verbose"] = sys.stderr.isatty() and not args.quiet
    return given


def cmd_fit(args):
    import fastae
    params = _fit_params(args)
    if args.validation is not None and args.model == "pca":
        raise UsageError(f"--validation does not apply to {article('PCA')} (--model pca)")
    if params.get("backend") == "cuda":
        from .kernels import backend
        if not backend.cuda_usable():
            raise CliError(f"--backend cuda: no usable GPU here ({backend.gpu_status()[1]}); "
                           "use --backend auto or cpu")
    _check_output_folder(args.output)
    X = read_array(args.data)
    fit_args = {}
    if args.validation is not None:
        X_val = read_array(args.validation)
        if X_val.shape[1] != X.shape[1]:
            raise CliError(f"{args.validation} has {X_val.shape[1]} columns but {args.data} has {X.shape[1]}")
        fit_args["X_val"] = X_val
    name = MODELS[args.model]
    k = params.get("n_components")
    if isinstance(k, int) and k > min(X.shape):
        raise CliError(f"--components {k}: at most {min(X.shape)} with {args.data} ({X.shape[0]} rows x "
                       f"{X.shape[1]} columns)")
    words = {"X": args.data}
    if args.validation is not None:
        words["X_val"] = args.validation
    words.update({param: flags[0] for flags, param, *_ in FIT_OPTIONS})
    try:
        model = getattr(fastae, name)(**params)
        checked = getattr(model, "_checked_params", None)
        if checked is not None:  # a bad option value is bad usage (status 2), not a problem of the data
            checked()
    except (ValueError, TypeError) as exc:
        raise UsageError(_in_user_words(exc, words)) from exc
    try:
        model.fit(X, **fit_args)
    except (ValueError, TypeError) as exc:
        raise CliError(_in_user_words(exc, words)) from exc
    model.save(args.output)
    say(args, f"fitted {name} on {X.shape[0]} rows x {X.shape[1]} features: {_summary(model)}, "
              f"saved to {args.output}")


def _summary(model):
    if type(model).__name__ == "PCA":
        share = float(np.sum(model.explained_variance_ratio_))
        return f"{model.components_.shape[0]} components, {100 * share:.1f}% of the variance"
    history = getattr(model, "history_", None) or {}
    loss, val = list(history.get("loss") or []), list(history.get("val_loss") or [])
    epochs = int(getattr(model, "n_iter_", len(loss)))
    text = f"{epochs} epoch{'s' * (epochs != 1)}"
    if model.early_stopping and epochs < model.epochs:
        text += f" (early stopping, of {model.epochs})"
    if loss:
        text += f", final loss {loss[-1]:.4g}"
        if val:
            text += f" (validation {val[-1]:.4g})"
    return text


def say(args, text):
    if not args.quiet:
        print(text)


# ---- inference commands

def _infer(args, method, field):
    model = load_model(args.model)
    data = read_array(getattr(args, field))
    _check_output_folder(args.output)
    name = type(model).__name__
    if field == "codes":
        width = _code_width(model)
        if data.shape[1] != width:
            raise CliError(f"{args.codes} has {data.shape[1]} columns but this {name}'s codes have {width}")
    else:
        _check_rows(model, args.data, data)
    try:
        result = getattr(model, method)(data)
    except (ValueError, TypeError) as exc:
        raise CliError(_in_user_words(exc, {"X": getattr(args, field), "C": args.__dict__.get("codes"),
                                            "Z": args.__dict__.get("codes")})) from exc
    write_array(args.output, result)
    say(args, f"wrote {result.shape[0]} rows x {result.shape[1]} columns to {args.output}")


def cmd_encode(args):
    _infer(args, "transform", "data")


def cmd_decode(args):
    _infer(args, "inverse_transform", "codes")


def cmd_reconstruct(args):
    _infer(args, "reconstruct", "data")


def cmd_sample(args):
    model = load_model(args.model)
    if not hasattr(model, "sample"):
        raise CliError(f"{args.model}: only a VAE can sample (this is {article(type(model).__name__)})")
    if args.n < 1:
        raise CliError(f"-n must be at least 1, got {args.n}")
    _check_output_folder(args.output)
    result = model.sample(args.n, seed=args.seed)
    write_array(args.output, result)
    say(args, f"wrote {result.shape[0]} samples x {result.shape[1]} columns to {args.output}")


def cmd_export(args):
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise CliError("export needs the onnx package: pip install 'fastae[onnx]'") from None
    model = load_model(args.model)
    _check_output_folder(args.output)
    model.to_onnx(args.output, part=args.part)
    name = type(model).__name__
    outputs = "mu, logvar" if (name == "VAE" and args.part == "encode") else "output"
    say(args, f"wrote the {args.part} part of {article(name)} to {args.output} (ONNX opset 17; input: input, "
              f"outputs: {outputs})")


def cmd_demo(args):
    from . import demo
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise CliError(f"the demo needs scikit-learn and matplotlib: pip install 'fastae[demo]' ({exc})") from None
    _, table = demo.run(args.out, quick=args.quick, verbose=sys.stderr.isatty() and not args.quiet,
                        seed=args.seed)
    say(args, table)
    say(args, f"\nfigures and report.md written to {args.out}/")


def cmd_bench(args):
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench").is_dir():
        raise CliError("the benchmark suite lives in the source checkout (bench/); run this from a clone")
    command = [sys.executable, "-m", "pytest", "--benchmark", "-q", "-p", "no:cacheprovider"]
    if args.select:
        command += ["-k", args.select]
    code = subprocess.call(command, cwd=root, stdout=subprocess.DEVNULL if args.quiet else None)
    table = root / "bench" / "latest.md"
    if code == 0 and table.exists():
        say(args, table.read_text())
    if code:
        raise CliError(f"the benchmark suite failed (pytest exit status {code})")


# ---- the parser

def _common(quiet_help="print nothing but errors"):
    """--quiet and --debug on every command (SUPPRESS: a sub-command's default must not overwrite
    the same option given before the command)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help=quiet_help)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the traceback of an error")
    return p


def parser():
    from . import __version__
    p = argparse.ArgumentParser(prog="python -m fastae", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Autoencoders, VAEs and PCA with compiled kernels: train on a "
                                            ".npy/.csv table, encode, decode, reconstruct, sample.")
    p.add_argument("--version", action="version", version=f"fastae {__version__}")
    p.add_argument("--quiet", "-q", action="store_true", default=False, help="print nothing but errors")
    p.add_argument("--debug", action="store_true", default=False, help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()

    demo = sub.add_parser("demo", parents=[_common("no table, no progress bars")],
                          help="train every model on scikit-learn's digits; a table, figures and report.md",
                          description="Train PCA, a plain, a sparse and a denoising Autoencoder and a VAE on "
                                      "scikit-learn's digits; print a table and write figures and report.md.")
    demo.add_argument("--out", default="fastae-demo", metavar="FOLDER",
                      help="folder for the figures and report.md (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="a few epochs only, a smoke test (default: off)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the split and the models (default: %(default)s)")
    demo.set_defaults(run=cmd_demo)

    fit = sub.add_parser("fit", parents=[common], help="train a model on a .npy/.csv file and save it",
                         description="Train a model on the rows of a .npy or .csv file and save it to a .npz "
                                     "file. Options marked 'autoencoder only' etc. are errors with other "
                                     "models. Progress bars show when stderr is a terminal.")
    fit.add_argument("data", help="training data: a .npy or .csv file, rows x features")
    fit.add_argument("--model", required=True, choices=list(MODELS), help="which model to train")
    fit.add_argument("-o", "--output", required=True, metavar="MODEL.npz", help="where to write the model")
    fit.add_argument("--validation", metavar="FILE", default=None,
                     help="validation rows (.npy or .csv): their loss is reported every epoch and used "
                          "by --early-stopping (autoencoder/vae only)")
    for flags, param, models, kwargs, help in FIT_OPTIONS:
        fit.add_argument(*flags, dest=param, default=None, help=_fit_help(param, models, help), **kwargs)
    fit.set_defaults(run=cmd_fit)

    for name, helptext, field, fieldhelp in [
            ("encode", "the codes of the rows of a data file", "data", "data: .npy or .csv, rows x features"),
            ("reconstruct", "reconstructions of the rows of a data file", "data",
             "data: .npy or .csv, rows x features"),
            ("decode", "rows decoded from a file of codes", "codes", "codes: .npy or .csv, rows x code size")]:
        cmd = sub.add_parser(name, parents=[common], help=helptext, description=f"Write {helptext}.")
        cmd.add_argument("model", help="a model written by fit (.npz)")
        cmd.add_argument(field, help=fieldhelp)
        cmd.add_argument("-o", "--output", required=True, metavar="FILE", help="output: .npy or .csv")
        cmd.set_defaults(run={"encode": cmd_encode, "reconstruct": cmd_reconstruct, "decode": cmd_decode}[name])

    sample = sub.add_parser("sample", parents=[common], help="draw new rows from a VAE",
                            description="Draw new rows from a VAE: decode(z) with z ~ N(0, I).")
    sample.add_argument("model", help="a VAE written by fit (.npz)")
    sample.add_argument("-n", type=int, default=10, help="how many rows (default: %(default)s)")
    sample.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    sample.add_argument("-o", "--output", required=True, metavar="FILE", help="output: .npy or .csv")
    sample.set_defaults(run=cmd_sample)

    export = sub.add_parser("export", parents=[common], help="write a model (or its encoder/decoder) as ONNX",
                            description="Write one part of a fitted model as an ONNX file (needs the onnx "
                                        "package: pip install 'fastae[onnx]'): input 'input', output "
                                        "'output' ('mu' and 'logvar' for a VAE's encoder), a dynamic batch "
                                        "dimension, the model's dtype, opset 17.")
    export.add_argument("model", help="a model written by fit (.npz)")
    export.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="where to write the ONNX file")
    export.add_argument("--part", choices=("encode", "decode", "reconstruct"), default="encode",
                        help="encode: the codes (a VAE: mu and logvar); decode: rows from codes; "
                             "reconstruct: decode(encode(x)), a VAE decoding mu (default: %(default)s)")
    export.set_defaults(run=cmd_export)

    bench = sub.add_parser("bench", parents=[_common("no pytest output, no table")],
                           help="run the benchmark suite and print its table (source checkout)",
                           description="Run the benchmark suite in bench/ (python -m pytest --benchmark) "
                                       "and print its table of medians and speed-ups.")
    bench.add_argument("-k", "--select", metavar="EXPR", default=None,
                       help="only the benchmarks matching EXPR (pytest -k), e.g. l1_prox (default: all)")
    bench.set_defaults(run=cmd_bench)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"fastae {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        known = (CliError, ValueError, TypeError, FloatingPointError, OSError, RuntimeError, ImportError,
                 MemoryError)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, OSError) and getattr(exc, "filename", None) and exc.strerror:
            message = f"{exc.filename}: {exc.strerror}"
        if not isinstance(exc, known):
            message = f"{type(exc).__name__}: {message} (--debug shows the traceback)"
        print(f"fastae {args.command}: error: {message}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    return 0
