"""``p3dlab.ops.huge_pages``: large scratch buffers on 2 MB pages, small ones from torch."""

import gc
import mmap
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from p3dlab.ops import huge_pages
from p3dlab.ops.volume_sampling import _reused_empty

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _thp_mode() -> str:
    """The selected transparent huge page mode ("always", "madvise", "never"), "" if unknown."""
    try:
        text = THP.read_text()
    except OSError:
        return ""
    return text[text.index("[") + 1 : text.index("]")] if "[" in text else ""


def _anon_huge_kb(address: int) -> int:
    """``AnonHugePages`` (kB) of this process's mapping that contains ``address``."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_large_buffer_is_aligned_writable_tensor(dtype):
    t = huge_pages.empty((3, 1 << 19), dtype)
    assert t.shape == (3, 1 << 19) and t.dtype == dtype and t.device.type == "cpu" and t.is_contiguous()
    assert t.data_ptr() % huge_pages.HUGE_PAGE == 0
    t.copy_(torch.arange(t.numel()).reshape(t.shape).to(dtype))
    assert t[2, -1].item() == t.numel() - 1 and t.sum().item() == pytest.approx(t.numel() * (t.numel() - 1) / 2)


def test_small_buffers_and_other_dtypes_come_from_torch(monkeypatch):
    def no_mapping(*args, **kwargs):
        raise AssertionError("mapped")

    monkeypatch.setattr(huge_pages.mmap, "mmap", no_mapping)
    small = huge_pages.empty((100, 100), torch.float32)  # 40 KB
    assert small.shape == (100, 100) and small.dtype == torch.float32
    half = huge_pages.empty((1 << 21,), torch.float16)  # 4 MB, no NumPy dtype in the table
    assert half.dtype == torch.float16 and half.shape == (1 << 21,)
    with pytest.raises(AssertionError, match="mapped"):
        huge_pages.empty((1 << 20,), torch.float32)


@pytest.mark.skipif(_thp_mode() not in ("always", "madvise"), reason="transparent huge pages are off here")
def test_large_buffer_gets_huge_pages():
    t = huge_pages.empty((4 << 20,), torch.float32)  # 16 MB
    t.fill_(1.0)  # fault the pages in
    assert _anon_huge_kb(t.data_ptr()) >= 2048
    if _thp_mode() == "madvise":  # without the advice, a mapping of the same size stays on small pages
        # (a fresh mapping: torch.empty may land inside one that earlier code advised, seen once)
        plain = mmap.mmap(-1, 16 << 20)
        view = np.frombuffer(plain, np.float32)
        view.fill(1.0)
        assert _anon_huge_kb(view.ctypes.data) == 0
        del view
        plain.close()


def test_mapping_lives_while_a_view_does_and_is_released_after():
    t = huge_pages.empty((1 << 20,), torch.float32)
    view = t[10:20]
    view.fill_(7.0)
    base = weakref.ref(t)
    del t
    gc.collect()
    assert view.sum().item() == 70.0  # the view keeps the mapping
    del view
    gc.collect()
    assert base() is None


def test_volume_buffers_are_huge_page_buffers():
    t = _reused_empty((2, 1 << 20), torch.float32, torch.device("cpu"))
    assert t.data_ptr() % huge_pages.HUGE_PAGE == 0
