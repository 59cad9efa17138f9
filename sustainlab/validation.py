"""Input checks shared by the chapter modules' public functions.

Each ``check_*`` helper returns the cleaned value and raises a ``ValueError`` (or ``TypeError``) whose message names
the parameter, says what was expected and shows what arrived. Functions below a public entry point trust their input
and do not validate again. Checks that only make sense in one chapter (tensor shapes for attention, binary labels and
sensitive features for fairness, sampling strategies for SMOTE, ...) stay in that chapter's module and are built on
these. Where scikit-learn's ``sklearn.utils`` already does the work (``column_or_1d``), it is used underneath; its
messages do not name the parameter, so the ones here wrap it.

One integer rule everywhere: an integer parameter accepts any :class:`numbers.Integral` (``int``, ``numpy.int64``,
...) except ``bool``, and nothing else (not ``2.0``).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

__all__ = ["check_scalar", "check_finite", "check_same_length", "check_option", "check_1d", "check_no_missing",
           "check_sample_weight", "check_random_state_alias"]


def check_scalar(
    value,
    name: str,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    include_min: bool = True,
    include_max: bool = True,
    integer: bool = False,
):
    """Check that ``value`` is a finite real number (an integer if ``integer``) inside the given bounds.

    Returns the value as ``int`` or ``float``. An integer is any :class:`numbers.Integral` but ``bool`` (so
    ``numpy.int64(2)`` is accepted and ``2.0`` is not).

    Examples
    --------
    >>> check_scalar(0.1, "lr", min_value=0, include_min=False)
    0.1
    >>> check_scalar(float("nan"), "lr")
    Traceback (most recent call last):
    ...
    ValueError: lr must be a finite number, got nan.
    >>> check_scalar(float("inf"), "n_steps", integer=True)
    Traceback (most recent call last):
    ...
    TypeError: n_steps must be an integer, got float inf.
    """
    if integer:
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}.")
        value = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, (Real, np.number)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}.")
    if min_value is not None and (value < min_value or (value == min_value and not include_min)):
        bound = ">=" if include_min else ">"
        raise ValueError(f"{name} must be {bound} {min_value}, got {value}.")
    if max_value is not None and (value > max_value or (value == max_value and not include_max)):
        bound = "<=" if include_max else "<"
        raise ValueError(f"{name} must be {bound} {max_value}, got {value}.")
    return value


def check_finite(array, name: str):
    """Raise a ``ValueError`` naming ``name`` if ``array`` (NumPy array or torch tensor) holds NaN or inf.

    Returns ``array`` unchanged.
    """
    if hasattr(array, "detach"):
        import torch

        bad = ~torch.isfinite(array)
        n_bad = int(bad.sum())
    else:
        values = np.asarray(array)
        if not np.issubdtype(values.dtype, np.number):
            raise ValueError(f"{name} must be numeric, got dtype {values.dtype}.")
        n_bad = int((~np.isfinite(values)).sum())
    if n_bad:
        raise ValueError(f"{name} contains {n_bad} NaN or infinite value(s); remove or impute them first.")
    return array


def check_same_length(**arrays) -> int:
    """Check that all keyword arrays have the same first dimension; returns that length.

    Examples
    --------
    >>> check_same_length(y_true=[0, 1], y_pred=[1, 1])
    2
    >>> check_same_length(y_true=[0, 1], y_pred=[1])
    Traceback (most recent call last):
    ...
    ValueError: Inputs have different lengths: y_true has 2, y_pred has 1.
    >>> check_same_length(y_true=[0, 1], y_pred=3)
    Traceback (most recent call last):
    ...
    TypeError: y_pred must be array-like with one entry per sample (list, NumPy array, Series, tensor), got int 3.
    """
    lengths = {name: _n_samples(values, name) for name, values in arrays.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"Inputs have different lengths: {detail}.")
    return next(iter(lengths.values()), 0)


def _n_samples(values, name: str) -> int:
    shape = getattr(values, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    if shape is not None or isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(
            f"{name} must be array-like with one entry per sample (list, NumPy array, Series, tensor), "
            f"got {type(values).__name__} {values!r}."
        )
    return len(values)


def check_1d(values, name: str) -> np.ndarray:
    """``values`` as a one-dimensional NumPy array (a column or row vector is flattened); pandas input is unwrapped.

    Built on :func:`sklearn.utils.column_or_1d`, with the error naming ``name``. Values are not converted (strings stay
    strings) and missing values are allowed here (see :func:`check_no_missing`).

    Examples
    --------
    >>> check_1d([[1], [2]], "y").tolist()
    [1, 2]
    >>> check_1d([[1, 2], [3, 4]], "y_true")
    Traceback (most recent call last):
    ...
    ValueError: y_true must be one-dimensional, got shape (2, 2).
    """
    from sklearn.utils import column_or_1d

    _n_samples(values, name)
    if hasattr(values, "to_numpy"):  # pandas: keep labels as they are (categoricals become their values)
        values = values.to_numpy()
    array = np.asarray(values)
    if array.ndim == 2 and 1 in array.shape:
        array = array.ravel()  # a row vector too, which column_or_1d would refuse
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}.")
    return column_or_1d(array, warn=False)


def check_no_missing(array, name: str):
    """Raise a ``ValueError`` naming ``name`` if ``array`` holds missing values (NaN, None, ``pd.NA``); any dtype.

    Returns ``array`` unchanged.
    """
    import pandas as pd

    n_missing = int(pd.isna(np.asarray(array, dtype=object)).sum())
    if n_missing:
        raise ValueError(f"{name} contains {n_missing} missing (NaN) value(s); drop or impute those rows first.")
    return array


def check_sample_weight(sample_weight, n_samples: int, name: str = "sample_weight") -> np.ndarray:
    """``sample_weight`` as a float array of ``n_samples`` finite, non-negative weights (ones when ``None``).

    Examples
    --------
    >>> check_sample_weight(None, 2).tolist()
    [1.0, 1.0]
    >>> check_sample_weight([1, -1], 2)
    Traceback (most recent call last):
    ...
    ValueError: sample_weight must be non-negative, got 1 negative weight(s).
    """
    if sample_weight is None:
        return np.ones(n_samples)
    weights = check_1d(sample_weight, name)
    if not np.issubdtype(weights.dtype, np.number) or np.issubdtype(weights.dtype, np.bool_):
        raise TypeError(f"{name} must hold numbers, got dtype {weights.dtype}.")
    weights = weights.astype(float)
    if len(weights) != n_samples:
        raise ValueError(f"{name} and the samples have different lengths: {len(weights)} weights for {n_samples} "
                         "samples; give one weight per sample.")
    check_finite(weights, name)
    n_negative = int((weights < 0).sum())
    if n_negative:
        raise ValueError(f"{name} must be non-negative, got {n_negative} negative weight(s).")
    return weights


def check_option(value, name: str, options) -> str:
    """Check that ``value`` is one of ``options``; the error lists them.

    Examples
    --------
    >>> check_option("adam", "optimizer", ("sgd", "adam"))
    'adam'
    """
    if value not in options:
        allowed = ", ".join(repr(o) for o in options)
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}.")
    return value


def check_random_state_alias(random_state, seed, func: str):
    """``random_state``, or the deprecated ``seed`` when that is given (with a ``DeprecationWarning``).

    Every function of the package names its seed ``random_state``, as scikit-learn does; the few that used to call it
    ``seed`` and are called that way in the notebooks keep ``seed`` as a deprecated alias through this helper.
    """
    if seed is None:
        return random_state
    import warnings

    warnings.warn(f"{func}(seed=...) is deprecated; pass random_state=... (the same number) instead.",
                  DeprecationWarning, stacklevel=3)
    return seed
