"""Input checks used at the public boundary of every chapter module.

Each ``check_*`` helper returns the cleaned value and raises a ``ValueError`` (or ``TypeError``) whose message names
the parameter, says what was expected and shows what arrived. Functions below a public entry point trust their input
and do not validate again.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np


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

    Returns the value as ``int`` or ``float``.

    Examples
    --------
    >>> check_scalar(0.1, "lr", min_value=0, include_min=False)
    0.1
    >>> check_scalar(float("nan"), "lr")
    Traceback (most recent call last):
    ...
    ValueError: lr must be a finite number, got nan.
    """
    if isinstance(value, bool) or not isinstance(value, (Real, np.number)):
        kind = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}.")
    if integer:
        if float(value) != int(value):
            raise TypeError(f"{name} must be an integer, got {value!r}.")
        value = int(value)
    else:
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
    """
    lengths = {name: len(values) for name, values in arrays.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"Inputs have different lengths: {detail}.")
    return next(iter(lengths.values()), 0)


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
