"""The documents stand alone and keep up with the code: every public name, parameter (with its
default), method, kernel op and command-line option is in docs/api.md; no document points outside
the repository; relative links resolve."""
import inspect
import re
from pathlib import Path

import pytest

import fastae
from fastae import cli

ROOT = Path(__file__).resolve().parent.parent
API = (ROOT / "docs" / "api.md").read_text()
DOCUMENTS = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "bench" / "README.md",
             *sorted((ROOT / "docs").glob("*.md"))]
SKIP = {".git", "__pycache__", "build", "dist", ".venv", "venv", "fastae-demo"}
ESTIMATORS = [fastae.Autoencoder, fastae.VAE, fastae.PCA]


def section(title):
    """The text of docs/api.md from the heading `title` to the next heading of the same level."""
    match = re.search(rf"^(#+) {re.escape(title)}\n(.*?)(?=^\1 |\Z)", API, re.S | re.M)
    assert match, f"docs/api.md has no section {title!r}"
    return match.group(2)


def test_every_public_name_is_documented():
    for name in fastae.__all__:
        assert f"`fastae.{name}" in API or f"fastae.{name}`" in API, name
    for name in fastae.kernels.__all__:
        assert f"`{name}" in section("Kernels (`fastae.kernels`)"), name


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_every_parameter_is_documented_with_its_default(cls):
    text = section(cls.__name__) + (section("Training parameters (Autoencoder and VAE)")
                                    if cls is not fastae.PCA else "")
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self":
            continue
        default = "required" if p.default is inspect.Parameter.empty else f"`{p.default!r}`"
        assert f"| `{name}` | {default} |" in text, (cls.__name__, name, default)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_every_public_method_is_documented(cls):
    common = section("Common to every estimator")
    text = section(cls.__name__) + common + (section("Methods (Autoencoder and VAE)")
                                             if cls is not fastae.PCA else "")
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") or not callable(member):
            continue
        assert f"`{name}(" in text or f"`{name}`" in text, (cls.__name__, name)


def test_every_command_and_fit_option_is_documented():
    text = section("Command line")
    for command in ["fit", "encode", "decode", "reconstruct", "sample", "demo", "bench"]:
        assert f"| `{command} " in text, command
    for flags, param, *_ in cli.FIT_OPTIONS:
        assert f"| `{flags[0]}" in text and f"`{param}`" in text, flags[0]
    for flag in ["--validation", "--quiet", "--debug", "--version"]:
        assert flag in text, flag


def _text_files():
    for path in ROOT.rglob("*"):
        parts = set(path.relative_to(ROOT).parts)
        if parts & SKIP or any(p.endswith(".egg-info") for p in parts) or not path.is_file():
            continue
        if path.suffix in {".md", ".py", ".toml", ".txt", ".sh", ".cfg", ".ini", ".yml", ".yaml"} or path.name == "LICENSE":
            yield path


def test_nothing_points_outside_the_repository():
    for path in _text_files():
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        for needle in ["API.md", "../shared", "shared/API"]:
            assert needle not in text, f"{path.relative_to(ROOT)} mentions {needle}"


def test_relative_links_resolve():
    for doc in DOCUMENTS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            assert (doc.parent / target.split("#")[0]).exists(), f"{doc.relative_to(ROOT)} links to {target}"


def test_packaging_files():
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text()
    assert "the fastae developers" in (ROOT / "LICENSE").read_text()
    assert (ROOT / "fastae" / "py.typed").is_file()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## Unreleased" in changelog and f"## {fastae.__version__}" in changelog
