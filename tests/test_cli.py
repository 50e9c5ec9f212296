"""The command line, run as a user would: subprocesses, real files, error paths; and the demo.

Models are fitted once per module (fixture `fitted`) and reused by every test that needs one."""
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

import fastae as lib
from fastae import cli

COMMANDS = ["demo", "fit", "encode", "decode", "reconstruct", "sample", "export", "bench"]


def fastae(*args, cwd=None, **streams):
    streams = streams or dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "fastae", *map(str, args)], text=True, cwd=cwd, timeout=600,
                          **streams)


def one_error_line(result, message, status=1):
    """Exit `status`, one line on stderr holding `message`, no traceback, nothing on stdout."""
    assert result.returncode == status, result.stderr
    assert message in result.stderr, (message, result.stderr)
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    X = np.random.default_rng(0).uniform(size=(60, 8))
    np.save(root / "data.npy", X)
    np.savetxt(root / "data.csv", X, delimiter=",", header="a,b,c,d,e,f,g,h", comments="")
    np.save(root / "val.npy", X[:12])
    np.save(root / "codes64.npy", np.zeros((3, 64)))
    return root, X


@pytest.fixture(scope="module")
def fitted(files):
    """An Autoencoder with validation rows, a VAE and a PCA, fitted through the CLI once."""
    root, _ = files
    runs = {
        "ae": fastae("fit", root / "data.npy", "--model", "autoencoder", "--hidden", "6", "--code", "3",
                     "--epochs", "3", "--seed", "0", "--validation", root / "val.npy", "-o", root / "ae.npz"),
        "vae": fastae("fit", root / "data.npy", "--model", "vae", "--hidden", "6", "--latent", "2",
                      "--epochs", "2", "--seed", "0", "-o", root / "vae.npz"),
        "pca": fastae("fit", root / "data.csv", "--model", "pca", "--components", "2", "-o", root / "pca.npz"),
    }
    for name, result in runs.items():
        assert result.returncode == 0, (name, result.stderr)
    return runs


def test_version():
    result = fastae("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"fastae {lib.__version__}"


def test_help_on_every_command():
    result = fastae("--help")
    assert result.returncode == 0 and all(c in result.stdout for c in COMMANDS)
    for command in COMMANDS:
        result = fastae(command, "--help")
        assert result.returncode == 0, command
        assert "usage: python -m fastae " + command in result.stdout
        assert "--quiet" in result.stdout


def test_fit_help_shows_every_option_with_its_default_and_choices():
    text = " ".join(fastae("fit", "--help").stdout.split())  # argparse wraps lines
    for flags, *_ in cli.FIT_OPTIONS:
        assert flags[0] in text, flags
    for flag, default in [("--lr", "0.001"), ("--epochs", "10"), ("--batch-size", "128"), ("--beta", "1.0"),
                          ("--l1", "0.0"), ("--noise", "0.0"), ("--code", "32"), ("--latent", "20"),
                          ("--seed", "random"), ("--dtype", "float32"), ("--backend", "auto")]:
        assert re.search(re.escape(flag) + r" [^(]*\(default: " + re.escape(default), text), flag
    assert "256 for autoencoder, 400 for vae" in text
    for choices in ["{relu,sigmoid,tanh,linear}", "{adam,sgd}", "{mse,bce}", "{bernoulli,gaussian}",
                    "{gaussian,mask}", "{float32,float64}", "{auto,cpu,numpy,cuda}", "{autoencoder,vae,pca}"]:
        assert choices in text, choices


def test_fit_prints_a_summary_with_the_final_losses(files, fitted):
    root, _ = files
    ae = lib.load(root / "ae.npz")
    loss, val = ae.history_["loss"][-1], ae.history_["val_loss"][-1]
    assert fitted["ae"].stdout.strip() == (
        f"fitted Autoencoder on 60 rows x 8 features: 3 epochs, final loss {loss:.4g} (validation {val:.4g}), "
        f"saved to {root / 'ae.npz'}")
    vae = lib.load(root / "vae.npz")
    assert fitted["vae"].stdout.strip() == (
        f"fitted VAE on 60 rows x 8 features: 2 epochs, final loss {vae.history_['loss'][-1]:.4g}, "
        f"saved to {root / 'vae.npz'}")
    assert fitted["pca"].stdout.startswith("fitted PCA on 60 rows x 8 features: 2 components, ")
    for result in fitted.values():
        assert result.stderr == ""  # stderr is not a terminal: no progress bar


def test_encode_decode_reconstruct_sample(files, fitted):
    root, X = files
    assert fastae("encode", root / "ae.npz", root / "data.csv", "-o", root / "codes.npy").returncode == 0
    codes = np.load(root / "codes.npy")
    model = lib.load(root / "ae.npz")
    np.testing.assert_allclose(codes, model.transform(X), rtol=1e-6)  # the csv header was skipped
    assert fastae("decode", root / "ae.npz", root / "codes.npy", "-o", root / "decoded.csv").returncode == 0
    np.testing.assert_allclose(np.loadtxt(root / "decoded.csv", delimiter=","), model.decode(codes), rtol=1e-5, atol=1e-6)
    assert fastae("reconstruct", root / "ae.npz", root / "data.npy", "-o", root / "rec.npy").returncode == 0
    np.testing.assert_allclose(np.load(root / "rec.npy"), model.reconstruct(X), rtol=1e-6)
    result = fastae("sample", root / "vae.npz", "-n", "5", "--seed", "1", "-o", root / "s.npy")
    assert result.returncode == 0 and "wrote 5 samples x 8 columns" in result.stdout
    assert np.load(root / "s.npy").shape == (5, 8)
    assert fastae("encode", root / "pca.npz", root / "data.npy", "-o", root / "p.npy").returncode == 0
    assert np.load(root / "p.npy").shape == (60, 2)


def test_output_keeps_the_name_as_given(files, fitted):
    root, X = files
    for name in ["codes.NPY", "codes.Csv"]:
        assert fastae("encode", root / "pca.npz", root / "data.npy", "-o", root / name).returncode == 0
        assert (root / name).is_file() and not list(root.glob(name + ".*"))
    np.testing.assert_allclose(np.load(root / "codes.NPY"), lib.load(root / "pca.npz").transform(X), rtol=1e-6)


def test_quiet_prints_nothing(files, fitted):
    root, _ = files
    for args in [("fit", root / "data.npy", "--model", "pca", "--components", "2", "-o", root / "q.npz", "--quiet"),
                 ("--quiet", "encode", root / "q.npz", root / "data.npy", "-o", root / "q.npy"),
                 ("encode", root / "q.npz", root / "data.npy", "-o", root / "q.npy", "-q")]:
        result = fastae(*args)
        assert result.returncode == 0 and result.stdout == "" and result.stderr == "", args
    assert (root / "q.npy").is_file()


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_progress_bar_only_on_a_terminal(files):
    root, _ = files
    base = ("fit", root / "data.npy", "--model", "autoencoder", "--hidden", "4", "--code", "2",
            "--epochs", "2", "-o", root / "tty.npz")
    outputs = []
    for extra in [(), ("--quiet",)]:
        leader, follower = os.openpty()
        import fcntl
        import termios
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a width for tqdm
        try:
            result = fastae(*base, *extra, stderr=follower, stdout=subprocess.PIPE)
            os.close(follower)
            seen = b""
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
        finally:
            os.close(leader)
        assert result.returncode == 0
        outputs.append(seen.decode(errors="replace"))
    assert "epoch" in outputs[0] and "Autoencoder" in outputs[0]  # tqdm's bar on the terminal
    assert outputs[1] == ""


def test_options_that_do_not_apply_to_the_model_are_errors(files):
    root, _ = files
    cases = [
        ("pca", ("--l1", "0.1"), "--l1 does not apply to a PCA"),
        ("vae", ("--noise", "0.2"), "--noise does not apply to a VAE"),
        ("autoencoder", ("--beta", "2"), "--beta does not apply to an Autoencoder"),
        ("autoencoder", ("--latent", "4"), "--latent does not apply to an Autoencoder (--model autoencoder): "
                                           "use --code"),
        ("vae", ("--code", "4"), "--code does not apply to a VAE (--model vae): use --latent"),
        ("pca", ("--components", "2", "--hidden", "8"), "--hidden does not apply to a PCA"),
        ("pca", ("--components", "2", "--epochs", "3"), "--epochs does not apply to a PCA"),
        ("pca", ("--components", "2", "--early-stopping"), "--early-stopping does not apply to a PCA"),
        ("pca", ("--components", "2", "--validation", root / "val.npy"), "--validation does not apply to a PCA"),
        ("pca", (), "--model pca needs --components"),
        ("pca", ("--components", "9"), "--components 9: at most 8"),
    ]
    for model, extra, message in cases:
        usage = "does not apply" in message or "needs" in message  # options that cannot go together
        one_error_line(fastae("fit", root / "data.npy", "--model", model, *extra, "-o", root / "x.npz"), message,
                       status=2 if usage else 1)
    assert not (root / "x.npz").exists()


def test_a_bad_option_value_is_bad_usage(files):
    root, _ = files
    for extra, message in ((("--epochs", "0"), "--epochs must be an int >= 1, got 0"),
                           (("--lr", "-1"), "--lr must be > 0")):
        one_error_line(fastae("fit", root / "data.npy", "--model", "autoencoder", *extra, "-o", root / "x.npz"),
                       message, status=2)
    assert not (root / "x.npz").exists()


def test_csv_rows(tmp_path):
    # the reported bug: a short second row was taken as a failed header and the first row dropped
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n")
    one_error_line(fastae("fit", tmp_path / "ragged.csv", "--model", "pca", "--components", "1", "-o",
                          tmp_path / "x.npz"), "ragged.csv, line 2: 2 fields, but the first row of data (line 1) has 3")
    (tmp_path / "word.csv").write_text("a,b\n1,2\n3,x\n")
    one_error_line(fastae("fit", tmp_path / "word.csv", "--model", "pca", "--components", "1", "-o",
                          tmp_path / "x.npz"), "word.csv, line 3: 'x' is not a number")
    (tmp_path / "header.csv").write_text("a,b,c\n")
    one_error_line(fastae("fit", tmp_path / "header.csv", "--model", "pca", "--components", "1", "-o",
                          tmp_path / "x.npz"), "header.csv: a header line and no rows of data")
    (tmp_path / "numbers.csv").write_text("1,2\n3,4\n5,7\n")  # an all-numeric first row is data
    result = fastae("fit", tmp_path / "numbers.csv", "--model", "pca", "--components", "1", "-o", tmp_path / "n.npz")
    assert result.returncode == 0 and "on 3 rows x 2 features" in result.stdout, result.stderr
    # in-process: the parser's other cases
    (tmp_path / "commented.csv").write_text("# made by hand\nx,y\n\n1, 2\n# a note\n3,4.5e0\n")
    np.testing.assert_array_equal(cli.read_array(str(tmp_path / "commented.csv")), [[1, 2], [3, 4.5]])
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf1,2\n")
    np.testing.assert_array_equal(cli.read_array(str(tmp_path / "bom.csv")), [[1, 2]])
    (tmp_path / "empty.csv").write_text("\n")
    with pytest.raises(cli.CliError, match="holds no rows"):
        cli.read_array(str(tmp_path / "empty.csv"))
    (tmp_path / "nan.csv").write_text("1,2\nnan,3\n")
    with pytest.raises(cli.CliError, match=r"NaN or infinity \(row 2\)"):
        cli.read_array(str(tmp_path / "nan.csv"))


def test_errors_print_one_line_and_exit_non_zero(files, fitted):
    root, X = files
    np.save(root / "cube.npy", np.zeros((2, 2, 2)))
    (root / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (root / "text.npz").write_text("hello, not a model")
    np.savez(root / "foreign.npz", a=np.zeros(3))
    np.save(root / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(root / "wide.npy", 5 * X)
    cases = [
        (("fit", root / "wide.npy", "--model", "vae", "--epochs", "1", "-o", root / "x.npz"),
         "wide.npy must lie in [0, 1] for --likelihood bernoulli"),  # the user's words, not X/likelihood='...'
        (("encode", root / "foreign.npz", root / "data.npy", "-o", root / "x.npy"),
         "foreign.npz: not a usable fastae model file: "),
        (("encode", root / "missing.npz", root / "data.npy", "-o", root / "x.npy"), "missing.npz: no such file"),
        (("fit", root / "nothing.npy", "--model", "pca", "--components", "2", "-o", root / "x.npz"), "no such file"),
        (("fit", root / "cube.npy", "--model", "pca", "--components", "2", "-o", root / "x.npz"),
         "expected a 2-D table"),
        (("fit", root / "objects.npy", "--model", "pca", "--components", "2", "-o", root / "x.npz"),
         "objects.npy: holds Python objects"),
        (("encode", root / "broken.npz", root / "data.npy", "-o", root / "x.npy"), "broken.npz: not a fastae model file"),
        (("encode", root / "text.npz", root / "data.npy", "-o", root / "x.npy"), "text.npz: not a fastae model file"),
        (("encode", root / "foreign.npz", root / "data.npy", "-o", root / "x.npy"),
         "foreign.npz: not a usable fastae model file"),
        (("encode", root / "pca.npz", root / "codes64.npy", "-o", root / "x.npy"),
         "codes64.npy has 64 columns but this PCA was fitted on data with 8 columns"),
        (("reconstruct", root / "ae.npz", root / "codes64.npy", "-o", root / "x.npy"),
         "codes64.npy has 64 columns but this Autoencoder was fitted on data with 8 columns"),
        (("decode", root / "ae.npz", root / "codes64.npy", "-o", root / "x.npy"),
         "codes64.npy has 64 columns but this Autoencoder's codes have 3"),
        (("decode", root / "vae.npz", root / "codes64.npy", "-o", root / "x.npy"),
         "codes64.npy has 64 columns but this VAE's codes have 2"),
        (("sample", root / "pca.npz", "-o", root / "x.npy"), "only a VAE can sample (this is a PCA)"),
        (("sample", root / "ae.npz", "-o", root / "x.npy"), "only a VAE can sample (this is an Autoencoder)"),
        (("fit", root / "data.npy", "--model", "autoencoder", "-o", root / "no" / "x.npz"), "does not exist"),
        (("fit", root / "data.npy", "--model", "vae", "--validation", root / "codes64.npy", "-o", root / "x.npz"),
         "codes64.npy has 64 columns but"),
        (("encode", root / "pca.npz", root / "data.npy", "-o", root / "x.txt"), "must end in .npy or .csv"),
    ]
    for args, message in cases:
        result = fastae(*args)
        one_error_line(result, message)
        if args[0] != "fit":
            assert "pickle" not in result.stderr  # a bad model file is not blamed on pickled data
    debug = fastae("--debug", "encode", root / "broken.npz", root / "data.npy", "-o", root / "x.npy")
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    usage = fastae("fit", root / "data.npy", "--model", "kmeans", "-o", root / "x.npz")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


@pytest.mark.skipif("cuda" in lib.backends(), reason="this machine has a usable GPU")
def test_cuda_backend_without_a_gpu_is_one_line(files):
    root, _ = files
    one_error_line(fastae("fit", root / "data.npy", "--model", "autoencoder", "--backend", "cuda", "-o",
                          root / "x.npz"), "--backend cuda: no usable GPU here")


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = fastae("demo", "--quick", "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bars without a terminal
    report = (out / "report.md").read_text()
    for model in ["PCA", "Autoencoder", "Sparse AE", "Denoising AE", "VAE"]:
        assert f"| {model}" in report and f"| {model}" in result.stdout
    for fact in ["Machine:", "Python", "NumPy", "Numba", "seed 0"]:
        assert fact in report, fact
    expected = {"reconstructions.png": (10, 6.6), "denoising.png": (10, 3.3), "vae_samples.png": (10, 4.4),
                "codes_2d.png": (20, 4), "training_curves.png": (11, 4)}
    for name, (width_in, height_in) in expected.items():
        assert f"({name})" in report
        width, height = png_size(out / name)
        # saved at 80 dpi with a tight bounding box: within a margin of figsize * dpi
        assert 0.6 * width_in * 80 <= width <= 1.3 * width_in * 80, (name, width)
        assert 0.6 * height_in * 80 <= height <= 1.4 * height_in * 80, (name, height)
    quiet = fastae("demo", "--quick", "--quiet", "--out", tmp_path / "quiet")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_bench_command_prints_the_speed_up_table():
    result = fastae("bench", "--select", "l1_prox")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| l1_prox 4096x512 f32 1thr | cpu |" in result.stdout
    assert "speed-up over numpy" in result.stdout
    nothing = fastae("bench", "--select", "no_such_benchmark")
    assert nothing.returncode == 1
    assert "the benchmark suite failed" in nothing.stderr and "Traceback" not in nothing.stderr


# ---- export (ONNX)

@pytest.mark.parametrize("name,part", [("ae", "encode"), ("ae", "reconstruct"), ("vae", "encode"),
                                       ("vae", "decode"), ("pca", "encode"), ("pca", "decode")])
def test_export_writes_an_onnx_file_that_matches_the_model(name, part, files, fitted, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    root, X = files
    output = tmp_path / f"{name}-{part}.onnx"
    result = fastae("export", root / f"{name}.npz", "-o", output, "--part", part)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote the {part} part of ") and str(output) in result.stdout
    model = lib.load(root / f"{name}.npz")
    rows = X.astype(np.float32)
    if part == "decode":
        rows = model.transform(rows)
    want = {"encode": lambda: list(model.encode(rows)) if name == "vae" else [model.transform(rows)],
            "decode": lambda: [model.inverse_transform(rows)],
            "reconstruct": lambda: [model.reconstruct(rows)]}[part]()
    got = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"]).run(None, {"input": rows})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_export_defaults_to_the_encoder_and_quiet(files, fitted, tmp_path):
    onnx = pytest.importorskip("onnx")
    root, _ = files
    result = fastae("export", root / "vae.npz", "-o", tmp_path / "enc.onnx", "--quiet")
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    assert [o.name for o in onnx.load(tmp_path / "enc.onnx").graph.output] == ["mu", "logvar"]


def test_export_errors(files, fitted, tmp_path):
    pytest.importorskip("onnx")
    root, _ = files
    one_error_line(fastae("export", root / "missing.npz", "-o", tmp_path / "m.onnx"), "no such file")
    one_error_line(fastae("export", root / "data.npy", "-o", tmp_path / "m.onnx"), "not a fastae model file")
    one_error_line(fastae("export", root / "ae.npz", "-o", tmp_path / "no" / "m.onnx"), "does not exist")
    bad = fastae("export", root / "ae.npz", "-o", tmp_path / "m.onnx", "--part", "encoder")
    assert bad.returncode == 2 and "encoder" in bad.stderr
    assert not (tmp_path / "m.onnx").exists()
