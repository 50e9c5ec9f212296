"""help() documents the public API: every constructor parameter of every estimator (with its
default), every parameter of the public methods and of every kernel op is in a numpydoc
`Parameters` section of its docstring, and help() renders without error."""
import ast
import doctest
import inspect
import pydoc
import re

import pytest

import fastae
from fastae import kernels, persistence

ESTIMATORS = [fastae.Autoencoder, fastae.VAE, fastae.PCA]
METHODS = ["fit", "partial_fit", "transform", "encode", "decode", "inverse_transform", "reconstruct",
           "score_samples", "score", "value_and_grad", "elbo", "sample", "get_weights", "set_weights",
           "save", "fit_transform", "get_params", "set_params"]
OPS = [getattr(kernels, name) for name in ["affine_forward", "affine_backward", "l1_prox", "reparam_forward",
                                           "reparam_backward", "mse_loss", "bce_logits_loss", "adam_step",
                                           "warmup"]]
FUNCTIONS = [*OPS, fastae.warmup, persistence.load, persistence.save]


def sections(doc):
    """{title: text} of a numpydoc docstring's sections (a title line underlined with dashes)."""
    lines = inspect.cleandoc(doc).splitlines()
    out, title = {}, None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and line.strip() and re.fullmatch(r"-{3,}", lines[i + 1].strip()):
            title = line.strip()
            out[title] = []
        elif title is not None and not re.fullmatch(r"-{3,}", line.strip()):
            out[title].append(line)
    return out


def documented(doc, section="Parameters"):
    """{name: type text} of the entries of a section: unindented `name : type` (or `name`) lines."""
    entries = {}
    for line in sections(doc).get(section, []):
        match = re.match(r"^(\*{0,2}\w+)(?: : (.*))?$", line)
        if match:
            entries[match.group(1)] = match.group(2) or ""
    return entries


def parameters(func):
    """The parameter names of `func` as numpydoc writes them (`*args`, `**kwargs`), self excluded."""
    names = []
    for p in inspect.signature(func).parameters.values():
        if p.name == "self":
            continue
        names.append({p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name)
    return names


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_every_constructor_parameter_is_in_the_class_docstring(cls):
    entries = documented(cls.__doc__)
    signature = inspect.signature(cls.__init__).parameters
    assert list(entries) == parameters(cls.__init__), "Parameters section out of order or incomplete"
    for name, type_text in entries.items():
        default = signature[name].default
        match = re.search(r"default=(.+)$", type_text)
        if default is inspect.Parameter.empty:
            assert match is None, (cls.__name__, name, "is required")
        else:
            assert match, (cls.__name__, name, "needs default=...")
            assert ast.literal_eval(match.group(1)) == default, (cls.__name__, name, match.group(1), default)
    for section in ["Attributes", "See Also", "Examples"]:
        assert section in sections(cls.__doc__), (cls.__name__, section)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_fitted_attributes_are_in_the_class_docstring(cls):
    expected = (["components_", "mean_", "explained_variance_", "explained_variance_ratio_", "n_features_in_"]
                if cls is fastae.PCA else ["n_features_in_", "t_", "n_iter_", "history_"])
    assert set(expected) <= set(documented(cls.__doc__, "Attributes")), cls.__name__


def test_training_parameters_are_written_once():
    from fastae import estimator
    for cls in (fastae.Autoencoder, fastae.VAE):
        assert inspect.cleandoc(estimator.TRAINING_PARAMETERS_DOC) in inspect.cleandoc(cls.__doc__)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_every_public_method_documents_its_parameters(cls):
    for name in METHODS:
        method = getattr(cls, name, None)
        if method is None:
            continue
        doc = inspect.getdoc(method)
        assert doc, (cls.__name__, name, "has no docstring")
        assert list(documented(doc)) == parameters(method), (cls.__name__, name)
        assert "Returns" in sections(doc) or name in ("save",), (cls.__name__, name)
        assert inspect.signature(method).return_annotation is not inspect.Signature.empty, (cls.__name__, name)


@pytest.mark.parametrize("func", FUNCTIONS, ids=lambda f: f"{f.__module__}.{f.__name__}")
def test_every_kernel_op_documents_its_parameters(func):
    doc = inspect.getdoc(func)
    assert doc, func.__name__
    assert list(documented(doc)) == parameters(func), func.__name__
    for name, p in inspect.signature(func).parameters.items():
        assert p.annotation is not inspect.Parameter.empty, (func.__name__, name, "has no type hint")


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_class_examples_run(cls):
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = finder.find(cls, cls.__name__, globs={})
    assert tests and tests[0].examples, cls.__name__
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, cls.__name__


@pytest.mark.parametrize("obj", [*ESTIMATORS, *FUNCTIONS, kernels, fastae],
                         ids=lambda o: getattr(o, "__name__", repr(o)))
def test_help_renders(obj):
    text = pydoc.render_doc(obj, renderer=pydoc.plaintext)
    assert text
    if obj in ESTIMATORS:
        for name in parameters(obj.__init__):
            assert name in text
