"""Exercise checks for ``notebooks/06_privacy.ipynb`` (ids ``priv-*``, chapter module :mod:`sustainlab.privacy`).

Every checker calls the learner's answer only on probe inputs drawn from a seeded generator and compares what it
returns with this file's reference implementation on the same inputs (probe/compare pairs). The probes are chosen
where the package's own functions do *not* give the asked-for answer (the textbook clipping factor without Opacus's
stabiliser, a synthetic privacy curve, "higher score = member", a client with no samples), so an answer that just
delegates to :mod:`sustainlab.privacy` fails.
"""

from __future__ import annotations

import math

import numpy as np

from ._core import CheckFailed, Exercise, Raised, expect, expect_close

__all__ = ["EXERCISES"]

# --- priv-1 (build): clip a batch of per-sample gradients ------------------------------------------------------------


def _reference_clip():
    import torch

    def clip_gradients(per_sample, max_norm):
        norms = per_sample.norm(dim=1, keepdim=True)
        factor = torch.where(norms > max_norm, max_norm / torch.where(norms > 0, norms, 1.0), 1.0)
        return per_sample * factor

    return clip_gradients


def _clip_probes():
    import torch

    rng = np.random.default_rng(606)
    probes = []
    for batch, dim, max_norm in ((8, 5, 1.0), (16, 30, 0.5), (6, 4, 1e-6)):
        g = rng.normal(size=(batch, dim))
        # Row norms between a tenth of C and three times C: some rows inside the ball, some outside.
        g *= max_norm * rng.uniform(0.1, 3.0, size=(batch, 1)) / np.linalg.norm(g, axis=1, keepdims=True)
        g[1] = g[1] * 0.5 * max_norm / np.linalg.norm(g[1])  # certainly inside
        g[0] = 0.0  # a sample whose gradient is exactly zero
        probes.append((torch.tensor(g, dtype=torch.float64), max_norm))
    return probes


def _check_clip(func) -> None:
    import torch

    expect(callable(func), 'pass your function itself, e.g. check("priv-1", clip_gradients), not its result.')
    reference = _reference_clip()
    for g, max_norm in _clip_probes():
        original = g.clone()
        got = func(g, max_norm)
        expect(isinstance(got, torch.Tensor), f"return a torch tensor, got {type(got).__name__}.")
        expect(torch.equal(g, original), "do not modify the input in place: return a new tensor.")
        expect(tuple(got.shape) == tuple(g.shape), f"return one clipped row per sample: shape {tuple(g.shape)}, "
                                                  f"got {tuple(got.shape)}.")
        norms = got.double().norm(dim=1)
        expect(bool((norms <= max_norm * (1 + 1e-9)).all()),
               "some clipped row still has a norm above max_norm: each row's norm must end at most C.")
        expect_close(got, reference(g, max_norm),
                     "rows already inside the ball must be unchanged and the others scaled by exactly C / ‖g‖ (a "
                     "row's own L2 norm, no stabilising constant); a zero row stays zero.", rtol=1e-9, atol=1e-15)


# --- priv-2 (build): calibrate the noise for a target epsilon --------------------------------------------------------


def _reference_calibrate():
    def calibrate_sigma(epsilon_fn, target_epsilon, lo=0.01, hi=100.0, tol=1e-6):
        if epsilon_fn(hi) > target_epsilon:
            raise ValueError("even the largest noise spends more than the target")
        if epsilon_fn(lo) <= target_epsilon:
            return lo
        while hi - lo > tol:
            mid = (lo + hi) / 2
            if epsilon_fn(mid) <= target_epsilon:
                hi = mid
            else:
                lo = mid
        return hi

    return calibrate_sigma


def _calibrate_probes():
    rng = np.random.default_rng(2016)
    probes = []
    for _ in range(4):
        a, b = rng.uniform(0.5, 5.0), rng.uniform(0.0, 2.0)
        target = rng.uniform(0.5, 8.0)
        # A made-up privacy curve, decreasing in sigma like the real one; its exact root is known.
        probes.append((lambda s, a=a, b=b: a / s + b / s**2, target,
                       (a + math.sqrt(a * a + 4 * b * target)) / (2 * target)))
    return probes


def _check_calibrate(func) -> None:
    expect(callable(func), 'pass your function itself, e.g. check("priv-2", calibrate_sigma).')
    for epsilon_fn, target, exact in _calibrate_probes():
        got = func(epsilon_fn, target)
        try:
            sigma = float(got)
        except (TypeError, ValueError):
            raise CheckFailed(f"return one number (the noise multiplier), got {type(got).__name__}.") from None
        expect(math.isfinite(sigma) and sigma > 0, "the noise multiplier must be a positive finite number.")
        expect(epsilon_fn(sigma) <= target * (1 + 1e-9),
               "with your sigma the privacy curve you were given spends more than the target epsilon: return a "
               "sigma on the safe side (epsilon_fn(sigma) <= target).")
        expect_close(sigma, exact,
                     "your sigma is safe but larger than needed: find the *smallest* sigma whose epsilon meets the "
                     "target (bisect on epsilon_fn, which decreases as sigma grows), to within 1e-4.",
                     rtol=1e-4, atol=0)


# --- priv-3 (measure): the membership advantage of a score --------------------------------------------------------


def _reference_advantage():
    def membership_advantage(member_scores, nonmember_scores):
        members, nonmembers = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
        best = 0.0
        for t in np.unique(np.r_[members, nonmembers]):
            best = max(best, np.mean(members >= t) - np.mean(nonmembers >= t))
        return float(best)

    return membership_advantage


def _advantage_probes():
    rng = np.random.default_rng(2018)
    probes = []
    for n_m, n_n, shift, integer in ((40, 60, 1.0, False), (25, 25, 0.3, True), (80, 30, 2.0, False)):
        members = rng.normal(shift, 1.0, n_m)
        nonmembers = rng.normal(0.0, 1.0, n_n)
        if integer:  # ties between members and non-members
            members, nonmembers = np.round(members * 2), np.round(nonmembers * 2)
        probes.append((members, nonmembers))
    return probes


def _check_advantage(func) -> None:
    expect(callable(func), 'pass your function itself, e.g. check("priv-3", membership_advantage).')
    reference = _reference_advantage()
    for members, nonmembers in _advantage_probes():
        got = func(members.copy(), nonmembers.copy())
        try:
            value = float(got)
        except (TypeError, ValueError):
            raise CheckFailed(f"return one number, got {type(got).__name__}.") from None
        expect(0 <= value <= 1, "an advantage max(TPR − FPR) lies between 0 and 1 (predicting no one gives 0).")
        expect_close(value, reference(members, nonmembers),
                     "predict 'member' when score >= t (a higher score means more likely a member); for every "
                     "candidate t (each observed score) take TPR − FPR, and return the largest.", rtol=1e-9)


# --- priv-4 (build): one FedAvg aggregation with unequal clients ----------------------------------------------------


def _reference_fedavg():
    def fedavg_aggregate(client_weights, n_samples):
        total = sum(n for n in n_samples if n > 0)
        keys = client_weights[0].keys()
        return {k: sum(n * np.asarray(w[k], float) for w, n in zip(client_weights, n_samples) if n > 0) / total
                for k in keys}

    return fedavg_aggregate


def _fedavg_probes(seed: int = 2017):
    rng = np.random.default_rng(seed)
    probes = []
    for counts in ((5, 50, 0, 500), (1, 2, 3), (7, 0, 70)):
        clients = [{"layer.weight": rng.normal(size=(3, 2)), "layer.bias": rng.normal(size=3)} for _ in counts]
        for c, n in zip(clients, counts):
            if n == 0:  # a client that has no data reports garbage: it must not count
                c["layer.weight"] = c["layer.weight"] * 1e6
        probes.append((clients, list(counts)))
    return probes


def _compare_fedavg(func, probes) -> None:
    expect(callable(func), 'pass your function itself, e.g. check("priv-4", fedavg_aggregate).')
    reference = _reference_fedavg()
    for clients, counts in probes:
        copies = [{k: v.copy() for k, v in c.items()} for c in clients]
        got = func(copies, list(counts))
        expect(isinstance(got, dict), f"return a dict {{parameter name: averaged array}}, got {type(got).__name__}.")
        expected = reference(clients, counts)
        expect(set(got) == set(expected), f"return one entry per parameter name {sorted(expected)}.")
        for k in expected:
            expect_close(np.asarray(got[k], dtype=float), expected[k],
                         "weight each client's parameters by its number of samples and divide by the total number "
                         "of samples; a client with 0 samples contributes nothing.", rtol=1e-9)
        for c, original in zip(copies, clients):
            expect(all(np.array_equal(c[k], original[k]) for k in original),
                   "do not modify the clients' arrays in place.")


def _check_fedavg(func) -> None:
    _compare_fedavg(func, _fedavg_probes())


def _hidden_fedavg_probes(rng):
    """Clients the visible check never shows: other sizes and counts, integer weights, a client alone."""
    probes = []
    for _ in range(3):
        counts = [int(n) for n in rng.integers(0, 300, size=int(rng.integers(2, 6)))]
        counts[int(rng.integers(len(counts)))] = int(rng.integers(1, 50))  # at least one client with data
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 4)))
        probes.append(([{"w": rng.normal(size=shape), "b": rng.normal(size=shape[0])} for _ in counts], counts))
    probes.append(([{"w": rng.integers(-5, 5, size=4)}, {"w": rng.integers(-5, 5, size=4)}],
                   [int(rng.integers(1, 9)), int(rng.integers(1, 9))]))
    probes.append(([{"w": rng.normal(size=(2, 2))}], [int(rng.integers(1, 20))]))
    return probes


def _compare_hidden_fedavg(student, reference, probes) -> str | None:
    """Say what the unseen clients revealed: not started, a crash, the output's form, integer weights, one client."""
    for got, want, (clients, counts) in zip(student, reference, probes):
        if isinstance(got, Raised):
            if got.kind == "NotImplementedError":
                return "fedavg_aggregate is not implemented yet."
            return f"fedavg_aggregate raised {got.kind} on {len(clients)} client(s) it had not seen before."
        if not isinstance(got, dict) or set(got) != set(want):
            return (f"on clients with parameters {sorted(want)} fedavg_aggregate returned "
                    f"{type(got).__name__} {sorted(got) if isinstance(got, dict) else ''}: use the clients' own names.")
        for name in want:
            try:
                close = np.allclose(np.asarray(got[name], dtype=float), want[name], rtol=1e-9, atol=1e-12)
            except (TypeError, ValueError):
                close = False
            if not close:
                if len(clients) == 1:
                    return "with a single client the average must be that client's parameters."
                if all(np.issubdtype(np.asarray(c[name]).dtype, np.integer) for c in clients):
                    return "with integer-valued parameters the average went wrong: compute it in floating point."
                return (f"wrong average for {len(clients)} clients with sample counts {counts}: the weights must "
                        f"come from the counts passed in (nothing fixed to the visible check's clients).")
    return None


# --- priv-5 (interpret): read the trade-off table --------------------------------------------------------------------


def _private_settings_within(table, max_drop):
    """The rows of private settings whose accuracy is at most ``max_drop`` below the non-private baseline's."""
    baseline = float(table.loc[table["epsilon"] == math.inf, "accuracy"].iloc[0])
    return table[(table["epsilon"] < math.inf) & (table["accuracy"] >= baseline - max_drop)]


def _reference_choice():
    def strongest_privacy_within(table, max_drop):
        ok = _private_settings_within(table, max_drop)
        return None if ok.empty else float(ok["epsilon"].min())

    return strongest_privacy_within


def _choice_probes():
    import pandas as pd

    rng = np.random.default_rng(314)
    probes = []
    for eps, drop in (((math.inf, 8.0, 3.0, 1.0), 0.05), ((1.0, math.inf, 0.5, 4.0, 2.0), 0.1),
                      ((math.inf, 2.0, 10.0), 0.001)):
        base = rng.uniform(0.8, 0.95)
        # Accuracy falls as epsilon shrinks, by up to about 0.12 at epsilon = 1.
        acc = [base if e == math.inf else base - rng.uniform(0.02, 0.12) / e ** 0.5 for e in eps]
        probes.append((pd.DataFrame({"epsilon": eps, "accuracy": acc, "auc": rng.uniform(0.5, 0.6, len(eps))}),
                       drop))
    return probes


def _check_choice(func) -> None:
    expect(callable(func), 'pass your function itself, e.g. check("priv-5", strongest_privacy_within).')
    reference = _reference_choice()
    for table, drop in _choice_probes():
        got = func(table.copy(), drop)
        expected = reference(table, drop)
        if expected is None:
            expect(got is None, "when no private setting stays within max_drop of the non-private accuracy, return "
                                "None.")
            continue
        expect(got is not None, "some private setting is within max_drop here: return its epsilon.")
        expect_close(float(got), expected,
                     "among the private rows (epsilon < inf) whose accuracy is at least the non-private accuracy "
                     "minus max_drop, return the smallest epsilon (smaller epsilon = stronger privacy).")


def _wrong_choice_largest():
    def choice(table, max_drop):  # the weakest privacy that qualifies
        ok = _private_settings_within(table, max_drop)
        return None if ok.empty else float(ok["epsilon"].max())

    return choice


def _wrong_delegating_clip():
    from sustainlab.privacy import clip_per_sample

    return lambda per_sample, max_norm: clip_per_sample([per_sample], max_norm)[0][0]


def _wrong_delegating_calibrate():
    from sustainlab.privacy import calibrate_noise

    return lambda epsilon_fn, target: calibrate_noise(target, 1e-5, 0.1, 100)


def _wrong_delegating_advantage():
    from sustainlab.privacy import loss_threshold_attack

    return lambda m, n: loss_threshold_attack(m, n).advantage


def _wrong_delegating_fedavg():
    from sustainlab.privacy import average_states

    return lambda clients, n: average_states(clients, n)


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        id="priv-1",
        checker=_check_clip,
        reference=_reference_clip,
        wrong=(
            _wrong_delegating_clip,
            lambda: (lambda g, c: g * c / g.norm(dim=1, keepdim=True).clamp_min(1e-12)),  # scales every row to C
            lambda: (lambda g, c: g.clamp(-c, c)),  # clips each coordinate
            lambda: (lambda g, c: g * min(1.0, c / float(g.norm()))),  # one factor for the whole batch
            lambda: (lambda g, c: g),
        ),
    ),
    Exercise(
        id="priv-2",
        checker=_check_calibrate,
        reference=_reference_calibrate,
        wrong=(
            _wrong_delegating_calibrate,
            lambda: (lambda f, t: 100.0),  # safe but far too noisy
            lambda: (lambda f, t: min((s / 100 for s in range(1, 10001)), key=lambda s: abs(f(s) - t))),  # may be unsafe
            lambda: 1.0,
        ),
    ),
    Exercise(
        id="priv-3",
        kind="measure",
        checker=_check_advantage,
        reference=_reference_advantage,
        wrong=(
            _wrong_delegating_advantage,
            lambda: (lambda m, n: float(np.mean(m >= np.median(np.r_[m, n])) - np.mean(n >= np.median(np.r_[m, n])))),
            lambda: (lambda m, n: float(np.mean(m) - np.mean(n))),
        ),
    ),
    Exercise(
        id="priv-4",
        checker=_check_fedavg,
        reference=_reference_fedavg,
        wrong=(
            _wrong_delegating_fedavg,
            lambda: (lambda cs, n: {k: np.mean([c[k] for c in cs], axis=0) for k in cs[0]}),  # unweighted
            lambda: (lambda cs, n: {k: np.mean([c[k] for c, m in zip(cs, n) if m > 0], axis=0) for k in cs[0]}),
            lambda: (lambda cs, n: {k: sum(m * c[k] for c, m in zip(cs, n)) / len(cs) for k in cs[0]}),
        ),
    ),
    Exercise(
        id="priv-4-hidden",
        hidden=True,
        answer="fedavg_aggregate",
        reference=_reference_fedavg,
        probes=_hidden_fedavg_probes,
        compare=_compare_hidden_fedavg,
        wrong=(
            lambda: (lambda cs, n: {k: np.mean([c[k] for c in cs], axis=0) for k in cs[0]}),  # unweighted
            lambda: (lambda cs, n: {k: sum(m * c[k] for c, m in zip(cs, n)) // sum(n) for k in cs[0]}),  # floor
            lambda: (lambda cs, n: {"layer.weight": np.zeros((3, 2)), "layer.bias": np.zeros(3)}),  # visible names
        ),
    ),
    Exercise(
        id="priv-5",
        kind="interpret",
        checker=_check_choice,
        reference=_reference_choice,
        wrong=(
            _wrong_choice_largest,
            lambda: (lambda table, d: float(table["epsilon"].min())),  # ignores accuracy
            lambda: (lambda table, d: 8.0),
        ),
    ),
)
