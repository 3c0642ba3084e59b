"""The students' install (``make lab``): a CPU build of torch even where the default package index
resolves the pin to a CUDA build, and only what the lessons need."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fake_torch_wheel(folder: Path, version: str, build: str):
    """A tiny wheel named like torch's, whose module says which build it is."""
    name = f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version}.dist-info"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / name, "w") as whl:
        whl.writestr("torch/__init__.py", f"__version__ = {version!r}\nBUILD = {build!r}\n")
        whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
    (folder / "index.html").write_text(f'<html><body><a href="{name}">{name}</a></body></html>')


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_lab_installs_the_cpu_build_where_the_default_index_has_only_cuda(tmp_path):
    # the default index: torch 2.13.0 as on Linux, a CUDA build; PyTorch's CPU index: 2.13.0+cpu
    _fake_torch_wheel(tmp_path / "default" / "torch", "2.13.0", "cuda")
    _fake_torch_wheel(tmp_path / "cpu" / "torch", "2.13.0+cpu", "cpu")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(
        PIP_CONFIG_FILE=os.devnull,  # no machine-wide index, wheel folder or constraints
        PIP_INDEX_URL=(tmp_path / "default").as_uri(),
        PIP_NO_CACHE_DIR="1",
    )
    run = subprocess.run(
        ["make", "-s", "torch", f"VENV={venv}", f"PYTHON={sys.executable}", f"TORCH_INDEX={(tmp_path / 'cpu').as_uri()}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Installing torch==2.13.0 (CPU build)" in run.stdout
    build = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch; print(torch.__version__, torch.BUILD)"],
                           capture_output=True, text=True, timeout=60).stdout.split()  # fmt: skip
    assert build == ["2.13.0+cpu", "cpu"]


def test_make_lab_installs_no_developer_tools():
    plan = subprocess.run(
        ["make", "-n", "-B", "lab", "VENV=/nonexistent-venv"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    installs = [line for line in plan.splitlines() if "pip install" in line]
    assert any("-e '.[lab]'" in line for line in installs), plan
    assert not any("dev" in line or "teach" in line for line in installs), installs
    assert any("--extra-index-url https://download.pytorch.org/whl/cpu" in line for line in installs), installs
    test_plan = subprocess.run(
        ["make", "-n", "-B", "unit", "VENV=/nonexistent-venv"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert "-e '.[lab,dev]'" in test_plan  # the developers' targets do install them


def test_a_missing_venv_module_gets_instructions(tmp_path):
    fake_python = tmp_path / "python3"
    fake_python.write_text(
        "#!/bin/sh\necho 'The virtual environment was not created successfully because ensurepip is not available.' >&2\nexit 1\n"
    )
    fake_python.chmod(0o755)
    run = subprocess.run(["make", "-s", "torch", f"VENV={tmp_path / 'venv'}", f"PYTHON={fake_python}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode != 0
    assert "sudo apt install python3-venv" in run.stdout
    assert not (tmp_path / "venv").exists()
