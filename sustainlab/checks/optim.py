"""Exercise checks for ``notebooks/01_gradient_descent.ipynb`` (module :mod:`sustainlab.optim`).

- ``gd-1``: one gradient-descent step ``gd_step(theta, grad, lr)``;
- ``gd-2``: the logistic-regression gradient ``logistic_gradient(theta, X, y)``;
- ``gd-3``: one heavy-ball momentum step ``momentum_step(theta, velocity, grad, lr, beta)``;
- ``gd-4`` (measure): ``measure_pair(configs, repeats)``, paired per-round time ratios from interleaved rounds;
- ``gd-5`` (interpret): ``cheapest_run(table, target)``, the run that reached a target loss for the least cost.

Each checker compares the learner's function with :mod:`sustainlab.optim` (itself tested against torch) on inputs
fixed here, so a check never depends on another exercise's answer.

**No delegation.** While the checkers of gd-1 to gd-3 call the learner's function, the package functions that
would solve them (``optim.gradient_descent``, ``optim.logistic_grad``, ``optim.SGD``'s update) are made
unavailable (:func:`._core.unavailable`: their code is swapped for one that raises, so a name bound by
``from sustainlab.optim import ...`` is caught too); gd-1's check also uses a learning rate of 0, which ``gradient_descent`` refuses. Each
exercise's ``wrong`` tuple holds such a delegating answer: ``tests/test_checks.py`` asserts that it fails and
``tests/test_optim.py`` that it would pass but for the block.
"""

from __future__ import annotations

import numpy as np

from ._core import CheckFailed, Exercise, Raised, compare_close, expect, expect_close
from ._core import expect_function, expect_paired_verdict, interleaved_times
from ._core import unavailable as _unavailable

__all__ = ["EXERCISES"]


# ---------------------------------------------------------------------------------------------------------- gd-1


def _check_gd_step(gd_step) -> None:
    from .. import optim

    expect_function(gd_step, "gd-1", "gd_step")
    with _unavailable(optim.gradient_descent):
        _check_gd_step_values(gd_step)


def _check_gd_step_values(gd_step) -> None:
    theta, grad = np.array([1.0, -2.0]), np.array([0.5, 4.0])
    theta_before = theta.copy()
    new = gd_step(theta, grad, 0.1)
    expect(new is not None, "your function returns None: return the new parameters.")
    expect_close(new, [0.95, -2.4], "move *against* the gradient, by a step proportional to the learning rate.")
    expect(np.array_equal(theta, theta_before), "do not modify theta in place; return a new array instead.")
    expect_close(gd_step(np.array([3.0]), np.array([-1.0]), 0.5), [3.5],
                 "with a negative gradient the parameter should increase.")
    expect_close(gd_step(np.zeros(3), np.ones(3), 0.0), np.zeros(3), "with lr = 0 nothing should change.")


def _reference_gd_step():
    return lambda theta, grad, lr: theta - lr * grad


def _probes_gd_step(rng):
    probes = []
    for _ in range(3):
        n = int(rng.integers(2, 7))
        probes.append((rng.normal(size=n), rng.normal(size=n), float(rng.uniform(0.01, 1.0))))
    return probes


# ---------------------------------------------------------------------------------------------- gd-1-hidden


def _probes_gd_step_shapes(rng):
    """Parameters of other shapes than the visible check's vectors: a matrix, a 3-D array, a single number."""
    return [(rng.normal(size=shape), rng.normal(size=shape), float(rng.uniform(0.05, 0.9)))
            for shape in ((3, 4), (2, 2, 3), (1,), (int(rng.integers(5, 9)),))]


def _compare_gd_step_shapes(student, reference, probes) -> str | None:
    """Say what went wrong on the first probe that fails: not started, a crash, a shape, a sign, the step size."""
    for got, want, (theta, grad, lr) in zip(student, reference, probes):
        shape = theta.shape
        if isinstance(got, Raised):
            if got.kind == "NotImplementedError":
                return "gd_step is not implemented yet."
            return f"gd_step raised {got.kind} for parameters of shape {shape}: it must work for any shape."
        if got is None:
            return "gd_step returns None: return the new parameters."
        try:
            got = np.asarray(got, dtype=float)
        except (TypeError, ValueError):
            return f"gd_step returned {type(got).__name__}, not an array of new parameters."
        if got.shape != shape:
            return (f"for parameters of shape {shape} gd_step returned shape {got.shape}: keep the parameters' "
                    f"shape (no hard-coded sizes).")
        if np.allclose(got, theta + lr * grad):
            return "on new inputs gd_step moves uphill: a descent step goes against the gradient."
        if np.allclose(got, theta - grad):
            return "on new inputs gd_step ignores the learning rate."
        if not np.allclose(got, want):
            return (f"gd_step gives wrong values for parameters of shape {shape} and lr = {lr:.3g}: an answer "
                    f"tailored to the visible check's numbers?")
    return None


# ---------------------------------------------------------------------------------------------------------- gd-2


def _logistic_problem():
    rng = np.random.default_rng(12)
    X = rng.normal(size=(20, 3))
    y = (X[:, 0] - X[:, 1] + 0.5 * rng.normal(size=20) > 0).astype(float)
    theta = np.array([0.4, -0.7, 0.2])
    return theta, X, y


def _check_logistic_gradient(logistic_gradient) -> None:
    from ..optim import logistic_grad

    expect_function(logistic_gradient, "gd-2", "logistic_gradient")
    theta, X, y = _logistic_problem()
    expected, expected_at_zero = logistic_grad(theta, X, y), logistic_grad(np.zeros(3), X, y)
    with _unavailable(logistic_grad):
        _check_logistic_values(logistic_gradient, theta, X, y, expected, expected_at_zero)


def _check_logistic_values(logistic_gradient, theta, X, y, expected, expected_at_zero) -> None:
    from ..optim import check_gradient, logistic_loss

    got = logistic_gradient(theta, X, y)
    expect(got is not None, "your function returns None: return the gradient.")
    got = np.asarray(got, dtype=float)
    if got.shape != expected.shape:
        raise CheckFailed(f"the gradient needs one entry per parameter: shape {expected.shape}, got {got.shape}.")
    if np.allclose(got, -expected):
        raise CheckFailed(
            "the sign is flipped: the gradient must point uphill, towards larger loss (descent subtracts it)."
        )
    if np.allclose(got, expected * X.shape[0]):
        raise CheckFailed("the loss is a mean over samples, so its gradient must be one too.")
    error = check_gradient(lambda t: logistic_loss(t, X, y), lambda t: logistic_gradient(t, X, y), theta)
    expect(error < 1e-5, f"finite differences disagree with your gradient (max relative error {error:.2g}); "
                         f"did you pass X @ theta through the sigmoid?")
    expect_close(logistic_gradient(np.zeros(3), X, y), expected_at_zero,
                 "at theta = 0 every predicted probability is 0.5: check that case by hand.")


def _reference_logistic_gradient():
    from ..optim import sigmoid

    return lambda theta, X, y: X.T @ (sigmoid(X @ theta) - y) / len(y)


def _probes_logistic(rng):
    probes = []
    for _ in range(2):
        m, d = int(rng.integers(10, 40)), int(rng.integers(2, 6))
        X = rng.normal(size=(m, d))
        probes.append((rng.normal(size=d), X, (rng.random(m) < 0.5).astype(float)))
    return probes


# ---------------------------------------------------------------------------------------------------------- gd-3


def _check_momentum_step(momentum_step) -> None:
    from ..optim import SGD

    expect_function(momentum_step, "gd-3", "momentum_step")
    with _unavailable(SGD._update):
        _check_momentum_values(momentum_step)


def _check_momentum_values(momentum_step) -> None:
    import torch

    result = momentum_step(np.array([1.0]), np.array([0.0]), np.array([2.0]), 0.1, 0.9)
    expect(isinstance(result, tuple) and len(result) == 2, "return a pair: (new theta, new velocity).")
    theta_1, velocity_1 = (np.asarray(r, dtype=float) for r in result)
    expect_close(velocity_1, [2.0], "starting from zero velocity, what should the first velocity be? Work out "
                                    "the update rule above by hand for v = 0.")
    expect_close(theta_1, [0.8], "the parameter moves by lr times the *new* velocity.")

    # 40 steps on a quadratic must follow torch.optim-compatible SGD with momentum.
    A = np.array([[3.0, 0.5], [0.5, 1.0]])
    theta, velocity = np.array([1.0, -1.0]), np.zeros(2)
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    reference = torch.optim.SGD([w], lr=0.05, momentum=0.8)
    for step in range(40):
        theta, velocity = momentum_step(theta, velocity, A @ theta, 0.05, 0.8)
        reference.zero_grad()
        w.grad = torch.from_numpy(A) @ w.detach()
        reference.step()
        if not np.allclose(np.asarray(theta, dtype=float), w.detach().numpy(), rtol=1e-9, atol=1e-12):
            raise CheckFailed(f"your steps drift away from SGD with momentum after {step + 1} steps: the old "
                              f"velocity decays by beta at every step before the new gradient joins it.")


def _reference_momentum_step():
    def momentum_step(theta, velocity, grad, lr, beta):
        velocity = beta * velocity + grad
        return theta - lr * velocity, velocity

    return momentum_step


def _probes_momentum(rng):
    probes = []
    for _ in range(3):
        n = int(rng.integers(2, 6))
        probes.append((rng.normal(size=n), rng.normal(size=n), rng.normal(size=n), float(rng.uniform(0.01, 0.5)),
                       float(rng.uniform(0.5, 0.99))))
    return probes


def _momentum_ema():
    def momentum_step(theta, velocity, grad, lr, beta):  # the (1 − β) "EMA" convention, not torch's
        velocity = beta * velocity + (1 - beta) * grad
        return theta - lr * velocity, velocity

    return momentum_step


def _momentum_old_velocity():
    def momentum_step(theta, velocity, grad, lr, beta):  # steps with the previous velocity
        return theta - lr * velocity, beta * velocity + grad

    return momentum_step


def _momentum_no_beta():
    def momentum_step(theta, velocity, grad, lr, beta):  # velocity never decays
        velocity = velocity + grad
        return theta - lr * velocity, velocity

    return momentum_step


def _wrong_delegating_gd_step():
    from .. import optim

    return lambda theta, grad, lr: optim.gradient_descent(lambda t: grad, theta, lr, 1)[-1]


def _wrong_delegating_logistic():
    from .. import optim

    return lambda theta, X, y: optim.logistic_grad(theta, X, y)


def _wrong_delegating_momentum():
    import torch

    from .. import optim

    def momentum_step(theta, velocity, grad, lr, beta):  # one step of the package's SGD, its buffer preset
        w = torch.nn.Parameter(torch.tensor(np.asarray(theta, dtype=float)))
        opt = optim.SGD([w], lr=lr, momentum=beta)
        w.grad = torch.tensor(np.asarray(grad, dtype=float))
        opt.state[w]["momentum_buffer"] = torch.tensor(np.asarray(velocity, dtype=float))
        opt.step()
        return w.detach().numpy().copy(), opt.state[w]["momentum_buffer"].numpy().copy()

    return momentum_step


# ---------------------------------------------------------------------------------------------------------- gd-4


def _sequence_workloads(names):
    """Workloads that return the order in which they were called: what the answer returns shows the interleaving."""
    counter = iter(range(1, 10**6))
    return {name: (lambda: next(counter)) for name in names}


def _check_measure_pair(measure_pair) -> None:
    expect_function(measure_pair, "gd-4", "measure_pair")
    for names, repeats in ((("GD", "momentum 0.9"), 5), (("slow", "fast"), 6)):
        got = measure_pair(_sequence_workloads(names), repeats)
        times = interleaved_times(got, names, repeats, ("ratios", "verdict"))
        expect_paired_verdict(got, times, repeats)


def _reference_measure_pair():
    from ..evidence import compare_interleaved

    def measure_pair(configs, repeats):
        names = list(configs)
        comparison = compare_interleaved(configs, repeats=repeats, reference=names[0], energy=False)
        return {"seconds": {n: comparison.values(n).tolist() for n in names},
                "results": {n: comparison.results(n) for n in names},
                "ratios": comparison.ratios(names[1]).tolist(),
                "verdict": comparison.verdict(names[1])}

    return measure_pair


def _wrong_measure_back_to_back():
    import time

    from ..evidence import verdict_from_ratios

    def measure_pair(configs, repeats):  # all runs of one configuration, then all of the other
        seconds, results = {}, {}
        for name, run in configs.items():
            seconds[name], results[name] = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                results[name].append(run())
                seconds[name].append(time.perf_counter() - start + 1e-9)
        a, b = list(configs)
        ratios = [y / x for x, y in zip(seconds[a], seconds[b])]
        return {"seconds": seconds, "results": results, "ratios": ratios, "verdict": verdict_from_ratios(ratios)}

    return measure_pair


def _wrong_measure_inverted():
    reference = _reference_measure_pair()

    def measure_pair(configs, repeats):
        got = reference(configs, repeats)
        got["ratios"] = [1 / r for r in got["ratios"]]
        return got

    return measure_pair


def _wrong_measure_one_verdict():
    reference = _reference_measure_pair()

    def measure_pair(configs, repeats):  # a verdict from the median alone
        got = reference(configs, repeats)
        got["verdict"] = "cheaper" if np.median(got["ratios"]) < 1 else "costs more"
        return got

    return measure_pair


def _wrong_delegating_measure():
    from ..evidence import compare_interleaved

    return lambda configs, repeats: compare_interleaved(configs, repeats=repeats, energy=False)


# ---------------------------------------------------------------------------------------------------------- gd-5


def _reference_cheapest_run():
    def cheapest_run(table, target):
        ok = table[np.isfinite(table["final_loss"]) & (table["final_loss"] <= target)]
        if ok.empty:
            return None
        cost = ok["steps"] * ok["joules_per_step"]
        return str(ok.loc[cost.idxmin(), "run"])

    return cheapest_run


def _probes_cheapest_run(rng):
    import pandas as pd

    probes = []
    for case in range(4):
        k = int(rng.integers(4, 8))
        steps = rng.integers(20, 2000, size=k)
        per_step = rng.uniform(0.5, 3.0, size=k)
        loss = rng.uniform(0.05, 0.3, size=k)
        target = float(rng.uniform(0.1, 0.2))
        fewest = int(np.argmin(steps))
        if case == 0:  # the run with the fewest steps costs most per step: fewest steps is not cheapest
            per_step[fewest] = 50.0
            loss[fewest] = target / 2
        if case == 1:  # the run with the fewest steps diverged
            loss[fewest] = np.nan
        if case == 3:  # no run reached the target
            loss = target + rng.uniform(0.01, 0.1, size=k)
        loss[int(rng.integers(k))] = target / 3 if case != 3 else loss[0]
        probes.append((pd.DataFrame({"run": [f"run {chr(65 + i)}" for i in range(k)], "lr": rng.uniform(0.01, 1, k),
                                     "steps": steps, "joules_per_step": per_step, "final_loss": loss}), target))
    return probes


def _compare_cheapest_run(student, reference, probes) -> str | None:
    for got, want, (table, target) in zip(student, reference, probes):
        if isinstance(got, Raised):
            return got.describe()
        if want is None:
            if got is not None:
                return "when no run reached the target loss, return None."
            continue
        if not isinstance(got, str):
            return f"return the run's name (a str from the 'run' column) or None, got {type(got).__name__}."
        if got != want:
            reached = table[table["final_loss"] <= target]
            if got in set(table["run"]) and got not in set(reached["run"]):
                return f"{got!r} never reached the target loss (or diverged): it cannot be the answer."
            return ("among the runs that reached the target, return the name (the 'run' column) of the one whose "
                    "whole run cost least: think about what a run costs in total, not per step.")
    return None


def _wrong_cheapest_fewest_steps():
    def cheapest_run(table, target):
        ok = table[table["final_loss"] <= target]
        return None if ok.empty else str(ok.loc[ok["steps"].idxmin(), "run"])

    return cheapest_run


def _wrong_cheapest_ignores_target():
    def cheapest_run(table, target):
        cost = table["steps"] * table["joules_per_step"]
        return str(table.loc[cost.idxmin(), "run"])

    return cheapest_run


def _wrong_delegating_cheapest():
    from .. import optim

    return lambda table, target: optim.steps_to_target(table["final_loss"].to_numpy(), target)


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        id="gd-1",
        checker=_check_gd_step,
        reference=_reference_gd_step,
        probes=_probes_gd_step,
        compare=compare_close("right on the check's examples but not on other parameters, gradients and learning "
                              "rates: use the arguments, not fixed numbers."),
        wrong=(
            lambda: (lambda theta, grad, lr: theta + lr * grad),  # uphill
            lambda: (lambda theta, grad, lr: theta - grad),  # ignores lr
            lambda: (lambda theta, grad, lr: theta.__isub__(lr * grad)),  # right numbers, but modifies theta
            lambda: (lambda theta, grad, lr: None),
            lambda: np.array([0.95, -2.4]),  # a result, not a function
            _wrong_delegating_gd_step,
        ),
    ),
    Exercise(
        id="gd-1-hidden",
        hidden=True,
        answer="gd_step",
        reference=_reference_gd_step,
        probes=_probes_gd_step_shapes,
        compare=_compare_gd_step_shapes,
        wrong=(
            lambda: (lambda theta, grad, lr: theta + lr * grad),  # uphill
            lambda: (lambda theta, grad, lr: np.array([0.95, -2.4])),  # hard-coded for the visible check
            lambda: (lambda theta, grad, lr: np.array([t - lr * g for t, g in zip(theta.tolist(), grad.tolist())])),
            lambda: (lambda theta, grad, lr: theta - grad),  # ignores lr
        ),
    ),
    Exercise(
        id="gd-2",
        checker=_check_logistic_gradient,
        reference=_reference_logistic_gradient,
        probes=_probes_logistic,
        compare=compare_close("right on the check's data but not on other data sets: use theta, X and y as given "
                              "(any number of samples and features)."),
        wrong=(
            lambda: (lambda theta, X, y: X.T @ (y - 1 / (1 + np.exp(-X @ theta))) / len(y)),  # sign flipped
            lambda: (lambda theta, X, y: X.T @ (1 / (1 + np.exp(-X @ theta)) - y)),  # sum, not mean
            lambda: (lambda theta, X, y: X.T @ (X @ theta - y) / len(y)),  # forgot the sigmoid
            lambda: (lambda theta, X, y: (1 / (1 + np.exp(-X @ theta)) - y).mean() * np.ones(3)),
            _wrong_delegating_logistic,
        ),
    ),
    Exercise(
        id="gd-3",
        checker=_check_momentum_step,
        reference=_reference_momentum_step,
        probes=_probes_momentum,
        compare=compare_close("right on the check's examples but not on other inputs: use every argument "
                              "(theta, velocity, grad, lr, beta) as given."),
        wrong=(_momentum_ema, _momentum_old_velocity, _momentum_no_beta,
               lambda: (lambda theta, velocity, grad, lr, beta: theta - lr * grad),  # not a pair
               _wrong_delegating_momentum),
    ),
    Exercise(
        id="gd-4",
        kind="measure",
        checker=_check_measure_pair,
        reference=_reference_measure_pair,
        wrong=(_wrong_measure_back_to_back, _wrong_measure_inverted, _wrong_measure_one_verdict,
               _wrong_delegating_measure),
    ),
    Exercise(
        id="gd-5",
        kind="interpret",
        reference=_reference_cheapest_run,
        probes=_probes_cheapest_run,
        compare=_compare_cheapest_run,
        wrong=(_wrong_cheapest_fewest_steps, _wrong_cheapest_ignores_target, _wrong_delegating_cheapest,
               lambda: (lambda table, target: "run A")),
    ),
)
