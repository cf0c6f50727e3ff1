"""Hardware tests (``@pytest.mark.hardware``) run only with ``--hardware``; shared fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Small tensors and sparse products: one thread is many times faster than two on a loaded 2-core machine
    (a module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_addoption(parser):
    parser.addoption("--hardware", action="store_true", help="run tests that need real devices")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="needs real devices: pass --hardware")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)
