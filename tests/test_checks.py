"""The exercise checker: right answers pass, wrong ones fail with a kind report, never a traceback."""

import numpy as np
import pytest
import torch

from utils.checks import check


def reference_square(x):
    return x * x


def test_right_function_passes_on_every_case(capsys):
    result = check(lambda x: x**2, reference_square, name="square", inputs=[(1,), (2,), (3,)])
    assert result.passed and result.attempted
    assert "✅ square: correct (3 cases)" in capsys.readouterr().out


def test_wrong_function_reports_yours_vs_expected(capsys):
    result = check(lambda x: x + x, reference_square, name="square", inputs=[(2,), (3,)])
    out = capsys.readouterr().out
    assert not result.passed
    assert "case 2 of 2" in out and "yours:    6" in out and "expected: 9" in out


def test_stub_is_reported_as_not_attempted(capsys):
    def stub(x):
        raise NotImplementedError

    result = check(stub, reference_square, name="square", inputs=[(2,)], hints=("multiply x by itself",))
    out = capsys.readouterr().out
    assert not result.passed and not result.attempted
    assert "not attempted yet" in out and "1 hint available" in out


def test_exception_in_answer_is_reported_without_traceback(capsys):
    result = check(lambda x: x / 0, reference_square, name="square", inputs=[(2,)])
    out = capsys.readouterr().out
    assert not result.passed
    assert "ZeroDivisionError" in out and "Traceback" not in out


def test_hints_shown_on_request(capsys):
    check(lambda x: 0, reference_square, inputs=[(2,)], hints=("one", "two"), hint=2)
    out = capsys.readouterr().out
    assert "hint 1: one" in out and "hint 2: two" in out


@pytest.mark.parametrize(
    "yours, expected, ok",
    [
        (torch.ones(3), torch.ones(3) + 1e-8, True),
        (torch.ones(3), torch.ones(3) + 1e-2, False),
        (torch.ones(3), torch.ones(4), False),
        (np.arange(4), np.arange(4), True),
        (np.arange(4), np.arange(1, 5), False),
        ([1, 2, 3], [1, 2, 3], True),
        ([1, 2, 3], [1, 2], False),
        (0.1 + 0.2, 0.3, True),
        ("1F0", "1F0", True),
        ({"a": 1.0}, {"a": 1.0 + 1e-9}, True),
    ],
)
def test_default_comparison(yours, expected, ok):
    assert check(yours, expected).passed is ok


def test_wrong_shape_and_type_are_named(capsys):
    check(torch.zeros(2, 3), torch.zeros(3, 2), name="shape")
    assert "shape (2, 3), expected (3, 2)" in capsys.readouterr().out
    check("7", 7, name="type")
    assert "you returned a str, expected an int" in capsys.readouterr().out


def test_custom_compare_and_show_on_mismatch():
    drawn = []
    result = check(3, 4, compare=lambda a, b: abs(a - b) <= 1, show=lambda a, b: drawn.append((a, b)))
    assert result.passed and drawn == []
    result = check(3, 5, compare=lambda a, b: abs(a - b) <= 1, show=lambda a, b: drawn.append((a, b)))
    assert not result.passed and drawn == [(3, 5)]


def test_inputs_need_a_callable_reference():
    with pytest.raises(ValueError, match="reference must be a function"):
        check(lambda x: x, 4, inputs=[(2,)])
