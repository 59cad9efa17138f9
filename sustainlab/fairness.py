"""Group fairness metrics from scratch, with fairlearn's signatures (chapter 4).

A *disaggregated* metric is an ordinary metric (accuracy, selection rate, true-positive rate) computed separately for
each group defined by one or more sensitive features. A *disparity* summarises how far apart the groups are, as a
difference (largest minus smallest, 0 = parity) or a ratio (smallest over largest, 1 = parity).

Taught in ``notebooks/04_fairness.ipynb`` (*What are selection rate, TPR and FPR — computed by hand?*), where each
function is first computed by hand and then compared with fairlearn's ``MetricFrame``. The numbers here equal
fairlearn's within 1e-12 (``tests/test_fairness.py``); the code is plain numpy/pandas so that it can be read in one
sitting.

Public API
----------
Base rates (one group at a time)
    :func:`selection_rate`, :func:`true_positive_rate`, :func:`false_positive_rate`
Disaggregation
    :func:`group_metrics` (like ``MetricFrame(...).by_group``)
Disparities
    :func:`demographic_parity_difference`, :func:`demographic_parity_ratio`, :func:`equalized_odds_difference`,
    :func:`equalized_odds_ratio`, :func:`equal_opportunity_difference`
Reports and plots
    :func:`compare_predictions`, :func:`plot_group_metric`, :func:`plot_tradeoff`
Notebook data
    :func:`split_arrests` (the chapter's train/test split of the Toronto arrests data)

Undefined rates
---------------
A true-positive rate needs at least one actual positive in the group, a false-positive rate at least one actual
negative. When a group has none, the rate is 0/0. ``zero_division`` decides what to report, as in scikit-learn:

- ``"warn"`` (default): report 0.0, as fairlearn and scikit-learn do, and emit an :class:`UndefinedRateWarning`
  naming the rate, so that a made-up 0 does not silently decide a disparity;
- a number (``0.0`` or ``1.0``): report that number, without warning;
- ``numpy.nan``: report NaN; disparities then skip that group, and are NaN with an :class:`UndefinedRateWarning`
  when fewer than two groups are left to compare (fairlearn reports 0 then, which reads as parity).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from .validation import check_1d, check_no_missing, check_option, check_same_length, check_sample_weight

__all__ = [
    "UndefinedRateWarning",
    "selection_rate",
    "true_positive_rate",
    "false_positive_rate",
    "group_metrics",
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "equal_opportunity_difference",
    "compare_predictions",
    "plot_group_metric",
    "plot_tradeoff",
    "ARRESTS_FEATURES",
    "ArrestsSplit",
    "split_arrests",
    "bootstrap_group_metric",
    "proxy_strength",
    "impossibility_table",
    "calibration_by_group",
]

_METHODS = ("between_groups", "to_overall")
_AGGS = ("worst_case", "mean")


class UndefinedRateWarning(UserWarning):
    """A rate was 0/0 for some group (e.g. a true-positive rate in a group with no actual positives)."""


# --------------------------------------------------------------------------------------------------------------------
# Base rates
# --------------------------------------------------------------------------------------------------------------------


def selection_rate(y_true, y_pred, *, pos_label=1, sample_weight=None) -> float:
    """Fraction of predictions equal to ``pos_label``: how often the model "selects" someone.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Ignored apart from its length (kept for a uniform metric signature, as in fairlearn).
    y_pred : array-like of shape (n_samples,)
        Binary predictions.
    pos_label : scalar, default 1
        The favourable outcome.
    sample_weight : array-like of shape (n_samples,), optional
        Non-negative weights.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Lengths differ, ``y_pred`` is empty, holds NaN or more than two values, or weights are negative/zero in total.

    Examples
    --------
    >>> selection_rate([0, 1, 1, 0], [1, 1, 0, 0])
    0.5
    """
    y_true, y_pred, weights = _check_labels(y_true, y_pred, sample_weight, pos_label)
    return float(weights[y_pred].sum() / weights.sum())


def true_positive_rate(y_true, y_pred, *, pos_label=1, sample_weight=None, zero_division="warn") -> float:
    """Share of actual positives predicted positive (recall, sensitivity): P(ŷ = 1 | y = 1).

    Parameters are those of :func:`selection_rate`, plus ``zero_division`` (see the module docstring) for when
    ``y_true`` holds no positive.

    Examples
    --------
    >>> true_positive_rate([1, 1, 0, 0], [1, 0, 1, 0])
    0.5
    """
    y_true, y_pred, weights = _check_labels(y_true, y_pred, sample_weight, pos_label)
    zero_division = _check_zero_division(zero_division)
    return _rate(weights[y_true & y_pred].sum(), weights[y_true].sum(), zero_division, "true-positive rate")


def false_positive_rate(y_true, y_pred, *, pos_label=1, sample_weight=None, zero_division="warn") -> float:
    """Share of actual negatives predicted positive: P(ŷ = 1 | y = 0).

    Parameters are those of :func:`true_positive_rate`; ``zero_division`` applies when ``y_true`` has no negative.

    Examples
    --------
    >>> false_positive_rate([1, 1, 0, 0], [1, 0, 1, 1])
    1.0
    """
    y_true, y_pred, weights = _check_labels(y_true, y_pred, sample_weight, pos_label)
    zero_division = _check_zero_division(zero_division)
    return _rate(weights[~y_true & y_pred].sum(), weights[~y_true].sum(), zero_division, "false-positive rate")


# --------------------------------------------------------------------------------------------------------------------
# Disaggregation
# --------------------------------------------------------------------------------------------------------------------


def group_metrics(metrics, y_true, y_pred, *, sensitive_features, sample_weight=None) -> pd.DataFrame:
    """Compute each metric separately for every group: the table fairlearn calls ``MetricFrame(...).by_group``.

    Parameters
    ----------
    metrics : callable or dict of {str: callable}
        Functions ``metric(y_true, y_pred)`` returning a number (scikit-learn metrics or the rates above). A single
        callable gives one column named after the function.
    y_true, y_pred : array-like of shape (n_samples,)
        Passed, restricted to one group at a time, to every metric. Not checked for binariness here: the metrics do
        their own checks.
    sensitive_features : array-like of shape (n_samples,), DataFrame, dict of arrays, or 2-D array
        One column gives one group per value; several columns give intersectional groups (one per observed
        combination). Labels may be strings, integers or categoricals.
    sample_weight : array-like of shape (n_samples,), optional
        When given, passed to every metric as ``sample_weight=``.

    Returns
    -------
    pandas.DataFrame
        Indexed by group (a MultiIndex for several sensitive features, names as in fairlearn: the Series/column name,
        else ``sensitive_feature_<i>``), one column per metric, groups sorted by label. Only observed groups appear.

    Raises
    ------
    ValueError
        Lengths differ, labels or groups contain NaN, there is only one group, or ``metrics`` is empty.

    Examples
    --------
    >>> table = group_metrics({"sr": selection_rate}, [0, 1, 1, 0], [1, 1, 0, 0], sensitive_features=["a", "a", "b", "b"])
    >>> table["sr"].to_dict()
    {'a': 1.0, 'b': 0.0}
    """
    if callable(metrics):
        metrics = {getattr(metrics, "__name__", "metric"): metrics}
    if not isinstance(metrics, Mapping) or not metrics or not all(callable(f) for f in metrics.values()):
        raise ValueError("metrics must be a callable or a non-empty dict of {name: callable}.")
    y_true = check_1d(y_true, "y_true")
    y_pred = check_1d(y_pred, "y_pred")
    groups = _check_groups(sensitive_features)
    check_same_length(y_true=y_true, y_pred=y_pred, sensitive_features=groups)
    weights = None if sample_weight is None else check_sample_weight(sample_weight, len(y_true))
    check_no_missing(y_true, "y_true")
    check_no_missing(y_pred, "y_pred")

    index, codes = _group_codes(groups)
    rows = []
    for code in range(len(index)):
        member = codes == code
        extra = {} if weights is None else {"sample_weight": weights[member]}
        rows.append({name: f(y_true[member], y_pred[member], **extra) for name, f in metrics.items()})
    return pd.DataFrame(rows, index=index, columns=list(metrics))


# --------------------------------------------------------------------------------------------------------------------
# Disparities
# --------------------------------------------------------------------------------------------------------------------


def demographic_parity_difference(
    y_true, y_pred, *, sensitive_features, method="between_groups", pos_label=1, sample_weight=None
) -> float:
    """Largest minus smallest per-group selection rate (0 means every group is selected equally often).

    Demographic parity asks that P(ŷ = 1 | A = a) be the same for every group a, whatever the true labels.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        Binary labels and predictions.
    sensitive_features : array-like, DataFrame or dict of arrays
        See :func:`group_metrics`.
    method : {"between_groups", "to_overall"}, default "between_groups"
        ``"between_groups"``: max − min over groups. ``"to_overall"``: the largest |group − overall|.
    pos_label : scalar, default 1
    sample_weight : array-like of shape (n_samples,), optional

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Lengths differ; labels or predictions hold NaN or are not binary; only one group; unknown ``method``.

    Examples
    --------
    >>> demographic_parity_difference([0, 1, 1, 0], [1, 1, 1, 0], sensitive_features=["a", "a", "b", "b"])
    0.5
    """
    rates, overall = _disaggregated(
        "selection_rate", y_true, y_pred, sensitive_features, method, pos_label, sample_weight, "warn"
    )
    return _difference(rates, overall, method, "selection rate")


def demographic_parity_ratio(
    y_true, y_pred, *, sensitive_features, method="between_groups", pos_label=1, sample_weight=None
) -> float:
    """Smallest over largest per-group selection rate (1 means parity; the "four-fifths rule" flags < 0.8).

    Parameters and errors are those of :func:`demographic_parity_difference`; ``"to_overall"`` takes, for each group,
    group/overall or its inverse, whichever is ≤ 1, and returns the smallest. 0/0 gives NaN, as in fairlearn.

    Examples
    --------
    >>> demographic_parity_ratio([0, 1, 1, 0], [1, 1, 1, 0], sensitive_features=["a", "a", "b", "b"])
    0.5
    """
    rates, overall = _disaggregated(
        "selection_rate", y_true, y_pred, sensitive_features, method, pos_label, sample_weight, "warn"
    )
    return _ratio(rates, overall, method, "selection rate")


def equalized_odds_difference(
    y_true,
    y_pred,
    *,
    sensitive_features,
    method="between_groups",
    agg="worst_case",
    pos_label=1,
    sample_weight=None,
    zero_division="warn",
) -> float:
    """The larger (or mean) of the true-positive-rate gap and the false-positive-rate gap between groups.

    Equalized odds asks that the errors be shared alike: P(ŷ = 1 | y, A = a) must not depend on a, both for y = 1
    (TPR) and y = 0 (FPR).

    Parameters
    ----------
    y_true, y_pred, sensitive_features, method, pos_label, sample_weight
        As in :func:`demographic_parity_difference`.
    agg : {"worst_case", "mean"}, default "worst_case"
        Combine the two gaps by their maximum or their mean.
    zero_division : "warn", float or nan, default "warn"
        For groups without actual positives (TPR) or negatives (FPR); see the module docstring.

    Returns
    -------
    float

    Examples
    --------
    >>> y, p, g = [1, 0, 1, 0], [1, 0, 0, 1], ["a", "a", "b", "b"]
    >>> equalized_odds_difference(y, p, sensitive_features=g)
    1.0
    """
    check_option(agg, "agg", _AGGS)
    tpr, fpr, tpr_all, fpr_all = _tpr_fpr(y_true, y_pred, sensitive_features, method, pos_label, sample_weight,
                                          zero_division)
    gaps = [_difference(tpr, tpr_all, method, "true-positive rate"),
            _difference(fpr, fpr_all, method, "false-positive rate")]
    return _aggregate(gaps, agg, worst=max)


def equalized_odds_ratio(
    y_true,
    y_pred,
    *,
    sensitive_features,
    method="between_groups",
    agg="worst_case",
    pos_label=1,
    sample_weight=None,
    zero_division="warn",
) -> float:
    """The smaller (or mean) of the true-positive-rate ratio and the false-positive-rate ratio between groups.

    Parameters are those of :func:`equalized_odds_difference`.

    Examples
    --------
    >>> y, p, g = [1, 0, 1, 0], [1, 1, 1, 0], ["a", "a", "b", "b"]
    >>> equalized_odds_ratio(y, p, sensitive_features=g)
    0.0
    """
    check_option(agg, "agg", _AGGS)
    tpr, fpr, tpr_all, fpr_all = _tpr_fpr(y_true, y_pred, sensitive_features, method, pos_label, sample_weight,
                                          zero_division)
    ratios = [_ratio(tpr, tpr_all, method, "true-positive rate"), _ratio(fpr, fpr_all, method, "false-positive rate")]
    return _aggregate(ratios, agg, worst=min)


def equal_opportunity_difference(
    y_true, y_pred, *, sensitive_features, method="between_groups", pos_label=1, sample_weight=None,
    zero_division="warn",
) -> float:
    """Largest minus smallest per-group true-positive rate: do deserving people get the good outcome equally often?

    Parameters are those of :func:`equalized_odds_difference` (without ``agg``).

    Examples
    --------
    >>> equal_opportunity_difference([1, 1, 1, 1], [1, 1, 1, 0], sensitive_features=["a", "a", "b", "b"])
    0.5
    """
    rates, overall = _disaggregated(
        "true_positive_rate", y_true, y_pred, sensitive_features, method, pos_label, sample_weight, zero_division
    )
    return _difference(rates, overall, method, "true-positive rate")


# --------------------------------------------------------------------------------------------------------------------
# Reports and plots
# --------------------------------------------------------------------------------------------------------------------


def compare_predictions(y_true, predictions, *, sensitive_features, pos_label=1) -> pd.DataFrame:
    """One row per model: accuracy, balanced accuracy, overall selection rate and the three disparities.

    Used in the notebook's mitigation section (*What does mitigation buy, and what does it cost?*) to build the
    before/after table.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    predictions : dict of {str: array-like of shape (n_samples,)}
        Binary predictions of each model on the same samples.
    sensitive_features : see :func:`group_metrics`
    pos_label : scalar, default 1

    Returns
    -------
    pandas.DataFrame
        Index: model names (in the given order). Columns: ``accuracy``, ``balanced_accuracy`` (mean of the
        true-positive and true-negative rates, the fair yardstick when one class is rare), ``selection_rate``,
        ``dp_difference``, ``eo_difference``, ``tpr_gap``.

    Examples
    --------
    >>> t = compare_predictions([1, 0, 1, 0], {"m": [1, 0, 0, 0]}, sensitive_features=["a", "a", "b", "b"])
    >>> list(t.columns)
    ['accuracy', 'balanced_accuracy', 'selection_rate', 'dp_difference', 'eo_difference', 'tpr_gap']
    """
    if not isinstance(predictions, Mapping) or not predictions:
        raise ValueError("predictions must be a non-empty dict of {model name: predicted labels}.")
    rows = {}
    for name, y_pred in predictions.items():
        truth, pred, _ = _check_labels(y_true, y_pred, None, pos_label)
        kwargs = dict(sensitive_features=sensitive_features, pos_label=pos_label)
        rows[name] = {
            "accuracy": float(np.mean(truth == pred)),
            "balanced_accuracy": _balanced_accuracy(truth, pred),
            "selection_rate": float(np.mean(pred)),
            "dp_difference": demographic_parity_difference(y_true, y_pred, **kwargs),
            "eo_difference": equalized_odds_difference(y_true, y_pred, **kwargs),
            "tpr_gap": equal_opportunity_difference(y_true, y_pred, **kwargs),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def plot_group_metric(by_group, metric=None, *, overall=None, ax=None, ylabel=None, title=None):
    """Bar chart of one metric per group, with the overall value as a dashed line.

    Parameters
    ----------
    by_group : pandas.DataFrame or Series
        A :func:`group_metrics` table (or one of its columns). MultiIndex groups are joined with " × ".
    metric : str, optional
        Column to plot; required when ``by_group`` has several columns.
    overall : float, optional
        The metric on all samples together, drawn as a horizontal line.
    ax : matplotlib Axes, optional
    ylabel, title : str, optional
        Default: the metric's name.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    if isinstance(by_group, pd.DataFrame):
        if metric is None:
            if by_group.shape[1] != 1:
                raise ValueError(f"metric must name one of the columns {list(by_group.columns)}.")
            metric = by_group.columns[0]
        check_option(metric, "metric", list(by_group.columns))
        values = by_group[metric]
    else:
        values = by_group
        metric = metric or values.name or "metric"
    labels = [" × ".join(map(str, key)) if isinstance(key, tuple) else str(key) for key in values.index]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 2), 3.5))
    ax.bar(labels, values.to_numpy(dtype=float), color="tab:blue", alpha=0.8)
    if overall is not None:
        ax.axhline(overall, color="black", linestyle="--", linewidth=1, label=f"overall = {overall:.3f}")
        ax.legend(loc="lower right")
    ax.set_xlabel(" × ".join(str(n) for n in values.index.names if n is not None) or "group")
    ax.set_ylabel(ylabel or str(metric))
    ax.set_title(title or f"{metric} by group")
    ax.tick_params(axis="x", rotation=30 if len(labels) > 3 else 0)
    return ax


def plot_tradeoff(table, *, x="dp_difference", y="accuracy", ax=None, xlabel=None, ylabel=None, title=None):
    """Scatter each model as a point (disparity, accuracy), labelled by name: the price of fairness at a glance.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per model, e.g. from :func:`compare_predictions`; the index gives the labels.
    x, y : str
        Columns for the axes (default: demographic-parity difference vs accuracy).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    check_option(x, "x", list(table.columns))
    check_option(y, "y", list(table.columns))
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(table[x], table[y], s=60, color="tab:orange", zorder=3)
    for name, row in table.iterrows():
        ax.annotate(str(name), (row[x], row[y]), textcoords="offset points", xytext=(6, 4), fontsize=9)
    ax.set_xlabel(xlabel or f"{x} (0 = parity)")
    ax.set_ylabel(ylabel or y)
    ax.set_title(title or "Accuracy vs disparity (better: up and to the left)")
    ax.grid(alpha=0.3)
    return ax


@dataclass
class ArrestsSplit:
    """The chapter's data: standardised features, labels and the sensitive attributes, split into train and test.

    ``X_*`` are DataFrames of numeric features (no ``colour``), ``y_*`` Series of 0/1 labels (1 = released with a
    summons), ``groups_*`` DataFrames with the columns ``colour``, ``sex`` and ``citizen`` of the same rows.
    """

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    groups_train: pd.DataFrame
    groups_test: pd.DataFrame


#: Features the chapter's models see. ``colour`` is left out on purpose: the notebook shows that leaving the
#: sensitive attribute out does not remove the disparity (``checks`` acts as a proxy).
ARRESTS_FEATURES = ("year", "age", "sex", "employed", "citizen", "checks")


def split_arrests(*, test_size: float = 0.3, random_state: int = 0) -> ArrestsSplit:
    """Load the Toronto arrests data and split it, stratified on the label, for ``notebooks/04_fairness.ipynb``.

    Categorical features are one-hot encoded (first level dropped) and all features standardised with statistics of
    the training part only, so that nothing about the test rows leaks into training.

    Parameters
    ----------
    test_size : float in (0, 1), default 0.3
    random_state : int, default 0

    Returns
    -------
    ArrestsSplit

    Examples
    --------
    >>> data = split_arrests()
    >>> data.X_train.shape, data.X_test.shape, list(data.groups_test.columns)
    ((3658, 6), (1568, 6), ['colour', 'sex', 'citizen'])
    """
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from .datasets import load_arrests
    from .validation import check_scalar

    test_size = check_scalar(test_size, "test_size", min_value=0, max_value=1, include_min=False, include_max=False)
    frame = load_arrests()
    X = pd.get_dummies(frame[list(ARRESTS_FEATURES)], drop_first=True, dtype=float)
    groups = frame[["colour", "sex", "citizen"]]
    X_train, X_test, y_train, y_test, g_train, g_test = train_test_split(
        X, frame["released"], groups, test_size=test_size, stratify=frame["released"], random_state=random_state
    )
    scaler = StandardScaler().fit(X_train)
    X_train = pd.DataFrame(scaler.transform(X_train), columns=X.columns, index=X_train.index)
    X_test = pd.DataFrame(scaler.transform(X_test), columns=X.columns, index=X_test.index)
    return ArrestsSplit(X_train, X_test, y_train, y_test, g_train, g_test)


# --------------------------------------------------------------------------------------------------------------------
# Private helpers: validation once at the boundary, then vectorised per-group sums
# --------------------------------------------------------------------------------------------------------------------


def _check_binary(array: np.ndarray, name: str, pos_label) -> np.ndarray:
    """Boolean mask of ``array == pos_label``; raises unless the values are two classes at most."""
    check_no_missing(array, name)
    values = pd.unique(array)
    if len(values) > 2:
        shown = ", ".join(repr(v) for v in sorted(values, key=str)[:5])
        raise ValueError(
            f"{name} must be binary (two classes at most) for this metric, got {len(values)} distinct values "
            f"({shown}{', ...' if len(values) > 5 else ''}). Threshold scores or probabilities first, e.g. "
            f"(scores >= 0.5).astype(int)."
        )
    if len(values) == 2 and pos_label not in set(values.tolist()):
        raise ValueError(f"pos_label={pos_label!r} is not one of the values of {name}: {sorted(values.tolist(), key=str)}.")
    return array == pos_label


def _check_labels(y_true, y_pred, sample_weight, pos_label):
    y_true = check_1d(y_true, "y_true")
    y_pred = check_1d(y_pred, "y_pred")
    check_same_length(y_true=y_true, y_pred=y_pred)
    if len(y_pred) == 0:
        raise ValueError("y_pred is empty: there is nothing to compute a rate on.")
    truth = _check_binary(y_true, "y_true", pos_label)
    pred = _check_binary(y_pred, "y_pred", pos_label)
    weights = check_sample_weight(sample_weight, len(pred))
    if weights.sum() <= 0:
        raise ValueError("sample_weight sums to zero: no sample counts.")
    return truth, pred, weights


def _check_zero_division(zero_division):
    if isinstance(zero_division, str):
        return check_option(zero_division, "zero_division", ("warn",))
    if isinstance(zero_division, bool) or not isinstance(zero_division, (int, float, np.number)):
        raise ValueError(f"zero_division must be 'warn', a number or nan; got {zero_division!r}.")
    return float(zero_division)


def _check_groups(sensitive_features) -> pd.DataFrame:
    """Sensitive features as a DataFrame of columns named like fairlearn names them."""
    if sensitive_features is None:
        raise ValueError("sensitive_features is required: pass the group label of every sample.")
    if isinstance(sensitive_features, pd.DataFrame):
        frame = sensitive_features.reset_index(drop=True)
    elif isinstance(sensitive_features, pd.Series):
        name = sensitive_features.name if sensitive_features.name is not None else "sensitive_feature_0"
        frame = pd.DataFrame({name: sensitive_features.to_numpy()})
    elif isinstance(sensitive_features, Mapping):
        frame = pd.DataFrame({k: check_1d(v, f"sensitive_features[{k!r}]") for k, v in sensitive_features.items()})
    else:
        array = np.asarray(sensitive_features, dtype=object)
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2:
            raise ValueError(f"sensitive_features must be 1-D or 2-D, got shape {array.shape}.")
        frame = pd.DataFrame({f"sensitive_feature_{i}": array[:, i] for i in range(array.shape[1])})
    if frame.shape[1] == 0:
        raise ValueError("sensitive_features has no columns.")
    n_missing = int(frame.isna().to_numpy().sum())
    if n_missing:
        raise ValueError(f"sensitive_features contains {n_missing} missing (NaN) value(s); give every sample a group.")
    # Categoricals are grouped by their labels (sorted like any other labels), so unobserved categories vanish.
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].to_numpy()
    return frame


def _group_codes(groups: pd.DataFrame) -> tuple[pd.Index, np.ndarray]:
    """Sorted observed groups and, for each sample, the position of its group."""
    grouped = groups.groupby(list(groups.columns), sort=True, observed=True)
    codes = grouped.ngroup().to_numpy()
    index = grouped.size().index
    if len(index) < 2:
        raise ValueError(
            f"sensitive_features has a single group ({index[0]!r}): a disparity needs at least two groups to compare."
        )
    return index, codes


def _rate(numerator, denominator, zero_division, what: str) -> float:
    if denominator > 0:
        return float(numerator / denominator)
    if zero_division == "warn":
        warnings.warn(
            f"The {what} is undefined (0/0) for a group without the needed samples; reported as 0.0 like fairlearn. "
            f"Pass zero_division=np.nan to leave such groups out of the disparity.",
            UndefinedRateWarning,
            stacklevel=3,
        )
        return 0.0
    return float(zero_division)


def _weighted_rates(numerator_mask, denominator_mask, weights, codes, n_groups, zero_division, what):
    """Per-group and overall weighted rate sum(w · num) / sum(w · den)."""
    num = np.bincount(codes, weights=weights * numerator_mask, minlength=n_groups)
    den = np.bincount(codes, weights=weights * denominator_mask, minlength=n_groups)
    undefined = den <= 0
    if undefined.any() and zero_division == "warn":
        # One warning per call, naming how many groups, rather than one per group.
        warnings.warn(
            f"The {what} is undefined (0/0) in {int(undefined.sum())} group(s) without the needed samples; reported "
            f"as 0.0 like fairlearn. Pass zero_division=np.nan to leave such groups out of the disparity.",
            UndefinedRateWarning,
            stacklevel=4,
        )
    fill = 0.0 if zero_division == "warn" else zero_division
    with np.errstate(divide="ignore", invalid="ignore"):
        per_group = np.where(undefined, fill, num / np.where(undefined, 1.0, den))
    overall = _rate(num.sum(), den.sum(), zero_division, what)
    return per_group, overall


def _prepare(y_true, y_pred, sensitive_features, method, pos_label, sample_weight, zero_division):
    check_option(method, "method", _METHODS)
    zero_division = _check_zero_division(zero_division)
    truth, pred, weights = _check_labels(y_true, y_pred, sample_weight, pos_label)
    groups = _check_groups(sensitive_features)
    check_same_length(y_true=truth, sensitive_features=groups)
    index, codes = _group_codes(groups)
    return truth, pred, weights, codes, len(index), zero_division


def _disaggregated(kind, y_true, y_pred, sensitive_features, method, pos_label, sample_weight, zero_division):
    truth, pred, weights, codes, n, zero_division = _prepare(
        y_true, y_pred, sensitive_features, method, pos_label, sample_weight, zero_division
    )
    if kind == "selection_rate":
        return _weighted_rates(pred, np.ones_like(pred), weights, codes, n, zero_division, "selection rate")
    return _weighted_rates(truth & pred, truth, weights, codes, n, zero_division, "true-positive rate")


def _tpr_fpr(y_true, y_pred, sensitive_features, method, pos_label, sample_weight, zero_division):
    truth, pred, weights, codes, n, zero_division = _prepare(
        y_true, y_pred, sensitive_features, method, pos_label, sample_weight, zero_division
    )
    tpr, tpr_all = _weighted_rates(truth & pred, truth, weights, codes, n, zero_division, "true-positive rate")
    fpr, fpr_all = _weighted_rates(~truth & pred, ~truth, weights, codes, n, zero_division, "false-positive rate")
    return tpr, fpr, tpr_all, fpr_all


def _defined(per_group: np.ndarray, what: str):
    """The groups whose rate is defined; ``None`` (after a warning) when fewer than two are left to compare."""
    defined = per_group[~np.isnan(per_group)]
    if defined.size == 1:
        # One defined group compared with nothing would read as parity (0 or 1): say it is undefined instead.
        warnings.warn(
            f"The {what} is defined for only one group (zero_division=nan left the others out): there is nothing to "
            f"compare it with, so the disparity is NaN.",
            UndefinedRateWarning,
            stacklevel=5,
        )
    return defined if defined.size >= 2 else None


def _difference(per_group: np.ndarray, overall: float, method: str, what: str) -> float:
    defined = _defined(per_group, what)
    if defined is None:
        return math.nan
    if method == "between_groups":
        return float(defined.max() - defined.min())
    return float(np.abs(defined - overall).max())


def _ratio(per_group: np.ndarray, overall: float, method: str, what: str) -> float:
    defined = _defined(per_group, what)
    if defined is None:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "between_groups":
            return float(defined.min() / defined.max())
        ratios = defined / overall
        ratios = np.where(ratios > 1, 1 / ratios, ratios)
    ratios = ratios[~np.isnan(ratios)]
    return float(ratios.min()) if ratios.size else math.nan


def _balanced_accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    recalls = [np.mean(pred[truth == cls] == cls) for cls in (True, False) if (truth == cls).any()]
    return float(np.mean(recalls))


def _aggregate(values, agg: str, worst: Callable) -> float:
    """Combine the TPR and FPR disparities, skipping undefined (NaN) ones for both ``agg``, as fairlearn does."""
    defined = [v for v in values if not math.isnan(v)]
    if not defined:
        return math.nan
    return float(np.mean(defined)) if agg == "mean" else float(worst(defined))


# --------------------------------------------------------------------------------------------------------------------
# Uncertainty of group rates, proxies, and the impossibility results on real data
# --------------------------------------------------------------------------------------------------------------------


def bootstrap_group_metric(metric, y_true, y_pred, *, sensitive_features, n_boot=1000, confidence=0.95,
                           random_state=0) -> pd.DataFrame:
    """Per-group value of ``metric`` with a seeded percentile-bootstrap confidence interval.

    Rows are resampled with replacement *within each group* (so every replicate keeps the group's size), the metric
    is recomputed ``n_boot`` times, and the interval is the central ``confidence`` share of the replicates. Small
    groups get wide intervals: that is the point of showing them.

    Parameters
    ----------
    metric : callable ``metric(y_true, y_pred) -> float``
        E.g. :func:`selection_rate`, :func:`true_positive_rate`.
    y_true, y_pred : array-like of shape (n,)
    sensitive_features : array-like or DataFrame
        As for :func:`group_metrics`; several columns give intersectional groups.
    n_boot : int, default 1000
    confidence : float in (0, 1), default 0.95
    random_state : int, default 0

    Returns
    -------
    pandas.DataFrame
        Indexed by group, columns ``n``, ``estimate``, ``low``, ``high``.

    Examples
    --------
    >>> table = bootstrap_group_metric(selection_rate, [0] * 6, [1, 1, 0, 0, 0, 1],
    ...                                sensitive_features=list("aaabbb"), n_boot=200)
    >>> table["n"].tolist(), table["estimate"].round(3).tolist()
    ([3, 3], [0.667, 0.333])
    >>> bool((table["low"] <= table["estimate"]).all() and (table["estimate"] <= table["high"]).all())
    True
    """
    from .validation import check_scalar

    if not callable(metric):
        raise TypeError(f"metric must be a function metric(y_true, y_pred), got {type(metric).__name__}.")
    n_boot = check_scalar(n_boot, "n_boot", min_value=1, integer=True)
    confidence = check_scalar(confidence, "confidence", min_value=0, max_value=1, include_min=False,
                              include_max=False)
    truth, pred = check_1d(y_true, "y_true"), check_1d(y_pred, "y_pred")
    if len(truth) != len(pred):
        raise ValueError(f"y_true and y_pred must have the same length, got {len(truth)} and {len(pred)}.")
    groups = _check_groups(sensitive_features)
    if len(groups) != len(truth):
        raise ValueError(f"sensitive_features has {len(groups)} rows but y_true has {len(truth)}.")
    index, codes = _group_codes(groups)
    rng = np.random.default_rng(random_state)
    tail = (1 - confidence) / 2
    rows = []
    for code in range(len(index)):
        members = np.flatnonzero(codes == code)
        t, p = truth[members], pred[members]
        replicates = []
        for _ in range(n_boot):
            pick = rng.integers(0, len(members), size=len(members))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedRateWarning)
                replicates.append(metric(t[pick], p[pick]))
        replicates = np.asarray(replicates, dtype=float)
        low, high = np.nanquantile(replicates, [tail, 1 - tail]) if np.isfinite(replicates).any() else (np.nan,) * 2
        rows.append({"n": len(members), "estimate": float(metric(t, p)), "low": float(low), "high": float(high)})
    return pd.DataFrame(rows, index=index)


def proxy_strength(features, sensitive, *, positive) -> pd.Series:
    """How well each feature alone predicts membership of the ``positive`` group: ROC-AUC, folded to ≥ 0.5.

    0.5 means the feature carries no information about the group, 1 that it separates the groups perfectly.
    Categorical columns are scored by the group share of each category (the best single-feature ranking);
    numeric ones by their value, in whichever direction ranks better. Sorted, strongest first.

    Parameters
    ----------
    features : pandas.DataFrame
        Raw features (numbers or categories), one row per person.
    sensitive : array-like of shape (n,)
    positive : value of ``sensitive`` treated as the positive group (e.g. ``"Black"``).
    """
    from sklearn.metrics import roc_auc_score

    if not isinstance(features, pd.DataFrame):
        raise TypeError(f"features must be a pandas DataFrame, got {type(features).__name__}.")
    member = (np.asarray(sensitive) == positive).astype(int)
    if len(member) != len(features):
        raise ValueError(f"sensitive has {len(member)} rows but features has {len(features)}.")
    if member.min() == member.max():
        raise ValueError(f"positive={positive!r} must leave both members and non-members in sensitive.")
    strength = {}
    for column in features.columns:
        values = features[column]
        if not pd.api.types.is_numeric_dtype(values):
            values = values.map(pd.Series(member, index=features.index).groupby(values).mean())
        auc = roc_auc_score(member, values.to_numpy(dtype=float))
        strength[column] = max(auc, 1 - auc)
    return pd.Series(strength, name="AUC for the group").sort_values(ascending=False)


def impossibility_table(y_true, y_pred, *, sensitive_features, pos_label=1) -> pd.DataFrame:
    """Per group: base rate, PPV, FNR, FPR, and the FPR that Chouldechova's identity predicts from the other three.

    Chouldechova (2017), *Fair prediction with disparate impact*, eq. (2.6): for any binary classifier, in every group

        FPR = p / (1 − p) · (1 − PPV) / PPV · (1 − FNR),        p = the group's base rate P(y = 1).

    So when base rates differ, equal PPV (predictive parity) and equal FNR force unequal FPR, and equal error rates
    (equalized odds) force unequal PPV — unless the classifier is perfect. Kleinberg, Mullainathan & Raghavan (2016)
    prove the analogous result for scores (calibration within groups against balance for each class). The column
    ``fpr_from_identity`` checks the identity on the data: it equals ``fpr`` up to rounding.
    """
    truth, pred = _check_labels(y_true, y_pred, None, pos_label)[:2]
    groups = _check_groups(sensitive_features)
    if len(groups) != len(truth):
        raise ValueError(f"sensitive_features has {len(groups)} rows but y_true has {len(truth)}.")
    index, codes = _group_codes(groups)
    rows = []
    for code in range(len(index)):
        t, p = truth[codes == code], pred[codes == code]
        base = t.mean()
        ppv = t[p].mean() if p.any() else np.nan
        fnr = 1 - p[t].mean() if t.any() else np.nan
        fpr = p[~t].mean() if (~t).any() else np.nan
        predicted = base / (1 - base) * (1 - ppv) / ppv * (1 - fnr) if 0 < base < 1 and ppv > 0 else np.nan
        rows.append({"n": len(t), "base_rate": base, "ppv": ppv, "fnr": fnr, "fpr": fpr,
                     "fpr_from_identity": predicted})
    return pd.DataFrame(rows, index=index)


def calibration_by_group(y_true, scores, *, sensitive_features, bins=5) -> pd.DataFrame:
    """Kleinberg et al.'s three conditions, per group: calibration in score bins, and balance for each class.

    Returns one row per group with the mean score among true positives (``balance_positive``) and among true
    negatives (``balance_negative``), and, per score bin (quantiles of all scores), the observed positive share
    (columns ``bin 1`` … ``bin k``); a score calibrated within groups has the same observed share in a bin for every
    group. With different base rates, Kleinberg, Mullainathan & Raghavan (2016) show the three cannot all hold unless
    prediction is perfect.
    """
    truth = check_1d(y_true, "y_true").astype(float)
    score = check_1d(scores, "scores").astype(float)
    groups = _check_groups(sensitive_features)
    index, codes = _group_codes(groups)
    edges = np.unique(np.quantile(score, np.linspace(0, 1, int(bins) + 1)))
    which = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for code in range(len(index)):
        member = codes == code
        row = {"base_rate": truth[member].mean(),
               "balance_positive": score[member & (truth == 1)].mean(),
               "balance_negative": score[member & (truth == 0)].mean()}
        for b in range(len(edges) - 1):
            in_bin = member & (which == b)
            row[f"bin {b + 1}"] = truth[in_bin].mean() if in_bin.any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows, index=index)
