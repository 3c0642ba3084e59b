"""Reproduce the Binder launch from ``binder/`` in a fresh venv and run one lesson in it (``make binder``).

Binder builds the image with ``pip install -r binder/requirements.txt`` and then runs ``postBuild``.
This test does the same in a new virtual environment: the requirements file's index lines are
honoured except those naming hosts this machine cannot reach, where the wheels on disk
(``PIP_FIND_LINKS``) stand in — offline as far as the machine allows. It then checks that torch is a
CPU build, that postBuild's warm-up left compiled kernels in the cache, and runs lesson 04 in fast
mode with nbval inside the new environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.binder
ROOT = Path(__file__).resolve().parents[1]


def _reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5)
        return True
    except Exception:
        return False


def _requirements(tmp: Path) -> Path:
    """binder/requirements.txt, minus index lines whose host does not answer."""
    lines = []
    for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines():
        if line.startswith(("--extra-index-url", "--index-url")) and not _reachable(line.split()[1]):
            lines.append(f"# unreachable here: {line}")
            continue
        lines.append(line)
    out = tmp / "requirements.txt"
    out.write_text("\n".join(lines) + "\n")
    return out


def _run(cmd, cwd, env, timeout=1500):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def test_binder_files_build_an_environment_that_runs_a_lesson(tmp_path):
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert runtime == f"python-{sys.version_info.major}.{sys.version_info.minor}", "CI must match Binder's Python"
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], ROOT, os.environ)
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(venv))
    env.pop("PYTHONPATH", None)
    py = str(venv / "bin" / "python")
    _run([py, "-m", "pip", "install", "-q", "-r", str(_requirements(tmp_path))], ROOT, env)
    cuda = _run([py, "-c", "import torch; print(torch.version.cuda)"], ROOT, env).stdout.strip()
    assert cuda == "None", f"Binder would get a CUDA build of torch (cuda {cuda})"
    # a copy of the repository, as Binder checks it out (postBuild installs it in editable mode)
    repo = tmp_path / "repo"
    _run(["git", "clone", "-q", str(ROOT), str(repo)], ROOT, env)
    res = _run(["bash", "binder/postBuild"], repo, env)
    assert "kernels compiled and cached" in res.stdout
    cached = list((repo / "kernels" / "__pycache__").glob("*.nbi"))
    assert len(cached) > 5, "postBuild's warm-up left no Numba cache"
    _run([py, "-m", "pip", "install", "-q", "pytest", "nbval"], repo, env)
    env["P3DLAB_FAST"] = "1"
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    # binder/start runs before the server: its kernels inherit what it exports
    show = "import os; print(os.environ['OMP_WAIT_POLICY'], os.environ['GOMP_SPINCOUNT'])"
    res = _run(["bash", "binder/start", py, "-c", show], repo, env)
    assert res.stdout.strip() == "PASSIVE 1000"
    res = _run(
        [
            "bash",
            "binder/start",
            py,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval-lax",
            "course/source/04_batches_and_transforms/04_batches_and_transforms.ipynb",
        ],
        repo,
        env,
    )
    assert " passed" in res.stdout
