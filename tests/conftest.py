import os
from pathlib import Path

import pytest
import torch

# Tests run single-threaded torch so Numba's and torch's thread pools don't fight over 2 cores.
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TESTDATA = Path(os.environ.get("P3DLAB_TESTDATA", SHARED / "testdata"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def testdata():
    """Path to the real files from other tools (``TESTDATA``: ``P3DLAB_TESTDATA``, or the shared test
    data beside the repository); the test is skipped when it is absent (a user's clone)."""
    if not TESTDATA.is_dir():
        pytest.skip("shared test data not available")
    return TESTDATA


# ``make unit`` runs the tests in two processes (pytest-xdist, ``--dist loadgroup``): most of a fresh
# clone's unit run is Numba compiling kernels on one core. Each test file stays in one process, so a
# kernel a file builds for its own checks (tests/gpu_serial.py, the fast paths' core) is compiled once;
# the files that execute notebooks share one group, so two Jupyter kernels never start at once.
NOTEBOOK_FILES = {"test_classroom.py", "test_bench_harness.py", "test_deploy.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("notebooks" if name in NOTEBOOK_FILES else name))
