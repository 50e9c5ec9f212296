"""save / load: bit-identical models, atomic writes, and files that must be refused."""
import os
import pickle
import zipfile

import numpy as np
import pytest

import fastae


@pytest.fixture
def X(rng):
    return rng.uniform(size=(40, 6))


def models(X):
    return [fastae.PCA(3).fit(X),
            fastae.Autoencoder(hidden=(5,), code=3, l1=0.01, epochs=2, seed=0).fit(X),
            fastae.VAE(hidden=(5,), latent=2, likelihood="gaussian", dtype="float64", epochs=2, seed=0).fit(X)]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_save_load_is_bit_identical(tmp_path, X, index):
    model = models(X)[index]
    path = tmp_path / "model.bin"  # written at exactly this path, no suffix added
    model.save(path)
    assert path.exists() and not (tmp_path / "model.bin.npz").exists()
    loaded = fastae.load(str(path))
    assert type(loaded) is type(model)
    assert loaded.get_params() == {**model.get_params(), **({"callback": None} if "callback" in model.get_params() else {})}
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))
    assert sorted(os.listdir(tmp_path)) == ["model.bin"]  # no temporary file left behind


def test_loaded_model_continues_training_like_the_original(tmp_path, X):
    model = fastae.Autoencoder(hidden=(5,), code=3, epochs=2, seed=0).fit(X)
    model.save(tmp_path / "m.npz")
    loaded = fastae.load(tmp_path / "m.npz")
    model.partial_fit(X)
    loaded.partial_fit(X)
    assert loaded.history_ == model.history_
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))


def test_a_failed_save_keeps_the_old_file(tmp_path, X, monkeypatch):
    model = fastae.Autoencoder(hidden=(5,), code=3, epochs=1, seed=0).fit(X)
    path = tmp_path / "m.npz"
    model.save(path)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]


def test_truncated_tampered_pickled_and_foreign_files_are_refused(tmp_path, X):
    model = fastae.Autoencoder(hidden=(5,), code=3, epochs=1, seed=0).fit(X)
    path = tmp_path / "m.npz"
    model.save(path)
    data = path.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "garbage": b"not a model at all",
        "pickled": pickle.dumps({"header": "x"}),
    }
    for name, content in cases.items():
        bad = tmp_path / f"{name}.npz"
        bad.write_bytes(content)
        with pytest.raises(ValueError):
            fastae.load(bad)
    np.savez(tmp_path / "foreign.npz", weights=np.ones(3))
    with pytest.raises(ValueError, match="not a valid fastae model"):
        fastae.load(tmp_path / "foreign.npz")
    # tampered: a header that asks for another class, and weights of the wrong size
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in [("header", np.array(str(arrays["header"]).replace('"Autoencoder"', '"os.system"'))),
                       ("params", arrays["params"][:-1]),
                       ("params", np.full_like(arrays["params"], np.nan))]:
        np.savez(tmp_path / "tampered.npz", **{**arrays, key: value})
        with pytest.raises(ValueError, match="not a valid fastae model"):
            fastae.load(tmp_path / "tampered.npz")
    # a pickled object array inside the archive is never unpickled
    np.savez(tmp_path / "objects.npz", **{**arrays, "params": np.array([object()], dtype=object)})
    with pytest.raises(ValueError):
        fastae.load(tmp_path / "objects.npz")
    with zipfile.ZipFile(path) as zf:
        assert all(not name.endswith(".pkl") for name in zf.namelist())


def test_missing_file_and_folder(tmp_path, X):
    with pytest.raises(ValueError, match="is not a file"):
        fastae.load(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="does not exist"):
        fastae.PCA(2).fit(X).save(tmp_path / "no" / "such" / "dir.npz")
