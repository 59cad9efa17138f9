"""Tests for sustainlab.imbalance: SMOTE from scratch, checked against imbalanced-learn by properties."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from imblearn.over_sampling import SMOTE as ImblearnSMOTE
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from sustainlab.imbalance import (
    SMOTE,
    compare_rebalancing,
    imbalance_report,
    interpolate,
    leakage_demo,
    minority_neighbors,
    resolve_sampling_strategy,
)
from sklearn.model_selection import StratifiedKFold
from sklearn.tree import DecisionTreeClassifier
from sustainlab import imbalance as im
from sustainlab.datasets import make_imbalanced


@pytest.fixture(scope="module")
def binary():
    return make_classification(n_samples=400, n_features=5, weights=[0.9], random_state=0)


@pytest.fixture(scope="module")
def multiclass():
    return make_classification(
        n_samples=600, n_features=6, n_informative=4, n_classes=3, weights=[0.7, 0.2], random_state=0
    )


STRATEGIES_MULTI = ["auto", "minority", "not minority", "not majority", "all", {1: 300, 2: 200}, {2: 400}]
STRATEGIES_BINARY = ["auto", "minority", "all", 0.5, 1.0, 0.25, {1: 100}, lambda y: {1: 200}]


@pytest.mark.parametrize("strategy", STRATEGIES_MULTI, ids=str)
def test_smote_class_counts_match_imblearn_multiclass(multiclass, strategy):
    """Does every sampling_strategy give imbalanced-learn's class counts on a 3-class problem?"""
    X, y = multiclass
    _, ours = SMOTE(sampling_strategy=strategy, random_state=0).fit_resample(X, y)
    _, theirs = ImblearnSMOTE(sampling_strategy=strategy, random_state=0).fit_resample(X, y)
    assert Counter(ours) == Counter(theirs)


@pytest.mark.parametrize("strategy", STRATEGIES_BINARY, ids=str)
def test_smote_class_counts_match_imblearn_binary(binary, strategy):
    """Do floats, dicts and callables give imbalanced-learn's class counts on a binary problem?"""
    X, y = binary
    _, ours = SMOTE(sampling_strategy=strategy, random_state=0).fit_resample(X, y)
    _, theirs = ImblearnSMOTE(sampling_strategy=strategy, random_state=0).fit_resample(X, y)
    assert Counter(ours) == Counter(theirs)


def test_smote_keeps_original_samples_first(multiclass):
    """Are the original rows returned unchanged, in order, before the synthetic ones?"""
    X, y = multiclass
    X_res, y_res = SMOTE(random_state=0).fit_resample(X, y)
    np.testing.assert_array_equal(X_res[: len(X)], X)
    np.testing.assert_array_equal(y_res[: len(y)], y)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_smote_points_lie_on_segments_to_k_nearest_neighbours(multiclass, k):
    """Does each synthetic point lie on a segment between a same-class sample and one of its k nearest neighbours?"""
    X, y = multiclass
    X_res, y_res = SMOTE(k_neighbors=k, random_state=1).fit_resample(X, y)
    for label in (1, 2):
        X_class = X[y == label]
        neighbors = minority_neighbors(X_class, k)
        synthetic = X_res[len(X) :][y_res[len(y) :] == label]
        assert len(synthetic) > 0
        # For each synthetic point find a (base, neighbour) pair whose segment contains it.
        for point in synthetic[:60]:
            base = X_class[:, None, :]  # (n, 1, d)
            ends = X_class[neighbors]  # (n, k, d)
            direction = ends - base
            length2 = (direction**2).sum(-1)
            t = ((point - base) * direction).sum(-1) / np.where(length2 > 0, length2, 1)
            closest = base + np.clip(t, 0, 1)[..., None] * direction
            distance = np.sqrt(((closest - point) ** 2).sum(-1))
            assert distance.min() < 1e-9


def test_smote_same_seed_same_output_and_different_seed_differs(binary):
    """Is the output reproducible with random_state, and does another seed give other points?"""
    X, y = binary
    a, _ = SMOTE(random_state=3).fit_resample(X, y)
    b, _ = SMOTE(random_state=3).fit_resample(X, y)
    c, _ = SMOTE(random_state=4).fit_resample(X, y)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[len(X) :], c[len(X) :])


def test_smote_does_not_mutate_inputs(binary):
    """Are X and y left untouched?"""
    X, y = binary
    X_copy, y_copy = X.copy(), y.copy()
    SMOTE(random_state=0).fit_resample(X, y)
    np.testing.assert_array_equal(X, X_copy)
    np.testing.assert_array_equal(y, y_copy)


def test_smote_synthetic_distribution_matches_imblearn():
    """Are our synthetic points distributed like imblearn's (per-feature means and variances, pooled over seeds)?"""
    X, y = make_classification(n_samples=3000, n_features=8, weights=[0.9], random_state=2)
    n = len(X)
    ours = np.concatenate([SMOTE(random_state=s).fit_resample(X, y)[0][n:] for s in range(5)])
    theirs = np.concatenate([ImblearnSMOTE(random_state=s).fit_resample(X, y)[0][n:] for s in range(5)])
    spread = X[y == 1].std(axis=0)
    # ~12,000 points per side: the standard error of a mean is ~0.01 std; 0.05 std leaves a wide margin.
    np.testing.assert_array_less(np.abs(ours.mean(axis=0) - theirs.mean(axis=0)), 0.05 * spread)
    np.testing.assert_allclose(ours.var(axis=0), theirs.var(axis=0), rtol=0.08)
    # Distance of a synthetic point to its nearest original minority point: same distribution as well.
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=1).fit(X[y == 1])
    d_ours = nn.kneighbors(ours)[0].ravel()
    d_theirs = nn.kneighbors(theirs)[0].ravel()
    np.testing.assert_allclose(np.quantile(d_ours, [0.25, 0.5, 0.75]), np.quantile(d_theirs, [0.25, 0.5, 0.75]),
                               rtol=0.08)


def test_smote_keeps_pandas_column_names_and_series_name(binary):
    """Does a DataFrame/Series come back as a DataFrame/Series with the same names?"""
    X, y = binary
    X_df = pd.DataFrame(X, columns=[f"feature_{i}" for i in range(X.shape[1])])
    y_s = pd.Series(y, name="label")
    X_res, y_res = SMOTE(random_state=0).fit_resample(X_df, y_s)
    assert isinstance(X_res, pd.DataFrame) and list(X_res.columns) == list(X_df.columns)
    assert isinstance(y_res, pd.Series) and y_res.name == "label"
    assert len(X_res) == len(y_res) == 2 * int((y == 0).sum())


def test_smote_string_labels_and_float32(binary):
    """Do string labels work and does float32 stay float32?"""
    X, y = binary
    labels = np.where(y == 1, "rare", "common")
    X_res, y_res = SMOTE(random_state=0).fit_resample(X.astype(np.float32), labels)
    assert X_res.dtype == np.float32
    assert Counter(y_res) == {"common": int((y == 0).sum()), "rare": int((y == 0).sum())}


def test_smote_in_imblearn_pipeline_cross_validates(binary):
    """Does SMOTE drop into imblearn's Pipeline and survive cloning in cross-validation?"""
    from imblearn.pipeline import make_pipeline
    from sklearn.model_selection import cross_val_score

    X, y = binary
    scores = cross_val_score(make_pipeline(SMOTE(random_state=0), LogisticRegression()), X, y, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.5)


def test_interpolate_and_neighbors_basics():
    """Do the two building blocks do what the notebook says?"""
    base, end = np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 4.0], [1.0, 3.0]])
    np.testing.assert_allclose(interpolate(base, end, np.array([0.0, 0.5])), [[0.0, 0.0], [1.0, 2.0]])
    X = np.array([[0.0], [1.0], [3.0], [7.0]])
    np.testing.assert_array_equal(minority_neighbors(X, 2), [[1, 2], [0, 2], [1, 0], [2, 1]])


BAD_INPUTS = [
    (dict(X=np.array([[np.nan, 1.0]] + [[i, i] for i in range(9)]), y=[0] * 4 + [1] * 6), {}, "X contains NaN"),
    (dict(X=np.array([[np.inf, 1.0]] + [[i, i] for i in range(9)]), y=[0] * 4 + [1] * 6), {}, "X contains infinity"),
    (dict(X=np.arange(20.0).reshape(10, 2), y=[0] * 7 + [1] * 3), {}, r"only 3 sample\(s\).*k_neighbors \+ 1"),
    (dict(X=np.arange(20.0).reshape(10, 2), y=[0] * 6 + [1] * 4), {"sampling_strategy": {1: 2}}, "below its current"),
    (dict(X=np.arange(20.0).reshape(10, 2), y=[0] * 6 + [1] * 4), {"sampling_strategy": {5: 8}}, "not present"),
    (dict(X=pd.DataFrame({"a": range(10), "sex": list("MF") * 5}), y=[0] * 6 + [1] * 4), {}, "non-numeric.*'sex'"),
    (dict(X=np.array([["a", "b"]] * 10), y=[0] * 6 + [1] * 4), {}, "numeric"),
    (dict(X=np.arange(20.0).reshape(10, 2), y=[0] * 10), {}, "at least 2 classes"),
    (dict(X=np.arange(20.0).reshape(10, 2), y=[0] * 9), {}, "inconsistent numbers of samples"),
    (dict(X=np.arange(10.0), y=[0] * 6 + [1] * 4), {}, "Expected 2D array"),
    (dict(X=np.arange(20.0).reshape(10, 2), y=[0] * 6 + [1] * 4), {"sampling_strategy": "majority"},
     "'sampling_strategy' parameter of SMOTE must be .* Got 'majority'"),
    (dict(X=np.arange(20.0).reshape(10, 2), y=[0] * 6 + [1] * 4), {"sampling_strategy": 1.5},
     r"'sampling_strategy' parameter of SMOTE must be a float in the range \(0.0, 1.0\]"),
    (dict(X=np.arange(20.0).reshape(10, 2), y=[0] * 6 + [1] * 4), {"sampling_strategy": lambda y: 3},
     "callable sampling_strategy must return a dict"),
    (dict(X=np.arange(20.0).reshape(10, 2), y=np.linspace(0, 1, 10)), {}, "Unknown label type"),
    (dict(X=np.arange(20.0).reshape(10, 2), y=np.ones((10, 2), dtype=int)), {}, "Multilabel"),
    (dict(X=np.arange(20.0).reshape(10, 2), y=[0] * 6 + [1] * 4), {"sampling_strategy": 0.5}, "remove samples"),
    (dict(X=np.arange(30.0).reshape(15, 2), y=[0] * 9 + [1] * 3 + [2] * 3), {"sampling_strategy": 0.9,
                                                                            "k_neighbors": 1}, "binary"),
    (dict(X=np.arange(20.0).reshape(10, 2), y=[0] * 6 + [1] * 4), {"k_neighbors": 0}, "k_neighbors must be >= 1"),
]


@pytest.mark.parametrize("data, params, message", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_smote_bad_input_raises_clear_value_error(data, params, message):
    """Does each bad input raise a ValueError whose message names the problem?"""
    with pytest.raises(ValueError, match=message):
        SMOTE(**params).fit_resample(data["X"], data["y"])


def test_resolve_sampling_strategy_auto_counts():
    """Does "auto" raise every non-majority class to the majority count?"""
    assert resolve_sampling_strategy("auto", ["a"] * 6 + ["b"] * 2 + ["c"]) == {"b": 4, "c": 5}


@pytest.mark.parametrize("strategy", STRATEGIES_MULTI, ids=str)
def test_resolve_sampling_strategy_is_imblearns_with_plain_labels(multiclass, strategy):
    """Is the result imblearn's check_sampling_strategy, in the same order, with plain Python labels and counts?"""
    from imblearn.utils import check_sampling_strategy

    _, y = multiclass
    ours = resolve_sampling_strategy(strategy, y)
    assert list(ours.items()) == list(check_sampling_strategy(strategy, y, "over-sampling").items())
    assert all(type(label) is int and type(n) is int for label, n in ours.items())


@pytest.mark.parametrize("strategy, message", [
    ("majority", "sampling_strategy must be one of 'auto'"),
    ([1, 2], "sampling_strategy must be one of"),
    (lambda y: [1], "callable sampling_strategy must return a dict"),
    ({"b": 1}, r"samples of class 'b', below its current count 2"),
    ({"z": 9}, r"class counts \{'a': 6, 'b': 2, 'c': 1\}.*not present"),
])
def test_resolve_sampling_strategy_errors_name_the_parameter(strategy, message):
    """Do bad strategies raise a ValueError that names sampling_strategy (and the class, when one is at fault)?"""
    with pytest.raises(ValueError, match=message):
        resolve_sampling_strategy(strategy, ["a"] * 6 + ["b"] * 2 + ["c"])


def test_smote_fit_validates_and_resolves_without_resampling(binary, monkeypatch):
    """Does fit set the fitted attributes without generating any sample (its docstring's promise)?"""
    from sustainlab import imbalance

    def fail(*args, **kwargs):
        raise AssertionError("fit resampled the data")

    monkeypatch.setattr(imbalance, "_smote_resample", fail)
    X, y = binary
    sampler = SMOTE(random_state=0)
    assert sampler.fit(pd.DataFrame(X, columns=list("abcde")), y) is sampler
    assert sampler.sampling_strategy_ == {1: int((y == 0).sum() - (y == 1).sum())}
    assert sampler.n_features_in_ == 5 and list(sampler.feature_names_in_) == list("abcde")
    with pytest.raises(ValueError, match="k_neighbors must be >= 1"):
        SMOTE(k_neighbors=0).fit(X, y)
    with pytest.raises(ValueError, match="only 2 sample"):
        SMOTE().fit_resample(X[:12], np.r_[np.zeros(10), np.ones(2)])


def test_smote_integer_dataframe_columns_become_float_not_truncated():
    """Are interpolated values kept (float64) when the DataFrame's columns are integers?"""
    X = pd.DataFrame({"a": np.arange(20) * 10, "b": np.arange(20) % 3})
    y = np.r_[np.zeros(14, dtype=int), np.ones(6, dtype=int)]
    X_res, _ = SMOTE(k_neighbors=3, random_state=0).fit_resample(X, y)
    assert list(X_res.dtypes) == [np.float64, np.float64]
    assert not np.allclose(X_res["a"].iloc[20:] % 1, 0)


def test_smote_sparse_input_matches_dense_and_stays_sparse(multiclass):
    """Does a CSR matrix give the dense result, as a CSR matrix?"""
    from scipy import sparse

    X, y = multiclass
    X_dense, y_dense = SMOTE(random_state=0).fit_resample(X, y)
    X_sparse, y_sparse = SMOTE(random_state=0).fit_resample(sparse.csr_matrix(X), y)
    assert sparse.issparse(X_sparse) and X_sparse.format == "csr"
    np.testing.assert_allclose(X_sparse.toarray(), X_dense)
    np.testing.assert_array_equal(y_sparse, y_dense)


def _imblearn_sampler_checks(estimator):
    from imblearn.utils.estimator_checks import _check_name, estimator_checks_generator

    return {_check_name(check): check for _, check in estimator_checks_generator(estimator)}


# imbalanced-learn's own sampler checks, as listed for its SMOTE (the reference): each runs on both samplers.
_REFERENCE_CHECKS = _imblearn_sampler_checks(ImblearnSMOTE(random_state=0))


def test_smote_has_imblearns_sampler_tags():
    """Does imbalanced-learn generate the same checks for our SMOTE as for its own (same tags: sparse, pandas...)?"""
    assert list(_imblearn_sampler_checks(SMOTE(random_state=0))) == list(_REFERENCE_CHECKS)


@pytest.mark.parametrize("name", list(_REFERENCE_CHECKS))
def test_smote_passes_imblearns_estimator_checks(name):
    """Does our SMOTE pass each of imbalanced-learn's estimator checks that imbalanced-learn's SMOTE passes?"""
    import warnings

    check = _REFERENCE_CHECKS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checks' own data sets trigger sklearn/pandas warnings in both samplers
        try:
            check(ImblearnSMOTE(random_state=0))
        except Exception as error:  # the reference fails it as well: nothing to compare with
            pytest.skip(f"imbalanced-learn's SMOTE fails {name} too: {type(error).__name__}: {error}")
        check(SMOTE(random_state=0))


def test_leakage_demo_leaky_protocol_scores_higher(binary):
    """Does oversampling before the split inflate the cross-validated score on a hard problem?"""
    from sklearn.neighbors import KNeighborsClassifier

    X, y = make_classification(n_samples=600, n_features=10, n_informative=3, weights=[0.92], flip_y=0.05,
                               random_state=0)
    scores = leakage_demo(KNeighborsClassifier(1), X, y, cv=5, random_state=0)
    assert set(scores) == {"oversample then split", "split then oversample"}
    assert scores["oversample then split"].mean() > scores["split then oversample"].mean() + 0.05


def test_compare_rebalancing_table(binary):
    """Does the comparison give one row per strategy with scores in [0, 1] and positive fit times?"""
    from imblearn.pipeline import make_pipeline

    X, y = binary
    table = compare_rebalancing(
        {"none": LogisticRegression(), "SMOTE": make_pipeline(SMOTE(random_state=0), LogisticRegression())},
        X, y, cv=3,
    )
    assert list(table.index) == ["none", "SMOTE"]
    scores = table[["balanced_accuracy", "minority_recall", "pr_auc"]].to_numpy()
    assert np.all((scores >= 0) & (scores <= 1)) and np.all(table["fit_time_s"] > 0)
    # 3-fold training parts hold 2/3 of the rows; SMOTE raises the minority to the majority count.
    n_majority = int((y == 0).sum())
    assert table.loc["none", "train_rows"] == pytest.approx(len(y) * 2 / 3, abs=1)
    assert table.loc["SMOTE", "train_rows"] == pytest.approx(2 * n_majority * 2 / 3, abs=2)
    # Rebalancing a logistic regression trades precision for minority recall.
    assert table.loc["SMOTE", "minority_recall"] >= table.loc["none", "minority_recall"]



def test_compare_rebalancing_times_only_the_cross_validation(binary):
    """cv_time_s covers the work energy_kwh covers (cross_validate), not the extra resampling behind train_rows."""
    import time

    from imblearn import FunctionSampler
    from imblearn.pipeline import make_pipeline

    pause = 0.15
    calls = []  # (start, end) of every resampling

    def slow_identity(X, y):
        start = time.perf_counter()
        time.sleep(pause)
        calls.append((start, time.perf_counter()))
        return X, y

    X, y = binary
    before = time.perf_counter()
    table = compare_rebalancing({"slow": make_pipeline(FunctionSampler(func=slow_identity, validate=False),
                                                       LogisticRegression())}, X, y, cv=2)
    assert len(calls) == 4  # two folds fitted by cross_validate, then two more to count the rows
    cv_time = table.loc["slow", "cv_time_s"]
    assert cv_time >= 2 * pause  # the two folds' resampling is in it ...
    # ... and the clock stopped before the counting resamples began (a clock that also covered them would read at
    # least their two pauses more than the time from the start of the call to the first of them).
    assert cv_time <= calls[2][0] - before

def test_imbalance_report_majority_baseline():
    """Does a majority-class predictor get high accuracy but chance balanced accuracy and zero minority recall?"""
    y_true = np.array([0] * 95 + [1] * 5)
    report = imbalance_report(y_true, np.zeros(100, dtype=int), np.zeros(100))
    assert report.accuracy == pytest.approx(0.95)
    assert report.balanced_accuracy == pytest.approx(0.5)
    assert report.per_class.loc["1", "recall"] == 0
    assert report.roc_auc == pytest.approx(0.5) and report.pr_auc == pytest.approx(0.05)
    np.testing.assert_array_equal(report.confusion, [[95, 0], [5, 0]])
    assert "balanced accuracy  0.500" in report.summary()


def test_imbalance_report_multiclass_scores_and_plot():
    """Do multi-class scores give macro AUCs, and does the confusion plot label its axes?"""
    import matplotlib

    matplotlib.use("Agg")
    y_true = np.array([0, 0, 1, 1, 2, 2])
    scores = np.eye(3)[y_true] * 0.8 + 0.1
    report = imbalance_report(y_true, y_true, scores)
    assert report.roc_auc == pytest.approx(1.0) and report.pr_auc == pytest.approx(1.0)
    ax = report.plot_confusion_matrix()
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    with pytest.raises(ValueError, match="shape"):
        imbalance_report(y_true, y_true, scores[:, :2])


def test_load_abalone_shape_target_and_numeric_columns():
    """Does the loader give 4,177 numeric rows with 261 old abalones and no `rings` column?"""
    from sustainlab.datasets import load_abalone

    X, y = load_abalone(return_X_y=True)
    assert X.shape == (4177, 10) and int(y.sum()) == 261
    assert "rings" not in X.columns and all(dtype.kind == "f" for dtype in X.dtypes)
    assert (X[["sex_F", "sex_I", "sex_M"]].sum(axis=1) == 1).all()
    assert int(load_abalone(min_rings=20)["old"].sum()) == 62


def test_load_abalone_notices_a_changed_file(monkeypatch):
    """Does a different bundled file (checksum mismatch) raise instead of silently changing the lesson?"""
    from sustainlab import datasets

    monkeypatch.setattr(datasets, "ABALONE_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="SHA-256"):
        datasets.load_abalone()
    assert datasets.load_abalone(verify=False).shape == (4177, 11)


@pytest.mark.parametrize("kwargs, message", [
    ({"min_rings": 1}, "min_rings must be >= 2"),
    ({"min_rings": 30}, "min_rings must be <= 29"),
])
def test_load_abalone_bad_threshold(kwargs, message):
    """Is an impossible ring threshold rejected with its name in the message?"""
    from sustainlab.datasets import load_abalone

    with pytest.raises(ValueError, match=message):
        load_abalone(**kwargs)


@pytest.mark.parametrize("share", [0.02, 0.1, 0.3])
def test_make_imbalanced_share_and_reproducibility(share):
    """Is the minority share close to the requested one, and the data reproducible?"""
    from sustainlab.datasets import make_imbalanced

    X, y = make_imbalanced(4000, minority_share=share, random_state=1)
    X2, _ = make_imbalanced(4000, minority_share=share, random_state=1)
    np.testing.assert_array_equal(X, X2)
    assert abs(y.mean() - share) < 0.02


@pytest.mark.parametrize("kwargs, message", [
    ({"minority_share": 0.0}, "minority_share must be > 0"),
    ({"minority_share": 0.6}, "minority_share must be <= 0.5"),
    ({"n_features": 3}, "n_features must be >= 6"),
])
def test_make_imbalanced_bad_input(kwargs, message):
    """Are out-of-range parameters rejected with the parameter's name?"""
    from sustainlab.datasets import make_imbalanced

    with pytest.raises(ValueError, match=message):
        make_imbalanced(**kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# imbalance: the threshold lever, SMOTENC on one-hot columns, like-for-like leakage
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def imbalanced():
    return make_imbalanced(600, minority_share=0.1, random_state=0)


def test_threshold_at_prior_predicts_above_the_base_rate(imbalanced):
    X, y = imbalanced
    model = im.ThresholdAtPrior(LogisticRegression(max_iter=1000)).fit(X, y)
    proba = model.predict_proba(X)[:, 1]
    assert model.prior_ == pytest.approx(np.mean(y == 1))
    np.testing.assert_array_equal(model.predict(X), (proba > model.prior_).astype(int))
    plain = LogisticRegression(max_iter=1000).fit(X, y)
    np.testing.assert_allclose(proba, plain.predict_proba(X)[:, 1])  # same model, only the threshold moves
    assert model.predict(X).sum() > plain.predict(X).sum()
    with pytest.raises(ValueError, match="binary"):
        im.ThresholdAtPrior(LogisticRegression()).fit(X, np.arange(len(y)) % 3)


def test_smotenc_one_hot_keeps_categories_whole_and_smote_does_not():
    rng = np.random.default_rng(0)
    n = 300
    codes = rng.integers(0, 3, size=n)
    X = np.column_stack([np.eye(3)[codes] * 0.05, rng.normal(size=(n, 2))])  # tiny one-hot: neighbours mix categories
    y = (rng.random(n) < 0.15).astype(int)
    X_nc, y_nc = im.SMOTENCOneHot([0, 1, 2], random_state=0).fit_resample(X, y)
    np.testing.assert_array_equal(X_nc[:n], X)
    assert np.bincount(y_nc)[0] == np.bincount(y_nc)[1]
    assert im.invalid_one_hot_share(X_nc[n:], [0, 1, 2]) == 0.0
    X_sm, _ = im.SMOTE(random_state=0).fit_resample(X, y)
    assert im.invalid_one_hot_share(X_sm[n:], [0, 1, 2]) > 0.3
    with pytest.raises(ValueError, match="one_hot_columns"):
        im.SMOTENCOneHot([0]).fit_resample(X, y)


def test_leakage_same_folds_honest_protocol_is_the_exercise_loop(imbalanced):
    X, y = imbalanced
    model = DecisionTreeClassifier(random_state=0)
    scores = im.leakage_same_folds(model, X, y, cv=5, random_state=0)
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score

    expected = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        X_res, y_res = im.SMOTE(random_state=0).fit_resample(X[train], y[train])
        expected.append(balanced_accuracy_score(y[test], clone(model).fit(X_res, y_res).predict(X[test])))
    np.testing.assert_allclose(scores["split then oversample"], expected)
    assert scores["oversample then split"].mean() > scores["split then oversample"].mean()


def test_leakage_same_folds_needs_an_over_sampler(imbalanced):
    from imblearn.under_sampling import RandomUnderSampler

    X, y = imbalanced
    with pytest.raises(ValueError, match="original rows first"):
        im.leakage_same_folds(LogisticRegression(), X, y, sampler=RandomUnderSampler(random_state=0))


def test_fold_scores_average_to_compare_rebalancing(imbalanced):
    X, y = imbalanced
    candidates = {"weights": LogisticRegression(class_weight="balanced", max_iter=1000)}
    folds = im.fold_scores(candidates, X, y, cv=5, random_state=0)
    table = im.compare_rebalancing(candidates, X, y, cv=5, random_state=0)
    assert folds.shape == (5, 1)
    assert folds["weights"].mean() == pytest.approx(table.loc["weights", "balanced_accuracy"])


def test_smote3_reference_is_the_packages_leak_on_the_same_folds(imbalanced):
    """The exercise asks, on a list of folds, for what leakage_same_folds measures on a splitter."""
    from sklearn.neighbors import KNeighborsClassifier

    from sustainlab.checks import get_exercise

    X, y = imbalanced
    splitter = StratifiedKFold(4, shuffle=True, random_state=1)
    model, sampler = KNeighborsClassifier(n_neighbors=1), im.SMOTE(random_state=0)
    leak = get_exercise("smote-3").reference()(model, sampler, X, y, list(splitter.split(X, y)))
    package = im.leakage_same_folds(model, X, y, sampler=sampler, cv=splitter)
    np.testing.assert_allclose(leak, package["oversample then split"] - package["split then oversample"])


# The delegating answer of every smote-* exercise: tests/test_checks.py::test_an_answer_delegating_to_the_package_fails


def test_smote2_probes_hold_duplicates_on_which_the_package_lists_a_point_as_its_own_neighbour():
    from sustainlab.checks import get_exercise

    probes = get_exercise("smote-2").probes(np.random.default_rng(0))
    fooled = 0
    for X, k in probes:
        assert len(np.unique(X, axis=0)) < len(X)
        fooled += np.any(minority_neighbors(X, k) == np.arange(len(X))[:, None])
    assert fooled


def test_notebook_03_imports_the_package_solutions_only_after_their_exercises():
    """smote-1/2 are solved by interpolate/minority_neighbors, smote-3 nearly by leakage_same_folds: not imported."""
    import ast
    from pathlib import Path

    import nbformat

    path = Path(__file__).resolve().parents[1] / "notebooks" / "03_smote.ipynb"
    cells = nbformat.read(path, as_version=4).cells
    position = {c.metadata["sustainlab"]["check"]: i for i, c in enumerate(cells)
                if "check" in c.metadata.get("sustainlab", {})}

    def imported_before(check_id):
        return {alias.asname or alias.name for c in cells[:position[check_id]] if c.cell_type == "code"
                for node in ast.walk(ast.parse(c.source)) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names}

    assert "SMOTE" in imported_before("smote-1"), "no imports found: the scan is broken"
    for name, check_id in (("interpolate", "smote-1"), ("minority_neighbors", "smote-2"),
                           ("leakage_same_folds", "smote-3")):
        assert name not in imported_before(check_id), f"{name} is imported before the {check_id} check"
