"""The ``ella`` command: a thin shell over the library (parse, call, print, write files)."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> None:
    from .experiments.demo import run_demo

    run_demo(out=args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress)


def _eigen(args) -> None:
    from .experiments.eigen.experiment import run_eigen_experiment

    run_eigen_experiment(kernel=args.kernel, solver=args.solver, data=args.data, k=args.k, steps=args.steps,
                         num_points=args.num_points, num_train=args.num_train, out=args.out, seed=args.seed,
                         num_threads=args.threads, progress=not args.no_progress)


def _add_eigen(sub) -> None:
    eigen = sub.add_parser("eigen", help="fit NeuralEF / SpIN / Nystrom eigenfunctions and check them against the "
                                         "exact answer (table + plots)")
    eigen.add_argument("--kernel", choices=("rbf", "polynomial", "nngp", "ntk"), default="rbf")
    eigen.add_argument("--solver", choices=("neuralef", "spin", "nystrom"), default="neuralef")
    eigen.add_argument("--data", choices=("gaussian-1d", "moons", "circles", "mnist1d"), default=None,
                       help="default: gaussian-1d for rbf (closed form), moons for polynomial, circles for nngp, "
                            "mnist1d for ntk")
    eigen.add_argument("--k", type=int, default=5, help="number of eigenpairs (default 5)")
    eigen.add_argument("--steps", type=int, default=3000, help="NeuralEF / SpIN training steps (default 3000)")
    eigen.add_argument("--num-points", type=int, default=None, help="Nystrom's M (default: half the training inputs)")
    eigen.add_argument("--num-train", type=int, default=None, help="training inputs (default per data set)")
    eigen.add_argument("--out", default="ella-eigen", help="folder for the plots and JSON (default: ella-eigen/)")
    eigen.add_argument("--seed", type=int, default=0, help="seed of the data, the kernel and the solver")
    eigen.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for these sizes)")
    eigen.add_argument("--no-progress", action="store_true", help="hide progress bars")
    eigen.set_defaults(run=_eigen)


def _compare(args) -> int:
    from .experiments.compare import Settings, compare

    settings = Settings(link=args.link, laplace_prior=args.laplace_prior)
    results = compare(args.dataset, args.model, out=args.out, methods=args.methods, settings=settings,
                      seed=args.seed, num_test=args.num_test, data_root=args.data_root, threads=args.threads,
                      progress=not args.no_progress)
    for key, reason in results["skipped"].items():
        print(f"skipped {key}: {reason}")
    if results["models"]:
        print(f"results written to {args.out}/ (results.json, results.md, figures)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ella", description="Calibrated uncertainty for trained networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="MNIST-1D end to end: MAP vs KFAC-LLA vs last-layer LLA vs ELLA")
    demo.add_argument("--out", default="ella-demo", help="report folder (default: ella-demo/)")
    demo.add_argument("--quick", action="store_true", help="a smaller run for smoke tests (under 3 minutes)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the MAP training and of every method")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(run=_demo)
    cmp = sub.add_parser("compare", help="every method on the same MAP network: quality, cost, fidelity, shift, OOD")
    cmp.add_argument("--dataset", required=True, help="mnist1d, digits, toy, or a torchvision data set on disk "
                     "(mnist, fashionmnist, kmnist, cifar10; see --data-root)")
    cmp.add_argument("--model", default=None, help="cnn or mlp (default: the data set's first network)")
    cmp.add_argument("--out", default="ella-compare", help="report folder (default: ella-compare/)")
    cmp.add_argument("--methods", nargs="+", default=None, help="method names (default: all available)")
    cmp.add_argument("--link", default="margin", choices=("margin", "probit", "mc"),
                     help="link of every Gaussian-predictive method (default: margin)")
    cmp.add_argument("--laplace-prior", default="gridsearch", choices=("gridsearch", "marglik"),
                     help="prior precision of the laplace-torch KFAC/diag/last-layer baselines")
    cmp.add_argument("--num-test", type=int, default=10000, help="MNIST-1D / torchvision test points")
    cmp.add_argument("--data-root", default=None, help="folder with torchvision data set files (never downloaded)")
    cmp.add_argument("--threads", type=int, default=1, help="torch CPU threads for the whole run (default: 1)")
    cmp.add_argument("--seed", type=int, default=0, help="seed of the MAP training and of every method")
    cmp.add_argument("--no-progress", action="store_true", help="hide progress bars")
    cmp.set_defaults(run=_compare)
    _add_eigen(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
