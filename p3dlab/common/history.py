"""The record of a fit: losses and wall times per step, held-out PSNR at the evaluated steps.

``p3dlab.volumes.fit_volume`` and ``p3dlab.nerf.fit_nerf`` both return a ``FitHistory``; it lives
here, below both, so that neither package imports the other. Its public name is
``p3dlab.volumes.FitHistory``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch


@dataclass
class FitHistory:
    """Losses and wall times per step, held-out PSNR at the evaluated steps, and the time at which
    the held-out PSNR first reached ``target_psnr`` (evaluations included). Shared by
    ``fit_volume`` and ``p3dlab.nerf.fit_nerf``."""

    steps: List[int] = field(default_factory=list)
    loss: List[float] = field(default_factory=list)
    test_steps: List[int] = field(default_factory=list)
    test_psnr: List[float] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)
    seconds_to_target: Optional[float] = None
    target_psnr: Optional[float] = None
    start: float = field(default_factory=time.perf_counter, repr=False)

    def record(self, step: int, loss: torch.Tensor) -> float:
        self.steps.append(step)
        self.loss.append(float(loss.detach()))
        self.seconds.append(time.perf_counter() - self.start)
        return self.loss[-1]

    def record_test(self, step: int, value: float) -> None:
        self.test_steps.append(step)
        self.test_psnr.append(value)
        reached = self.target_psnr is not None and value >= self.target_psnr
        if reached and self.seconds_to_target is None:
            self.seconds_to_target = time.perf_counter() - self.start

    @staticmethod
    def evaluation_due(step: int, every: int, iterations: int) -> bool:
        """Evaluate every ``every`` steps and after the last one."""
        return step % every == every - 1 or step == iterations - 1
