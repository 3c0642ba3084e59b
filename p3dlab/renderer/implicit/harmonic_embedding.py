"""PyTorch3D's ``pytorch3d.renderer.implicit.harmonic_embedding``: the positional encoding of NeRF.

It lives in the renderer (below ``p3dlab.nerf``, which builds its fields from it) so that
``p3dlab.renderer.HarmonicEmbedding`` resolves without the renderer importing upward.
"""

from __future__ import annotations

import torch

from p3dlab.errors import P3DLabValueError


class HarmonicEmbedding(torch.nn.Module):
    """Positional encoding ``[sin(w_k x), cos(w_k x), x]`` of the last dimension of ``x``.

    ``w_k = omega_0 2^k`` for k < ``n_harmonic_functions`` (``logspace=True``) or ``omega_0`` times
    L values spaced linearly from 1 to ``2^(L-1)``; the input itself is appended when
    ``append_input``. An input (..., d) gives (..., d (2L + 1)) or (..., 2 d L) without the input.
    """

    def __init__(
        self, n_harmonic_functions: int = 6, omega_0: float = 1.0, logspace: bool = True, append_input: bool = True
    ):
        super().__init__()
        if n_harmonic_functions < 0:
            raise P3DLabValueError("n_harmonic_functions must be >= 0")
        L = n_harmonic_functions
        if logspace:
            freqs = 2.0 ** torch.arange(L, dtype=torch.float32)
        else:
            freqs = torch.linspace(1.0, 2.0 ** max(L - 1, 0), L) if L > 1 else torch.ones(L)
        self.register_buffer("_frequencies", omega_0 * freqs, persistent=False)
        self.append_input = append_input

    def get_output_dim(self, input_dims: int = 3) -> int:
        return input_dims * (2 * self._frequencies.numel() + int(self.append_input))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embed = (x[..., None] * self._frequencies.to(x)).reshape(*x.shape[:-1], -1)
        parts = [embed.sin(), embed.cos()] + ([x] if self.append_input else [])
        return torch.cat(parts, -1)
