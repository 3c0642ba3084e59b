"""The ``Device`` type alias and the two helpers that turn it into a ``torch.device``.

PyTorch3D's signatures annotate devices as ``Device`` (a string such as ``"cpu"`` or a
``torch.device``); code ported from it imports the alias from here.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from p3dlab.errors import P3DLabValueError

Device = Union[str, torch.device]


def make_device(device: Device) -> torch.device:
    """A ``torch.device`` from a string or a ``torch.device``.

    A CUDA device without an index means the current CUDA device, so it is given that index
    (as PyTorch3D does) when CUDA is available; elsewhere the device is returned as parsed.
    """
    if isinstance(device, str):
        try:
            device = torch.device(device)
        except RuntimeError as err:
            raise P3DLabValueError(f"make_device: {device!r} is not a device name ({err})") from None
    elif not isinstance(device, torch.device):
        raise P3DLabValueError(f"make_device: expected a str or torch.device, got {type(device).__name__}")
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def get_device(x, device: Optional[Device] = None) -> torch.device:
    """``device`` when given, else the device of ``x`` if it is a tensor, else the CPU."""
    if device is not None:
        return make_device(device)
    if torch.is_tensor(x):
        return x.device
    return torch.device("cpu")
