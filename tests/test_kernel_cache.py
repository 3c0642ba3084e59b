"""Numba's on-disk cache and kernels that inline device code from another file."""

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

KERNELS = Path(__file__).resolve().parents[1] / "kernels"

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {folder!r})
    from numba import njit
    import mathfile
    MATH_SOURCE_SHA256 = {stamp!r}
    f = njit(inline="always")(mathfile.f)

    @njit(cache=True)
    def kernel(x):
        return f(x)

    print(kernel(1.0))
    """
)


def _run(tmp_path, increment, stamp):
    (tmp_path / "mathfile.py").write_text(f"def f(x):\n    return x + {increment}\n")
    script = tmp_path / "kernelfile.py"
    script.write_text(SCRIPT.format(folder=str(tmp_path), stamp=stamp))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_numba_cache_ignores_inlined_files_unless_the_kernel_file_changes(tmp_path):
    assert _run(tmp_path, 1.0, "a") == "2.0"
    assert _run(tmp_path, 2.0, "a") == "2.0"  # stale machine code: why the stamp lines exist
    assert _run(tmp_path, 2.0, "b") == "3.0"  # the kernel file changed: rebuilt


@pytest.mark.parametrize(
    "kernel, inlined",
    [
        ("volume_cpu", ["volume_math", "volume_fast", "exp_neg", "simd4", "activations"]),
        ("mesh_raster_cpu", ["mesh_raster_math"]),
        ("gaussian_project", ["sh_constants"]),
    ],
)
def test_kernel_files_carry_the_hash_of_the_code_they_inline(kernel, inlined):
    """The stamp is the SHA-256 of the inlined files, concatenated in this order."""
    digest = hashlib.sha256(b"".join((KERNELS / f"{m}.py").read_bytes() for m in inlined)).hexdigest()[:16]
    line = f'MATH_SOURCE_SHA256 = "{digest}"'
    assert line in (KERNELS / f"{kernel}.py").read_text(), (
        f"{', '.join(inlined)} changed: set {line} in kernels/{kernel}.py so that cached kernels are rebuilt"
    )
