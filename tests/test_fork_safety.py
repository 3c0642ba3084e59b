"""Rendering in forked workers and in threads gives what the parent renders, or fails at once with a
message that says what to set; it never hangs or aborts (each scenario runs in a child Python with a
time limit)."""

import os
import subprocess
import sys
import textwrap

SCENE = """
import multiprocessing as mp, threading, torch
from torch.utils.data import DataLoader, Dataset
from p3dlab import data
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

def render_in_child(i):
    from p3dlab.kernels.parallel_jit import runs_serial_builds  # here: scenarios may need it unloaded

    return render(i), runs_serial_builds()

def render_in_threads(n_threads, renders_each):
    barrier = threading.Barrier(n_threads)  # all start together, to launch kernels at the same time
    results = []
    def work():
        barrier.wait()
        results.extend(render(0) for _ in range(renders_each))
    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    [t.start() for t in threads]; [t.join() for t in threads]
    return results

def outcome(fn):
    try:
        return fn()
    except Exception as error:  # the error crosses the process boundary with its type and message
        return f"{type(error).__name__}: {error}".replace("\\n", " | ")  # one line

def report(label, fn, expected):  # prints "label: True", or what came instead
    got = outcome(fn)
    print(f"{label}:", True if got == expected else got, flush=True)
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


def test_default_layer_forked_workers_spawned_workers_and_threads_render_what_the_parent_renders(tmp_path):
    out = _run(
        tmp_path,
        """
        if __name__ == "__main__":
            expected = render(0)  # the parent starts Numba's OpenMP threads first
            with mp.get_context("fork").Pool(2) as pool:  # the children run the kernels' serial builds
                report("fork pool", lambda: pool.map(render_in_child, range(2)), [(expected, True)] * 2)
            loader = DataLoader(Renders(), batch_size=2, num_workers=2)  # "fork" is its default on Linux
            report("fork loader", lambda: [float(x) for b in loader for x in b], [expected] * 4)
            # one worker: a spawned process imports torch and p3dlab afresh, seconds each
            with mp.get_context("spawn").Pool(1) as pool:
                report("spawn pool", lambda: pool.map(render_in_child, range(2)), [(expected, False)] * 2)
            report("threads", lambda: render_in_threads(2, 1), [expected] * 2)
        """,
        NUMBA_THREADING_LAYER="default",
    )
    assert "fork pool: True" in out and "fork loader: True" in out, out
    assert "spawn pool: True" in out and "threads: True" in out, out


def test_workqueue_layer_threads_take_turns_and_forked_workers_render(tmp_path):
    """Numba's workqueue layer aborts the process when two threads launch parallel kernels at once;
    p3dlab's kernels hold a lock around their launches there."""
    out = _run(
        tmp_path,
        """
        if __name__ == "__main__":
            expected = render(0)
            report("threads", lambda: render_in_threads(2, 5), [expected] * 10)
            with mp.get_context("fork").Pool(2) as pool:  # workqueue is fork-safe: the parallel builds
                report("fork pool", lambda: pool.map(render_in_child, range(2)), [(expected, False)] * 2)
        """,
        NUMBA_THREADING_LAYER="workqueue",
    )
    assert "threads: True" in out and "fork pool: True" in out, out


def test_a_forked_child_computes_with_one_torch_thread_and_refuses_only_kernels_that_missed_the_fork(tmp_path):
    """The program's own parallel Numba code started GNU OpenMP before p3dlab's kernels were loaded:
    loaded in the child, they cannot know it is a fork, and refuse at once."""
    out = _run(
        tmp_path,
        """
        import os
        import numba
        import p3dlab.runtime.fork_safety as fork_safety

        @numba.njit(parallel=True)
        def own_kernel(n):
            total = 0
            for i in numba.prange(n):
                total += i
            return total

        torch.set_num_threads(2)
        own_kernel(10)
        pid = os.fork()
        if pid == 0:
            print("child:", fork_safety.in_forked_child(), torch.get_num_threads(), flush=True)
            print("child render:", outcome(lambda: render(0)), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print("parent:", fork_safety.in_forked_child(), torch.get_num_threads())
        """,
        NUMBA_THREADING_LAYER="default",
    )
    assert "child: True 1" in out and "parent: False 2" in out, out
    (line,) = (line for line in out.splitlines() if line.startswith("child render"))
    assert "P3DLabProcessError" in line and "forked" in line, out
    assert "'spawn'" in line and "NUMBA_THREADING_LAYER=workqueue" in line, out
