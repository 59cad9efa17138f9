"""Benchmark: cost per step of sustainlab's from-scratch SGD/Adam against torch.optim, on a small MLP.

Not a test: prints a table and writes ``build/benchmarks/bench_optim.csv``. Every optimizer step is timed on the same model,
data and device; the ratio column is ours / torch.optim measured in the same run (torch.optim's default
``foreach`` implementation on CUDA batches all parameters into one kernel launch, so expect a gap there; on the CPU
both loop over parameters).

    .venv/bin/python benchmarks/bench_optim.py [--steps 300] [--hidden 256] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sustainlab import optim
from sustainlab.utils import pick_device, seed_everything, synchronize
from _results import RESULTS_DIR, write_csv  # noqa: E402  (sibling module: scripts run from this folder)

SETTINGS = {
    "SGD": (lambda p: optim.SGD(p, lr=0.01), lambda p: torch.optim.SGD(p, lr=0.01)),
    "SGD momentum+Nesterov": (
        lambda p: optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True),
    ),
    "Adam": (lambda p: optim.Adam(p, lr=1e-3), lambda p: torch.optim.Adam(p, lr=1e-3)),
    "AdamW": (
        lambda p: optim.Adam(p, lr=1e-3, weight_decay=0.01, decoupled_weight_decay=True),
        lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
    ),
}


def time_optimizer_step(make, steps: int, hidden: int, device) -> float:
    """Median seconds of one ``optimizer.step()`` (gradients fixed, so only the update is timed)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10),
    ).to(device)
    X, y = torch.randn(128, 64, device=device), torch.randint(0, 10, (128,), device=device)
    torch.nn.functional.cross_entropy(model(X), y).backward()
    opt = make(model.parameters())
    for _ in range(5):  # warm-up: state allocation, kernel caches
        opt.step()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        opt.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    seed_everything(0)
    device = pick_device(args.device)
    rows = []
    for name, (ours, reference) in SETTINGS.items():
        t_ours = time_optimizer_step(ours, args.steps, args.hidden, device)
        t_ref = time_optimizer_step(reference, args.steps, args.hidden, device)
        rows.append({"optimizer": name, "device": device.type, "hidden": args.hidden, "ours_us": 1e6 * t_ours,
                     "torch_us": 1e6 * t_ref, "ratio_ours_vs_torch": t_ours / t_ref})
    path = write_csv(rows, RESULTS_DIR / "bench_optim.csv")
    print(f"median time of one optimizer.step() on {device.type}, MLP 64-{args.hidden}-{args.hidden}-10")
    print(f"{'optimizer':<24}{'ours (µs)':>11}{'torch (µs)':>12}{'ours/torch':>12}")
    for r in rows:
        print(f"{r['optimizer']:<24}{r['ours_us']:>11.1f}{r['torch_us']:>12.1f}{r['ratio_ours_vs_torch']:>12.2f}")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
