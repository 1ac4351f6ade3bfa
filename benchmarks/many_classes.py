"""Memory of ``ELLA(model)`` with many classes: peak resident memory of ``fit`` and ``predict`` against C.

A 4-16-C tanh MLP (17,080 weights at C = 1,000) on random inputs and labels, loader batches of 128, fitted with the
defaults (``ELLA(model).fit(train, val)``) and asked for 10,000 predictions, each in a fresh process: the peak
increase of its resident memory over the process before the call (``PeakMemory``: sampled every 2 ms, after the
free heap is handed back) is set beside the size of what the method must hold, the validation features ``Psi``
(``V x C x k``, float64) and the kernel's features at the kernel points (Nystrom's Jacobian rows ``M x P`` or
NeuralEF's NTK features ``M x C x S``), so anything that grows with ``C^2`` shows as a ratio that grows with C.
Median of ``--repeats`` runs with the spread.

    python benchmarks/many_classes.py [--classes 10 100 300 1000] [--train 500] [--val 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ella_lab.compare.cost import PeakMemory

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 500  # the fit's peak at C = 1,000


def _measure(classes: int, train: int, val: int, seed: int, threads: int, out) -> None:
    from ella import ELLA

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, classes)).eval()
    g = torch.Generator().manual_seed(seed)
    x, xv, xt = (torch.randn(n, 4, generator=g) for n in (train, val, 10_000))
    y, yv = torch.randint(0, classes, (train,), generator=g), torch.randint(0, classes, (val,), generator=g)
    loaders = (DataLoader(TensorDataset(x, y), batch_size=128), DataLoader(TensorDataset(xv, yv), batch_size=128))
    post = ELLA(model, progress=False)
    with PeakMemory() as fit:
        post.fit(*loaders)
    with PeakMemory() as predict:
        post.predict(xt)
    solver = post.solver_
    kernel_features = (
        post.num_kernel_points_ * post.kernel.num_params
        if solver.kind == "nystrom"
        else post.num_kernel_points_ * classes * post.kernel.num_samples
    )
    out.put(
        {
            "classes": classes,
            "num_params": sum(p.numel() for p in model.parameters()),
            "solver": solver.kind,
            "fit_mb": fit.peak / 2**20,
            "predict_mb": predict.peak / 2**20,
            "fit_seconds": post.fit_seconds_,
            "validation_features_mb": val * classes * post.k * 8 / 2**20,
            "kernel_features_mb": kernel_features * 4 / 2**20,
        }
    )


def measure(classes: int, args) -> dict:
    """One fit and prediction in a fresh process (its memory its own)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(classes, args.train, args.val, args.seed, args.threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 300, 1000])
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    rows = []
    for classes in args.classes:
        runs = [measure(classes, args) for _ in range(args.repeats)]
        row = {
            key: runs[0][key]
            for key in ("classes", "num_params", "solver", "validation_features_mb", "kernel_features_mb")
        }
        for key in ("fit_mb", "predict_mb", "fit_seconds"):
            values = [run[key] for run in runs]
            row[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        rows.append(row)
        print(
            f"C = {classes:5d} (P = {row['num_params']:,}, {row['solver']}): fit peak "
            f"{row['fit_mb']['median']:.0f} MB "
            f"[{row['fit_mb']['min']:.0f}, {row['fit_mb']['max']:.0f}], predict peak "
            f"{row['predict_mb']['median']:.0f} MB, validation features {row['validation_features_mb']:.0f} MB, "
            f"kernel features {row['kernel_features_mb']:.0f} MB, fit {row['fit_seconds']['median']:.1f} s",
            flush=True,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "many_classes.json").write_text(
        json.dumps(
            {"train": args.train, "val": args.val, "threads": args.threads, "target_mb": TARGET_MB, "rows": rows},
            indent=1,
        )
    )
    largest = max(rows, key=lambda r: r["classes"])
    if largest["classes"] >= 1000 and largest["fit_mb"]["median"] > TARGET_MB:
        print(f"fit peak {largest['fit_mb']['median']:.0f} MB at C = {largest['classes']} exceeds {TARGET_MB} MB")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
