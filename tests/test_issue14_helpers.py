"""Helpers the chapters 02–04 use to compute what their prose says: FLOP crossover, group-rate intervals, the
impossibility identity, proxies, the threshold lever, SMOTENC on one-hot columns, like-for-like leakage."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.tree import DecisionTreeClassifier

from sustainlab import attention as att
from sustainlab import fairness as sf
from sustainlab import imbalance as im
from sustainlab.datasets import make_imbalanced

# ----------------------------------------------------------------------------------------------------------------------
# attention: dense against attention-score FLOPs
# ----------------------------------------------------------------------------------------------------------------------


def test_dense_flops_count_the_weights_of_a_real_block():
    d_model, d_ff = 32, 96
    block = att.TransformerBlock(d_model, num_heads=4, d_ff=d_ff)
    weights = sum(m.weight.numel() for m in block.modules() if isinstance(m, torch.nn.Linear))
    assert att.block_flops_per_token(d_model, 10, d_ff=d_ff)["dense"] == 2 * weights


def test_attention_flops_per_token_match_attention_flops():
    d_model, heads, n = 64, 8, 100
    per_call = att.attention_flops(1, heads, n, n, d_model // heads)
    assert att.block_flops_per_token(d_model, n)["attention"] * n == per_call


@pytest.mark.parametrize("d_model", [64, 768, 12288])
def test_crossover_is_where_the_two_terms_meet(d_model):
    n = att.attention_crossover_length(d_model)
    assert n == 6 * d_model and att.attention_crossover_length(d_model, causal=True) == 12 * d_model
    flops = att.block_flops_per_token(d_model, int(n))
    assert flops["dense"] == flops["attention"]


def test_gpt3_attention_share_is_the_published_order():
    """Kaplan et al. (2020): 2·n_layer·n_ctx·d against 2N; for GPT-3 (d 12288, context 2048) about 1.4 %."""
    flops = att.block_flops_per_token(12288, 2048, causal=True)
    assert flops["attention"] / flops["dense"] == pytest.approx(2048 / (12 * 12288))
    assert 0.013 < flops["attention"] / sum(flops.values()) < 0.015


def test_block_flops_validate_their_arguments():
    with pytest.raises(ValueError, match="d_model"):
        att.block_flops_per_token(0, 10)
    with pytest.raises(TypeError, match="n_ctx"):
        att.block_flops_per_token(8, 2.5)


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
