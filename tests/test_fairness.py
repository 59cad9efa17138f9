"""Tests for sustainlab.fairness: parity with fairlearn, undefined rates, bad input, plots, and the arrests loader."""

from __future__ import annotations

import warnings

import fairlearn.metrics as fm
import matplotlib
import numpy as np
import pandas as pd
import pytest

from sustainlab import fairness as sf
from sustainlab.datasets import ARRESTS_SHAPE, load_arrests

matplotlib.use("Agg")

DISPARITIES = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "equal_opportunity_difference",
)


def _random_data(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, n)
    # Predictions correlated with the labels, so that rates differ from 0.5 and between groups.
    y_pred = np.where(rng.random(n) < 0.7, y_true, 1 - y_true)
    race = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])  # unequal group sizes
    sex = rng.integers(0, 2, n)
    weights = rng.random(n) + 0.1
    return y_true, y_pred, race, sex, weights


def _sensitive_forms(race, sex):
    """The input forms the issue asks for: strings, integers, categoricals, Series, DataFrame, 2-D array."""
    return {
        "str-array": race,
        "int-list": list(sex),
        "categorical": pd.Categorical(race, categories=["c", "a", "b", "unused"]),
        "named-series": pd.Series(race, name="race"),
        "dataframe-2-features": pd.DataFrame({"race": race, "sex": sex}),
        "2d-array": np.column_stack([race, sex]),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", DISPARITIES)
@pytest.mark.parametrize("method", ["between_groups", "to_overall"])
@pytest.mark.parametrize("form", list(_sensitive_forms(np.array(["a"]), np.array([0]))))
def test_disparities_equal_fairlearn(seed, name, method, form):
    """Does every disparity equal fairlearn's within 1e-12, for every input form, with and without weights?"""
    y_true, y_pred, race, sex, weights = _random_data(seed)
    sens = _sensitive_forms(race, sex)[form]
    for sample_weight in (None, weights):
        ours = getattr(sf, name)(y_true, y_pred, sensitive_features=sens, method=method, sample_weight=sample_weight)
        theirs = getattr(fm, name)(y_true, y_pred, sensitive_features=sens, method=method, sample_weight=sample_weight)
        assert ours == pytest.approx(theirs, abs=1e-12)


@pytest.mark.parametrize("name", ["equalized_odds_difference", "equalized_odds_ratio"])
def test_equalized_odds_mean_agg_equals_fairlearn(name):
    """Does agg='mean' match fairlearn too?"""
    y_true, y_pred, race, _, _ = _random_data(3)
    ours = getattr(sf, name)(y_true, y_pred, sensitive_features=race, agg="mean")
    assert ours == pytest.approx(getattr(fm, name)(y_true, y_pred, sensitive_features=race, agg="mean"), abs=1e-12)


@pytest.mark.parametrize("form", ["str-array", "categorical", "named-series", "dataframe-2-features", "2d-array"])
def test_group_metrics_equals_metricframe_by_group(form):
    """Is group_metrics the same table as MetricFrame.by_group (values, group order and index names)?"""
    y_true, y_pred, race, sex, _ = _random_data(4)
    sens = _sensitive_forms(race, sex)[form]
    ours = sf.group_metrics(
        {"sr": sf.selection_rate, "tpr": sf.true_positive_rate, "fpr": sf.false_positive_rate},
        y_true, y_pred, sensitive_features=sens,
    )
    frame = fm.MetricFrame(
        metrics={"sr": fm.selection_rate, "tpr": fm.true_positive_rate, "fpr": fm.false_positive_rate},
        y_true=y_true, y_pred=y_pred, sensitive_features=sens,
    )
    # fairlearn lists every combination of feature values, NaN for unobserved ones; we list observed groups only.
    pd.testing.assert_frame_equal(ours, frame.by_group.dropna(how="all"), check_exact=False, atol=1e-12,
                                  check_index_type=False)


def test_group_metrics_single_callable_and_pandas_inputs():
    """Does a single callable give one column named after it, with pandas inputs whose index is not 0..n-1?"""
    y_true, y_pred, race, _, weights = _random_data(5)
    index = np.arange(len(race)) + 1000
    table = sf.group_metrics(sf.selection_rate, pd.Series(y_true, index=index), pd.Series(y_pred, index=index),
                             sensitive_features=pd.Series(race, index=index, name="race"), sample_weight=weights)
    assert list(table.columns) == ["selection_rate"]
    expected = fm.MetricFrame(metrics=fm.selection_rate, y_true=y_true, y_pred=y_pred, sensitive_features=race,
                              sample_params={"sample_weight": weights}).by_group
    np.testing.assert_allclose(table["selection_rate"].to_numpy(), expected.to_numpy(), atol=1e-12)


def test_rates_equal_fairlearn_with_string_labels():
    """Do the base rates match fairlearn's when labels are strings and pos_label names the favourable one?"""
    y_true, y_pred, *_ = _random_data(6)
    t = np.where(y_true == 1, "yes", "no")
    p = np.where(y_pred == 1, "yes", "no")
    assert sf.selection_rate(t, p, pos_label="yes") == pytest.approx(fm.selection_rate(t, p, pos_label="yes"))
    assert sf.true_positive_rate(t, p, pos_label="yes") == pytest.approx(fm.true_positive_rate(t, p, pos_label="yes"))
    assert sf.false_positive_rate(t, p, pos_label="yes") == pytest.approx(fm.false_positive_rate(t, p, pos_label="yes"))


def test_parity_gives_zero_difference_and_unit_ratio():
    """Identical per-group behaviour must give difference 0 and ratio 1 (a property, not a golden number)."""
    y_true = np.tile([1, 0, 1, 0], 50)
    y_pred = np.tile([1, 0, 0, 1], 50)
    groups = np.repeat(["a", "b"], 100)
    assert sf.demographic_parity_difference(y_true, y_pred, sensitive_features=groups) == 0
    assert sf.demographic_parity_ratio(y_true, y_pred, sensitive_features=groups) == 1
    assert sf.equalized_odds_difference(y_true, y_pred, sensitive_features=groups) == 0


def test_perfect_classifier_meets_equalized_odds_but_not_demographic_parity():
    """With different base rates, a perfect classifier has EO difference 0 but a DP difference = base-rate gap."""
    y_true = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    groups = np.array(["a"] * 4 + ["b"] * 4)
    assert sf.equalized_odds_difference(y_true, y_true, sensitive_features=groups) == 0
    assert sf.demographic_parity_difference(y_true, y_true, sensitive_features=groups) == pytest.approx(0.5)


# --- Undefined rates: a group without positives --------------------------------------------------------------------

def _group_without_positives():
    y_true = np.array([1, 1, 0, 0, 0, 0, 0])
    y_pred = np.array([1, 0, 1, 0, 1, 0, 0])
    groups = np.array(["a", "a", "a", "b", "b", "b", "b"])  # group b has no actual positive
    return y_true, y_pred, groups


def test_undefined_tpr_warns_and_reports_zero_like_fairlearn():
    """By default an undefined TPR counts as 0.0 (fairlearn's value), with an UndefinedRateWarning."""
    y_true, y_pred, groups = _group_without_positives()
    with pytest.warns(sf.UndefinedRateWarning, match="true-positive rate is undefined"):
        ours = sf.equal_opportunity_difference(y_true, y_pred, sensitive_features=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = fm.equal_opportunity_difference(y_true, y_pred, sensitive_features=groups)
    assert ours == pytest.approx(theirs) == pytest.approx(0.5)


def test_undefined_tpr_as_nan_is_left_out_of_the_disparity():
    """zero_division=nan shows NaN in the table and leaves that group out; one group left gives NaN, with a warning."""
    y_true, y_pred, groups = _group_without_positives()
    with pytest.warns(sf.UndefinedRateWarning, match="true-positive rate is defined for only one group"):
        gap = sf.equal_opportunity_difference(y_true, y_pred, sensitive_features=groups, zero_division=np.nan)
    assert np.isnan(gap)  # only group a is defined: nothing to compare it with (not 0.0, which reads as parity)
    fpr_gap = abs(1 / 1 - 1 / 4)  # FPR: a has 1/1, b has 1/4; the TPR gap is undefined
    for agg in ("worst_case", "mean"):  # both skip the undefined TPR gap, as fairlearn's max and (pandas) mean do
        with pytest.warns(sf.UndefinedRateWarning, match="only one group"):
            eo = sf.equalized_odds_difference(y_true, y_pred, sensitive_features=groups, zero_division=np.nan,
                                              agg=agg)
        assert eo == pytest.approx(fpr_gap)
        with pytest.warns(sf.UndefinedRateWarning, match="only one group"):
            ratio = sf.equalized_odds_ratio(y_true, y_pred, sensitive_features=groups, zero_division=np.nan, agg=agg)
        assert ratio == pytest.approx(0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = sf.group_metrics(
            {"tpr": lambda t, p: sf.true_positive_rate(t, p, zero_division=np.nan)}, y_true, y_pred,
            sensitive_features=groups,
        )
    assert np.isnan(table.loc["b", "tpr"]) and table.loc["a", "tpr"] == 0.5


def test_undefined_everywhere_gives_nan():
    """If no group has a positive, the TPR gap is NaN rather than a made-up number."""
    assert np.isnan(sf.equal_opportunity_difference([0, 0, 0, 0], [1, 0, 1, 0], sensitive_features=[1, 1, 2, 2],
                                                    zero_division=np.nan))


def test_zero_selection_everywhere_gives_nan_ratio_like_fairlearn():
    """0/0 in the DP ratio is NaN, as in fairlearn."""
    args = ([1, 0, 1, 0], [0, 0, 0, 0])
    assert np.isnan(sf.demographic_parity_ratio(*args, sensitive_features=["a", "a", "b", "b"]))
    assert np.isnan(fm.demographic_parity_ratio(*args, sensitive_features=["a", "a", "b", "b"]))


# --- Bad input -----------------------------------------------------------------------------------------------------

GOOD = dict(y_true=[0, 1, 1, 0], y_pred=[1, 1, 0, 0], sensitive_features=["a", "a", "b", "b"])

BAD_INPUTS = [
    (dict(y_pred=[1, 1, 0]), "different lengths"),
    (dict(sensitive_features=["a", "a", "b"]), "different lengths"),
    (dict(sensitive_features=["a", "a", "a", "a"]), "single group"),
    (dict(y_pred=[0, 1, 2, 1]), "must be binary"),
    (dict(y_pred=[0.1, 0.7, 0.4, 0.9]), "Threshold scores"),
    (dict(y_true=[0, np.nan, 1, 0]), "y_true contains 1 missing"),
    (dict(y_pred=pd.Series([0, 1, None, 1], dtype="Float64")), "y_pred contains 1 missing"),
    (dict(sensitive_features=["a", None, "b", "b"]), "sensitive_features contains 1 missing"),
    (dict(y_true=["no", "yes", "yes", "no"]), "pos_label=1 is not one of the values of y_true"),
    (dict(method="pairwise"), "method must be one of"),
    (dict(sample_weight=[1, 1, -1, 1]), "non-negative"),
    (dict(sample_weight=[1, 1, 1]), "different lengths"),
    (dict(y_pred=[[0, 1], [1, 0], [0, 0], [1, 1]]), "one-dimensional"),
]


@pytest.mark.parametrize("name", DISPARITIES)
@pytest.mark.parametrize("bad, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_raises_clear_value_error(name, bad, message):
    """Does each bad input raise a ValueError whose message says what is wrong?"""
    with pytest.raises(ValueError, match=message):
        getattr(sf, name)(**{**GOOD, **bad})


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: sf.selection_rate([], []), "empty"),
        (lambda: sf.true_positive_rate([0, 1], [0, 1], zero_division="skip"), "zero_division must be one of"),
        (lambda: sf.equalized_odds_difference(**GOOD, agg="median"), "agg must be one of"),
        (lambda: sf.group_metrics({}, **GOOD), "non-empty dict"),
        (lambda: sf.group_metrics(sf.selection_rate, [0, 1], [0, 1], sensitive_features=["a", "a"]), "single group"),
        (lambda: sf.group_metrics(sf.selection_rate, [0, 1], [0, np.nan], sensitive_features=["a", "b"]), "missing"),
        (lambda: sf.demographic_parity_difference([0, 1], [0, 1], sensitive_features=None), "is required"),
        (lambda: sf.compare_predictions([0, 1], {}, sensitive_features=["a", "b"]), "non-empty dict"),
    ],
)
def test_other_bad_input(call, message):
    """Bad arguments to the other public functions raise ValueErrors naming the problem."""
    with pytest.raises(ValueError, match=message):
        call()


def test_inputs_are_not_mutated():
    """Computing a disparity must not change the caller's arrays."""
    y_true, y_pred, race, sex, _ = _random_data(7)
    frame = pd.DataFrame({"race": pd.Categorical(race), "sex": sex})
    before = (y_true.copy(), y_pred.copy(), frame.copy())
    sf.equalized_odds_difference(y_true, y_pred, sensitive_features=frame)
    np.testing.assert_array_equal(before[0], y_true)
    np.testing.assert_array_equal(before[1], y_pred)
    pd.testing.assert_frame_equal(before[2], frame)


# --- Reports and plots ---------------------------------------------------------------------------------------------

def test_compare_predictions_rows_match_the_reference_libraries():
    """Every column of every row equals scikit-learn's or fairlearn's own function on that model's predictions."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    y_true, y_pred, race, *_ = _random_data(8)
    # Three models with different error patterns, so that no column is the same for all of them.
    rng = np.random.default_rng(1)
    skewed = np.where((race == "a") & (rng.random(len(y_true)) < 0.4), 1, y_pred)
    predictions = {"m1": y_pred, "m2": 1 - y_pred, "skewed": skewed}
    table = sf.compare_predictions(y_true, predictions, sensitive_features=race)
    assert list(table.index) == ["m1", "m2", "skewed"]
    reference = {
        "accuracy": accuracy_score,
        "balanced_accuracy": balanced_accuracy_score,
        "selection_rate": fm.selection_rate,
        "dp_difference": lambda t, p: fm.demographic_parity_difference(t, p, sensitive_features=race),
        "eo_difference": lambda t, p: fm.equalized_odds_difference(t, p, sensitive_features=race),
        "tpr_gap": lambda t, p: fm.equal_opportunity_difference(t, p, sensitive_features=race),
    }
    assert list(table.columns) == list(reference)
    for name, y_hat in predictions.items():
        for column, metric in reference.items():
            assert table.loc[name, column] == pytest.approx(metric(y_true, y_hat), abs=1e-12), (name, column)
    # The disparity columns measure different things here (a swapped column would show).
    assert table.loc["skewed", ["dp_difference", "eo_difference", "tpr_gap"]].nunique() == 3
    assert table["balanced_accuracy"].nunique() == 3


def test_plots_draw_labelled_axes():
    """The plot helpers return axes with labels, one bar per group and one point per model."""
    import matplotlib.pyplot as plt

    y_true, y_pred, race, sex, _ = _random_data(9)
    table = sf.group_metrics({"sr": sf.selection_rate}, y_true, y_pred,
                             sensitive_features=pd.DataFrame({"race": race, "sex": sex}))
    ax = sf.plot_group_metric(table, "sr", overall=0.5)
    assert len(ax.patches) == len(table) and ax.get_ylabel() == "sr" and ax.get_xlabel() == "race × sex"
    summary = sf.compare_predictions(y_true, {"m1": y_pred, "m2": 1 - y_pred}, sensitive_features=race)
    ax2 = sf.plot_tradeoff(summary)
    assert ax2.get_xlabel().startswith("dp_difference") and len(ax2.texts) == 2
    with pytest.raises(ValueError, match="metric must be one of"):
        sf.plot_group_metric(table, "tpr")
    plt.close("all")


# --- Data ----------------------------------------------------------------------------------------------------------

def test_load_arrests_is_the_verified_bundled_table():
    """The loader returns the documented table (shape, target coding, group sizes) from the bundled file."""
    frame = load_arrests()
    assert frame.shape == ARRESTS_SHAPE
    assert set(frame["released"].unique()) == {0, 1}
    assert frame["colour"].value_counts().to_dict() == {"White": 3938, "Black": 1288}
    X, y = load_arrests(return_X_y=True)
    assert "released" not in X.columns and len(y) == len(X) == ARRESTS_SHAPE[0]


def test_load_arrests_notices_a_changed_file(monkeypatch):
    """A different bundled file (checksum mismatch) raises instead of silently changing the lesson."""
    import sustainlab.datasets as datasets

    monkeypatch.setattr(datasets, "ARRESTS_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="SHA-256"):
        datasets.load_arrests()
    assert datasets.load_arrests(verify=False).shape == ARRESTS_SHAPE


def test_split_arrests_is_stratified_and_scaled_on_train_only():
    """The chapter's split keeps the label share, leaves colour out of the features, and scales with train stats."""
    data = sf.split_arrests(random_state=0)
    assert "colour" not in " ".join(data.X_train.columns)
    assert abs(data.y_train.mean() - data.y_test.mean()) < 0.01
    np.testing.assert_allclose(data.X_train.mean().to_numpy(), 0, atol=1e-9)
    assert data.groups_test.index.equals(data.X_test.index)
    with pytest.raises(ValueError, match="test_size"):
        sf.split_arrests(test_size=1.5)


# ----------------------------------------------------------------------------------------------------------------------
# fairness: intervals, proxies, impossibility
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def two_groups():
    rng = np.random.default_rng(0)
    groups = np.array(["a"] * 400 + ["b"] * 40)
    y_true = (rng.random(440) < np.where(groups == "a", 0.7, 0.4)).astype(int)
    y_pred = np.where(rng.random(440) < 0.8, y_true, 1 - y_true)
    return y_true, y_pred, groups


def test_bootstrap_interval_is_seeded_contains_the_estimate_and_widens_for_small_groups(two_groups):
    y_true, y_pred, groups = two_groups
    first = sf.bootstrap_group_metric(sf.selection_rate, y_true, y_pred, sensitive_features=groups, n_boot=300)
    again = sf.bootstrap_group_metric(sf.selection_rate, y_true, y_pred, sensitive_features=groups, n_boot=300)
    pd.testing.assert_frame_equal(first, again)
    assert ((first["low"] <= first["estimate"]) & (first["estimate"] <= first["high"])).all()
    width = first["high"] - first["low"]
    assert width["b"] > 2 * width["a"]  # ten times fewer people: about three times wider
    assert first.loc["a", "estimate"] == pytest.approx(sf.selection_rate(y_true[:400], y_pred[:400]))


def test_bootstrap_interval_validates_arguments(two_groups):
    y_true, y_pred, groups = two_groups
    with pytest.raises(ValueError, match="confidence"):
        sf.bootstrap_group_metric(sf.selection_rate, y_true, y_pred, sensitive_features=groups, confidence=1.5)
    with pytest.raises(TypeError, match="metric must be a function"):
        sf.bootstrap_group_metric("selection_rate", y_true, y_pred, sensitive_features=groups)
    with pytest.raises(ValueError, match="same length"):
        sf.bootstrap_group_metric(sf.selection_rate, y_true[:-1], y_pred, sensitive_features=groups)


def test_chouldechova_identity_holds_for_any_classifier(two_groups):
    y_true, y_pred, groups = two_groups
    table = sf.impossibility_table(y_true, y_pred, sensitive_features=groups)
    np.testing.assert_allclose(table["fpr"], table["fpr_from_identity"], rtol=1e-12)
    assert table["base_rate"]["a"] > table["base_rate"]["b"]


def test_calibration_table_has_balance_and_bins(two_groups):
    y_true, _, groups = two_groups
    scores = np.clip(y_true * 0.6 + np.random.default_rng(1).random(len(y_true)) * 0.4, 0, 1)
    table = sf.calibration_by_group(y_true, scores, sensitive_features=groups, bins=4)
    assert list(table.columns[:3]) == ["base_rate", "balance_positive", "balance_negative"]
    assert (table["balance_positive"] > table["balance_negative"]).all()
    assert [c for c in table.columns if c.startswith("bin")] == ["bin 1", "bin 2", "bin 3", "bin 4"]


def test_proxy_strength_ranks_a_copy_of_the_group_first():
    rng = np.random.default_rng(0)
    group = np.where(rng.random(500) < 0.3, "x", "y")
    features = pd.DataFrame({"noise": rng.normal(size=500), "copy": (group == "x").astype(float),
                             "category": np.where(group == "x", "p", "q")})
    strength = sf.proxy_strength(features, group, positive="x")
    assert strength["copy"] == strength["category"] == 1.0
    assert strength.index[-1] == "noise" and strength["noise"] < 0.6
    with pytest.raises(ValueError, match="positive="):
        sf.proxy_strength(features, group, positive="z")


# --------------------------------------------------------------------------------------------------------- chapter checks


# The delegating answer of every fair-* exercise: tests/test_checks.py::test_an_answer_delegating_to_the_package_fails


@pytest.mark.parametrize("wrong, words", [(0, "integers"), (1, "single member"), (2, "nobody got")])
def test_fair1_hidden_hint_says_what_it_caught(wrong, words):
    from sustainlab.checks import get_exercise
    from sustainlab.checks._core import run_check

    exercise = get_exercise("fair-1-hidden")
    passed, hint = run_check(exercise, exercise.wrong[wrong]())
    assert not passed and words in hint


def test_fair4_interval_is_checked_against_another_resampling_scheme():
    """A correct bootstrap drawn differently from the reference (a loop, not one matrix) passes fair-4."""
    from sustainlab.checks import get_exercise
    from sustainlab.checks._core import run_check

    def gap_interval(y_pred, groups, n_boot, seed):
        rng = np.random.default_rng(seed)
        gaps = []
        for _ in range(n_boot):
            rows = rng.choice(len(y_pred), len(y_pred))
            pred, grp = np.asarray(y_pred)[rows], np.asarray(groups)[rows]
            rates = [pred[grp == g].mean() for g in np.unique(grp)]
            gaps.append(max(rates) - min(rates))
        return tuple(float(v) for v in np.percentile(gaps, [2.5, 97.5]))

    passed, hint = run_check(get_exercise("fair-4"), gap_interval)
    assert passed, hint
