"""Tests for sustainlab.validation, the shared input checks."""

import numpy as np
import pandas as pd
import pytest
import torch

from sustainlab.validation import (
    check_1d,
    check_finite,
    check_no_missing,
    check_option,
    check_same_length,
    check_sample_weight,
    check_scalar,
)


def test_check_scalar_returns_clean_values():
    assert check_scalar(np.float32(0.5), "lr") == 0.5
    assert isinstance(check_scalar(np.int64(3), "n_steps", integer=True), int)
    assert check_scalar(np.int64(3), "n_steps", integer=True) == 3


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
        # One integer rule: numbers.Integral except bool; a float is refused even when it is whole, inf and nan too.
        (3.0, {"integer": True}, TypeError, "lr must be an integer, got float 3.0"),
        (True, {"integer": True}, TypeError, "lr must be an integer, got bool"),
        (float("inf"), {"integer": True}, TypeError, "lr must be an integer, got float inf"),
        (float("nan"), {"integer": True}, TypeError, "lr must be an integer, got float nan"),
        (np.float64(2.0), {"integer": True}, TypeError, "lr must be an integer"),
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


@pytest.mark.parametrize("bad, shown",
                         [(3, "int 3"), (np.float64(2.0), "float64"), ("abc", "str"), (np.array(1), "ndarray")])
def test_check_same_length_names_a_non_array(bad, shown):
    with pytest.raises(TypeError, match=f"y must be array-like with one entry per sample.*got {shown}"):
        check_same_length(X=[1, 2, 3], y=bad)


def test_check_1d_flattens_vectors_and_names_the_parameter():
    assert check_1d([[1], [2], [3]], "y").tolist() == [1, 2, 3]
    assert check_1d(np.array([[1, 2, 3]]), "y").tolist() == [1, 2, 3]
    assert check_1d(pd.Series(["a", "b"]), "g").tolist() == ["a", "b"]
    with pytest.raises(ValueError, match=r"y_pred must be one-dimensional, got shape \(2, 2\)"):
        check_1d([[0, 1], [1, 0]], "y_pred")
    with pytest.raises(TypeError, match="y must be array-like"):
        check_1d(5, "y")


def test_check_no_missing_and_sample_weight():
    check_no_missing(np.array(["a", "b"], dtype=object), "g")
    with pytest.raises(ValueError, match="g contains 2 missing"):
        check_no_missing(np.array(["a", None, np.nan], dtype=object), "g")
    assert check_sample_weight(None, 3).tolist() == [1.0, 1.0, 1.0]
    assert check_sample_weight([1, 2], 2).dtype == float
    for weights, error, message in [([1, -1], ValueError, "non-negative"), ([1, np.inf], ValueError, "infinite"),
                                    ([1, 1, 1], ValueError, "different lengths"), (["a", "b"], TypeError, "numbers")]:
        with pytest.raises(error, match=f"sample_weight.*{message}|{message}"):
            check_sample_weight(weights, 2)
