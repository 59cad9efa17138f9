"""Tests for sustainlab.privacy: DP-SGD against Opacus, FedAvg against plain SGD, k-anonymity against brute force,
the membership attack against pairwise counting, Fernet round trips, and the bad-input table."""

from __future__ import annotations

import copy
import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from sustainlab import privacy as sp
from sustainlab.optim import make_loader, make_mlp

warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")


def _toy(n=64, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long() * (classes > 2)
    return X, y


def _model(d=6, classes=3, seed=0):
    return make_mlp((16,), n_in=d, n_out=classes, random_state=seed)


def _opacus_per_sample(model, X, y):
    from opacus import GradSampleModule

    gsm = GradSampleModule(copy.deepcopy(model), loss_reduction="mean")
    torch.nn.functional.cross_entropy(gsm(X), y).backward()
    return {name: p.grad_sample for name, p in gsm._module.named_parameters()}


# --------------------------------------------------------------------------------------------------------------------
# DP-SGD vs Opacus
# --------------------------------------------------------------------------------------------------------------------


def test_per_sample_gradients_equal_opacus_hooks():
    """Do torch.func's vmap/grad per-sample gradients equal the ones Opacus computes with its hooks?"""
    X, y = _toy()
    model = _model()
    ours = sp.per_sample_gradients(model, X, y)
    theirs = _opacus_per_sample(model, X, y)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].shape == (len(X), *model.get_parameter(name).shape)
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6)


def test_every_clipped_per_sample_norm_is_at_most_c_and_small_ones_are_untouched():
    X, y = _toy()
    grads = sp.per_sample_gradients(_model(), X, y)
    norms_before = torch.stack([g.reshape(len(X), -1).norm(dim=1) for g in grads.values()], 1).norm(dim=1)
    C = float(norms_before.median())  # half the samples get clipped
    clipped, norms = sp.clip_per_sample(grads, C)
    torch.testing.assert_close(norms, norms_before)
    after = torch.stack([g.reshape(len(X), -1).norm(dim=1) for g in clipped.values()], 1).norm(dim=1)
    assert bool((after <= C * (1 + 1e-6)).all())
    inside = norms_before < C * 0.999
    assert inside.any() and (~inside).any()
    torch.testing.assert_close(after[inside], norms_before[inside], rtol=1e-5, atol=0)
    torch.testing.assert_close(after[~inside], torch.full_like(after[~inside], C), rtol=1e-5, atol=0)


def test_noise_free_update_equals_opacus():
    """With σ = 0, do three DPSGD steps move the weights exactly as Opacus's DPOptimizer does?"""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    X, y = _toy(n=48)
    ours_model, theirs_model = _model(), _model()
    C, lr, B = 0.3, 0.5, 16
    ours = sp.DPSGD(ours_model.parameters(), lr=lr, noise_multiplier=0.0, max_grad_norm=C, expected_batch_size=B)
    gsm = GradSampleModule(theirs_model, loss_reduction="mean")
    theirs = DPOptimizer(torch.optim.SGD(gsm.parameters(), lr=lr), noise_multiplier=0.0, max_grad_norm=C,
                         expected_batch_size=B, loss_reduction="mean")
    for start in range(0, 48, B):
        xb, yb = X[start:start + B], y[start:start + B]
        for name, g in sp.per_sample_gradients(ours_model, xb, yb).items():
            ours_model.get_parameter(name).grad_sample = g
        ours.step()
        ours.zero_grad()
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(gsm(xb), yb).backward()
        theirs.step()
    for (name, p), q in zip(ours_model.named_parameters(), theirs_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_noise_std_is_sigma_c_over_batch():
    """The noise on the averaged gradient: mean 0, standard deviation σ·C/B within sampling error."""
    model = make_mlp((64,), n_in=32, n_out=10, random_state=0)  # 2,762 parameters: 2,762 noise draws per step
    sigma, C, B = 1.3, 0.7, 25
    opt = sp.DPSGD(model.parameters(), lr=1.0, noise_multiplier=sigma, max_grad_norm=C, expected_batch_size=B,
                   generator=torch.Generator().manual_seed(0))
    draws = []
    for _ in range(5):
        for p in model.parameters():
            p.grad_sample = torch.zeros(B, *p.shape)  # zero gradients: what is left is the noise
        opt.privatise()
        draws.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        opt.zero_grad()
    noise = torch.cat(draws)
    n = noise.numel()
    expected = sigma * C / B
    # The sample std of n Gaussians has relative standard error ≈ 1/sqrt(2n); allow 4 of them.
    assert abs(float(noise.std()) / expected - 1) < 4 / math.sqrt(2 * n)
    assert abs(float(noise.mean())) < 4 * expected / math.sqrt(n)


def test_epsilon_equals_opacus_privacy_engine():
    """Is our ε for (σ, q, steps, δ) the ε that Opacus's PrivacyEngine reports after training that many steps?"""
    from opacus import PrivacyEngine

    X, y = _toy(n=200)
    model = _model()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=20)
    engine = PrivacyEngine(accountant="rdp")
    sigma, delta = 1.1, 1e-4
    model, optimizer, loader = engine.make_private(module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                                   data_loader=loader, noise_multiplier=sigma, max_grad_norm=1.0)
    steps = 0
    for _ in range(2):
        for xb, yb in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            steps += 1
    ours = sp.epsilon_spent(sigma, 1 / 10, steps, delta, n_samples=200)
    assert steps == 20
    assert ours == pytest.approx(engine.get_epsilon(delta), rel=1e-9)


def test_calibrated_noise_spends_the_target_epsilon():
    for target in (8.0, 3.0, 1.0):
        sigma = sp.calibrate_noise(target, 1e-5, 0.1, 100, n_samples=1000)
        spent = sp.epsilon_spent(sigma, 0.1, 100, 1e-5)
        assert target - 0.011 <= spent <= target
    assert sp.calibrate_noise(math.inf, 1e-5, 0.1, 100) == 0.0
    assert sp.epsilon_spent(0.0, 0.1, 100, 1e-5) == math.inf
    assert sp.epsilon_spent(1.0, 0.1, 0, 1e-5) == 0.0
    # more steps, a larger sampling rate or less noise spend more privacy
    assert sp.epsilon_spent(1.0, 0.1, 200, 1e-5) > sp.epsilon_spent(1.0, 0.1, 100, 1e-5)
    assert sp.epsilon_spent(1.0, 0.2, 100, 1e-5) > sp.epsilon_spent(1.0, 0.1, 100, 1e-5)
    assert sp.epsilon_spent(2.0, 0.1, 100, 1e-5) < sp.epsilon_spent(1.0, 0.1, 100, 1e-5)


def test_train_private_learns_and_is_reproducible():
    X, y = _toy(n=300)
    results = []
    for _ in range(2):
        model = _model()
        opt = sp.train_private(model, X, y, epochs=5, sample_rate=0.2, lr=0.5, noise_multiplier=0.5,
                               max_grad_norm=1.0, seed=3)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        assert opt.steps == 25
        assert sp.accuracy(model, X, y) > 0.6  # chance is below 0.5 here
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


def test_poisson_batches_have_the_expected_size():
    sizes = [len(b) for b in sp.poisson_batches(1000, 0.05, 200, generator=torch.Generator().manual_seed(0))]
    assert abs(np.mean(sizes) - 50) < 4 * math.sqrt(50 * 0.95 / 200)
    assert len(set(sizes)) > 1  # sizes vary, unlike a fixed-size loader


# --------------------------------------------------------------------------------------------------------------------
# Federated averaging
# --------------------------------------------------------------------------------------------------------------------


def test_one_client_one_local_step_is_plain_sgd():
    X, y = _toy(n=40)
    fed, plain = _model(), _model()
    sp.federated_averaging(fed, [(X, y)], rounds=1, local_epochs=1, lr=0.3, batch_size=len(X))
    opt = torch.optim.SGD(plain.parameters(), lr=0.3)
    torch.nn.functional.cross_entropy(plain(X), y).backward()
    opt.step()
    for p, q in zip(fed.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_average_states_weights_by_sample_count():
    a = {"w": torch.tensor([0.0, 4.0]), "b": torch.tensor([1.0])}
    b = {"w": torch.tensor([4.0, 0.0]), "b": torch.tensor([3.0])}
    avg = sp.average_states([a, b], [1, 3])
    torch.testing.assert_close(avg["w"], torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(avg["b"], torch.tensor([2.5]))
    # a client counted twice with n samples = one client with 2n samples
    twice = sp.average_states([a, a, b], [1, 1, 3])
    once = sp.average_states([a, b], [2, 3])
    for k in a:
        torch.testing.assert_close(twice[k], once[k])


def test_fedavg_round_is_the_sample_weighted_mean_of_the_local_models():
    X, y = _toy(n=90)
    clients = [(X[:10], y[:10]), (X[10:], y[10:])]
    model = _model()
    start = copy.deepcopy(model)
    sp.federated_averaging(model, clients, rounds=1, local_epochs=1, lr=0.2, batch_size=10, seed=5)
    locals_ = []
    for i, (Xc, yc) in enumerate(clients):
        local = copy.deepcopy(start)
        opt = torch.optim.SGD(local.parameters(), lr=0.2)
        for xb, yb in make_loader(Xc, yc, 10, random_state=5 + i):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(local(xb), yb).backward()
            opt.step()
        locals_.append(local.state_dict())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, (10 * locals_[0][k] + 80 * locals_[1][k]) / 90, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_iid_clients_reach_the_centralised_accuracy():
    """IID FedAvg (5 clients, 3 local epochs a round) ends within 0.03 of centralised training for as many epochs
    as rounds."""
    from sustainlab.datasets import load_digits_tensors
    from sustainlab.optim import train

    X, y, X_test, y_test = load_digits_tensors()
    central = make_mlp((32,), random_state=0)
    train(central, make_loader(X, y, 32, random_state=0), torch.optim.SGD(central.parameters(), lr=0.1), 8, device="cpu")
    fed = make_mlp((32,), random_state=0)
    clients = [(X[i], y[i]) for i in sp.split_clients(y, 5, iid=True, seed=0)]
    history = sp.federated_averaging(fed, clients, rounds=8, local_epochs=3, lr=0.1, batch_size=32,
                                     eval_data=(X_test, y_test))
    assert len(history.accuracy) == 8
    assert abs(history.accuracy[-1] - sp.accuracy(central, X_test, y_test)) <= 0.03
    assert history.bytes_per_round == 2 * 5 * sp.model_bytes(fed)
    assert history.total_bytes == 8 * history.bytes_per_round


def test_split_clients_partitions_and_skews_labels():
    y = np.repeat(np.arange(10), 30)
    for iid in (True, False):
        parts = sp.split_clients(y, 10, iid=iid, seed=1)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
    labels_iid = np.mean([len(np.unique(y[p])) for p in sp.split_clients(y, 10, iid=True, seed=1)])
    labels_skewed = [len(np.unique(y[p])) for p in sp.split_clients(y, 10, iid=False, seed=1)]
    assert max(labels_skewed) <= 4 and np.mean(labels_skewed) < labels_iid
    assert sp.split_clients(y, 10, iid=False, seed=1)[0].tolist() == sp.split_clients(y, 10, iid=False, seed=1)[0].tolist()


def test_model_bytes_counts_float32_parameters():
    model = torch.nn.Linear(3, 2)
    assert sp.model_bytes(model) == (3 * 2 + 2) * 4


# --------------------------------------------------------------------------------------------------------------------
# k-anonymity and linkage
# --------------------------------------------------------------------------------------------------------------------


def _random_people(seed, n=120):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.integers(18, 60, n), "sex": rng.choice(["F", "M"], n),
                         "zip": rng.choice(["A", "B", "C"], n, p=[0.7, 0.2, 0.1]), "outcome": rng.integers(0, 2, n)})


def _brute_force_sizes(df, qis):
    rows = df[qis].to_numpy(dtype=object)
    return np.array([sum(all(a == b for a, b in zip(r, s)) for s in rows) for r in rows])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("qis", [["sex"], ["age", "sex"], ["age", "sex", "zip"]])
def test_k_anonymity_equals_brute_force(seed, qis):
    df = _random_people(seed)
    sizes = _brute_force_sizes(df, qis)
    np.testing.assert_array_equal(sp.equivalence_class_sizes(df, qis).to_numpy(), sizes)
    assert sp.k_anonymity(df, qis) == sizes.min()


def test_generalise_then_suppress_reaches_k():
    df = _random_people(0, n=300)
    qis = ["age", "sex", "zip"]
    assert sp.k_anonymity(df, qis) < 5
    coarse = sp.generalise(df, bins={"age": 10})
    assert coarse["age"].str.fullmatch(r"\d+-\d+").all() and sp.k_anonymity(coarse, qis) >= sp.k_anonymity(df, qis)
    kept, n_suppressed = sp.suppress_rare(coarse, qis, 5)
    assert len(kept) + n_suppressed == len(df) and sp.k_anonymity(kept, qis) >= 5
    ladder = ({}, {"bins": {"age": 10}}, {"bins": {"age": 20}, "suppress": ("zip",)})
    release = sp.anonymise(df, qis, 5, ladder=ladder, max_suppression=0.05)
    assert sp.k_anonymity(release.frame, qis) >= 5 and release.n_suppressed <= 0.05 * len(df)
    assert release.apply(df).equals(sp.generalise(df, **ladder[release.level]))


def test_linkage_attack_matches_brute_force():
    df = _random_people(3, n=80)
    qis = ["age", "sex"]
    result = sp.linkage_attack(df, df, qis, sensitive="outcome")
    sizes = _brute_force_sizes(df, qis)
    assert result.reidentified == pytest.approx(np.mean(sizes == 1))
    assert result.mean_risk == pytest.approx(np.mean(1 / sizes))
    homogeneous = [df.loc[(df[qis] == df.loc[i, qis]).all(axis=1), "outcome"].nunique() == 1 for i in df.index]
    assert result.disclosed == pytest.approx(np.mean(homogeneous))
    # a person suppressed from the release matches nothing
    release, _ = sp.suppress_rare(df, qis, 2)
    assert sp.linkage_attack(release, df, qis).reidentified == 0.0


def test_arrests_release_utility_and_reidentification():
    from sustainlab.datasets import load_arrests

    arrests = load_arrests()
    qis = list(sp.ARRESTS_QUASI_IDENTIFIERS)
    before = sp.linkage_attack(arrests, arrests, qis)
    release = sp.anonymise(arrests, qis, 5)
    after = sp.linkage_attack(release.frame, release.apply(arrests), qis)
    assert before.reidentified > 0.05 and after.reidentified == 0.0
    train, test = arrests.iloc[:4000], arrests.iloc[4000:]
    utility = sp.release_utility(train, test, features=[*qis, "checks"], target="released")
    assert 0.5 < utility < 1.0


# --------------------------------------------------------------------------------------------------------------------
# Membership inference and encryption
# --------------------------------------------------------------------------------------------------------------------


def test_loss_threshold_attack_against_pairwise_counting():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.exponential(0.5, 50), np.round(rng.exponential(1.0, 70), 1)
    attack = sp.loss_threshold_attack(members, nonmembers)
    pairs = [(1.0 if m < n else 0.5 if m == n else 0.0) for m, n in itertools.product(members, nonmembers)]
    assert attack.auc == pytest.approx(np.mean(pairs))
    best = max(np.mean(members <= t) - np.mean(nonmembers <= t) for t in np.r_[members, nonmembers])
    assert attack.advantage == pytest.approx(max(best, 0.0))
    t = members.mean()
    assert attack.threshold_advantage == pytest.approx(np.mean(members <= t) - np.mean(nonmembers <= t))
    same = sp.loss_threshold_attack(members, members)
    assert same.auc == pytest.approx(0.5) and same.advantage == pytest.approx(0.0)


def test_fernet_round_trip_is_exact_and_ciphertext_is_fresh():
    from cryptography.fernet import Fernet, InvalidToken

    X = np.random.default_rng(0).normal(size=(5, 4))
    tokens, key = sp.fernet_encrypt_rows(X, at_time=0)
    np.testing.assert_array_equal(sp.fernet_decrypt_rows(tokens, key, n_features=4), X)
    again, _ = sp.fernet_encrypt_rows(X, key, at_time=0)
    assert all(a != b for a, b in zip(tokens, again))  # a fresh IV per message
    features = sp.ciphertext_features(tokens)
    assert features.shape == (5, len(tokens[0])) and features.max() < 128
    with pytest.raises(InvalidToken):
        sp.fernet_decrypt_rows(tokens, Fernet.generate_key(), n_features=4)


# --------------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------------

_G = {"w": torch.zeros(3, 2)}
_DF = pd.DataFrame({"age": [20, 30], "sex": ["F", "M"]})

BAD_INPUT = [
    ("clipping norm 0", lambda: sp.clip_per_sample(_G, 0.0), "max_norm must be > 0"),
    ("clipping norm < 0", lambda: sp.DPSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, noise_multiplier=1.0,
                                            max_grad_norm=-1.0, expected_batch_size=4), "max_grad_norm must be > 0"),
    ("noise < 0", lambda: sp.DPSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, noise_multiplier=-0.5,
                                   max_grad_norm=1.0, expected_batch_size=4), "noise_multiplier must be >= 0"),
    ("noise < 0 (epsilon)", lambda: sp.epsilon_spent(-1.0, 0.1, 10, 1e-5), "noise_multiplier must be >= 0"),
    ("delta >= 1/N", lambda: sp.epsilon_spent(1.0, 0.1, 10, 0.01, n_samples=100), r"delta must be < 1/N"),
    ("delta >= 1/N (calibrate)", lambda: sp.calibrate_noise(3.0, 1e-3, 0.1, 10, n_samples=5000), r"delta must be < 1/N"),
    ("delta 0", lambda: sp.epsilon_spent(1.0, 0.1, 10, 0.0), "delta must be > 0"),
    ("sampling rate 0", lambda: sp.epsilon_spent(1.0, 0.0, 10, 1e-5), "sample_rate must be > 0"),
    ("sampling rate > 1", lambda: list(sp.poisson_batches(10, 1.5, 1)), "sample_rate must be <= 1"),
    ("sampling rate > 1 (train)", lambda: sp.train_private(_model(), *_toy(), epochs=1, sample_rate=2.0, lr=0.1,
                                                           noise_multiplier=1.0, max_grad_norm=1.0),
     "sample_rate must be <= 1"),
    ("empty client", lambda: sp.federated_averaging(_model(), [_toy(), (torch.zeros(0, 6), torch.zeros(0).long())],
                                                    rounds=1), "client 1 is empty"),
    ("empty client (weights)", lambda: sp.average_states([_G, _G], [3, 0]), r"client\(s\) \[1\] have no samples"),
    ("no clients", lambda: sp.federated_averaging(_model(), [], rounds=1), "clients is empty"),
    ("quasi-identifier not in frame", lambda: sp.k_anonymity(_DF, ["age", "zip"]), r"\['zip'\] are not columns"),
    ("no quasi-identifiers", lambda: sp.k_anonymity(_DF, []), "quasi_identifiers is empty"),
    ("k < 1", lambda: sp.suppress_rare(_DF, ["age"], 0), "k must be >= 1"),
    ("k < 1 (anonymise)", lambda: sp.anonymise(_DF, ["age"], 0), "k must be >= 1"),
    ("bin a text column", lambda: sp.generalise(_DF, bins={"sex": 2}), "'sex' is not numeric"),
    ("empty losses", lambda: sp.loss_threshold_attack([], [1.0]), "member_losses must be a non-empty 1-D"),
    ("NaN losses", lambda: sp.loss_threshold_attack([1.0], [np.nan]), "nonmember_losses contains NaN"),
    ("table not 2-D", lambda: sp.fernet_encrypt_rows([1.0, 2.0]), "X must be 2-D"),
]


@pytest.mark.parametrize("call, message", [(c, m) for _, c, m in BAD_INPUT], ids=[name for name, _, _ in BAD_INPUT])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_step_without_per_sample_gradients_says_what_to_do():
    model = _model()
    opt = sp.DPSGD(model.parameters(), lr=0.1, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=4)
    with pytest.raises(RuntimeError, match="no grad_sample"):
        opt.step()
