"""``interpolate_face_attributes``: the autograd path and the Numba inference path agree."""

import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.interpolate import interpolate_face_attributes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_path_equals_the_autograd_path_and_zeroes_empty_slots(dtype):
    g = torch.Generator().manual_seed(0)
    p2f = torch.randint(-1, 7, (2, 5, 6, 3), generator=g)
    bary = torch.rand(2, 5, 6, 3, 3, generator=g, dtype=dtype)
    attr = torch.randn(7, 3, 4, generator=g, dtype=dtype)
    with torch.no_grad():
        fast = interpolate_face_attributes(p2f, bary, attr)  # Numba pass
    slow = interpolate_face_attributes(p2f, bary, attr.clone().requires_grad_())  # autograd path
    assert fast.dtype == dtype and fast.shape == (2, 5, 6, 3, 4)
    assert torch.allclose(fast, slow.detach(), atol=1e-6 if dtype == torch.float32 else 1e-12)
    assert (fast[p2f < 0] == 0).all() and (p2f < 0).any()
    manual = (bary[0, 1, 2, 0, :, None] * attr[p2f[0, 1, 2, 0]]).sum(0) if p2f[0, 1, 2, 0] >= 0 else torch.zeros(4)
    assert torch.allclose(fast[0, 1, 2, 0], manual.to(dtype), atol=1e-6)
    with pytest.raises(P3DLabValueError, match="refers to face"):
        interpolate_face_attributes(p2f, bary, attr[:3])
