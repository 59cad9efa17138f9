"""Tests for ``sustainlab.optim``: the training loop, hand-written gradients, and parity with ``torch.optim``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from sustainlab import optim
from sustainlab.optim import DivergenceError, TrainingHistory, train


# ----------------------------------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------------------------------


def _classification_data(n=48, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return X, y


def _mlp(d=5, classes=3, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.Tanh(), torch.nn.Linear(8, classes)).double()


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize(
    "n, micro, k, make_opt",
    [
        (48, 12, 4, lambda p: torch.optim.SGD(p, lr=0.5)),
        (48, 12, 4, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2)),
        (48, 8, 3, lambda p: torch.optim.Adam(p, lr=1e-2)),
        # Unequal micro-batches (10, 10, 10, 10, 5): weighting by size keeps the equivalence exact.
        (45, 10, 5, lambda p: torch.optim.SGD(p, lr=0.3)),
    ],
)
def test_accumulating_k_micro_batches_equals_one_k_times_larger_batch(n, micro, k, make_opt):
    X, y = _classification_data(n)
    X = X.double()
    big, small = _mlp(), _mlp()
    big_loader = DataLoader(TensorDataset(X, y), batch_size=micro * k)
    small_loader = DataLoader(TensorDataset(X, y), batch_size=micro)
    h_big = train(big, big_loader, make_opt(big.parameters()), epochs=3, device="cpu")
    h_small = train(small, small_loader, make_opt(small.parameters()), epochs=3, device="cpu", accumulation_steps=k)
    assert h_big.optimizer_steps == h_small.optimizer_steps == 3 * math.ceil(n / (micro * k))
    assert h_small.samples_seen == h_big.samples_seen == 3 * n
    torch.testing.assert_close(_params(small), _params(big), rtol=0, atol=1e-10)
    # The logged epoch loss is the same sample-weighted mean in both runs.
    np.testing.assert_allclose(h_small.loss, h_big.loss, rtol=1e-10)


def test_accumulation_is_not_vacuous():
    """Without accumulation the same micro-batches make k times more steps and end somewhere else."""
    X, y = _classification_data()
    X = X.double()
    a, b = _mlp(), _mlp()
    train(a, DataLoader(TensorDataset(X, y), batch_size=48), torch.optim.SGD(a.parameters(), lr=0.5), device="cpu")
    h = train(b, DataLoader(TensorDataset(X, y), batch_size=12), torch.optim.SGD(b.parameters(), lr=0.5), device="cpu")
    assert h.optimizer_steps == 4
    assert (_params(a) - _params(b)).abs().max() > 1e-3


def test_train_history_learns_and_records_everything():
    X, y = _classification_data(n=96)
    y = (X[:, 0] > 0).long()  # learnable
    model = _mlp(classes=2).float()
    loader = DataLoader(TensorDataset(X, y), batch_size=16)
    history = train(model, loader, torch.optim.Adam(model.parameters(), lr=0.05), epochs=8, device="cpu",
                    eval_data=loader)
    assert isinstance(history, TrainingHistory)
    assert history.epochs == 8 and len(history.accuracy) == len(history.eval_loss) == len(history.eval_accuracy) == 8
    assert history.loss[-1] < 0.5 * history.loss[0]
    assert history.accuracy[-1] > 0.9 and history.eval_accuracy[-1] > 0.9
    assert history.optimizer_steps == 8 * 6 and history.samples_seen == 8 * 96
    assert history.seconds > 0 and not history.stopped_early
    assert "epochs 8" in history.summary()


def test_accuracy_is_none_for_regression_targets():
    X = torch.randn(20, 3)
    y = X.sum(dim=1, keepdim=True)
    model = torch.nn.Linear(3, 1)
    history = train(model, [(X, y)], torch.optim.SGD(model.parameters(), lr=0.1), epochs=2,
                    loss_fn=torch.nn.functional.mse_loss, device="cpu")
    assert history.accuracy == [None, None] and history.eval_loss == [None, None]
    assert history.loss[1] < history.loss[0]


def test_stop_when_stops_early():
    X, y = _classification_data()
    model = _mlp().float()
    history = train(model, [(X, y)], torch.optim.SGD(model.parameters(), lr=0.1), epochs=10, device="cpu",
                    stop_when=lambda h: h.epochs >= 3)
    assert history.epochs == 3 and history.stopped_early


def test_bf16_autocast_on_cpu_trains():
    X, y = _classification_data(n=64)
    y = (X[:, 0] > 0).long()
    model = _mlp(classes=2).float()
    history = train(model, DataLoader(TensorDataset(X, y), batch_size=16), torch.optim.Adam(model.parameters(), lr=0.05),
                    epochs=5, device="cpu", precision="bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert history.loss[-1] < history.loss[0]


def test_divergence_raises_with_partial_history():
    X = torch.randn(64, 3)
    y = X.sum(dim=1, keepdim=True)
    model = torch.nn.Linear(3, 1)
    # Far above the stability limit for this least-squares problem: the loss grows geometrically until it overflows.
    with pytest.raises(DivergenceError, match="diverged") as info:
        train(model, DataLoader(TensorDataset(X, y), batch_size=8), torch.optim.SGD(model.parameters(), lr=50.0),
              epochs=20, loss_fn=torch.nn.functional.mse_loss, device="cpu")
    assert isinstance(info.value.partial, TrainingHistory)
    assert info.value.step > 0


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"epochs": 0}, ValueError, "epochs must be >= 1"),
        ({"epochs": 1.5}, TypeError, "epochs must be an integer"),
        ({"accumulation_steps": 0}, ValueError, "accumulation_steps must be >= 1"),
        ({"precision": "fp8"}, ValueError, "precision must be one of"),
        ({"precision": "fp16"}, ValueError, "needs a CUDA device"),
        ({"loss_fn": "mse"}, TypeError, "loss_fn must be callable"),
        ({"optimizer": object()}, TypeError, "optimizer must have step"),
        ({"model": lambda x: x}, TypeError, "model must be a torch.nn.Module"),
        ({"data": []}, ValueError, "no batches"),
    ],
)
def test_train_rejects_bad_input(kwargs, error, message):
    if kwargs.get("precision") == "fp16" and torch.cuda.is_available():
        pytest.skip("fp16 is valid on CUDA")
    X, y = _classification_data()
    model = _mlp().float()
    args = {"model": model, "data": [(X, y)], "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
            "device": "cpu"}
    args.update(kwargs)
    with pytest.raises(error, match=message):
        train(**args)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_train_on_cuda(precision):
    X, y = _classification_data(n=64)
    y = (X[:, 0] > 0).long()
    model = _mlp(classes=2).float()
    history = train(model, DataLoader(TensorDataset(X, y), batch_size=16), torch.optim.Adam(model.parameters(), lr=0.05),
                    epochs=5, device="cuda", precision=precision, accumulation_steps=2)
    assert next(model.parameters()).device.type == "cuda"
    assert history.loss[-1] < history.loss[0]
