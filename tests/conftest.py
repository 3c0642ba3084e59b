import os
from pathlib import Path

import numba
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


@pytest.fixture(
    params=[
        pytest.param(
            "simulator",
            marks=[
                pytest.mark.cudasim,
                pytest.mark.skipif(
                    not numba.config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1 (make cudasim)"
                ),
            ],
        ),
        "serial",
    ]
)
def gpu(request):
    """The CUDA launchers: the adapter's under the simulator, or their serial njit stand-ins."""
    if request.param == "simulator":
        from p3dlab.kernels import cuda_adapter

        return cuda_adapter
    import gpu_serial

    return gpu_serial
