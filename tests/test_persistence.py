"""save / load: bit-identical models, atomic writes, and files that must be refused."""
import json
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
    monkeypatch.setattr(np.lib.format, "write_array", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _write_members(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _npy(a):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=bool(np.asarray(a).dtype.hasobject))
    return buf.getvalue()


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
    members = _members(path)
    header = json.loads(members["header.json"])
    tampered = [
        {**members, "header.json": json.dumps({**header, "class": "os.system"})},
        {**members, "W0.npy": _npy(np.ones((5, 5), np.float32))},           # wrong shape
        {**members, "W0.npy": _npy(np.full((5, 6), np.nan, np.float32))},   # not finite
        {**members, "W0.npy": _npy(np.ones((5, 6), np.float64))},           # wrong dtype
        {**members, "W0.npy": _npy(np.array([object()] * 30, dtype=object).reshape(5, 6))},  # pickled objects
        {**members, "extra.npy": _npy(np.ones(3))},
        {k: v for k, v in members.items() if k != "opt_a.npy"},
        {**members, "header.json": json.dumps({**header, "spec": {**header["spec"], "width": 2}})},
        {**members, "header.json": json.dumps({**header, "train": {**header["train"], "t": 2 ** 70}})},
        {**members, "header.json": json.dumps({**header, "train": {**header["train"], "rng": {"bit_generator": "PCG64"}}})},
        {**members, "header.json": json.dumps({**header, "train": {**header["train"], "n_iter": 7}})},
        {**members, "header.json": json.dumps({**header, "version": 1})},
        {**members, "header.json": b"\xff\xfe not json"},
    ]
    for i, content in enumerate(tampered):
        bad = tmp_path / f"tampered{i}.npz"
        _write_members(bad, content)
        with pytest.raises(ValueError, match="not a valid fastae model|not a readable fastae model"):
            fastae.load(bad)
    with zipfile.ZipFile(path) as zf:
        assert all(not name.endswith(".pkl") for name in zf.namelist())
    # a compressed member (or a flipped compression byte) is refused, never decompressed
    _write_members(tmp_path / "deflated.npz", members, zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError, match="compressed"):
        fastae.load(tmp_path / "deflated.npz")


def test_missing_file_and_folder(tmp_path, X):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fastae.load(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="is not a file"):
        fastae.load(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        fastae.PCA(2).fit(X).save(tmp_path / "no" / "such" / "dir.npz")
    with pytest.raises(fastae.NotFittedError):
        fastae.Autoencoder().save(tmp_path / "unfitted.npz")
    with pytest.raises(ValueError):
        fastae.load(np.save(tmp_path / "array.npy", np.ones(3)) or tmp_path / "array.npy")


def test_a_small_file_declaring_a_huge_model_is_refused_before_any_allocation(tmp_path, X):
    import tracemalloc
    model = fastae.Autoencoder(hidden=(5,), code=3, epochs=1, seed=0).fit(X)
    path = tmp_path / "m.npz"
    model.save(path)
    members = _members(path)
    header = json.loads(members["header.json"])
    header["spec"]["hidden"] = [12_000_000]
    for name in list(members):  # npy headers that agree with the spec, but no data behind them
        if name.startswith(("W0", "b0", "W1", "b1", "W2", "b2", "W3", "b3", "opt_")):
            shape = {"W0": (12_000_000, 6), "b0": (12_000_000,)}.get(name[:-4])
            if shape is not None:
                members[name] = _npy_header_only(shape)
    members["header.json"] = json.dumps(header)
    bad = tmp_path / "huge.npz"
    _write_members(bad, members)
    assert bad.stat().st_size < 20_000
    tracemalloc.start()
    with pytest.raises(ValueError, match="not a valid fastae model"):
        fastae.load(bad)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10_000_000


def _npy_header_only(shape):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_files_respect_the_umask_and_write_through_symlinks(tmp_path, X):
    model = fastae.PCA(2).fit(X)
    old = os.umask(0o027)
    try:
        model.save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o640
    target = tmp_path / "real.npz"
    fastae.PCA(1).fit(X).save(target)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    model.save(link)
    assert link.is_symlink() and fastae.load(target).n_components == 2
    assert sorted(os.listdir(tmp_path)) == ["link.npz", "m.npz", "real.npz"]


def test_a_killed_save_leaves_the_old_file_and_nothing_else(tmp_path, X):
    import subprocess
    import sys
    import textwrap
    path = tmp_path / "m.npz"
    fastae.PCA(2).fit(X).save(path)
    good = path.read_bytes()
    code = textwrap.dedent(f"""
        import os, numpy as np, fastae
        model = fastae.Autoencoder(hidden=(50,), code=3, epochs=1, seed=0).fit(np.ones((4, 6)))
        real = np.lib.format.write_array
        def die(*args, **kwargs):
            real(*args, **kwargs)
            os._exit(9)  # killed mid-save, after some data was written
        np.lib.format.write_array = die
        model.save({str(path)!r})
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300,
                            env={**os.environ, "FASTAE_BACKGROUND_COMPILE": "0"})
    assert result.returncode == 9, result.stderr
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]


@pytest.mark.parametrize("seed", range(6))
def test_every_model_that_saves_loads_identically(tmp_path, seed):
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(int(rng.integers(2, 30)), int(rng.integers(1, 9))))
    dtype = ["float32", "float64"][seed % 2]
    hidden = tuple(int(h) for h in rng.integers(1, 6, size=int(rng.integers(0, 3))))
    model = [fastae.Autoencoder(hidden=hidden, code=int(rng.integers(1, 4)), l1=float(rng.uniform(0, 0.1)),
                                epochs=int(rng.integers(1, 3)), seed=seed, dtype=dtype),
             fastae.VAE(hidden=hidden, latent=int(rng.integers(1, 4)), epochs=1, seed=seed, dtype=dtype),
             fastae.PCA(1, dtype=dtype)][seed % 3].fit(X)
    model.save(tmp_path / "m.npz")
    loaded = fastae.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))
    if hasattr(model, "history_"):
        assert loaded.history_ == model.history_ and loaded.t_ == model.t_


def test_save_writes_only_to_regular_files_and_names_the_path(tmp_path, X):
    model = fastae.PCA(2).fit(X)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for target in (tmp_path / "fifo", tmp_path, tmp_path / "loop"):
        with pytest.raises(ValueError, match="not a regular file"):
            model.save(target)
    assert os.path.exists(tmp_path / "fifo") and not os.path.isfile(tmp_path / "fifo")
    for bad in (str(tmp_path / ("a" * 300)), str(tmp_path / "a\0b")):
        with pytest.raises(ValueError, match="path"):
            model.save(bad)
        with pytest.raises(ValueError, match="path"):
            fastae.load(bad)


def test_tampered_parameters_are_refused(tmp_path, X):
    model = fastae.Autoencoder(hidden=(5,), code=3, epochs=1, seed=0).fit(X)
    model.save(tmp_path / "m.npz")
    members = _members(tmp_path / "m.npz")
    header = json.loads(members["header.json"])
    for change in ({"lr": -1.0}, {"hidden": {"a": 1}}, {"code": "x"}, {"dtype": "float64"}, {"code": 4},
                   {"hidden": [6]}, {"activation": "tanh"}):
        bad = {**members, "header.json": json.dumps({**header, "params": {**header["params"], **change}})}
        _write_members(tmp_path / "bad.npz", bad)
        with pytest.raises(ValueError, match="not a valid fastae model"):
            fastae.load(tmp_path / "bad.npz")


def test_a_format_1_file_is_refused_naming_the_format(tmp_path):
    np.savez(tmp_path / "old.npz", header=np.array('{"format": "fastae-model", "version": 1}'),
             params=np.zeros(3, np.float32), opt_a=np.zeros(3, np.float32), opt_b=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="format 1"):
        fastae.load(tmp_path / "old.npz")
