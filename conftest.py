"""`pytest` runs the tests; `pytest --benchmark` runs the benchmark suite in bench/ instead."""


def pytest_addoption(parser):
    parser.addoption("--benchmark", action="store_true", default=False,
                     help="run the benchmark suite (bench/) instead of the tests")


def pytest_configure(config):
    if config.getoption("--benchmark") and not config.args_source.name == "ARGS":
        config.args[:] = ["bench"]


def pytest_ignore_collect(collection_path, config):
    if collection_path.name == "bench" and not config.getoption("--benchmark"):
        return True
    return None
