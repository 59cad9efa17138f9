"""Chapter 1: gradient descent, optimizers built from scratch, and a small reusable training loop.

Taught in ``notebooks/01_gradient_descent.ipynb``. Contents, grouped by role:

- hand-written gradients: :func:`least_squares_loss`, :func:`least_squares_grad`, :func:`logistic_loss`,
  :func:`logistic_grad` (NumPy arrays or torch tensors) and :func:`check_gradient` (finite differences);
- plain gradient descent on a parameter vector: :func:`gradient_descent`, :func:`steps_to_target`;
- optimizers on torch parameters with the ``torch.optim`` API: :class:`SGD` (momentum, Nesterov, weight decay) and
  :class:`Adam` (weight decay, optionally decoupled as in AdamW);
- the training loop every later chapter reuses: :func:`train` returning a :class:`TrainingHistory`.

Non-finite values never pass silently: :class:`DivergenceError` is raised instead, carrying what was computed up to
that point so that a notebook can show *why* it diverged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

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
    # torch optimizers
    "SGD",
    "Adam",
    # training loop
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
# Training loop
# ----------------------------------------------------------------------------------------------------------------------


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
    total_loss, total_n, total_correct, accuracy_applies = 0.0, 0, 0, True
    try:
        with torch.no_grad():
            for inputs, targets in data:
                inputs, targets = _to_device(inputs, device), _to_device(targets, device)
                with _autocast(device, precision):
                    outputs = model(inputs)
                    loss = loss_fn(outputs, targets)
                n = _n_samples(targets)
                total_loss += float(loss.detach()) * n
                total_n += n
                correct = _n_correct(outputs, targets)
                if correct is None:
                    accuracy_applies = False
                else:
                    total_correct += correct
    finally:
        model.train(was_training)
    if total_n == 0:
        raise ValueError("eval_data yielded no batches.")
    return total_loss / total_n, (total_correct / total_n if accuracy_applies else None)


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
    >>> history = train(model, DataLoader(TensorDataset(X, y), batch_size=16), torch.optim.SGD(model.parameters(), lr=0.1),
    ...                 epochs=2, device="cpu")
    >>> history.epochs, history.optimizer_steps, history.samples_seen
    (2, 8, 128)
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not (callable(getattr(optimizer, "step", None)) and callable(getattr(optimizer, "zero_grad", None))):
        raise TypeError(
            f"optimizer must have step() and zero_grad() methods (e.g. torch.optim.SGD), got {type(optimizer).__name__}."
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
        total = epochs * len(data)
    except TypeError:
        total = None
    bar = progress(None, desc=desc or "training", total=total)
    start = time.perf_counter()
    try:
        for epoch in range(epochs):
            epoch_loss, epoch_n, epoch_correct, accuracy_applies = 0.0, 0, 0, True
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

                epoch_loss += loss_value * n
                epoch_n += n
                correct = _n_correct(outputs, targets)
                if correct is None:
                    accuracy_applies = False
                else:
                    epoch_correct += correct
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
            if epoch_n == 0:
                raise ValueError(
                    f"data yielded no batches in epoch {epoch + 1}; pass a re-iterable such as a DataLoader or a "
                    f"list, not a generator."
                )
            history.loss.append(epoch_loss / epoch_n)
            history.accuracy.append(epoch_correct / epoch_n if accuracy_applies else None)
            if eval_data is not None:
                eval_loss, eval_accuracy = _evaluate(model, eval_data, loss_fn, device, precision)
            else:
                eval_loss, eval_accuracy = None, None
            history.eval_loss.append(eval_loss)
            history.eval_accuracy.append(eval_accuracy)
            if stop_when is not None and stop_when(history):
                history.stopped_early = epoch + 1 < epochs
                break
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
