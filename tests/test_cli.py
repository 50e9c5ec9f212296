"""The command line, run as a user would: subprocesses, real files, error paths; and the demo."""
import struct
import subprocess
import sys

import numpy as np
import pytest

COMMANDS = ["demo", "fit", "encode", "decode", "reconstruct", "sample", "bench"]


def fastae(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fastae", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


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
    return root, X


def test_help_on_every_command():
    result = fastae("--help")
    assert result.returncode == 0 and all(c in result.stdout for c in COMMANDS)
    for command in COMMANDS:
        result = fastae(command, "--help")
        assert result.returncode == 0, command
        assert "usage: python -m fastae " + command in result.stdout


def test_fit_encode_decode_reconstruct_sample(files):
    root, X = files
    result = fastae("fit", root / "data.npy", "--model", "autoencoder", "--hidden", "6", "--code", "3",
                    "--epochs", "3", "--seed", "0", "-o", root / "ae.npz")
    assert result.returncode == 0, result.stderr
    assert "fitted Autoencoder on 60 rows x 8 features" in result.stdout
    assert fastae("encode", root / "ae.npz", root / "data.csv", "-o", root / "codes.npy").returncode == 0
    codes = np.load(root / "codes.npy")
    assert codes.shape == (60, 3)
    import fastae as lib
    model = lib.load(root / "ae.npz")
    np.testing.assert_allclose(codes, model.transform(X), rtol=1e-6)  # the csv header was skipped
    assert fastae("decode", root / "ae.npz", root / "codes.npy", "-o", root / "decoded.csv").returncode == 0
    np.testing.assert_allclose(np.loadtxt(root / "decoded.csv", delimiter=","), model.decode(codes), rtol=1e-5, atol=1e-6)
    assert fastae("reconstruct", root / "ae.npz", root / "data.npy", "-o", root / "rec.npy").returncode == 0
    np.testing.assert_allclose(np.load(root / "rec.npy"), model.reconstruct(X), rtol=1e-6)

    assert fastae("fit", root / "data.npy", "--model", "vae", "--hidden", "6", "--code", "2", "--epochs", "2",
                  "-o", root / "vae.npz").returncode == 0
    assert fastae("sample", root / "vae.npz", "-n", "5", "--seed", "1", "-o", root / "s.npy").returncode == 0
    assert np.load(root / "s.npy").shape == (5, 8)
    assert fastae("fit", root / "data.csv", "--model", "pca", "--code", "2", "-o", root / "pca.npz").returncode == 0
    assert fastae("encode", root / "pca.npz", root / "data.npy", "-o", root / "p.npy").returncode == 0
    assert np.load(root / "p.npy").shape == (60, 2)


def test_errors_print_one_line_and_exit_non_zero(files):
    root, X = files
    np.save(root / "cube.npy", np.zeros((2, 2, 2)))
    (root / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.save(root / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert fastae("fit", root / "data.npy", "--model", "pca", "--code", "2", "-o", root / "pca2.npz").returncode == 0
    cases = [
        (("encode", root / "missing.npz", root / "data.npy", "-o", root / "x.npy"), "no such file"),
        (("fit", root / "nothing.npy", "--model", "pca", "-o", root / "x.npz"), "no such file"),
        (("fit", root / "cube.npy", "--model", "pca", "-o", root / "x.npz"), "expected a 2-D table"),
        (("fit", root / "objects.npy", "--model", "pca", "-o", root / "x.npz"), "cannot read it"),
        (("encode", root / "broken.npz", root / "data.npy", "-o", root / "x.npy"), "not a usable fastae model"),
        (("encode", root / "pca2.npz", root / "codes.npy", "-o", root / "x.npy"), "X has 3 features"),
        (("sample", root / "pca2.npz", "-o", root / "x.npy"), "only a VAE can sample"),
        (("fit", root / "data.npy", "--model", "autoencoder", "--lr", "-1", "-o", root / "x.npz"), "lr must be > 0"),
        (("encode", root / "pca2.npz", root / "data.npy", "-o", root / "x.txt"), "must end in .npy or .csv"),
    ]
    for args, message in cases:
        result = fastae(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr, (message, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    debug = fastae("--debug", "encode", root / "broken.npz", root / "data.npy", "-o", root / "x.npy")
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    usage = fastae("fit", root / "data.npy", "--model", "kmeans", "-o", root / "x.npz")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = fastae("demo", "--quick", "--quiet", "--out", out)
    assert result.returncode == 0, result.stderr
    report = (out / "report.md").read_text()
    for model in ["PCA", "Autoencoder", "Sparse AE", "Denoising AE", "VAE"]:
        assert f"| {model}" in report and f"| {model}" in result.stdout
    expected = {"reconstructions.png": (10, 6.6), "denoising.png": (10, 3.3), "vae_samples.png": (10, 4.4),
                "codes_2d.png": (20, 4), "training_curves.png": (7, 4)}
    for name, (width_in, height_in) in expected.items():
        assert f"({name})" in report
        width, height = png_size(out / name)
        # saved at 80 dpi with a tight bounding box: within a margin of figsize * dpi
        assert 0.6 * width_in * 80 <= width <= 1.3 * width_in * 80, (name, width)
        assert 0.6 * height_in * 80 <= height <= 1.3 * height_in * 80, (name, height)


def test_bench_command_prints_the_speed_up_table():
    result = fastae("bench", "--select", "l1_prox")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| l1_prox 4096x512 f32 1thr | cpu |" in result.stdout
    assert "speed-up over numpy" in result.stdout
    nothing = fastae("bench", "--select", "no_such_benchmark")
    assert nothing.returncode == 1
    assert "the benchmark suite failed" in nothing.stderr and "Traceback" not in nothing.stderr
