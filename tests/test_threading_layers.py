"""The README's advice on Numba's threading layers: a program that forks workers which call p3dlab's
kernels starts with ``NUMBA_THREADING_LAYER=workqueue``, and its children then compute what the
parent computes."""

import os
import subprocess
import sys
import textwrap

FORKING_PROGRAM = textwrap.dedent(
    """
    import multiprocessing as mp

    import numba
    import torch

    from p3dlab.ops import sample_grid

    grid = torch.rand(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    points = torch.rand(1, 500, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1


    def child(queue):
        queue.put(sample_grid(grid, points).sum().item())  # a parallel kernel in the forked child


    if __name__ == "__main__":
        parent = sample_grid(grid, points).sum().item()  # the parent uses the kernels first
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        worker = ctx.Process(target=child, args=(queue,))
        worker.start()
        worker.join(120)
        print(numba.threading_layer(), worker.exitcode, parent, queue.get(timeout=5) if worker.exitcode == 0 else None)
    """
)


def test_forked_workers_run_the_kernels_with_the_workqueue_layer(tmp_path):
    script = tmp_path / "forking.py"
    script.write_text(FORKING_PROGRAM)
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    layer, exitcode, parent, child = done.stdout.split()
    assert layer == "workqueue" and exitcode == "0", done.stderr[-2000:]
    assert float(child) == float(parent) != 0.0
