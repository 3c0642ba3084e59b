"""A progress bar for optimisation loops that may stop early.

``for it in progress(200, "fitting"): ... if converged: break`` counts like ``range(200)``. When the
loop ends, whether it ran all its steps or stopped at convergence, the bar ends as finished: tqdm's
notebook bar would otherwise turn red ("danger") at the step where the loop stopped, which reads as
an error. (An exception inside the loop ends the bar the same way; its traceback says what failed.)
"""

from __future__ import annotations

from typing import Iterator, Optional

__all__ = ["progress"]


def progress(steps: int, desc: Optional[str] = None, leave: bool = False) -> Iterator[int]:
    """``range(steps)`` with a tqdm bar (``tqdm.auto``: a widget in notebooks, text elsewhere).

    On an early ``break`` the bar's total becomes the steps done and its caption says "stopped at
    step k of n", so it closes as finished (hidden with ``leave=False``, green with ``leave=True``).
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc=desc, leave=leave)
    finished = False
    try:
        for step in range(steps):
            yield step
            bar.update(1)
        finished = True
    except GeneratorExit:  # the loop broke out early: a normal end, not an error
        finished = True
        raise
    finally:
        if finished and bar.n < steps:
            bar.set_postfix_str(f"stopped at step {bar.n + 1} of {steps}", refresh=False)
            bar.total = bar.n + 1
            bar.update(1)  # the step the loop broke in counts as done
        bar.close()
