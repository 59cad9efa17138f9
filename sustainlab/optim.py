"""Chapter 1: gradient descent, optimizers built from scratch, and a small reusable training loop.

Taught in ``notebooks/01_gradient_descent.ipynb``. Contents, grouped by role:

- hand-written gradients: :func:`least_squares_loss`, :func:`least_squares_grad`, :func:`logistic_loss`,
  :func:`logistic_grad` (NumPy arrays or torch tensors) and :func:`check_gradient` (finite differences);
- plain gradient descent on a parameter vector: :func:`gradient_descent`, :func:`quadratic_stability_limit`,
  :func:`plot_descent_paths`;
- comparing optimizers by the steps they need: :func:`minimize`, :func:`steps_to_target`;
- optimizers on torch parameters with the ``torch.optim`` API: :class:`SGD` (momentum, Nesterov, weight decay),
  :class:`Adam` (weight decay, optionally decoupled, AMSGrad) and :class:`AdamW`, all with ``maximize``;
- the training loop every later chapter reuses: :func:`train` returning a :class:`TrainingHistory`.

Non-finite values never pass silently: :class:`DivergenceError` is raised instead, carrying what was computed up to
that point so that a notebook can show *why* it diverged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from .utils import pick_device, progress
from .validation import check_option, check_scalar

__all__ = [
    "DivergenceError",
    # gradients
    "least_squares_loss",
    "least_squares_grad",
    "logistic_loss",
    "logistic_grad",
    "sigmoid",
    "check_gradient",
    # plain gradient descent
    "gradient_descent",
    "quadratic_stability_limit",
    "steps_to_target",
    "minimize",
    "plot_descent_paths",
    # torch optimizers
    "SGD",
    "Adam",
    "AdamW",
    # training loop
    "make_mlp",
    "make_loader",
    "TrainingHistory",
    "train",
    "PRECISIONS",
]

#: Precisions accepted by :func:`train`.
PRECISIONS = ("fp32", "bf16", "fp16")


class DivergenceError(RuntimeError):
    """Raised when a loss or a parameter becomes NaN or infinite.

    Attributes
    ----------
    step : int
        The step (or optimizer step) at which the non-finite value appeared.
    partial : object
        What had been computed before that step: the finite part of a trajectory (:func:`gradient_descent`) or the
        :class:`TrainingHistory` so far (:func:`train`). Plot it to see the blow-up.
    """

    def __init__(self, message: str, *, step: int, partial=None):
        super().__init__(message)
        self.step = step
        self.partial = partial


# ----------------------------------------------------------------------------------------------------------------------
# Gradients by hand
# ----------------------------------------------------------------------------------------------------------------------


def _is_torch(x) -> bool:
    return hasattr(x, "detach") and hasattr(x, "requires_grad")


def sigmoid(z):
    """The logistic function 1 / (1 + exp(-z)), without overflow warnings, for NumPy arrays or torch tensors."""
    if _is_torch(z):
        import torch

        return torch.sigmoid(z)
    from scipy.special import expit

    return expit(z)


def _split(theta, X, y, fit_intercept: bool):
    """Validate the (theta, X, y) triple of the loss functions and return (w, b)."""
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (n_samples, n_features), got shape {tuple(X.shape)}.")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {tuple(y.shape)}.")
    expected = X.shape[1] + int(fit_intercept)
    if theta.shape != (expected,):
        extra = " (the last entry is the intercept)" if fit_intercept else ""
        raise ValueError(f"theta must have shape ({expected},){extra} for X with {X.shape[1]} columns, got "
                         f"{tuple(theta.shape)}.")
    if fit_intercept:
        return theta[:-1], theta[-1]
    return theta, 0.0


def _join(grad_w, grad_b, fit_intercept: bool):
    if not fit_intercept:
        return grad_w
    if _is_torch(grad_w):
        import torch

        return torch.cat([grad_w, grad_b.reshape(1)])
    return np.append(grad_w, grad_b)


def least_squares_loss(theta, X, y, *, l2: float = 0.0, fit_intercept: bool = False):
    """Mean squared error with a factor ½: J(θ) = ‖Xw + b − y‖² / (2n) + (l2/2)‖w‖².

    Works on NumPy arrays and torch tensors alike (the result has the input's type). The least-squares counterpart of
    :func:`logistic_loss`, which ``notebooks/01_gradient_descent.ipynb`` trains with (*How do we know a gradient is
    right?*).

    Parameters
    ----------
    theta : array of shape (d,) or (d + 1,)
        Weights ``w``, followed by the intercept ``b`` when ``fit_intercept``.
    X : array of shape (n, d)
    y : array of shape (n,)
    l2 : float, default 0
        Ridge penalty on ``w`` (never on the intercept).
    fit_intercept : bool, default False

    Examples
    --------
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0]]); y = np.array([1.0, 2.0])
    >>> float(least_squares_loss(np.array([1.0, 1.0]), X, y))
    0.0
    """
    w, b = _split(theta, X, y, fit_intercept)
    residual = X @ w + b - y
    return (residual @ residual) / (2 * X.shape[0]) + 0.5 * l2 * (w @ w)


def least_squares_grad(theta, X, y, *, l2: float = 0.0, fit_intercept: bool = False):
    """Gradient of :func:`least_squares_loss`: ∇_w = Xᵀ(Xw + b − y)/n + l2·w, ∇_b = mean(Xw + b − y).

    Same parameters as :func:`least_squares_loss`; returns an array shaped like ``theta``.
    """
    w, b = _split(theta, X, y, fit_intercept)
    residual = X @ w + b - y
    return _join(X.T @ residual / X.shape[0] + l2 * w, residual.mean(), fit_intercept)


def logistic_loss(theta, X, y, *, l2: float = 0.0, fit_intercept: bool = False):
    """Mean binary cross-entropy of logistic regression, plus (l2/2)‖w‖².

    J(θ) = mean(log(1 + exp(z)) − y·z) with z = Xw + b and labels y ∈ {0, 1}; written in this form (with
    ``logaddexp``/``softplus``) it never takes the log of 0. With ``l2 = 1 / (C n)`` its minimiser is that of
    ``sklearn.linear_model.LogisticRegression(C=C)``. Taught in ``notebooks/01_gradient_descent.ipynb``
    (*Does our gradient descent agree with scikit-learn?*).

    Parameters
    ----------
    theta : array of shape (d,) or (d + 1,)
        Weights, followed by the intercept when ``fit_intercept``.
    X : array of shape (n, d)
    y : array of shape (n,) with values 0 or 1
    l2 : float, default 0
    fit_intercept : bool, default False

    Examples
    --------
    >>> round(float(logistic_loss(np.zeros(2), np.ones((3, 2)), np.array([0.0, 1.0, 1.0]))), 4)  # log 2
    0.6931
    """
    w, b = _split(theta, X, y, fit_intercept)
    z = X @ w + b
    if _is_torch(z):
        import torch

        log_1p_exp = torch.nn.functional.softplus(z)
    else:
        log_1p_exp = np.logaddexp(0.0, z)
    return (log_1p_exp - y * z).mean() + 0.5 * l2 * (w @ w)


def logistic_grad(theta, X, y, *, l2: float = 0.0, fit_intercept: bool = False):
    """Gradient of :func:`logistic_loss`: ∇_w = Xᵀ(σ(Xw + b) − y)/n + l2·w, ∇_b = mean(σ(Xw + b) − y).

    Same parameters as :func:`logistic_loss`; returns an array shaped like ``theta``.

    Examples
    --------
    >>> X = np.array([[1.0], [-1.0]]); y = np.array([1.0, 0.0])
    >>> check_gradient(lambda t: logistic_loss(t, X, y), lambda t: logistic_grad(t, X, y), np.array([0.3])) < 1e-7
    True
    """
    w, b = _split(theta, X, y, fit_intercept)
    error = sigmoid(X @ w + b) - y
    return _join(X.T @ error / X.shape[0] + l2 * w, error.mean(), fit_intercept)


def check_gradient(f: Callable, grad_f: Callable, x, *, eps: float = 1e-6) -> float:
    """Compare ``grad_f(x)`` with central finite differences of ``f``; return the maximum relative error.

    Each partial derivative is estimated as (f(x + ε eᵢ) − f(x − ε eᵢ)) / 2ε in float64. The error returned is
    max_i |gᵢ − ĝᵢ| / max(‖g‖_∞, ‖ĝ‖_∞): relative to the gradient's scale, so that coordinates where the gradient
    is nearly 0 do not blow it up. A correct gradient of a smooth function gives ≲ 1e-7; a wrong one usually > 1e-2.
    Taught in ``notebooks/01_gradient_descent.ipynb`` (*How do we know a gradient is right?*).

    Parameters
    ----------
    f : callable
        Scalar function of ``x`` (returns a Python number, 0-d array or 0-d tensor).
    grad_f : callable
        Its claimed gradient, returning an array shaped like ``x``.
    x : NumPy array or torch tensor
        Point at which to compare; converted to float64 (finite differences in float32 are too coarse).
    eps : float, default 1e-6
        Finite-difference step.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``eps`` is not a positive finite number, ``grad_f(x)`` does not have the shape of ``x``, or either
        function returns NaN/inf.

    Examples
    --------
    >>> check_gradient(lambda x: (x ** 2).sum(), lambda x: 2 * x, np.array([1.0, -2.0])) < 1e-8
    True
    >>> round(check_gradient(lambda x: (x ** 2).sum(), lambda x: x, np.array([1.0, -2.0])), 6)  # forgot the 2
    0.5
    """
    eps = check_scalar(eps, "eps", min_value=0, include_min=False)
    torch_input = _is_torch(x)
    if torch_input:
        x = x.detach().to(dtype=torch.float64).clone()
    else:
        x = np.array(x, dtype=float)
    analytic = grad_f(x)
    analytic = analytic.detach().cpu().numpy() if _is_torch(analytic) else np.asarray(analytic, dtype=float)
    if analytic.shape != tuple(x.shape):
        raise ValueError(f"grad_f(x) has shape {analytic.shape} but x has shape {tuple(x.shape)}: the gradient "
                         f"must have one entry per parameter.")
    numeric = np.empty(analytic.shape)
    flat = x.reshape(-1)  # a view, so writing to it perturbs x
    for i in range(flat.shape[0]):
        original = float(flat[i])
        flat[i] = original + eps
        plus = float(f(x))
        flat[i] = original - eps
        minus = float(f(x))
        flat[i] = original
        numeric.reshape(-1)[i] = (plus - minus) / (2 * eps)
    if not (np.all(np.isfinite(analytic)) and np.all(np.isfinite(numeric))):
        raise ValueError("f or grad_f returned NaN or inf at x; pick a point where the function is finite.")
    scale = max(np.abs(analytic).max(initial=0.0), np.abs(numeric).max(initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.abs(analytic - numeric).max() / scale)


# ----------------------------------------------------------------------------------------------------------------------
# Plain gradient descent
# ----------------------------------------------------------------------------------------------------------------------


def gradient_descent(grad_fn: Callable, theta0, lr: float, n_steps: int, callback: Callable | None = None):
    """Run θ ← θ − α ∇J(θ) for ``n_steps`` steps and return every iterate.

    Taught in ``notebooks/01_gradient_descent.ipynb`` (*What does one step of gradient descent do?*).

    Parameters
    ----------
    grad_fn : callable
        ``grad_fn(theta)`` returns ∇J(θ), an array shaped like ``theta``.
    theta0 : array-like
        Starting point (copied as float64; the caller's array is never modified).
    lr : float
        Learning rate α > 0.
    n_steps : int
        Number of updates (≥ 0).
    callback : callable, optional
        ``callback(step, theta)`` after each update (step counts from 1); returning ``True`` stops early.

    Returns
    -------
    numpy.ndarray of shape (steps_done + 1, *theta0.shape)
        Row 0 is ``theta0``; row ``t`` the iterate after ``t`` steps.

    Raises
    ------
    ValueError
        If ``lr`` is not a positive finite number, ``n_steps`` is negative, ``theta0`` holds NaN/inf, or the gradient's
        shape differs from ``theta``'s.
    DivergenceError
        If an iterate becomes NaN or infinite (α too large); ``error.partial`` is the finite part of the trajectory.

    Examples
    --------
    >>> path = gradient_descent(lambda t: 2 * t, np.array([1.0]), lr=0.25, n_steps=3)
    >>> path.ravel().tolist()
    [1.0, 0.5, 0.25, 0.125]
    """
    lr = check_scalar(lr, "lr", min_value=0, include_min=False)
    n_steps = check_scalar(n_steps, "n_steps", min_value=0, integer=True)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}.")
    theta = np.array(theta0, dtype=float)
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta0 contains NaN or infinite values.")
    path = [theta.copy()]
    for step in range(1, n_steps + 1):
        # Overflow is reported just below, as a DivergenceError, rather than as a stream of NumPy warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            grad = np.asarray(grad_fn(theta), dtype=float)
            if grad.shape != theta.shape:
                raise ValueError(f"grad_fn returned shape {grad.shape} but theta has shape {theta.shape}.")
            theta = theta - lr * grad
        if not np.all(np.isfinite(theta)):
            raise DivergenceError(
                f"Gradient descent diverged at step {step}: theta became NaN/inf with lr={lr:g}. "
                f"Use a smaller learning rate (for a quadratic, lr < 2/L with L the largest Hessian eigenvalue).",
                step=step,
                partial=np.stack(path),
            )
        path.append(theta.copy())
        if callback is not None and callback(step, theta):
            break
    return np.stack(path)


def quadratic_stability_limit(A) -> float:
    """The largest stable learning rate 2/L of gradient descent on J(θ) = ½ θᵀAθ − bᵀθ (L = largest eigenvalue of A).

    Below it every component of the error shrinks by |1 − αλᵢ| < 1 per step; above it the component along the top
    eigenvector grows by |1 − αL| > 1. Taught in ``notebooks/01_gradient_descent.ipynb``
    (*How large can the learning rate be?*).

    Raises
    ------
    ValueError
        If ``A`` is not a symmetric positive-definite square matrix.

    Examples
    --------
    >>> quadratic_stability_limit(np.diag([1.0, 4.0]))
    0.5
    """
    A = np.asarray(A, dtype=float)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix, got shape {A.shape}.")
    if not np.allclose(A, A.T):
        raise ValueError("A must be symmetric (it is a Hessian).")
    eigenvalues = np.linalg.eigvalsh(A)
    if eigenvalues[0] <= 0:
        raise ValueError(f"A must be positive definite, its smallest eigenvalue is {eigenvalues[0]:.3g}.")
    return float(2.0 / eigenvalues[-1])


def steps_to_target(losses, target: float) -> int | None:
    """Index of the first loss ≤ ``target`` (the number of steps needed to reach it), or ``None`` if never reached.

    Examples
    --------
    >>> steps_to_target([1.0, 0.5, 0.2, 0.1], 0.3)
    2
    >>> steps_to_target([1.0, 0.5], 0.1) is None
    True
    """
    target = check_scalar(target, "target")
    for step, loss in enumerate(losses):
        if float(loss) <= target:
            return step
    return None


def minimize(loss_fn: Callable, optimizer, n_steps: int, *, target: float | None = None) -> np.ndarray:
    """Minimise ``loss_fn()`` with a torch-style ``optimizer`` for up to ``n_steps`` full-batch steps.

    Used to compare optimizers on the same problem (``notebooks/01_gradient_descent.ipynb``, *Does momentum help?*):
    ``steps_to_target(minimize(...), target)`` counts the steps each needs.

    Parameters
    ----------
    loss_fn : callable
        No arguments; computes the loss (a 0-d tensor) from the parameters the optimizer updates.
    optimizer : torch.optim.Optimizer-like
    n_steps : int
        Maximum number of steps (≥ 0).
    target : float, optional
        Stop as soon as the loss is ≤ ``target`` (no compute is spent past the goal).

    Returns
    -------
    numpy.ndarray
        ``losses[t]`` is the loss after ``t`` steps; its length is ``steps taken + 1``.

    Raises
    ------
    DivergenceError
        If the loss becomes NaN or infinite; ``error.partial`` holds the losses so far.

    Examples
    --------
    >>> w = torch.nn.Parameter(torch.tensor([3.0]))
    >>> losses = minimize(lambda: (w ** 2).sum(), SGD([w], lr=0.25), 100, target=1e-3)
    >>> len(losses) - 1, round(float(losses[-1]), 5)
    (7, 0.00055)
    """
    n_steps = check_scalar(n_steps, "n_steps", min_value=0, integer=True)
    if target is not None:
        target = check_scalar(target, "target")
    losses = []
    for step in range(n_steps + 1):
        optimizer.zero_grad()
        loss = loss_fn()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergenceError(f"The loss became {value} after {step} steps: the learning rate is too large.",
                                  step=step, partial=np.array(losses))
        losses.append(value)
        if step == n_steps or (target is not None and value <= target):
            break
        loss.backward()
        optimizer.step()
    return np.array(losses)


def plot_descent_paths(loss_2d: Callable, paths: dict, ax=None, *, extent: float = 1.5, levels: int = 20):
    """Contour plot of a 2-D loss with one gradient-descent trajectory per entry of ``paths`` (label → array (T, 2)).

    Used by ``notebooks/01_gradient_descent.ipynb`` (*How large can the learning rate be?*). Returns the axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    grid = np.linspace(-extent, extent, 121)
    T1, T2 = np.meshgrid(grid, grid)
    Z = np.array([[loss_2d(np.array([a, b])) for a, b in zip(r1, r2)] for r1, r2 in zip(T1, T2)])
    ax.contour(T1, T2, Z, levels=levels, cmap="Greys", linewidths=0.7)
    for label, path in paths.items():
        path = np.asarray(path)
        ax.plot(path[:, 0], path[:, 1], "o-", markersize=2.5, linewidth=1, label=label)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_xlabel("θ₁ (parameter, no unit)")
    ax.set_ylabel("θ₂ (parameter, no unit)")
    ax.legend(fontsize=8, loc="lower right")
    return ax


# ----------------------------------------------------------------------------------------------------------------------
# Optimizers from scratch, torch.optim API
# ----------------------------------------------------------------------------------------------------------------------


class _HandWrittenOptimizer(torch.optim.Optimizer):
    """The ``torch.optim`` plumbing shared by :class:`SGD` and :class:`Adam`: closure, parameter groups, parameters
    without a gradient, ``maximize``. Subclasses write only the update rule for one parameter,
    ``_update(p, g, group, state)``."""

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        """Update every parameter that has a gradient; returns ``closure()``'s loss if a closure is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    # Maximising f is minimising −f: flip the gradient before anything else sees it, as torch does.
                    g = -p.grad if group["maximize"] else p.grad
                    self._update(p, g, group, self.state[p])
        return loss

    def _update(self, p, g, group, state):  # pragma: no cover - abstract
        raise NotImplementedError


def _check_lr(lr):
    """``lr`` as given (a float, or a one-element tensor that a scheduler may update in place), checked."""
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1:
            raise ValueError(f"A tensor lr must have one element, got shape {tuple(lr.shape)}.")
        check_scalar(lr.item(), "lr", min_value=0)
        return lr.squeeze()
    return check_scalar(lr, "lr", min_value=0)


def _check_implementation_flags(name: str, **flags):
    """Refuse torch's kernel-selection flags when switched on: these optimizers are the plain per-tensor loop."""
    for flag, value in flags.items():
        if value:
            raise ValueError(
                f"{flag}={value!r} is not supported: sustainlab's {name} is the readable single-tensor loop of "
                f"chapter 1 (use torch.optim.{name} for foreach, fused, capturable or differentiable kernels)."
            )


class SGD(_HandWrittenOptimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and weight decay, written out by hand.

    Same update and same API as ``torch.optim.SGD`` (``step()``, ``zero_grad()``, parameter groups, ``state_dict``,
    ``maximize``, a tensor ``lr``; the tests check the parameter trajectories agree within 1e-6, also for every
    configuration in torch's own optimizer tests). With gradient g and parameter θ, per step::

        g ← −g                                 if maximize
        g ← g + weight_decay · θ
        v ← g                                  on the first step, then
        v ← momentum · v + (1 − dampening) · g
        g ← g + momentum · v   (Nesterov)   or   g ← v   (classical momentum)
        θ ← θ − lr · g

    Taught in ``notebooks/01_gradient_descent.ipynb`` (*Does momentum help?*).

    Parameters
    ----------
    params : iterable of tensors or of dicts (parameter groups)
    lr : float or one-element tensor, default 1e-3
    momentum : float in [0, 1), default 0
    dampening : float in [0, 1], default 0
    weight_decay : float ≥ 0, default 0
        L2 penalty coefficient added to the gradient.
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    maximize : bool, default False
        Ascend the objective instead of descending it.
    foreach, differentiable, fused : None or False
        Accepted for ``torch.optim.SGD`` compatibility; switching one on raises (there is only one implementation).

    Raises
    ------
    ValueError
        For a negative or non-finite ``lr``/``weight_decay``, ``momentum`` outside [0, 1), Nesterov without
        momentum, or an implementation flag switched on.

    Examples
    --------
    >>> w = torch.nn.Parameter(torch.tensor([1.0]))
    >>> opt = SGD([w], lr=0.1, momentum=0.9)
    >>> for _ in range(2):
    ...     opt.zero_grad(); (w ** 2).sum().backward(); opt.step()
    >>> round(w.item(), 4)   # 1 - 0.2 = 0.8, then 0.8 - 0.1·(0.9·2 + 1.6) = 0.46
    0.46
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False, foreach=None,
                 differentiable: bool = False, fused=None):
        _check_implementation_flags("SGD", foreach=foreach, differentiable=differentiable, fused=fused)
        lr = _check_lr(lr)
        momentum = check_scalar(momentum, "momentum", min_value=0, max_value=1, include_max=False)
        dampening = check_scalar(dampening, "dampening", min_value=0, max_value=1)
        weight_decay = check_scalar(weight_decay, "weight_decay", min_value=0)
        if nesterov and (momentum == 0 or dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening == 0.")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=bool(nesterov), maximize=bool(maximize))
        super().__init__(params, defaults)

    def _update(self, p, g, group, state):
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        if weight_decay != 0:
            g = g.add(p, alpha=weight_decay)
        if momentum != 0:
            velocity = state.get("momentum_buffer")
            if velocity is None:
                # Starting from v = g (not 0) avoids a slow first step, as torch does.
                velocity = state["momentum_buffer"] = g.clone()
            else:
                velocity.mul_(momentum).add_(g, alpha=1 - group["dampening"])
            g = g.add(velocity, alpha=momentum) if group["nesterov"] else velocity
        p.add_(g, alpha=-lr)


class Adam(_HandWrittenOptimizer):
    """Adam (Kingma & Ba, 2015) written out by hand; ``decoupled_weight_decay=True`` gives AdamW.

    Same update and same API as ``torch.optim.Adam`` / ``torch.optim.AdamW`` (``amsgrad``, ``maximize``, a tensor
    ``lr``; the tests check the trajectories agree within 1e-6, also for every configuration in torch's own optimizer
    tests). With gradient g, parameter θ and step count t, per step::

        g ← −g                                       if maximize
        g ← g + weight_decay · θ                     (Adam)     or   θ ← θ · (1 − lr · weight_decay)   (AdamW)
        m ← β₁ m + (1 − β₁) g                        running mean of the gradient
        v ← β₂ v + (1 − β₂) g²                       running mean of its square
        v̂ ← max(v̂, v)                                if amsgrad (v̂ starts at 0), else v̂ = v
        θ ← θ − lr / (1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + ε)

    The two bias corrections undo the zero initialisation of m and v. AMSGrad (Reddi et al., 2018) divides by the
    largest v seen so far, so a coordinate's step size lr / √v̂ never grows back after large gradients (apart from the
    bias correction). Taught in ``notebooks/01_gradient_descent.ipynb`` (*Why is Adam the default?*).

    Parameters
    ----------
    params : iterable of tensors or of dicts (parameter groups)
    lr : float or one-element tensor, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1).
    eps : float, default 1e-8
        Must be > 0.
    weight_decay : float ≥ 0, default 0
    amsgrad : bool, default False
    maximize : bool, default False
        Ascend the objective instead of descending it.
    decoupled_weight_decay : bool, default False
    foreach, capturable, differentiable, fused : None or False
        Accepted for ``torch.optim.Adam`` compatibility; switching one on raises (there is only one implementation).

    Raises
    ------
    ValueError
        For a negative or non-finite ``lr``/``weight_decay``, ``betas`` outside [0, 1), ``eps`` ≤ 0, or an
        implementation flag switched on.

    Examples
    --------
    >>> w = torch.nn.Parameter(torch.tensor([1.0, -3.0]))
    >>> opt = Adam([w], lr=0.1)
    >>> opt.zero_grad(); (w ** 2).sum().backward(); opt.step()
    >>> [round(v, 4) for v in w.tolist()]   # the first Adam step moves every coordinate by about lr
    [0.9, -2.9]
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False, *, foreach=None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused=None, decoupled_weight_decay: bool = False):
        _check_implementation_flags(type(self).__name__, foreach=foreach, capturable=capturable,
                                    differentiable=differentiable, fused=fused)
        lr = _check_lr(lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}.")
        beta1 = check_scalar(betas[0], "betas[0]", min_value=0, max_value=1, include_max=False)
        beta2 = check_scalar(betas[1], "betas[1]", min_value=0, max_value=1, include_max=False)
        eps = check_scalar(eps, "eps", min_value=0, include_min=False)
        weight_decay = check_scalar(weight_decay, "weight_decay", min_value=0)
        defaults = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=bool(amsgrad),
                        maximize=bool(maximize), decoupled_weight_decay=bool(decoupled_weight_decay))
        super().__init__(params, defaults)

    def _update(self, p, g, group, state):
        lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                p.mul_(1 - lr * weight_decay)
            else:
                g = g.add(p, alpha=weight_decay)
        m.lerp_(g, 1 - beta1)  # m + (1 − β₁)(g − m) = β₁ m + (1 − β₁) g
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        if group["amsgrad"]:
            v = torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        step_size = lr / (1 - beta1**t)
        denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
        p.addcdiv_(m, denom, value=-step_size)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019): :class:`Adam` with decoupled weight decay, ``torch.optim.AdamW``'s API.

    The same as ``Adam(..., decoupled_weight_decay=True)``, with AdamW's default ``weight_decay=1e-2``: the decay
    shrinks θ by ``lr · weight_decay`` each step instead of being added to the gradient, so Adam's per-coordinate
    scaling does not weaken it. Parameters as for :class:`Adam`.

    Examples
    --------
    >>> w = torch.nn.Parameter(torch.tensor([1.0]))
    >>> opt = AdamW([w], lr=0.1, weight_decay=0.5)
    >>> opt.zero_grad(); (0 * w).sum().backward(); opt.step()
    >>> round(w.item(), 4)   # zero gradient: only the decay acts, 1 · (1 − 0.1 · 0.5)
    0.95
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 amsgrad: bool = False, *, maximize: bool = False, foreach=None, capturable: bool = False,
                 differentiable: bool = False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)


# ----------------------------------------------------------------------------------------------------------------------
# Training loop
# ----------------------------------------------------------------------------------------------------------------------


def make_mlp(hidden: Sequence[int] = (128,), *, n_in: int = 64, n_out: int = 10, random_state: int = 0):
    """A ReLU multilayer perceptron, initialised from ``random_state`` (so two calls give the same weights).

    The weights are drawn from a local generator, so the global torch RNG is left as it was (like the data
    factories). The model :func:`train` is shown with in ``notebooks/01_gradient_descent.ipynb``; chapter 5 reuses it.
    """
    from torch import nn

    random_state = check_scalar(random_state, "random_state", min_value=0, integer=True)
    sizes = [n_in, *hidden, n_out]
    generator = torch.Generator().manual_seed(random_state)
    layers: list = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        # skip_init: built without drawing from the global RNG, then given nn.Linear's own default initialisation
        # (its Kaiming-uniform with a=√5 is uniform in ±1/sqrt(fan_in), as is the bias) from the local generator.
        linear = nn.utils.skip_init(nn.Linear, a, b)
        bound = 1 / math.sqrt(a)
        with torch.no_grad():
            linear.weight.uniform_(-bound, bound, generator=generator)
            linear.bias.uniform_(-bound, bound, generator=generator)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def make_loader(X, y, batch_size: int, *, shuffle: bool = True, random_state: int = 0):
    """A DataLoader over tensors whose shuffling is seeded by ``random_state`` (same batches on every run)."""
    from torch.utils.data import DataLoader, TensorDataset

    batch_size = check_scalar(batch_size, "batch_size", min_value=1, integer=True)
    random_state = check_scalar(random_state, "random_state", min_value=0, integer=True)
    generator = torch.Generator().manual_seed(random_state)
    return DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=shuffle, generator=generator)


@dataclass
class TrainingHistory:
    """What :func:`train` measured, one entry per epoch in each list.

    Attributes
    ----------
    loss, accuracy : list
        Mean training loss and accuracy over the epoch's samples (accuracy entries are ``None`` when the targets are
        not class indices).
    eval_loss, eval_accuracy : list
        The same on ``eval_data`` at the end of each epoch (``None`` entries without ``eval_data``).
    optimizer_steps : int
        Parameter updates made (one per ``accumulation_steps`` micro-batches).
    samples_seen : int
        Training samples processed (forward and backward).
    seconds : float
        Wall-clock time of the whole call, evaluation included.
    stopped_early : bool
        Whether ``stop_when`` ended training before ``epochs``.
    """

    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    eval_loss: list = field(default_factory=list)
    eval_accuracy: list = field(default_factory=list)
    optimizer_steps: int = 0
    samples_seen: int = 0
    seconds: float = 0.0
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        """Number of completed epochs."""
        return len(self.loss)

    def summary(self) -> str:
        """One deterministic line with the last epoch's figures (no timings, so notebooks can compare it)."""
        if not self.loss:
            return "no epoch completed"
        parts = [f"epochs {self.epochs}", f"optimizer steps {self.optimizer_steps}", f"loss {self.loss[-1]:.4f}"]
        if self.accuracy[-1] is not None:
            parts.append(f"accuracy {self.accuracy[-1]:.3f}")
        if self.eval_loss and self.eval_loss[-1] is not None:
            parts.append(f"eval loss {self.eval_loss[-1]:.4f}")
        if self.eval_accuracy and self.eval_accuracy[-1] is not None:
            parts.append(f"eval accuracy {self.eval_accuracy[-1]:.3f}")
        return ", ".join(parts)


def _to_device(value, device):
    if hasattr(value, "to"):
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _n_samples(targets) -> int:
    return int(targets.shape[0]) if hasattr(targets, "shape") and len(targets.shape) else 1


def _n_correct(outputs, targets):
    """Correct predictions for class-index targets, or ``None`` when accuracy does not apply."""
    import torch

    if not (
        isinstance(outputs, torch.Tensor)
        and isinstance(targets, torch.Tensor)
        and outputs.ndim == 2
        and targets.ndim == 1
        and not targets.is_floating_point()
        and not targets.is_complex()
    ):
        return None
    return int((outputs.argmax(dim=1) == targets).sum())


class _RunningMetrics:
    """Sample-weighted mean loss and accuracy over the batches of one pass (accuracy ``None`` when it doesn't apply)."""

    def __init__(self):
        self.loss_sum, self.n, self.correct, self.accuracy_applies = 0.0, 0, 0, True

    def add(self, loss_value: float, n: int, outputs, targets) -> None:
        self.loss_sum += loss_value * n
        self.n += n
        correct = _n_correct(outputs, targets)
        if correct is None:
            self.accuracy_applies = False
        else:
            self.correct += correct

    def means(self) -> tuple[float, float | None]:
        return self.loss_sum / self.n, (self.correct / self.n if self.accuracy_applies else None)


def _autocast(device, precision: str):
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _evaluate(model, data, loss_fn, device, precision):
    import torch

    was_training = model.training
    model.eval()
    metrics = _RunningMetrics()
    try:
        with torch.no_grad():
            for inputs, targets in data:
                inputs, targets = _to_device(inputs, device), _to_device(targets, device)
                with _autocast(device, precision):
                    outputs = model(inputs)
                    loss = loss_fn(outputs, targets)
                metrics.add(float(loss.detach()), _n_samples(targets), outputs, targets)
    finally:
        model.train(was_training)
    if metrics.n == 0:
        raise ValueError("eval_data yielded no batches.")
    return metrics.means()


def train(
    model,
    data: Iterable,
    optimizer,
    epochs: int = 1,
    *,
    loss_fn: Callable | None = None,
    device=None,
    accumulation_steps: int = 1,
    precision: str = "fp32",
    eval_data: Iterable | None = None,
    stop_when: Callable[[TrainingHistory], bool] | None = None,
    desc: str | None = None,
) -> TrainingHistory:
    """Train ``model`` on ``data`` with ``optimizer``; the loop every chapter of the course reuses.

    Taught in ``notebooks/01_gradient_descent.ipynb`` (*Can one loop train every model in the course?*).

    Parameters
    ----------
    model : torch.nn.Module
        Moved to ``device`` (in place, so ``optimizer`` keeps pointing at the same parameters).
    data : iterable of (inputs, targets)
        Re-iterable once per epoch, e.g. a ``DataLoader``. Inputs may be a tensor or a tuple/list of tensors.
    optimizer : torch.optim.Optimizer-like
        Anything with ``step()`` and ``zero_grad()``: ``torch.optim`` optimizers or :class:`SGD` / :class:`Adam`.
    epochs : int, default 1
        Passes over ``data`` (fewer if ``stop_when`` fires).
    loss_fn : callable, optional
        ``loss_fn(outputs, targets)`` returning the **mean** loss over the batch (gradient accumulation relies on it).
        Default: cross-entropy.
    device : torch.device or str, optional
        Default: :func:`sustainlab.utils.pick_device`.
    accumulation_steps : int, default 1
        ``k`` micro-batches per optimizer step. Each micro-batch's gradient is weighted by its size, so ``k``
        micro-batches give the same update as one batch ``k`` times larger (up to floating-point rounding). A last,
        incomplete group still makes a step.
    precision : {"fp32", "bf16", "fp16"}, default "fp32"
        ``"bf16"`` runs the forward pass under ``torch.autocast`` (CPU or CUDA); ``"fp16"`` needs CUDA and uses a
        gradient scaler. Parameters and optimizer state stay in fp32 in all cases.
    eval_data : iterable of (inputs, targets), optional
        Evaluated (no gradients, ``model.eval()``) at the end of each epoch.
    stop_when : callable, optional
        ``stop_when(history) -> bool`` called after each epoch; ``True`` stops training (early stopping).
    desc : str, optional
        Label of the progress bar (silenced under the course's runners).

    Returns
    -------
    TrainingHistory

    Raises
    ------
    TypeError
        If ``model`` is not a ``torch.nn.Module`` or ``optimizer`` lacks ``step``/``zero_grad``.
    ValueError
        For a bad ``epochs``, ``accumulation_steps`` or ``precision``, ``"fp16"`` without CUDA, or ``data`` that
        yields no batches.
    DivergenceError
        If a training loss becomes NaN or infinite; ``error.partial`` is the history so far.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> _ = torch.manual_seed(0)
    >>> X, y = torch.randn(64, 3), torch.randint(0, 2, (64,))
    >>> model = torch.nn.Linear(3, 2)
    >>> loader = DataLoader(TensorDataset(X, y), batch_size=16)
    >>> history = train(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), epochs=2, device="cpu")
    >>> history.epochs, history.optimizer_steps, history.samples_seen
    (2, 8, 128)
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not (callable(getattr(optimizer, "step", None)) and callable(getattr(optimizer, "zero_grad", None))):
        raise TypeError(
            f"optimizer must have step() and zero_grad() methods (e.g. torch.optim.SGD), "
            f"got {type(optimizer).__name__}."
        )
    epochs = check_scalar(epochs, "epochs", min_value=1, integer=True)
    accumulation_steps = check_scalar(accumulation_steps, "accumulation_steps", min_value=1, integer=True)
    check_option(precision, "precision", PRECISIONS)
    if loss_fn is None:
        loss_fn = torch.nn.functional.cross_entropy
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}.")
    if stop_when is not None and not callable(stop_when):
        raise TypeError(f"stop_when must be callable, got {type(stop_when).__name__}.")
    device = pick_device(device) if device is None or isinstance(device, str) else torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision='fp16' needs a CUDA device (gradient scaling), got device {device.type!r}; use 'bf16' instead."
        )
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    model.to(device)
    model.train()
    history = TrainingHistory()
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        # At most this many batches: stop_when may end training sooner, and the total is then cut to what ran.
        total = epochs * len(data)
    except TypeError:
        total = None
    bar = progress(None, desc=desc or "training", total=total)
    start = time.perf_counter()
    try:
        for epoch in range(epochs):
            metrics = _RunningMetrics()
            optimizer.zero_grad()
            # Samples in the current accumulation group and the reference size its losses were scaled by.
            group_n, group_ref, group_batches = 0, None, 0
            for inputs, targets in data:
                inputs, targets = _to_device(inputs, device), _to_device(targets, device)
                n = _n_samples(targets)
                with _autocast(device, precision):
                    outputs = model(inputs)
                    loss = loss_fn(outputs, targets)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    history.seconds = time.perf_counter() - start
                    raise DivergenceError(
                        f"Training diverged: the loss became {loss_value} in epoch {epoch + 1} after "
                        f"{history.optimizer_steps} optimizer steps. Lower the learning rate, check the data for "
                        f"NaN/inf, or use precision='fp32'.",
                        step=history.optimizer_steps,
                        partial=history,
                    )
                if group_ref is None:
                    group_ref = n
                # Weight by n / group_ref now and divide by group_n / group_ref at the step: the group's gradient
                # is then the gradient of the mean loss over all its samples, as for one large batch.
                scaled = loss * (n / group_ref)
                if scaler is not None:
                    scaled = scaler.scale(scaled)
                scaled.backward()
                group_n += n
                group_batches += 1

                metrics.add(loss_value, n, outputs, targets)
                history.samples_seen += n
                bar.update(1)

                if group_batches == accumulation_steps:
                    _optimizer_step(optimizer, scaler, params, group_n / group_ref)
                    history.optimizer_steps += 1
                    group_n, group_ref, group_batches = 0, None, 0
                    bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
            if group_batches:
                _optimizer_step(optimizer, scaler, params, group_n / group_ref)
                history.optimizer_steps += 1
            if metrics.n == 0:
                raise ValueError(
                    f"data yielded no batches in epoch {epoch + 1}; pass a re-iterable such as a DataLoader or a "
                    f"list, not a generator."
                )
            epoch_loss, epoch_accuracy = metrics.means()
            history.loss.append(epoch_loss)
            history.accuracy.append(epoch_accuracy)
            if eval_data is not None:
                eval_loss, eval_accuracy = _evaluate(model, eval_data, loss_fn, device, precision)
            else:
                eval_loss, eval_accuracy = None, None
            history.eval_loss.append(eval_loss)
            history.eval_accuracy.append(eval_accuracy)
            if stop_when is not None and stop_when(history):
                history.stopped_early = epoch + 1 < epochs
                break
        # Finished (early stopping included): the bar's total becomes what ran, so it closes as done. A notebook
        # bar closed short of its total turns red and stays, which reads as a failure; only an error should do that.
        bar.total = bar.n
    finally:
        bar.close()
    history.seconds = time.perf_counter() - start
    return history


def _optimizer_step(optimizer, scaler, params, divisor: float) -> None:
    if divisor != 1.0:
        for p in params:
            if p.grad is not None:
                p.grad.div_(divisor)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad()
