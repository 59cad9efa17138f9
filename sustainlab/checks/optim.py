"""Exercise checks for ``notebooks/01_gradient_descent.ipynb`` (module :mod:`sustainlab.optim`).

- ``gd-1``: one gradient-descent step ``gd_step(theta, grad, lr)``;
- ``gd-2``: the logistic-regression gradient ``logistic_gradient(theta, X, y)``;
- ``gd-3``: one heavy-ball momentum step ``momentum_step(theta, velocity, grad, lr, beta)``.

Each checker compares the learner's function with :mod:`sustainlab.optim` (itself tested against torch) on inputs
fixed here, so a check never depends on another exercise's answer.
"""

from __future__ import annotations

import numpy as np

from ._core import CheckFailed, Exercise, Raised, compare_close, expect, expect_close

__all__ = ["EXERCISES"]


def _expect_function(answer, exercise_id: str, name: str) -> None:
    expect(callable(answer), f'pass your function itself, e.g. check("{exercise_id}", {name}), not its result.')


# ---------------------------------------------------------------------------------------------------------- gd-1


def _check_gd_step(gd_step) -> None:
    _expect_function(gd_step, "gd-1", "gd_step")
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
    from ..optim import check_gradient, logistic_grad, logistic_loss

    _expect_function(logistic_gradient, "gd-2", "logistic_gradient")
    theta, X, y = _logistic_problem()
    got = logistic_gradient(theta, X, y)
    expect(got is not None, "your function returns None: return the gradient.")
    expected = logistic_grad(theta, X, y)
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
    expect_close(logistic_gradient(np.zeros(3), X, y), logistic_grad(np.zeros(3), X, y),
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
    import torch

    from ..optim import SGD

    _expect_function(momentum_step, "gd-3", "momentum_step")
    result = momentum_step(np.array([1.0]), np.array([0.0]), np.array([2.0]), 0.1, 0.9)
    expect(isinstance(result, tuple) and len(result) == 2, "return a pair: (new theta, new velocity).")
    theta_1, velocity_1 = (np.asarray(r, dtype=float) for r in result)
    expect_close(velocity_1, [2.0], "starting from zero velocity, the first velocity is the gradient itself "
                                    "(the convention of torch.optim.SGD, without a (1 − β) factor).")
    expect_close(theta_1, [0.8], "the parameter moves by lr times the *new* velocity.")

    # 40 steps on a quadratic must follow torch.optim-compatible SGD with momentum.
    A = np.array([[3.0, 0.5], [0.5, 1.0]])
    theta, velocity = np.array([1.0, -1.0]), np.zeros(2)
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    reference = SGD([w], lr=0.05, momentum=0.8)
    for step in range(40):
        theta, velocity = momentum_step(theta, velocity, A @ theta, 0.05, 0.8)
        reference.zero_grad()
        w.grad = torch.from_numpy(A) @ w.detach()
        reference.step()
        if not np.allclose(np.asarray(theta, dtype=float), w.detach().numpy(), rtol=1e-9, atol=1e-12):
            raise CheckFailed(f"your steps drift away from SGD with momentum after {step + 1} steps: the old "
                              f"velocity should be scaled by beta before adding the gradient.")


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
               lambda: (lambda theta, velocity, grad, lr, beta: theta - lr * grad)),  # not a pair
    ),
)
