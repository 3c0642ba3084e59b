"""``p3dlab.widgets.progress``: a loop that stops early ends its bar as finished, not failed."""

import pytest

from p3dlab.widgets import progress


@pytest.fixture
def bars(monkeypatch):
    """Every tqdm bar ``progress`` makes, recorded."""
    import tqdm.auto

    made = []
    real = tqdm.auto.tqdm

    def recording(*args, **kwargs):
        bar = real(*args, **kwargs)
        made.append(bar)
        return bar

    monkeypatch.setattr(tqdm.auto, "tqdm", recording)
    return made


def test_counts_like_range(bars):
    assert list(progress(5, "fit")) == [0, 1, 2, 3, 4]
    bar = bars[0]
    assert bar.n == bar.total == 5


def test_an_early_break_ends_the_bar_complete(bars):
    for step in progress(100, "fit"):
        if step == 36:
            break
    bar = bars[0]
    assert bar.n == bar.total == 37  # tqdm's notebook bar turns red only when n < total on close
    assert "stopped at step 37 of 100" in bar.postfix


def test_a_loop_that_runs_out_is_untouched(bars):
    for _ in progress(3):
        pass
    assert bars[0].total == 3 and bars[0].n == 3 and not bars[0].postfix
