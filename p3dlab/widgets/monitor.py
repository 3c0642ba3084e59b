"""``OptimizationMonitor``: a live view of any training loop, updated in place.

In Jupyter it shows the loss curves, the current render and parameter readouts in one widget that
is redrawn every ``every`` steps (no new output cells, no matplotlib ``show`` in the loop). Outside
Jupyter it prints one text line every ``every`` steps instead.
"""

from __future__ import annotations

import io
from typing import Dict, List, Optional

import numpy as np


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        ip = get_ipython()
        return ip is not None and "IPKernelApp" in ip.config
    except Exception:  # IPython missing or not configured
        return False


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


class OptimizationMonitor:
    """``mon = OptimizationMonitor(); for step ...: mon.update(step, {"loss": l}, image=img)``.

    Args:
        title: shown above the widget.
        every: redraw (or print) every this many updates; the last update is always drawn by
            ``close()``.
        log_scale: plot losses on a log axis.
        mode: "auto" (widget in Jupyter, text elsewhere), "widget" or "text".
    """

    def __init__(
        self, title: str = "", every: int = 10, log_scale: bool = True, mode: str = "auto", display: bool = True
    ):
        if mode not in ("auto", "widget", "text"):
            raise ValueError(f"mode must be auto, widget or text, got {mode!r}")
        self.title, self.every, self.log_scale = title, max(int(every), 1), log_scale
        self.widget_mode = mode == "widget" or (mode == "auto" and _in_notebook())
        self.history: Dict[str, List[float]] = {}
        self.steps: List[int] = []
        self.params: Dict[str, object] = {}
        self._image = None
        self._count = 0
        self._ax = None  # the loss plot (``_axes``) and its line per loss
        self._lines: Dict[str, object] = {}
        self.widget = None
        if self.widget_mode:
            import ipywidgets as widgets

            self._plot = widgets.Image(format="png", width=420)
            # hidden until the first image: an empty image widget shows a broken-image icon
            self._render = widgets.Image(format="png", width=220, layout=widgets.Layout(display="none"))
            self._text = widgets.HTML()
            self.widget = widgets.VBox(
                [widgets.HTML(f"<b>{title}</b>"), widgets.HBox([self._plot, self._render]), self._text]
            )
            if display:
                from IPython.display import display as show

                show(self.widget)

    def update(
        self, step: int, losses: Dict[str, float], image=None, params: Optional[Dict[str, object]] = None
    ) -> None:
        """Record one step: scalar losses, an optional (H, W, 3) image in [0, 1] and readouts."""
        self.steps.append(int(step))
        for k, v in losses.items():
            self.history.setdefault(k, []).append(float(v))
        if image is not None:
            self._image = image
        if params:
            self.params.update(params)
        self._count += 1
        if self._count % self.every == 0:
            self.draw()

    def _readout(self) -> str:
        parts = [f"step {self.steps[-1]}"] if self.steps else []
        parts += [f"{k} {v[-1]:.4g}" for k, v in self.history.items()]
        parts += [f"{k} {v}" for k, v in self.params.items()]
        return "   ".join(parts)

    def draw(self) -> None:
        if not self.steps:
            return
        if not self.widget_mode:
            print(self._readout(), flush=True)
            return
        ax = self._axes()
        for k, v in self.history.items():
            if k not in self._lines:
                (self._lines[k],) = ax.plot([], [], label=k)
                ax.legend(fontsize=7)
            self._lines[k].set_data(self.steps[-len(v) :], v)
        log = self.log_scale and all(min(v) > 0 for v in self.history.values())
        ax.set_yscale("log" if log else "linear")
        ax.relim()
        ax.autoscale_view()
        buf = io.BytesIO()
        ax.figure.savefig(buf, format="png")
        self._plot.value = buf.getvalue()
        if self._image is not None:
            img = self._image.detach().cpu().numpy() if hasattr(self._image, "detach") else np.asarray(self._image)
            self._render.value = _png((np.clip(img[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8))
            self._render.layout.display = None
        self._text.value = f"<code>{self._readout()}</code>"

    def _axes(self):
        """The loss plot's axes, made on the first draw and kept: a new figure at every draw costs
        four times as much (docs/performance.md#other-operations)."""
        if self._ax is None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            fig = Figure(figsize=(4.2, 2.6), dpi=100)
            FigureCanvasAgg(fig)
            fig.subplots_adjust(left=0.16, right=0.97, bottom=0.18, top=0.96)
            self._ax = fig.add_subplot(1, 1, 1)
            self._ax.set_xlabel("step")
        return self._ax

    def close(self) -> None:
        """Draw the final state."""
        self.draw()
