"""``p3dlab.runtime.huge_pages``: large scratch buffers on 2 MB pages, small ones from NumPy."""

import gc
import mmap
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from p3dlab.runtime import huge_pages
from p3dlab.runtime.volume_scratch import reused_empty

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


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_large_buffer_is_aligned_and_writable(dtype):
    a = huge_pages.empty_array((3, 1 << 19), dtype)
    assert a.shape == (3, 1 << 19) and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % huge_pages.HUGE_PAGE == 0
    a[:] = np.arange(a.size).reshape(a.shape)
    assert a[2, -1] == a.size - 1 and float(a.sum(dtype=np.float64)) == pytest.approx(a.size * (a.size - 1) / 2)


def test_small_buffers_come_from_numpy(monkeypatch):
    def no_mapping(*args, **kwargs):
        raise AssertionError("mapped")

    monkeypatch.setattr(huge_pages.mmap, "mmap", no_mapping)
    small = huge_pages.empty_array((100, 100), np.float32)  # 40 KB
    assert small.shape == (100, 100) and small.dtype == np.float32
    with pytest.raises(AssertionError, match="mapped"):
        huge_pages.empty_array((1 << 20,), np.float32)


@pytest.mark.skipif(_thp_mode() not in ("always", "madvise"), reason="transparent huge pages are off here")
def test_large_buffer_gets_huge_pages():
    a = huge_pages.empty_array((4 << 20,), np.float32)  # 16 MB
    a.fill(1.0)  # fault the pages in
    assert _anon_huge_kb(a.ctypes.data) >= 2048
    if _thp_mode() == "madvise":  # without the advice, a mapping of the same size stays on small pages
        # (a fresh mapping: torch.empty may land inside one that earlier code advised, seen once)
        plain = mmap.mmap(-1, 16 << 20)
        view = np.frombuffer(plain, np.float32)
        view.fill(1.0)
        assert _anon_huge_kb(view.ctypes.data) == 0
        del view
        plain.close()


def test_mapping_lives_while_a_view_does_and_is_released_after():
    t = torch.from_numpy(huge_pages.empty_array((1 << 20,), np.float32))
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
    t = reused_empty((2, 1 << 20), torch.float32, torch.device("cpu"))
    assert t.data_ptr() % huge_pages.HUGE_PAGE == 0
