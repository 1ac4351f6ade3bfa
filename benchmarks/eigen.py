"""NeuralEF vs SpIN vs Nystrom against exact eigenpairs: accuracy, fit time and test-time cost.

Two problems with known answers:

* ``rbf``: RBF(l = 1) under N(0, 1), k = 5, checked against the closed form (GPML 4.3.1); training inputs
  are M quantile points of the density (M = 500 and 1000), held-out inputs 1,000 random draws.
* ``ntk``: the exact empirical NTK of an MNIST-1D MLP (40-16-16-10, trained), k = 10, checked against the
  eigendecomposition of the 3,000 x 3,000 Gram matrix on 300 inputs x 10 classes, on 200 held-out inputs.

For every solver this prints and writes to JSON: relative eigenvalue error, cosine with the exact
eigenfunctions on held-out inputs, orthogonality ||Psi^T Psi / n - I||_F, rank-k reconstruction error,
fit seconds and seconds to evaluate psi per 1,000 test points. SpIN gets the same wall-clock budget as
NeuralEF on the same problem. Nystrom's test cost grows with M for a Gram-based kernel (kappa(x, X_M));
NeuralEF's is one network forward whatever M was (two M values each). One CPU thread.

    python benchmarks/eigen.py [--problems rbf ntk] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ella.eigen import ExactEigen, NeuralEF, Nystrom, RBFGaussianEigen, SpIN, compare
from ella.eigen.nets import mlp_body
from ella.kernels import EmpiricalNTK
from ella_lab import models
from ella_lab.data import loaders, mnist1d
from ella_lab.eigen.experiment import eval_seconds_per_1000, seeded_net, time_fit
from ella_lab.eigen.problems import gaussian_quantiles
from ella_lab.train import train_map


def row(problem: str, name: str, M: int, solver, exact, kernel, x, x_test, seconds: float, **extra) -> dict:
    result = compare(solver, exact, x_test, kernel)
    out = {
        "problem": problem,
        "solver": name,
        "M": M,
        "fit_seconds": seconds,
        "test_seconds_per_1000": eval_seconds_per_1000(solver, x_test),
        **extra,
        **result.to_dict(),
    }
    print(result.table(f"{problem} / {name} / M = {M} ({seconds:.1f} s)"))
    return out


def rbf_problem(steps: int) -> list[dict]:
    exact = RBFGaussianEigen(5)
    kernel, x_test, rows = exact.kernel, exact.sample(1000, seed=1).float(), []
    for M in (500, 1000):
        x = gaussian_quantiles(M).float()
        nef = NeuralEF(
            5, net=seeded_net(1, 1, 5, 64), steps=steps, batch_size=M, lr=1e-2, balanced=True, progress=False
        )
        t_nef = time_fit(nef, kernel, x)
        rows.append(row("rbf", "neuralef", M, nef, exact, kernel, x, x_test, t_nef, steps=steps))
        spin = SpIN(
            5,
            net=mlp_body(1, 5, width=64),
            steps=10**6,
            batch_size=M,
            lr=1e-2,
            momentum=0.0,
            max_seconds=t_nef,
            progress=False,
        )
        t = time_fit(spin, kernel, x)
        rows.append(row("rbf", "spin", M, spin, exact, kernel, x, x_test, t, steps=spin.steps_done))
        nys = Nystrom(5, num_points=M, seed=0)
        t = time_fit(nys, kernel, gaussian_quantiles(1000).float())  # M of the 1,000 quantile points
        rows.append(row("rbf", "nystrom", M, nys, exact, kernel, x, x_test, t))
    return rows


def ntk_problem(steps: int) -> list[dict]:
    data = mnist1d(num_train=1000, num_val=100, num_test=200)
    model = models.mlp(40, (16, 16), 10, seed=0)
    train_map(model, loaders(data, batch_size=100, seed=0)[0], steps=1000, lr=3e-3, progress=False, num_threads=1)
    kernel = EmpiricalNTK(model, "exact", progress=False)
    x, x_test = data.train.tensors[0][:300], data.test.tensors[0]
    start = time.perf_counter()
    exact = ExactEigen(12).fit(kernel, x)
    rows = [{"problem": "ntk", "solver": "exact (3,000 x 3,000 eigh)", "fit_seconds": time.perf_counter() - start}]
    nef = NeuralEF(10, net=seeded_net(40, 10, 10, 256), steps=steps, batch_size=300, lr=3e-3, progress=False)
    t_nef = time_fit(nef, kernel, x)
    rows.append(row("ntk", "neuralef", 300, nef, exact, kernel, x, x_test, t_nef, steps=steps))
    spin = SpIN(
        10,
        net=mlp_body(40, 100, width=256),
        steps=10**6,
        batch_size=300,
        lr=3e-3,
        momentum=0.0,
        max_seconds=t_nef,
        progress=False,
    )
    t = time_fit(spin, kernel, x)
    rows.append(row("ntk", "spin", 300, spin, exact, kernel, x, x_test, t, steps=spin.steps_done))
    for M in (100, 300):  # one class per input: M of the 3,000 rows; psi by k JVPs whatever M
        nys = Nystrom(10, num_points=M, seed=0)
        t = time_fit(nys, kernel, x)
        rows.append(row("ntk", "nystrom", M, nys, exact, kernel, x, x_test, t))
    return rows


def summary(rows: list[dict]) -> None:
    print(
        f"\n{'problem':8} {'solver':9} {'M':>5} {'max eig err':>11} {'min cos(top5)':>13} {'orth':>7} "
        f"{'recon':>7} {'fit s':>7} {'test s/1k':>10}"
    )
    for r in rows:
        if "cosine" not in r:
            continue
        print(
            f"{r['problem']:8} {r['solver']:9} {r['M']:>5} {max(r['eigenvalue_error']):>11.2%} "
            f"{min(r['cosine'][:5]):>13.4f} {r['orthogonality']:>7.3f} {r['reconstruction']:>7.4f} "
            f"{r['fit_seconds']:>7.1f} {r['test_seconds_per_1000']:>10.5f}"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", choices=("rbf", "ntk"), default=["rbf", "ntk"])
    parser.add_argument("--rbf-steps", type=int, default=3000)
    parser.add_argument("--ntk-steps", type=int, default=800)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    if "rbf" in args.problems:
        rows += rbf_problem(args.rbf_steps)
    if "ntk" in args.problems:
        rows += ntk_problem(args.ntk_steps)
    summary(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"threads": 1, "torch": torch.__version__, "note": "wall-clock on a shared 2-core machine"}
    (out / "eigen.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out / 'eigen.json'}")


if __name__ == "__main__":
    main()
