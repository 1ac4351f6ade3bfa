"""Accuracy and cost of the empirical-NTK estimators on the MNIST-1D MAP CNN.

For the exact-Jacobian, JVP and finite-difference estimators (forward and central, several steps, float32
and float64) this prints and writes to JSON:

* the relative error of the finite-difference features against the exact JVP features (same directions),
* the relative Frobenius error of the kernel estimate against the exact Gram matrix ``J J^T``,
* seconds per estimate and the ratio to one MAP forward pass over the same inputs.

    python benchmarks/ntk_estimators.py [--points 200] [--samples 1000] [--out benchmarks/results]
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from ella.kernels import EmpiricalNTK
from ella_lab.compare.cost import timed
from ella_lab.data import mnist1d
from ella_lab.report import benchmark_parser, parse_benchmark
from ella_lab.train import train_mnist1d_cnn


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__, threads=torch.get_num_threads())
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--samples", type=int, default=1000)
    args = parse_benchmark(parser, argv)

    data = mnist1d(num_test=100)
    model32, _ = train_mnist1d_cnn(data, progress=False)
    x32 = data.train.tensors[0][: args.points]
    rows = []
    for dtype in (torch.float32, torch.float64):
        model = copy.deepcopy(model32).to(dtype)
        x = x32.to(dtype)
        with torch.no_grad():
            _, t_forward = timed(lambda: model(x))
        exact = EmpiricalNTK(model, "exact", progress=False)
        K, t_exact = timed(lambda: exact.gram(x))
        jvp = EmpiricalNTK(model, "jvp", num_samples=args.samples, progress=False)
        phi_jvp, t_jvp = timed(lambda: jvp.features(x))

        def k_err(phi):
            return ((phi.flatten(0, 1) @ phi.flatten(0, 1).T / args.samples - K).norm() / K.norm()).item()

        rows.append(dict(dtype=str(dtype), estimator="exact", seconds=t_exact, ratio_to_forward=t_exact / t_forward))
        rows.append(
            dict(
                dtype=str(dtype),
                estimator="jvp",
                samples=args.samples,
                kernel_error=k_err(phi_jvp),
                seconds=t_jvp,
                ratio_to_forward=t_jvp / t_forward,
            )
        )
        for central in (False, True):
            for eps in (1e-2, 1e-3, 1e-4, 1e-5, None):
                fd = EmpiricalNTK(model, "fd", num_samples=args.samples, central=central, eps=eps, progress=False)
                phi, t = timed(lambda: fd.features(x))
                rows.append(
                    dict(
                        dtype=str(dtype),
                        estimator="fd-central" if central else "fd-forward",
                        eps=fd.eps,
                        default_eps=eps is None,
                        samples=args.samples,
                        feature_error=((phi - phi_jvp).norm() / phi_jvp.norm()).item(),
                        kernel_error=k_err(phi),
                        seconds=t,
                        ratio_to_forward=t / t_forward,
                    )
                )
    print(f"MNIST-1D CNN, {args.points} inputs, S = {args.samples}, threads = {torch.get_num_threads()}")
    print(
        f"{'dtype':15s} {'estimator':11s} {'eps':>9s} {'feature err':>12s} {'kernel err':>11s} {'seconds':>8s} "
        f"{'x forward':>10s}"
    )
    for r in rows:
        eps = f"{r['eps']:.1e}" if "eps" in r else "-"
        fe = f"{r['feature_error']:.2e}" if "feature_error" in r else "-"
        ke = f"{r['kernel_error']:.3f}" if "kernel_error" in r else "-"
        print(
            f"{r['dtype']:15s} {r['estimator']:11s} {eps:>9s} {fe:>12s} {ke:>11s} {r['seconds']:8.2f} "
            f"{r['ratio_to_forward']:10.0f}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ntk_estimators.json").write_text(
        json.dumps(
            {"points": args.points, "samples": args.samples, "threads": torch.get_num_threads(), "rows": rows}, indent=2
        )
    )


if __name__ == "__main__":
    main()
