"""Class imbalance: SMOTE written from scratch, leakage-free evaluation and a report that does not lie.

Taught in ``notebooks/03_smote.ipynb``. The notebook builds each piece step by step (*How does SMOTE make a new
point?*, *Which neighbours does it use?*, *Where does the leakage come from?*) and checks it against
imbalanced-learn; this module is the tested version the notebook imports.

Public API
----------
SMOTE
    The sampler, with imbalanced-learn's interface (``fit_resample``), so it drops into ``imblearn.pipeline.Pipeline``.
resolve_sampling_strategy
    Turn ``"auto"``, a float ratio or a dict of target counts into "how many new samples per class".
minority_neighbors, interpolate
    The two steps SMOTE is made of (the notebook's exercises re-build them).
leakage_demo
    Cross-validated scores of oversample-then-split next to split-then-oversample (inside a pipeline).
compare_rebalancing
    The same cross-validation for several rebalancing strategies: scores plus fit time (and energy, when asked).
imbalance_report, ImbalanceReport
    Per-class precision/recall/F1, balanced accuracy, PR-AUC, ROC-AUC and the confusion matrix (with a plot).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state

from .validation import check_finite, check_option, check_same_length, check_scalar

__all__ = [
    "SMOTE",
    "resolve_sampling_strategy",
    "minority_neighbors",
    "interpolate",
    "leakage_demo",
    "compare_rebalancing",
    "imbalance_report",
    "ImbalanceReport",
]

#: The string values ``sampling_strategy`` accepts, with imbalanced-learn's meaning for an over-sampler.
SAMPLING_STRATEGIES = ("auto", "minority", "not minority", "not majority", "all")


# --------------------------------------------------------------------------------------------------------------------
# The sampler
# --------------------------------------------------------------------------------------------------------------------


class SMOTE(BaseEstimator):
    """Synthetic Minority Over-sampling TEchnique, from scratch on NumPy and ``NearestNeighbors``.

    For every class to be over-sampled, each new sample is made by picking a random sample of that class, one of its
    ``k_neighbors`` nearest neighbours *within the same class*, and a random point on the segment between them.
    Built step by step in ``notebooks/03_smote.ipynb`` (*How does SMOTE make a new point?*).

    Parameters
    ----------
    k_neighbors : int, default 5
        Number of nearest same-class neighbours to interpolate towards. Each resampled class needs at least
        ``k_neighbors + 1`` samples.
    sampling_strategy : str, float or dict, default "auto"
        How many samples each class should have afterwards, with imbalanced-learn's semantics (see
        :func:`resolve_sampling_strategy`): ``"auto"`` (= ``"not majority"``), ``"minority"``, ``"not minority"``,
        ``"all"``; a float ``r`` in (0, 1] for binary targets (minority count becomes ``int(r * n_majority)``); a dict
        ``{class: target_count}``; or a callable ``y -> dict``.
    random_state : int, numpy.random.RandomState or None, default None
        Seed for the choice of samples, neighbours and interpolation steps. The same integer gives the same output.

    Attributes
    ----------
    sampling_strategy_ : dict
        Number of synthetic samples generated per class in the last ``fit_resample`` (class order sorted).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` was a DataFrame with string column names.

    See Also
    --------
    imblearn.over_sampling.SMOTE : the reference implementation (imbalanced-learn 0.14) this one is tested against:
        same class counts for every strategy, statistically indistinguishable synthetic points.

    Notes
    -----
    Resample only the *training* data, after the train/test split, e.g. as a step of ``imblearn.pipeline.Pipeline``:
    oversampling before splitting puts synthetic neighbours of test points into training and inflates the scores
    (:func:`leakage_demo` measures by how much). Synthetic points interpolate between people or objects that may belong
    to different groups; chapter 04 looks at what that does to group metrics.

    Unlike imbalanced-learn, which restarts its random generator for each class when given an integer seed, one
    generator is used for the whole call, so the classes get independent draws.

    Examples
    --------
    >>> from collections import Counter
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(n_samples=200, weights=[0.9], random_state=0)
    >>> sorted(Counter(y.tolist()).items())
    [(0, 180), (1, 20)]
    >>> X_res, y_res = SMOTE(random_state=0).fit_resample(X, y)
    >>> sorted(Counter(y_res.tolist()).items())
    [(0, 180), (1, 180)]
    """

    def __init__(self, k_neighbors=5, sampling_strategy="auto", random_state=None):
        self.k_neighbors = k_neighbors
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state

    def fit(self, X, y):
        """Validate ``X`` and ``y`` and resolve the sampling strategy; returns ``self`` (imblearn's interface)."""
        self.fit_resample(X, y)
        return self

    def fit_resample(self, X, y):
        """Return ``X`` and ``y`` with synthetic samples appended after the original ones.

        Parameters
        ----------
        X : array-like or pandas DataFrame of shape (n_samples, n_features)
            Numeric features without NaN or inf.
        y : array-like or pandas Series of shape (n_samples,)
            Class labels (any hashable values; at least two classes).

        Returns
        -------
        X_resampled : ndarray or DataFrame of shape (n_samples + n_new, n_features)
            The original rows first, then the synthetic ones. A DataFrame keeps its column names (the index is reset).
            Floating dtypes are kept; other numeric dtypes become float64.
        y_resampled : ndarray or Series of shape (n_samples + n_new,)
            A Series keeps its name.

        Raises
        ------
        ValueError
            If ``X`` has non-numeric columns, NaN or inf; if ``X`` and ``y`` differ in length; if ``y`` has fewer than
            two classes; if a class to be resampled has fewer than ``k_neighbors + 1`` samples; if a target count is
            below a class's current count; if ``sampling_strategy`` is not one of the accepted forms.
        """
        k = check_scalar(self.k_neighbors, "k_neighbors", min_value=1, integer=True)
        values, columns = _as_numeric_matrix(X)
        labels, y_name = _as_labels(y)
        check_same_length(X=values, y=labels)
        strategy = resolve_sampling_strategy(self.sampling_strategy, labels)
        counts = Counter(labels.tolist())
        for label, n_new in strategy.items():
            if n_new > 0 and counts[label] < k + 1:
                raise ValueError(
                    f"Class {label!r} has only {counts[label]} sample(s), but SMOTE with k_neighbors={k} needs at "
                    f"least {k + 1} (k_neighbors + 1) to find its neighbours. Lower k_neighbors or leave this class out "
                    f"of sampling_strategy."
                )

        self.n_features_in_ = values.shape[1]
        if columns is not None and all(isinstance(c, str) for c in columns):
            self.feature_names_in_ = np.asarray(columns, dtype=object)
        self.sampling_strategy_ = strategy

        X_res, y_res = _smote_resample(values, labels, strategy, k, check_random_state(self.random_state))
        if columns is not None:
            import pandas as pd

            X_res = pd.DataFrame(X_res, columns=columns)
        if y_name is not _NO_SERIES:
            import pandas as pd

            y_res = pd.Series(y_res, name=y_name)
        return X_res, y_res


def _smote_resample(X, y, strategy, k, rng):
    """SMOTE on clean input: ``strategy`` maps class -> number of new samples."""
    new_X, new_y = [X], [y]
    for label, n_new in strategy.items():
        if n_new == 0:
            continue
        X_class = X[y == label]
        neighbors = minority_neighbors(X_class, k)
        # One draw over all (sample, neighbour) pairs picks both uniformly: the same scheme as imbalanced-learn.
        pair = rng.randint(0, neighbors.size, size=n_new)
        rows, cols = np.divmod(pair, k)
        steps = rng.uniform(size=n_new)
        new_X.append(interpolate(X_class[rows], X_class[neighbors[rows, cols]], steps).astype(X.dtype, copy=False))
        new_y.append(np.full(n_new, label, dtype=y.dtype))
    return np.concatenate(new_X), np.concatenate(new_y)


def minority_neighbors(X_class, k_neighbors=5):
    """Indices of the ``k_neighbors`` nearest neighbours of each row of ``X_class`` among the other rows.

    SMOTE's neighbour search, taught in ``notebooks/03_smote.ipynb`` (*Exercise smote-2 (2 points): the neighbour
    search*): Euclidean distance, one class at a time, each sample excluded from its own neighbours.

    Parameters
    ----------
    X_class : ndarray of shape (n_samples, n_features)
        The samples of one class (clean, numeric).
    k_neighbors : int, default 5

    Returns
    -------
    ndarray of int, shape (n_samples, k_neighbors)
        Row ``i`` lists row indices of ``X_class``, nearest first.

    Examples
    --------
    >>> minority_neighbors(np.array([[0.0], [1.0], [3.0]]), 1).ravel().tolist()
    [1, 0, 1]
    """
    nn = NearestNeighbors(n_neighbors=k_neighbors + 1).fit(X_class)
    # The first neighbour of a point is the point itself (distance 0); drop it. With exact duplicates the order among
    # zero-distance points is arbitrary, which only swaps one zero-length segment for another.
    return nn.kneighbors(X_class, return_distance=False)[:, 1:]


def interpolate(X_base, X_neighbor, steps):
    """Points ``X_base + steps * (X_neighbor - X_base)``: one per row, on the segment from base to neighbour.

    SMOTE's generation rule, taught in ``notebooks/03_smote.ipynb`` (*How does SMOTE make a new point?*).

    Parameters
    ----------
    X_base, X_neighbor : ndarray of shape (n, n_features)
    steps : ndarray of shape (n,)
        Values in [0, 1): 0 gives the base point, values near 1 the neighbour.

    Returns
    -------
    ndarray of shape (n, n_features)

    Examples
    --------
    >>> interpolate(np.array([[0.0, 0.0]]), np.array([[2.0, 4.0]]), np.array([0.25])).tolist()
    [[0.5, 1.0]]
    """
    steps = np.asarray(steps, dtype=float).reshape(-1, 1)
    return X_base + steps * (X_neighbor - X_base)


# --------------------------------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------------------------------

_NO_SERIES = object()


def _as_numeric_matrix(X):
    """``(float ndarray, column names or None)``; clear errors for non-numeric columns, NaN/inf and bad shapes."""
    columns = None
    if hasattr(X, "columns") and hasattr(X, "dtypes"):  # pandas DataFrame
        bad = [str(c) for c, dt in zip(X.columns, X.dtypes) if not _is_numeric_dtype(dt)]
        if bad:
            raise ValueError(
                f"X has non-numeric feature(s) {', '.join(repr(b) for b in bad)}: SMOTE interpolates between points, "
                "so every feature must be numeric. Encode categories first (e.g. one-hot) or use imblearn's SMOTENC."
            )
        columns = list(X.columns)
        X = X.to_numpy()
    if hasattr(X, "toarray"):
        raise ValueError("X is a sparse matrix; this SMOTE needs a dense array (call X.toarray() if it fits in memory).")
    values = np.asarray(X)
    if values.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got an array of shape {values.shape}.")
    if not _is_numeric_dtype(values.dtype):
        if values.dtype == object:
            try:
                values = values.astype(float)
            except (TypeError, ValueError):
                raise ValueError(
                    "X has non-numeric features (values that are not numbers): SMOTE interpolates between points, so "
                    "every feature must be numeric. Encode categories first (e.g. one-hot)."
                ) from None
        else:
            raise ValueError(
                f"X has non-numeric features (dtype {values.dtype}): SMOTE interpolates between points, so every "
                "feature must be numeric. Encode categories first (e.g. one-hot)."
            )
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    check_finite(values, "X")
    return values, columns


def _is_numeric_dtype(dtype) -> bool:
    try:
        return np.dtype(dtype).kind in "biuf"
    except TypeError:  # pandas extension dtypes (category, string, nullable ints)
        import pandas as pd

        return pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)


def _as_labels(y):
    name = y.name if hasattr(y, "name") and hasattr(y, "to_numpy") else _NO_SERIES
    labels = y.to_numpy() if hasattr(y, "to_numpy") else np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.ravel()
    if labels.ndim != 1:
        raise ValueError(f"y must be 1-D (one class label per sample), got shape {labels.shape}.")
    return labels, name


def resolve_sampling_strategy(sampling_strategy, y) -> dict:
    """Number of synthetic samples to generate per class, as imbalanced-learn's over-samplers understand it.

    Parameters
    ----------
    sampling_strategy : str, float, dict or callable
        - ``"auto"`` or ``"not majority"``: every class except the majority is raised to the majority's count;
        - ``"minority"``: only the smallest class; ``"not minority"``: every class except the smallest; ``"all"``:
          every class (the majority gets 0 new samples);
        - float ``r`` in (0, 1], binary targets only: the minority class gets ``int(r * n_majority)`` samples;
        - dict ``{class: target_count}``: each listed class is raised to ``target_count``;
        - callable: ``sampling_strategy(y)`` returns such a dict.
    y : array-like of shape (n_samples,)

    Returns
    -------
    dict
        ``{class: n_new_samples}`` for the targeted classes, sorted by class.

    Raises
    ------
    ValueError
        Fewer than two classes; unknown string; float outside (0, 1], used on a non-binary target, or so small it
        would remove samples; dict naming an absent class, or asking for fewer samples than a class already has.

    Examples
    --------
    >>> resolve_sampling_strategy("auto", ["a"] * 6 + ["b"] * 2 + ["c"])
    {'b': 4, 'c': 5}
    >>> resolve_sampling_strategy(0.5, [0] * 10 + [1] * 2)
    {1: 3}
    """
    y = np.asarray(y)
    counts = Counter(y.tolist())
    if len(counts) < 2:
        raise ValueError(f"y needs at least 2 classes to rebalance, got {len(counts)}: {sorted(counts)}.")
    n_max = max(counts.values())
    majority = max(counts, key=counts.get)
    minority = min(counts, key=counts.get)

    if isinstance(sampling_strategy, str):
        check_option(sampling_strategy, "sampling_strategy", SAMPLING_STRATEGIES)
        if sampling_strategy in ("auto", "not majority"):
            targets = [c for c in counts if c != majority]
        elif sampling_strategy == "minority":
            targets = [minority]
        elif sampling_strategy == "not minority":
            targets = [c for c in counts if c != minority]
        else:  # "all"
            targets = list(counts)
        result = {c: n_max - counts[c] for c in targets}
    elif isinstance(sampling_strategy, dict) or callable(sampling_strategy):
        wanted = sampling_strategy(y) if callable(sampling_strategy) else sampling_strategy
        if not isinstance(wanted, dict):
            raise ValueError(f"A callable sampling_strategy must return a dict, got {type(wanted).__name__}.")
        result = {}
        for c, n in wanted.items():
            if c not in counts:
                raise ValueError(
                    f"sampling_strategy names class {c!r}, which is not present in y (classes: {sorted(counts)})."
                )
            n = check_scalar(n, f"sampling_strategy[{c!r}]", min_value=0, integer=True)
            if n < counts[c]:
                raise ValueError(
                    f"sampling_strategy asks for {n} samples of class {c!r}, below its current count {counts[c]}: "
                    "an over-sampler can only add samples (use an under-sampler to remove them)."
                )
            result[c] = n - counts[c]
    elif isinstance(sampling_strategy, Real) and not isinstance(sampling_strategy, bool):
        ratio = check_scalar(sampling_strategy, "sampling_strategy", min_value=0, max_value=1, include_min=False)
        if len(counts) != 2:
            raise ValueError(
                f"A float sampling_strategy only works for binary targets, y has {len(counts)} classes; use a dict "
                "of target counts instead."
            )
        n_new = int(n_max * ratio - counts[minority])
        if n_new <= 0:
            raise ValueError(
                f"sampling_strategy={ratio} asks for {int(n_max * ratio)} minority samples, but class {minority!r} "
                f"already has {counts[minority]}: the ratio would remove samples. Increase it."
            )
        result = {minority: n_new}
    else:
        raise ValueError(
            f"sampling_strategy must be one of {', '.join(map(repr, SAMPLING_STRATEGIES))}, a float in (0, 1], a dict "
            f"of target counts or a callable; got {sampling_strategy!r}."
        )
    return dict(sorted(result.items(), key=lambda item: _sort_key(item[0])))


def _sort_key(label):
    # Mixed label types cannot be compared directly; sort by type name first so the order is still deterministic.
    return (type(label).__name__, label)


# --------------------------------------------------------------------------------------------------------------------
# Evaluation helpers for the lesson
# --------------------------------------------------------------------------------------------------------------------


def _stratified_cv(cv, random_state):
    from sklearn.model_selection import StratifiedKFold

    if isinstance(cv, int) and not isinstance(cv, bool):
        check_scalar(cv, "cv", min_value=2, integer=True)
        return StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    return cv


def leakage_demo(estimator, X, y, *, sampler=None, cv=5, scoring="balanced_accuracy", random_state=0):
    """Cross-validated scores with the oversampling done before the split (leaky) and inside a pipeline (honest).

    Taught in ``notebooks/03_smote.ipynb`` (*Where does the leakage come from?*). The leaky protocol resamples the
    whole dataset and then cross-validates on it, so test folds contain synthetic points interpolated from training
    points (and training folds contain synthetic copies of test points). The honest protocol puts the sampler in an
    ``imblearn.pipeline.Pipeline``, so it only ever sees the training folds.

    Parameters
    ----------
    estimator : scikit-learn classifier
    X, y : array-like
    sampler : object with ``fit_resample``, optional
        Defaults to ``SMOTE(random_state=random_state)``.
    cv : int or CV splitter, default 5
        An int means ``StratifiedKFold(cv, shuffle=True, random_state=random_state)``; the same splits are used for
        both protocols.
    scoring : str, default "balanced_accuracy"
        Any scikit-learn scorer name.
    random_state : int, default 0

    Returns
    -------
    dict
        ``{"oversample then split": ndarray of fold scores, "split then oversample": ndarray of fold scores}``.
    """
    from imblearn.pipeline import Pipeline
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score

    if sampler is None:
        sampler = SMOTE(random_state=random_state)
    splitter = _stratified_cv(cv, random_state)
    X_res, y_res = clone(sampler).fit_resample(X, y)
    leaky = cross_val_score(clone(estimator), X_res, y_res, cv=splitter, scoring=scoring, n_jobs=1)
    pipeline = Pipeline([("sampler", clone(sampler)), ("model", clone(estimator))])
    honest = cross_val_score(pipeline, X, y, cv=splitter, scoring=scoring, n_jobs=1)
    return {"oversample then split": leaky, "split then oversample": honest}


def compare_rebalancing(candidates, X, y, *, cv=5, random_state=0, minority_label=None, measure_energy=False):
    """Cross-validate several ways of handling imbalance on the same folds; scores and costs in one table.

    Taught in ``notebooks/03_smote.ipynb`` (*Is SMOTE worth its compute?*).

    Parameters
    ----------
    candidates : dict of str -> estimator
        Each value is a classifier or an ``imblearn.pipeline.Pipeline`` (sampler + classifier) with
        ``predict_proba``.
    X, y : array-like
    cv : int or CV splitter, default 5
        An int means ``StratifiedKFold(cv, shuffle=True, random_state=random_state)``.
    random_state : int, default 0
    minority_label : label, optional
        The class whose recall and PR-AUC are reported; defaults to the smallest class. Binary targets only.
    measure_energy : bool, default False
        Also measure each candidate's cross-validation with ``sustainlab.energy.measure`` (column ``energy_kwh``).

    Returns
    -------
    pandas.DataFrame
        One row per candidate (in the given order) with ``balanced_accuracy``, ``minority_recall``, ``pr_auc`` (means
        over folds) and ``train_rows`` (mean number of rows the final model was fitted on, after any resampling): all
        deterministic. Then ``fit_time_s`` (mean per fold) and ``cv_time_s`` (the whole cross-validation), which vary
        between runs, and ``energy_kwh`` when asked. ``cv_time_s`` and ``energy_kwh`` describe the same work, the
        cross-validation (counting ``train_rows`` afterwards is in neither).
    """
    import pandas as pd
    from sklearn.base import clone
    from sklearn.metrics import average_precision_score, make_scorer, recall_score
    from sklearn.model_selection import cross_validate

    labels, _ = _as_labels(y)
    counts = Counter(labels.tolist())
    if len(counts) != 2:
        raise ValueError(f"compare_rebalancing handles binary targets; y has {len(counts)} classes.")
    if minority_label is None:
        minority_label = min(counts, key=counts.get)
    elif minority_label not in counts:
        raise ValueError(f"minority_label {minority_label!r} is not a class of y (classes: {sorted(counts)}).")
    scoring = {
        "balanced_accuracy": "balanced_accuracy",
        "minority_recall": make_scorer(recall_score, pos_label=minority_label),
        "pr_auc": make_scorer(
            average_precision_score, response_method="predict_proba", pos_label=minority_label
        ),
    }
    splitter = _stratified_cv(cv, random_state)
    rows = []
    for name, estimator in candidates.items():
        if measure_energy:
            from .energy import measure

            tracker = measure(f"chapter 3: {name}")
        else:
            tracker = contextlib.nullcontext()
        # The clock and the energy tracker cover the same work: the cross-validation, nothing else (counting the
        # resampled rows for ``train_rows`` below resamples once more per fold and is left out of both).
        with tracker as m:
            start = time.perf_counter()
            result = cross_validate(clone(estimator), X, labels, cv=splitter, scoring=scoring, n_jobs=1)
            cv_time_s = time.perf_counter() - start
        row = {
            "strategy": name,
            **{key: float(np.mean(result[f"test_{key}"])) for key in scoring},
            "train_rows": float(np.mean([_rows_after_resampling(estimator, X, labels, train)
                                         for train, _ in splitter.split(X, labels)])),
            "fit_time_s": float(np.mean(result["fit_time"])),
            "cv_time_s": cv_time_s,
        }
        if measure_energy:
            row["energy_kwh"] = m.energy_kwh
        rows.append(row)
    return pd.DataFrame(rows).set_index("strategy")


def _rows_after_resampling(estimator, X, y, train):
    """How many rows the last step of ``estimator`` is fitted on when trained on ``X[train]``."""
    from sklearn.base import clone

    steps = [step for _, step in getattr(estimator, "steps", [])]
    X_t = X.iloc[train] if hasattr(X, "iloc") else np.asarray(X)[train]
    y_t = y[train]
    for step in steps[:-1]:
        if hasattr(step, "fit_resample"):
            X_t, y_t = clone(step).fit_resample(X_t, y_t)
        elif step is not None and step != "passthrough":
            # Transformers do not change the row count, but a later sampler (cleaning ones) may depend on their output.
            X_t = clone(step).fit_transform(X_t, y_t)
    return len(y_t)


@dataclass
class ImbalanceReport:
    """What :func:`imbalance_report` returns: metrics that stay honest when one class is rare."""

    per_class: "object"  # pandas DataFrame: precision, recall, f1, support per class
    balanced_accuracy: float
    accuracy: float
    pr_auc: float | None
    roc_auc: float | None
    confusion: np.ndarray
    labels: list

    def summary(self, digits: int = 3) -> str:
        """A few lines, rounded, safe to store in a notebook output."""
        lines = [self.per_class.round(digits).to_string(), ""]
        lines.append(f"accuracy           {self.accuracy:.{digits}f}")
        lines.append(f"balanced accuracy  {self.balanced_accuracy:.{digits}f}")
        if self.pr_auc is not None:
            lines.append(f"PR-AUC             {self.pr_auc:.{digits}f}")
        if self.roc_auc is not None:
            lines.append(f"ROC-AUC            {self.roc_auc:.{digits}f}")
        return "\n".join(lines)

    def plot_confusion_matrix(self, ax=None, *, normalize=True):
        """Heat map of the confusion matrix (rows: true class, normalised to recall when ``normalize``)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(3.6, 3.2))
        matrix = self.confusion.astype(float)
        if normalize:
            matrix = matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else None)
        for (i, j), value in np.ndenumerate(matrix):
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            ax.text(j, i, text, ha="center", va="center", color="white" if value > 0.6 * matrix.max() else "black")
        ticks = range(len(self.labels))
        ax.set_xticks(ticks, [str(label) for label in self.labels])
        ax.set_yticks(ticks, [str(label) for label in self.labels])
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title("confusion matrix" + (" (share of each true class)" if normalize else " (counts)"))
        ax.figure.colorbar(image, ax=ax, fraction=0.046)
        return ax


def imbalance_report(y_true, y_pred, y_score=None, *, labels=None) -> ImbalanceReport:
    """Metrics suited to imbalanced classes: per-class precision/recall/F1, balanced accuracy, PR-AUC, ROC-AUC.

    Taught in ``notebooks/03_smote.ipynb`` (*Why does accuracy lie on imbalanced data?*).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    y_score : array-like, optional
        Scores for the ranking metrics: shape (n_samples,) with the score of the positive class (the larger label) for
        binary targets, or (n_samples, n_classes) probabilities in ``labels`` order. Without it PR-AUC and ROC-AUC are
        ``None``.
    labels : list, optional
        Class order; defaults to the sorted union of ``y_true`` and ``y_pred``.

    Returns
    -------
    ImbalanceReport
        With ``summary()`` and ``plot_confusion_matrix(ax=None)``. For multi-class scores, PR-AUC and ROC-AUC are
        macro averages over one-vs-rest problems.

    Examples
    --------
    >>> report = imbalance_report([0, 0, 0, 1], [0, 0, 0, 0])
    >>> report.accuracy, report.balanced_accuracy
    (0.75, 0.5)
    """
    import pandas as pd
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )
    from sklearn.preprocessing import label_binarize

    y_true, _ = _as_labels(y_true)
    y_pred, _ = _as_labels(y_pred)
    check_same_length(y_true=y_true, y_pred=y_pred)
    if labels is None:
        labels = sorted(set(y_true.tolist()) | set(y_pred.tolist()), key=_sort_key)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_class = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support},
        index=pd.Index([str(label) for label in labels], name="class"),
    )
    pr_auc = roc_auc = None
    if y_score is not None:
        scores = np.asarray(y_score, dtype=float)
        check_same_length(y_true=y_true, y_score=scores)
        check_finite(scores, "y_score")
        if len(labels) == 2:
            if scores.ndim == 2:
                scores = scores[:, 1]
            positive = labels[1]
            pr_auc = float(average_precision_score(y_true == positive, scores))
            roc_auc = float(roc_auc_score(y_true == positive, scores))
        else:
            if scores.ndim != 2 or scores.shape[1] != len(labels):
                raise ValueError(
                    f"y_score for {len(labels)} classes must have shape (n_samples, {len(labels)}), got {scores.shape}."
                )
            onehot = label_binarize(y_true, classes=labels)
            pr_auc = float(average_precision_score(onehot, scores, average="macro"))
            roc_auc = float(roc_auc_score(onehot, scores, average="macro"))
    return ImbalanceReport(
        per_class=per_class,
        balanced_accuracy=float(balanced_accuracy_score(y_true, y_pred)),
        accuracy=float(accuracy_score(y_true, y_pred)),
        pr_auc=pr_auc,
        roc_auc=roc_auc,
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        labels=list(labels),
    )
