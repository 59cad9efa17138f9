"""Benchmark sustainlab's DP-SGD step (torch.func per-sample gradients + DPSGD) against Opacus's (hooks + DPOptimizer).

Usage::

    python benchmarks/bench_privacy.py                         # MLPs of 64 and 512 hidden units, batches 64 and 256
    python benchmarks/bench_privacy.py --hidden 128 --batch 128 --steps 50 --repeats 7

For every (hidden, batch) both implementations run ``--steps`` DP-SGD steps per run, ``--repeats`` runs each,
interleaved round-robin with :func:`sustainlab.evidence.compare_interleaved`, so the time ratio sustainlab / Opacus
is a paired ratio from the same rounds (< 1: sustainlab is faster) with a computed verdict. Peak memory is the
largest resident-set growth over one run (CPU, polled like ``sustainlab run-all`` does) or
``torch.cuda.max_memory_allocated`` on a GPU. Before timing, one noise-free step of each must give the same weights,
so a fast wrong answer cannot win. Writes ``build/benchmarks/bench_privacy.csv``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")  # Opacus's secure-RNG and backward-hook notices

from opacus import GradSampleModule  # noqa: E402
from opacus.optimizers import DPOptimizer  # noqa: E402

from sustainlab import privacy as sp  # noqa: E402
from sustainlab.evidence import compare_interleaved  # noqa: E402
from sustainlab.optim import make_mlp  # noqa: E402
from sustainlab.runner import _PeakMemory  # noqa: E402
from sustainlab.utils import pick_device, synchronize  # noqa: E402
from _results import RESULTS_DIR, write_csv  # noqa: E402  (sibling module: scripts run from this folder)

SIGMA, C, LR = 1.0, 1.0, 0.1


def ours(model, batches, noise: float = SIGMA):
    opt = sp.DPSGD(model.parameters(), lr=LR, noise_multiplier=noise, max_grad_norm=C,
                   expected_batch_size=len(batches[0][0]), generator=None)

    def run():
        for xb, yb in batches:
            for name, g in sp.per_sample_gradients(model, xb, yb).items():
                model.get_parameter(name).grad_sample = g
            opt.step()
            opt.zero_grad()
        synchronize(xb.device)
    return run


def theirs(model, batches, noise: float = SIGMA):
    gsm = GradSampleModule(model, loss_reduction="mean")
    opt = DPOptimizer(torch.optim.SGD(gsm.parameters(), lr=LR), noise_multiplier=noise, max_grad_norm=C,
                      expected_batch_size=len(batches[0][0]), loss_reduction="mean")

    def run():
        for xb, yb in batches:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(gsm(xb), yb).backward()
            opt.step()
        synchronize(xb.device)
    return run


def _same_noise_free_step(hidden: int, batch, device) -> bool:
    a, b = make_mlp((hidden,), random_state=0).to(device), make_mlp((hidden,), random_state=0).to(device)
    ours(a, [batch], noise=0.0)()
    theirs(b, [batch], noise=0.0)()
    return all(torch.allclose(p, q, rtol=1e-4, atol=1e-6) for p, q in zip(a.parameters(), b.parameters()))


def _peak_mb(run, device) -> float:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        run()
        return (torch.cuda.max_memory_allocated() - start) / 2**20
    import psutil

    before = psutil.Process().memory_info().rss
    with _PeakMemory(os.getpid, interval_s=0.005) as peak:
        run()
    return max(peak.peak_bytes - before, 0) / 2**20


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "bench_privacy.csv")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for hidden in args.hidden:
        for batch in args.batch:
            g = torch.Generator().manual_seed(0)
            batches = [(torch.randn(batch, 64, generator=g).to(device), torch.randint(0, 10, (batch,), generator=g)
                        .to(device)) for _ in range(args.steps)]
            if not _same_noise_free_step(hidden, batches[0], device):
                raise AssertionError(f"sustainlab and Opacus disagree on a noise-free step (hidden={hidden}, "
                                     f"batch={batch})")
            model = make_mlp((hidden,), random_state=0).to(device)
            configs = {"opacus": theirs(copy.deepcopy(model), batches), "sustainlab": ours(copy.deepcopy(model),
                                                                                          batches)}
            comparison = compare_interleaved(configs, repeats=args.repeats, reference="opacus", energy=False)
            peaks = {name: _peak_mb(run, device) for name, run in configs.items()}
            ratio = comparison.ratio_spread("sustainlab")
            rows.append({"device": device.type, "hidden": hidden, "batch": batch, "steps": args.steps,
                         "opacus_ms_per_step": comparison.spread("opacus").median / args.steps * 1e3,
                         "sustainlab_ms_per_step": comparison.spread("sustainlab").median / args.steps * 1e3,
                         "ratio_median": ratio.median, "ratio_min": ratio.low, "ratio_max": ratio.high,
                         "verdict": comparison.verdict("sustainlab"),
                         "opacus_peak_mb": peaks["opacus"], "sustainlab_peak_mb": peaks["sustainlab"]})

    write_csv(rows, args.out)
    print(f"{'device':<7}{'hidden':>7}{'batch':>7}{'opacus ms':>11}{'ours ms':>9}{'ours/opacus':>22}"
          f"{'opacus MB':>11}{'ours MB':>9}  verdict")
    for r in rows:
        spread = f"{r['ratio_median']:.2f} ({r['ratio_min']:.2f}–{r['ratio_max']:.2f})"
        print(f"{r['device']:<7}{r['hidden']:>7}{r['batch']:>7}{r['opacus_ms_per_step']:>11.2f}"
              f"{r['sustainlab_ms_per_step']:>9.2f}{spread:>22}{r['opacus_peak_mb']:>11.1f}"
              f"{r['sustainlab_peak_mb']:>9.1f}  {r['verdict']}")
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
