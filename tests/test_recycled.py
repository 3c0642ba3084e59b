"""``p3dlab.runtime.recycled``: gradients handed to autograd reuse the memory of earlier ones only once
nothing refers to those any more."""

import threading

import numpy as np
import pytest
import torch

from p3dlab.ops import march_volumes, march_volumes_mse
from p3dlab.renderer import FoVPerspectiveCameras, NDCMultinomialRaysampler, look_at_view_transform
from p3dlab.runtime import recycled
from p3dlab.structures import Volumes

BUDGET = 1 << 30
SHAPE = (3, 1 << 19)  # 6 MB of float32: on huge pages


@pytest.fixture(autouse=True)
def empty_pool(monkeypatch):
    monkeypatch.setattr(recycled, "_POOL", [])


def test_memory_comes_back_only_when_nothing_refers_to_it():
    a = recycled.empty(SHAPE, torch.float32, BUDGET)
    first = a.data_ptr()
    b = recycled.empty(SHAPE, torch.float32, BUDGET)
    assert b.data_ptr() != first  # a is alive

    view = a[1:]
    del a
    c = recycled.empty(SHAPE, torch.float32, BUDGET)
    third = c.data_ptr()
    assert third not in (first, b.data_ptr())  # a view of a is alive
    del view, c

    d = recycled.empty(SHAPE, torch.float32, BUDGET)
    e = recycled.empty(SHAPE, torch.float32, BUDGET)
    assert (d.data_ptr(), e.data_ptr()) == (third, first)  # nothing refers to them: most recent first
    as_numpy = e.numpy()
    del e
    f = recycled.empty(SHAPE, torch.float32, BUDGET)
    assert f.data_ptr() not in (first, third, b.data_ptr())  # a NumPy array over e is alive
    del as_numpy

    p = torch.nn.Parameter(torch.zeros(SHAPE))
    p.grad = recycled.empty(SHAPE, torch.float32, BUDGET)  # e's memory again
    grad = p.grad.data_ptr()
    probe = recycled.empty(SHAPE, torch.float32, BUDGET)
    assert grad == first and probe.data_ptr() != grad  # held as .grad
    p.grad = None
    assert recycled.empty(SHAPE, torch.float32, BUDGET).data_ptr() == grad


def test_shapes_and_dtypes_are_kept_apart_and_other_dtypes_come_from_torch():
    a = recycled.empty((4, 5), torch.float64, BUDGET)
    ptr = a.data_ptr()
    del a
    b = recycled.empty((5, 4), torch.float64, BUDGET)
    c = recycled.empty((4, 5), torch.float32, BUDGET)
    assert b.shape == (5, 4) and c.dtype == torch.float32 and ptr not in (b.data_ptr(), c.data_ptr())
    half = recycled.empty((8,), torch.float16, BUDGET)
    assert half.dtype == torch.float16 and recycled.pooled_bytes() == 160 + 160 + 80  # a's kept, unused
    assert recycled.empty((4, 5), torch.float64, BUDGET).data_ptr() == ptr


def test_unused_arrays_beyond_the_budget_are_dropped_least_recent_first():
    arrays = [recycled.empty((1000 + i,), torch.float32, BUDGET) for i in range(3)]
    sizes = [a.numel() * 4 for a in arrays]
    del arrays
    assert recycled.pooled_bytes() == sum(sizes)
    kept = recycled.empty((10,), torch.float64, sizes[2] + sizes[1])  # in use: not counted
    assert recycled.pooled_bytes() == sizes[1] + sizes[2] + 80
    other = recycled.empty((20,), torch.float64, 0)  # both alive; everything unused goes
    assert recycled.pooled_bytes() == 80 + 160
    del kept, other


def test_threads_never_get_the_same_memory_at_once():
    errors = []

    def work(tid):
        for _ in range(300):
            t = recycled.empty((64,), torch.float64, BUDGET)
            t.fill_(tid)
            if not bool((t == tid).all()):
                errors.append(tid)

    threads = [threading.Thread(target=work, args=(tid,)) for tid in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # each thread holds at most 2 at a time (the last one until the new one is assigned): reused
    assert not errors and recycled.pooled_bytes() <= 2 * 6 * 64 * 8


def _ea_scene(size=24):
    g = torch.Generator().manual_seed(0)
    dens = (torch.rand(1, 1, size, size, size, generator=g) * 0.2).requires_grad_()
    cols = torch.rand(1, 3, size, size, size, generator=g).requires_grad_()
    R, T = look_at_view_transform(2.7, 10.0, 30.0)
    bundle = NDCMultinomialRaysampler(16, 16, 40, 0.1, 3.0)(FoVPerspectiveCameras(R=R, T=T))
    return dens, cols, bundle


def test_a_training_loop_reuses_its_gradients_memory_and_never_overwrites_kept_ones():
    dens, cols, bundle = _ea_scene()

    def step(weight):
        f, o, _, _ = march_volumes(Volumes(dens, cols, voxel_size=3.0 / 24), bundle, "ea")
        (weight * f.sum() + o.sum()).backward()

    step(1.0)
    kept = dens.grad, cols.grad  # the caller keeps the first gradients
    expected = [g.clone() for g in kept]
    dens.grad = cols.grad = None
    step(2.0)
    assert all(torch.equal(k, e) for k, e in zip(kept, expected))  # not overwritten
    assert dens.grad.data_ptr() != kept[0].data_ptr() and cols.grad.data_ptr() != kept[1].data_ptr()
    second = [dens.grad.data_ptr(), cols.grad.data_ptr()]
    reference = [dens.grad.clone(), cols.grad.clone()]

    del kept
    dens.grad = cols.grad = None
    step(2.0)  # as zero_grad() then backward: last step's memory (not the first step's), same values
    assert [dens.grad.data_ptr(), cols.grad.data_ptr()] == second  # the most recent unused memory
    assert torch.equal(dens.grad, reference[0]) and torch.equal(cols.grad, reference[1])
    ptrs = {dens.grad.data_ptr(), cols.grad.data_ptr()}
    dens.grad = cols.grad = None
    step(2.0)
    assert {dens.grad.data_ptr(), cols.grad.data_ptr()} == ptrs  # the memory of the step before
    assert torch.equal(dens.grad, reference[0]) and torch.equal(cols.grad, reference[1])


def test_the_fused_loss_reuses_its_gradients_memory_with_the_same_values():
    dens, cols, bundle = _ea_scene()
    target_f = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    target_o = torch.ones(1, 16, 16)
    grads, pooled = [], []
    for _ in range(4):
        dens.grad = cols.grad = None
        loss, _, _ = march_volumes_mse(Volumes(dens, cols, voxel_size=3.0 / 24), bundle, target_f, target_o)
        loss.backward()
        grads.append((dens.grad.clone(), cols.grad.clone()))
        pooled.append(recycled.pooled_bytes())
    assert pooled[1:] == pooled[:1] * 3  # the first step's buffers and gradients, every step
    assert all(torch.equal(grads[0][k], g[k]) for g in grads[1:] for k in (0, 1))
    assert float(grads[0][0].abs().sum()) > 0 and np.isfinite(grads[0][1].numpy()).all()


def test_the_fused_loss_hands_its_gradients_to_grad_without_a_copy_unless_the_graph_is_kept():
    dens, cols, bundle = _ea_scene()
    target_f, target_o = torch.zeros(1, 16, 16, 3), torch.ones(1, 16, 16)
    loss, _, _ = march_volumes_mse(Volumes(dens, cols, voxel_size=3.0 / 24), bundle, target_f, target_o)
    loss.backward()
    pooled = {a.ctypes.data for a in recycled._POOL}
    assert {dens.grad.data_ptr(), cols.grad.data_ptr()} <= pooled
    first = dens.grad.clone(), cols.grad.clone()

    dens.grad = cols.grad = None
    loss, _, _ = march_volumes_mse(Volumes(dens, cols, voxel_size=3.0 / 24), bundle, target_f, target_o)
    loss.backward(retain_graph=True)  # the graph keeps its gradients: .grad gets copies
    assert not {dens.grad.data_ptr(), cols.grad.data_ptr()} & {a.ctypes.data for a in recycled._POOL}
    loss.backward()
    assert torch.equal(dens.grad, 2 * first[0]) and torch.equal(cols.grad, 2 * first[1])
