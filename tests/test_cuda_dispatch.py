"""Dispatch on the tensor's device, the choice of CUDA target, and the one module that may import
a CUDA package."""

import ast
import pathlib
import subprocess
import sys
import types

import numba
import pytest
import torch

from p3dlab.errors import P3DLabDeviceError
from p3dlab.ops.dispatch import cuda_kernels

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUDA_PACKAGES = ("numba.cuda", "numba_cuda", "numba_cuda_mlir", "cuda", "cupy", "pycuda")


def _cuda_imports(path):
    """(line, module) of every import of a CUDA package in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        cuda_names = [n for n in names if any(n == p or n.startswith(p + ".") for p in CUDA_PACKAGES)]
        if cuda_names:
            found.append((node.lineno, cuda_names[-1]))
    return found


def test_only_the_adapter_imports_a_cuda_package():
    sources = sorted((ROOT / "p3dlab").rglob("*.py")) + sorted((ROOT / "kernels").rglob("*.py"))
    assert len(sources) > 50
    offenders = {}
    for path in sources:
        found = _cuda_imports(path)
        if found and path.relative_to(ROOT).as_posix() != "kernels/cuda_adapter.py":
            offenders[path.relative_to(ROOT).as_posix()] = found
    assert not offenders, f"only kernels/cuda_adapter.py may import a CUDA package: {offenders}"
    assert any(name.startswith("numba") for _, name in _cuda_imports(ROOT / "kernels" / "cuda_adapter.py"))


def test_the_scan_finds_cuda_imports(tmp_path):
    """The scan above is not vacuous: every spelling of a CUDA import is seen."""
    src = tmp_path / "m.py"
    src.write_text(
        "from numba import cuda\nimport numba.cuda\nfrom numba_cuda_mlir import cuda as c\n"
        "def f():\n    import cuda.bindings.driver\n    from numba.cuda import jit\n"
    )
    assert [line for line, _ in _cuda_imports(src)] == [1, 2, 3, 5, 6]


@pytest.mark.parametrize(
    "has_numba_cuda, has_mlir, simulator, expected",
    [
        (True, False, False, "numba-cuda"),
        (True, True, False, "numba-cuda"),
        (True, True, True, "numba-cuda"),
        (False, True, False, "numba-cuda-mlir"),
        (False, True, True, "numba-builtin"),  # the MLIR target has no simulator
        (False, False, True, "numba-builtin"),
        (False, False, False, None),
    ],
)
def test_choice_of_cuda_target(has_numba_cuda, has_mlir, simulator, expected):
    from p3dlab.kernels.cuda_adapter import CudaUnavailable, choose_target

    if expected is None:
        with pytest.raises(CudaUnavailable, match=r"pip install 'p3dlab\[cuda\]'"):
            choose_target(has_numba_cuda, has_mlir, simulator)
    else:
        assert choose_target(has_numba_cuda, has_mlir, simulator) == expected


def test_numba_cuda_is_the_target_when_installed():
    import importlib.util

    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed (pip install '.[cuda]' or the dev extras)")
    from p3dlab.kernels import cuda_adapter

    assert cuda_adapter.TARGET == "numba-cuda"
    assert cuda_adapter.cuda.implementation == "NVIDIA"  # NVIDIA's package, not numba's built-in target


def test_cpu_tensors_take_the_cpu_kernels():
    assert cuda_kernels(torch.zeros(3), "op") is None


def test_other_devices_get_a_clear_error():
    with pytest.raises(P3DLabDeviceError, match=r"rasterize_meshes: .*CPU and CUDA tensors, not on meta.*\.cpu\(\)"):
        cuda_kernels(torch.zeros(3, device="meta"), "rasterize_meshes")


@pytest.mark.skipif(bool(numba.config.ENABLE_CUDASIM), reason="under the simulator CUDA is always usable")
def test_cuda_tensor_without_a_gpu_gets_a_clear_error():
    """This machine has no GPU: a CUDA tensor (a stand-in: CPU torch cannot make one) is refused
    with what to install, not a crash inside Numba."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    cuda_tensor = types.SimpleNamespace(device=torch.device("cuda", 0))
    with pytest.raises(P3DLabDeviceError, match=r"sample_grid: .*pip install 'p3dlab\[cuda\]'"):
        cuda_kernels(cuda_tensor, "sample_grid")


def test_cuda_tensor_without_a_cuda_target_gets_a_clear_error():
    """Neither numba-cuda nor numba-cuda-mlir installed (hidden from the import system in a fresh
    process): the error says what to install."""
    code = """
import importlib.util, types, torch
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name in ("numba_cuda", "numba_cuda_mlir") else real(name, *a)
from p3dlab.ops.dispatch import cuda_kernels
try:
    cuda_kernels(types.SimpleNamespace(device=torch.device("cuda")), "march_volumes")
except Exception as error:
    print(type(error).__name__, error)
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert out.startswith("P3DLabDeviceError march_volumes: p3dlab's CUDA kernels need a CUDA target"), out
    assert "pip install 'p3dlab[cuda]'" in out
