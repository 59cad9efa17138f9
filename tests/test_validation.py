"""Tests for sustainlab.validation, the shared input checks."""

import numpy as np
import pytest
import torch

from sustainlab.validation import check_finite, check_option, check_same_length, check_scalar


def test_check_scalar_returns_clean_values():
    assert check_scalar(np.float32(0.5), "lr") == 0.5
    assert isinstance(check_scalar(3.0, "n_steps", integer=True), int)


@pytest.mark.parametrize(
    "value, kwargs, error, message",
    [
        (float("nan"), {}, ValueError, "lr must be a finite number"),
        (float("inf"), {}, ValueError, "lr must be a finite number"),
        ("0.1", {}, TypeError, "lr must be a number, got str"),
        (True, {}, TypeError, "lr must be a number"),
        (0.0, {"min_value": 0, "include_min": False}, ValueError, r"lr must be > 0"),
        (-1, {"min_value": 0}, ValueError, r"lr must be >= 0, got -1"),
        (2, {"max_value": 1}, ValueError, r"lr must be <= 1"),
        (1.5, {"integer": True}, TypeError, "lr must be an integer"),
    ],
)
def test_check_scalar_rejects(value, kwargs, error, message):
    with pytest.raises(error, match=message):
        check_scalar(value, "lr", **kwargs)


def test_check_finite_numpy_and_torch():
    check_finite(np.ones(3), "X")
    with pytest.raises(ValueError, match="X contains 2 NaN or infinite"):
        check_finite(np.array([1.0, np.nan, np.inf]), "X")
    with pytest.raises(ValueError, match="q contains 1 NaN"):
        check_finite(torch.tensor([0.0, float("nan")]), "q")
    with pytest.raises(ValueError, match="X must be numeric"):
        check_finite(np.array(["a", "b"]), "X")


def test_check_same_length_and_option():
    assert check_same_length(a=[1, 2], b=np.zeros(2)) == 2
    with pytest.raises(ValueError, match="a has 2, b has 3"):
        check_same_length(a=[1, 2], b=[1, 2, 3])
    with pytest.raises(ValueError, match="backend must be one of 'naive', 'sdpa'; got 'fast'"):
        check_option("fast", "backend", ("naive", "sdpa"))
