"""The GPU check script (``make gpu-check``) cannot rot: its dry run (tiny scenes on the CUDA
simulator) runs here, and its comparisons catch a wrong kernel."""

import os
import subprocess
import sys
import types

import numpy as np
import pytest

from benchmarks import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dry_run_on_the_simulator_passes_every_row():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}  # the script sets it itself
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "CUDA target: numba-cuda" in run.stdout
    lines = run.stdout.splitlines()
    for kernel in ("mesh rasterizer, forward", "mesh rasterizer, backward", "point rasterizer, backward",
                   "volume sampler, backward", "volume marcher emission-absorption, backward",
                   "volume marcher quadrature (NeRF), backward", "stratified jitter", "kNN"):  # fmt: skip
        row = [line for line in lines if line.startswith(kernel)]
        assert row and " ok" in row[0], (kernel, run.stdout)
    assert "12 passed, 0 failed" in run.stdout
    assert "0% slots hit" not in run.stdout  # the scene is not empty


def _rows(check, gpu, seed=0):
    return check(gpu_check.Device(dry_run=True), gpu, gpu_check.SIZES["tiny"], np.random.default_rng(seed))


def test_rows_pass_with_the_serial_stand_in_of_the_cuda_kernels():
    import gpu_serial

    rows = []
    for check in gpu_check.CHECKS:
        rows += _rows(check, gpu_serial)
    assert len(rows) == 12 and all(r.ok for r in rows), gpu_check.format_table(rows)


@pytest.mark.parametrize("kernel", ["stratified_jitter_cuda", "sample_volume_backward_cuda", "rasterize_meshes_cuda"])
def test_a_wrong_kernel_fails_its_row(kernel):
    import gpu_serial

    def off_by_a_little(*args):
        getattr(gpu_serial, kernel)(*args)
        out = [a for a in args if isinstance(a, np.ndarray) and a.dtype == np.float64][-1]
        out.reshape(-1)[out.size // 2] += 1e-6  # one output value slightly wrong

    broken = types.SimpleNamespace(**{name: getattr(gpu_serial, name) for name in dir(gpu_serial)})
    setattr(broken, kernel, off_by_a_little)
    rows = []
    for check in (gpu_check.check_stratified_jitter, gpu_check.check_volume_sampler, gpu_check.check_mesh_rasterizer):
        rows += _rows(check, broken)
    failed = [r.kernel for r in rows if not r.ok]
    assert len(failed) == 1, gpu_check.format_table(rows)
    assert "FAIL" in gpu_check.format_table(rows)


def test_without_a_gpu_the_full_check_says_what_to_do():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 2
    assert "pip install -e '.[cuda]'" in run.stderr and "--dry-run" in run.stderr
