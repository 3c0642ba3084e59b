"""Rendering in forked workers and in threads: it works, or fails at once with a message that says
what to set; it never hangs (each scenario runs in a child Python with a time limit)."""

import os
import subprocess
import sys
import textwrap

SCENE = """
import multiprocessing as mp, threading, torch
from torch.utils.data import DataLoader, Dataset
from p3dlab import data
from p3dlab.errors import P3DLabProcessError
from p3dlab.renderer import (FoVPerspectiveCameras, HardPhongShader, MeshRasterizer, MeshRenderer, PointLights,
                             RasterizationSettings, look_at_view_transform)
from p3dlab.structures import TexturesVertex

mesh = data.ico_sphere(2)
mesh.textures = TexturesVertex([torch.ones_like(mesh.verts_packed())])
R, T = look_at_view_transform(2.7, 10.0, 20.0)
cam = FoVPerspectiveCameras(R=R, T=T)
renderer = MeshRenderer(MeshRasterizer(cam, RasterizationSettings(image_size=32)),
                        HardPhongShader(cameras=cam, lights=PointLights()))

def render(i):
    return float(renderer(mesh).sum())

class Renders(Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        return render(i)

def outcome(fn):
    try:
        return fn()
    except Exception as error:  # the error crosses the process boundary with its type and message
        return f"{type(error).__name__}: {error}".replace("\\n", " | ")  # one line
"""


def _run(tmp_path, script: str, **env) -> str:
    # a file, not ``python -c``: "spawn" children import the main module's functions from its file
    path = tmp_path / "scenario.py"
    path.write_text(textwrap.dedent(SCENE) + textwrap.dedent(script))
    res = subprocess.run(
        [sys.executable, str(path)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_default_layer_fork_fails_at_once_with_advice_and_spawn_and_threads_work(tmp_path):
    out = _run(
        tmp_path,
        """
        if __name__ == "__main__":
            expected = render(0)  # the parent starts Numba's OpenMP threads first
            with mp.get_context("fork").Pool(2) as pool:
                print("fork pool:", outcome(lambda: pool.map(render, range(2))))
            print("fork loader:", outcome(lambda: list(DataLoader(Renders(), batch_size=2, num_workers=2))))
            # the advice works (one worker: a spawned process imports torch and p3dlab afresh, seconds
            # each; a DataLoader with multiprocessing_context="spawn" starts its workers the same way)
            with mp.get_context("spawn").Pool(1) as pool:
                print("spawn pool equal:", pool.map(render, range(2)) == [expected] * 2)
            results = []
            threads = [threading.Thread(target=lambda: results.append(render(0))) for _ in range(2)]
            [t.start() for t in threads]; [t.join() for t in threads]
            print("threads equal:", results == [expected] * 2)
        """,
        NUMBA_THREADING_LAYER="default",
    )
    pool_line, loader_line = (line for line in out.splitlines() if line.startswith("fork"))
    for line in (pool_line, loader_line):
        assert "P3DLabProcessError" in line and "forked" in line, out
        assert "'spawn'" in line and "NUMBA_THREADING_LAYER=workqueue" in line, out
    assert "spawn pool equal: True" in out, out
    assert "threads equal: True" in out, out


def test_workqueue_layer_renders_in_forked_workers(tmp_path):
    out = _run(
        tmp_path,
        """
        if __name__ == "__main__":
            expected = render(0)
            with mp.get_context("fork").Pool(2) as pool:
                print("fork pool equal:", pool.map(render, range(2)) == [expected] * 2)
            loader = DataLoader(Renders(), batch_size=2, num_workers=2, multiprocessing_context="fork")
            print("fork loader equal:", [float(x) for b in loader for x in b] == [expected] * 4)
        """,
        NUMBA_THREADING_LAYER="workqueue",
    )
    assert "fork pool equal: True" in out and "fork loader equal: True" in out, out


def test_a_forked_child_computes_with_one_torch_thread(tmp_path):
    out = _run(
        tmp_path,
        """
        import os
        import p3dlab.runtime.fork_safety as fork_safety
        torch.set_num_threads(2)
        pid = os.fork()
        if pid == 0:
            print("child:", fork_safety.in_forked_child(), torch.get_num_threads(), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print("parent:", fork_safety.in_forked_child(), torch.get_num_threads())
        """,
    )
    assert "child: True 1" in out and "parent: False 2" in out, out
