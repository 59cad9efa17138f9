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
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real

import numpy as np
from imblearn.over_sampling.base import BaseOverSampler
from imblearn.utils import check_sampling_strategy
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin
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
    "leakage_same_folds",
    "fold_scores",
    "ThresholdAtPrior",
    "SMOTENCOneHot",
    "invalid_one_hot_share",
]

#: The string values ``sampling_strategy`` accepts, with imbalanced-learn's meaning for an over-sampler.
SAMPLING_STRATEGIES = ("auto", "minority", "not minority", "not majority", "all")


# --------------------------------------------------------------------------------------------------------------------
# The sampler
# --------------------------------------------------------------------------------------------------------------------


class SMOTE(BaseOverSampler):
    """Synthetic Minority Over-sampling TEchnique, from scratch on NumPy and ``NearestNeighbors``.

    For every class to be over-sampled, each new sample is made by picking a random sample of that class, one of its
    ``k_neighbors`` nearest neighbours *within the same class*, and a random point on the segment between them.
    Built step by step in ``notebooks/03_smote.ipynb`` (*How does SMOTE make a new point?*).

    The algorithm is ours (:meth:`_fit_resample`, :func:`minority_neighbors`, :func:`interpolate`); the sampler
    interface around it comes from imbalanced-learn's ``BaseOverSampler``: input validation, sparse matrices, lists,
    pandas in and pandas out, one-vs-all (label-indicator) targets, ``get_feature_names_out`` and the sampler tags,
    so imbalanced-learn's own estimator checks pass as they do for its SMOTE (``tests/test_imbalance.py``).

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
        Number of synthetic samples per class, resolved by the last ``fit`` or ``fit_resample`` (class order sorted).
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
        """Validate ``X`` and ``y`` and resolve the sampling strategy, without resampling; returns ``self``.

        Sets ``sampling_strategy_``, ``n_features_in_`` (and ``feature_names_in_``). Use :meth:`fit_resample` to get
        the resampled data; the parameters and errors are the same.
        """
        return super().fit(_float_frame(X), y)

    def fit_resample(self, X, y):
        """Return ``X`` and ``y`` with synthetic samples appended after the original ones.

        Parameters
        ----------
        X : array-like, sparse matrix or pandas DataFrame of shape (n_samples, n_features)
            Numeric features without NaN or inf.
        y : array-like or pandas Series of shape (n_samples,), or label-indicator array of shape (n_samples, n_classes)
            Class labels (any hashable values; at least two classes), or one-vs-all (one-hot) rows.

        Returns
        -------
        X_resampled : same type as ``X``, shape (n_samples + n_new, n_features)
            The original rows first, then the synthetic ones. A DataFrame keeps its column names (the index is reset),
            a sparse matrix stays sparse, a list stays a list. ``float32`` stays ``float32``; other dtypes become
            ``float64`` (interpolated values are not integers).
        y_resampled : same type as ``y``, shape (n_samples + n_new,) or (n_samples + n_new, n_classes)
            A Series keeps its name; one-vs-all input gives one-vs-all output.

        Raises
        ------
        ValueError
            If ``X`` has non-numeric columns, NaN or inf; if ``X`` and ``y`` differ in length; if ``y`` is continuous,
            multilabel or has fewer than two classes; if a class to be resampled has fewer than ``k_neighbors + 1``
            samples; if ``sampling_strategy`` is not one of the accepted forms or does not fit ``y``.
        """
        return super().fit_resample(_float_frame(X), y)

    def _validate_params(self):
        # imblearn's fit and fit_resample call this first: sampling_strategy's form is checked by imblearn's
        # constraints, k_neighbors by ours (it rejects bools and names the parameter).
        super()._validate_params()
        check_scalar(self.k_neighbors, "k_neighbors", min_value=1, integer=True)

    def _check_X_y(self, X, y):
        X, y, binarize_y = super()._check_X_y(X, y)
        if X.dtype.kind != "f":
            X = X.astype(np.float64)  # interpolated rows are not integers
        # imblearn resolves the strategy right after this; doing it here first gives resolve_sampling_strategy's
        # clearer errors (it is the same imblearn function underneath, so the result is the same).
        resolve_sampling_strategy(self.sampling_strategy, y)
        return X, y, binarize_y

    def _fit_resample(self, X, y):
        """SMOTE on validated input (called by imblearn's ``fit_resample``): the lesson's algorithm."""
        k = self.k_neighbors
        counts = Counter(y.tolist())
        for label, n_new in self.sampling_strategy_.items():
            if n_new > 0 and counts[label] < k + 1:
                raise ValueError(
                    f"Class {_python_scalar(label)!r} has only {counts[label]} sample(s), but SMOTE with "
                    f"k_neighbors={k} needs at least {k + 1} (k_neighbors + 1) to find its neighbours. Lower "
                    f"k_neighbors or leave this class out of sampling_strategy."
                )
        return _smote_resample(X, y, self.sampling_strategy_, k, check_random_state(self.random_state))


def _smote_resample(X, y, strategy, k, rng):
    """SMOTE on clean input (a dense array or a CSR/CSC matrix): ``strategy`` maps class -> number of new samples."""
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
    X_res = sparse.vstack(new_X, format=X.format) if sparse.issparse(X) else np.concatenate(new_X)
    return X_res, np.concatenate(new_y)


def minority_neighbors(X_class, k_neighbors=5):
    """Indices of the ``k_neighbors`` nearest neighbours of each row of ``X_class`` among the other rows.

    SMOTE's neighbour search, taught in ``notebooks/03_smote.ipynb`` (*Exercise smote-2 (build, 2 points): the
    neighbour search*): Euclidean distance, one class at a time, each sample excluded from its own neighbours.

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
    X_base, X_neighbor : ndarray or scipy sparse matrix of shape (n, n_features)
    steps : ndarray of shape (n,)
        Values in [0, 1): 0 gives the base point, values near 1 the neighbour.

    Returns
    -------
    ndarray (sparse matrix for sparse input) of shape (n, n_features)

    Examples
    --------
    >>> interpolate(np.array([[0.0, 0.0]]), np.array([[2.0, 4.0]]), np.array([0.25])).tolist()
    [[0.5, 1.0]]
    """
    steps = np.asarray(steps, dtype=float)
    if sparse.issparse(X_base):
        # For a sparse matrix ``*`` is the matrix product: scaling row i by steps[i] is a product with diag(steps).
        return X_base + sparse.diags(steps) @ (X_neighbor - X_base)
    return X_base + steps.reshape(-1, 1) * (X_neighbor - X_base)


# --------------------------------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------------------------------

_NO_SERIES = object()


def _float_frame(X):
    """``X`` itself, or for a DataFrame: a clear error for non-numeric columns and float64 for non-float ones.

    imblearn gives a DataFrame back with the input's column dtypes, which would truncate interpolated values in
    integer columns; and scikit-learn's message for a text column does not say which column it is.
    """
    if not (hasattr(X, "columns") and hasattr(X, "dtypes")):
        return X
    import pandas as pd

    bad = [str(c) for c, dt in zip(X.columns, X.dtypes) if not _is_numeric_dtype(dt)]
    if bad:
        raise ValueError(
            f"X has non-numeric feature(s) {', '.join(repr(b) for b in bad)}: SMOTE interpolates between points, "
            "so every feature must be numeric. Encode categories first (e.g. one-hot) or use imblearn's SMOTENC."
        )
    to_float = [c for c, dt in zip(X.columns, X.dtypes)
                if not isinstance(dt, pd.SparseDtype) and not pd.api.types.is_float_dtype(dt)]
    return X.astype(dict.fromkeys(to_float, np.float64)) if to_float else X


def _is_numeric_dtype(dtype) -> bool:
    try:
        return np.dtype(dtype).kind in "biuf"
    except TypeError:  # pandas extension dtypes (category, string, nullable ints, sparse)
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

    A thin layer over ``imblearn.utils.check_sampling_strategy`` (the definition this course follows): the result is
    imblearn's, with plain Python labels and counts, and errors that name ``sampling_strategy`` and show the class
    counts of ``y``.

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
        would remove samples; dict naming an absent class, or asking for fewer samples than a class already has;
        callable that does not return a dict.

    Examples
    --------
    >>> resolve_sampling_strategy("auto", ["a"] * 6 + ["b"] * 2 + ["c"])
    {'b': 4, 'c': 5}
    >>> resolve_sampling_strategy(0.5, [0] * 10 + [1] * 2)
    {1: 3}
    """
    y = np.asarray(y)
    counts = dict(sorted(Counter(y.tolist()).items(), key=lambda item: _sort_key(item[0])))
    if len(counts) < 2:
        raise ValueError(f"y needs at least 2 classes to rebalance, got {len(counts)}: {list(counts)}.")
    if isinstance(sampling_strategy, str):
        # imblearn's own message for an unknown string lists its internal functions.
        check_option(sampling_strategy, "sampling_strategy", SAMPLING_STRATEGIES)
    elif callable(sampling_strategy):
        # Called once here, so that a wrong return type is reported as such (imblearn fails on ``.keys()``).
        sampling_strategy = sampling_strategy(y)
        if not isinstance(sampling_strategy, Mapping):
            raise ValueError(
                f"A callable sampling_strategy must return a dict of target counts, got "
                f"{type(sampling_strategy).__name__} {sampling_strategy!r}."
            )
    if isinstance(sampling_strategy, Mapping):
        # imblearn's message for this case names neither the class nor the counts.
        for label, target in sampling_strategy.items():
            if label in counts and target < counts[label]:
                raise ValueError(
                    f"sampling_strategy asks for {target} samples of class {label!r}, below its current count "
                    f"{counts[label]}: an over-sampler can only add samples (use an under-sampler to remove them)."
                )
    elif not isinstance(sampling_strategy, (str, Real)) or isinstance(sampling_strategy, bool):
        raise ValueError(
            f"sampling_strategy must be one of {', '.join(map(repr, SAMPLING_STRATEGIES))}, a float in (0, 1], a dict "
            f"of target counts or a callable; got {sampling_strategy!r}."
        )
    try:
        resolved = check_sampling_strategy(sampling_strategy, y, "over-sampling")
    except ValueError as error:
        raise ValueError(f"sampling_strategy={sampling_strategy!r} does not fit y (class counts {counts}): {error}") \
            from None
    return {_python_scalar(label): int(n_new) for label, n_new in resolved.items()}


def _python_scalar(value):
    # imblearn's keys are NumPy scalars (from np.unique); the caller's labels are usually plain Python values.
    return value.item() if isinstance(value, np.generic) else value


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


# --------------------------------------------------------------------------------------------------------------------
# Like-for-like leakage, fold scores, the threshold lever, and SMOTE for one-hot categories
# --------------------------------------------------------------------------------------------------------------------


def leakage_same_folds(estimator, X, y, *, sampler=None, cv=5, scoring="balanced_accuracy", random_state=0):
    """The leak alone: both protocols scored on the **same real test rows**, fold by fold.

    Folds are drawn over the original rows. The leaky protocol resamples the whole dataset once, and trains each fold on
    its real training rows plus *all* synthetic rows — some of which were interpolated from that fold's test rows. The
    honest protocol resamples the fold's training rows only. Test rows, model and folds are identical, so the score
    difference is the leak and nothing else. (:func:`leakage_demo`'s leaky protocol instead splits the resampled rows,
    so its test folds also contain synthetic points: two differences at once.)

    Parameters
    ----------
    estimator : scikit-learn classifier
    X, y : array-like
    sampler : over-sampler with ``fit_resample``, optional
        Defaults to ``SMOTE(random_state=random_state)``. It must return the original rows first, then the synthetic
        ones (as :class:`SMOTE` and imbalanced-learn's over-samplers do); this is checked.
    cv : int or CV splitter, default 5
    scoring : str, default "balanced_accuracy"
    random_state : int, default 0

    Returns
    -------
    dict
        ``{"oversample then split": fold scores, "split then oversample": fold scores}`` (NumPy arrays, same folds).

    Raises
    ------
    ValueError
        If the sampler does not return the original rows first.
    """
    from sklearn.base import clone
    from sklearn.metrics import get_scorer

    if sampler is None:
        sampler = SMOTE(random_state=random_state)
    X_arr, labels = _dense(X), np.asarray(y)
    n = len(labels)
    X_res, y_res = clone(sampler).fit_resample(X_arr, labels)
    X_res, y_res = np.asarray(X_res, dtype=float), np.asarray(y_res)
    if len(y_res) < n or not (np.array_equal(X_res[:n], X_arr) and np.array_equal(y_res[:n], labels)):
        raise ValueError("sampler must return the original rows first, then the synthetic ones (an over-sampler).")
    X_syn, y_syn = X_res[n:], y_res[n:]
    scorer = get_scorer(scoring)
    leaky, honest = [], []
    for train, test in _stratified_cv(cv, random_state).split(X_arr, labels):
        fitted = clone(estimator).fit(np.vstack([X_arr[train], X_syn]), np.concatenate([labels[train], y_syn]))
        leaky.append(scorer(fitted, X_arr[test], labels[test]))
        X_tr, y_tr = clone(sampler).fit_resample(X_arr[train], labels[train])
        honest.append(scorer(clone(estimator).fit(X_tr, y_tr), X_arr[test], labels[test]))
    return {"oversample then split": np.array(leaky), "split then oversample": np.array(honest)}


def fold_scores(candidates, X, y, *, cv=5, scoring="balanced_accuracy", random_state=0):
    """Per-fold cross-validated scores of several candidates on the same folds: a DataFrame, one column each.

    Same folds as :func:`compare_rebalancing` for the same ``cv`` and ``random_state``, so fold-by-fold differences
    between two columns are paired: their spread is the fold-to-fold noise of the comparison.
    """
    import pandas as pd
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score

    splitter = _stratified_cv(cv, random_state)
    labels, _ = _as_labels(y)
    scores = {name: cross_val_score(clone(est), X, labels, cv=splitter, scoring=scoring, n_jobs=1)
              for name, est in candidates.items()}
    return pd.DataFrame(scores).rename_axis("fold")


class ThresholdAtPrior(ClassifierMixin, BaseEstimator):
    """Fit ``estimator`` as it is, then predict the rare class whenever its probability exceeds the class's prior.

    The zero-compute lever against imbalance: no new rows, no reweighting, the same fit as no rebalancing. A
    calibrated model's probability for the rare class rarely exceeds 0.5, but often exceeds its base rate
    ``P(y = 1)`` (the share in the training data); thresholding there moves the decision boundary much as class
    weights do. ``predict_proba`` is the estimator's own, so ranking metrics (PR-AUC, ROC-AUC) do not change.
    Binary targets only.

    Attributes
    ----------
    estimator_ : the fitted estimator
    prior_ : float
        Share of ``classes_[1]`` in the training labels: the threshold.
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, X, y):
        from sklearn.base import clone

        labels = np.asarray(y)
        self.classes_ = np.unique(labels)
        if len(self.classes_) != 2:
            raise ValueError(f"ThresholdAtPrior handles binary targets; y has {len(self.classes_)} classes.")
        self.estimator_ = clone(self.estimator).fit(X, labels)
        self.prior_ = float(np.mean(labels == self.classes_[1]))
        return self

    def predict_proba(self, X):
        return self.estimator_.predict_proba(X)

    def predict(self, X):
        return self.classes_[(self.predict_proba(X)[:, 1] > self.prior_).astype(int)]


class SMOTENCOneHot(BaseEstimator):
    """imbalanced-learn's SMOTENC for data whose categorical column arrives one-hot encoded (e.g. ``sex_F/I/M``).

    Plain SMOTE interpolates every column, so a synthetic row gets a *fractional* category (a third female, two
    thirds infant). SMOTENC interpolates the numeric columns only and gives each synthetic row the most frequent
    category among its neighbours. This wrapper collapses the one-hot group into one category column, runs
    ``imblearn.over_sampling.SMOTENC``, and expands it back to the group's own two values (so it also works after a
    scaler). Original rows come first, as with every over-sampler.

    Parameters
    ----------
    one_hot_columns : sequence of int
        Positions of the one-hot columns of one categorical feature (at least 2).
    k_neighbors : int, default 5
    random_state : int or None, default None
    """

    def __init__(self, one_hot_columns, k_neighbors=5, random_state=None):
        self.one_hot_columns = one_hot_columns
        self.k_neighbors = k_neighbors
        self.random_state = random_state

    def fit_resample(self, X, y):
        from imblearn.over_sampling import SMOTENC

        X_arr = _dense(X)
        columns = [int(c) for c in self.one_hot_columns]
        if len(columns) < 2 or len(set(columns)) != len(columns) or not all(0 <= c < X_arr.shape[1] for c in columns):
            raise ValueError(f"one_hot_columns must be at least 2 distinct column positions of X, got "
                             f"{self.one_hot_columns!r}.")
        group = X_arr[:, columns]
        hot, cold = group.max(axis=0), group.min(axis=0)
        others = [c for c in range(X_arr.shape[1]) if c not in columns]
        collapsed = np.column_stack([X_arr[:, others], group.argmax(axis=1)])
        sampler = SMOTENC(categorical_features=[collapsed.shape[1] - 1], k_neighbors=self.k_neighbors,
                          random_state=self.random_state)
        X_res, y_res = sampler.fit_resample(collapsed, np.asarray(y))
        out = np.empty((len(X_res), X_arr.shape[1]))
        out[:, others] = X_res[:, :-1]
        codes = X_res[:, -1].astype(int)
        out[:, columns] = np.where(np.arange(len(columns)) == codes[:, None], hot, cold)
        return out, y_res


def invalid_one_hot_share(X, one_hot_columns) -> float:
    """Share of rows whose one-hot group is not exactly one hot value and cold elsewhere (e.g. interpolated rows)."""
    group = _dense(X)[:, [int(c) for c in one_hot_columns]]
    hot, cold = group.max(axis=0), group.min(axis=0)
    is_hot, is_cold = np.isclose(group, hot), np.isclose(group, cold)
    valid = (is_hot | is_cold).all(axis=1) & (is_hot.sum(axis=1) == 1)
    return float(1 - valid.mean())


def _dense(X) -> np.ndarray:
    """``X`` (array or DataFrame) as a 2-D float array, for the helpers above."""
    values = np.asarray(X.to_numpy() if hasattr(X, "to_numpy") else X, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got an array of shape {values.shape}.")
    return values
