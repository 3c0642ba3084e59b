import numpy as np
import pytest

from p3dlab.kernels.text_parse import parse_ints


def _p(text):
    return parse_ints(np.frombuffer(text.encode(), np.uint8))


def test_integers_slashes_and_empty_fields():
    vals, bad = _p("1 2 3\n-4/5/6 7//8\t+9")
    assert bad == -1 and vals.tolist() == [1, 2, 3, -4, 5, 6, 7, 0, 8, 9]


@pytest.mark.parametrize("text, pos", [("1 2 x", 4), ("1 2.5", 3), ("12a", 2), ("-", 0), ("1 " + "9" * 19, 20)])
def test_bad_characters_report_their_offset(text, pos):
    vals, bad = _p(text)
    assert bad == pos


def test_empty_and_large():
    assert _p("")[0].size == 0 and _p("")[1] == -1
    big = " ".join(str(i) for i in range(100000))
    vals, bad = _p(big)
    assert bad == -1 and np.array_equal(vals, np.arange(100000))
