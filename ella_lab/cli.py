"""The ``ella`` command: a thin shell over the library (parse, check, call, print, write files).

Every argument is checked by the parser, and the output folder before any work starts: an existing report is
never overwritten unless ``--overwrite`` is given. torch and the library are imported only once a command runs,
so ``ella --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ella import __version__
from ella.names import LINKS

from .eigen import DATASETS as EIGEN_DATA
from .eigen import KERNELS, SOLVERS

REPORT_FILES = ("report.json", "results.json", "eigenmap.json")
LAB_PACKAGES = (
    "matplotlib",
    "sklearn",
    "mnist1d",
    "networkx",
)  # what the lab needs beyond the library (the `lab` extra)


def _integer(minimum: int):
    """An argparse type: an integer of at least ``minimum``."""
    what = "a positive integer" if minimum == 1 else "a non-negative integer"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int, _seed = _integer(1), _integer(0)


def _out_folder(parser: argparse.ArgumentParser, args) -> Path:
    """The output folder, checked before the run: writable, and holding no report unless ``--overwrite``."""
    if not args.out.strip():
        parser.error("--out: expected a folder name, got an empty string")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out}: exists and is not a folder")
    existing = [name for name in REPORT_FILES if (out / name).exists()] if out.is_dir() else []
    existing += [p.name for p in out.glob("eigen_*.json")] if out.is_dir() else []
    if existing and not args.overwrite:
        parser.error(f"--out {out}: already holds {', '.join(existing)}; pass --overwrite to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".ella-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        parser.error(f"--out {out}: cannot write there ({e.strerror or e})")
    return out


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _demo(parser, args) -> int:
    from .demo import run_demo

    _out_folder(parser, args)
    _set_threads(args.threads)
    run_demo(out=args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress)
    return 0


def _eigen(parser, args) -> int:
    from .eigen.experiment import run_eigen_experiment

    if args.num_points is not None and args.k > args.num_points:
        parser.error(
            f"--k {args.k}: at most --num-points ({args.num_points}) eigenpairs can be found from "
            f"{args.num_points} points"
        )
    if args.num_train is not None and args.k > args.num_train:
        parser.error(
            f"--k {args.k}: at most --num-train ({args.num_train}) eigenpairs exist on {args.num_train} inputs"
        )
    _out_folder(parser, args)
    run_eigen_experiment(
        kernel=args.kernel,
        solver=args.solver,
        data=args.data,
        k=args.k,
        steps=args.steps,
        num_points=args.num_points,
        num_train=args.num_train,
        out=args.out,
        seed=args.seed,
        num_threads=args.threads,
        progress=not args.no_progress,
    )
    return 0


def _eigenmap(parser, args) -> int:
    from .eigenmap import run_graph_eigenmap

    if args.k > args.blocks:
        parser.error(f"--k {args.k}: at most --blocks ({args.blocks}) eigenfunctions stand apart in a block model")
    if args.nodes < 10 * args.blocks:
        parser.error(f"--nodes {args.nodes}: at least 10 per block ({10 * args.blocks} for --blocks {args.blocks})")
    out = _out_folder(parser, args)
    _set_threads(args.threads)
    seeds = list(range(args.seed, args.seed + args.repeats))
    result = run_graph_eigenmap(
        out, args.nodes, args.blocks, args.features, args.k, args.steps, seeds, progress=not args.no_progress
    )
    for method in ("embedding", "features_mlp"):
        figures = result["median"][method]
        print(
            f"{method}: min |cosine| {figures['min_cosine'][0]:.4f}, eigenvalue error "
            f"{100 * figures['eigenvalue_error'][0]:.2f}%, fit {figures['fit_seconds'][0]:.1f} s (medians)"
        )
    print(f"written to {out}/ (eigenmap.json, eigenmap.png)")
    return 0


def _compare(parser, args) -> int:
    from .compare import Settings, compare
    from .compare.methods import METHODS
    from .compare.problems import ALIASES, MODELS

    args.dataset = ALIASES.get(args.dataset, args.dataset)
    if args.dataset not in MODELS:
        parser.error(f"--dataset: expected one of {sorted([*MODELS, *ALIASES])}, got {args.dataset!r}")
    if args.model is not None and args.model not in MODELS[args.dataset]:
        parser.error(f"--model: for {args.dataset} expected one of {list(MODELS[args.dataset])}, got {args.model!r}")
    unknown = [m for m in args.methods or () if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; expected some of {list(METHODS)}")
    if args.data_root is not None and not Path(args.data_root).is_dir():
        parser.error(f"--data-root {args.data_root}: no such folder")
    _out_folder(parser, args)
    settings = Settings(link=args.link, laplace_prior=args.laplace_prior)
    results = compare(
        args.dataset,
        args.model,
        out=args.out,
        methods=args.methods,
        settings=settings,
        seed=args.seed,
        num_test=args.num_test,
        data_root=args.data_root,
        threads=args.threads,
        progress=not args.no_progress,
    )
    for key, reason in results["skipped"].items():
        print(f"skipped {key}: {reason}")
    if not results["models"]:
        print("ella compare: nothing was compared (every network or data set was skipped)", file=sys.stderr)
        return 1
    print(f"results written to {args.out}/ (results.json, results.md, figures)")
    return 0


def _common(sub: argparse.ArgumentParser, out: str, threads: int) -> None:
    sub.add_argument("--out", default=out, help=f"report folder (default: {out}/)")
    sub.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    sub.add_argument(
        "--seed", type=_seed, default=0, help="seed of the data, the MAP training and every method (default: 0)"
    )
    sub.add_argument(
        "--threads",
        type=_positive_int,
        default=threads,
        help=f"torch CPU threads for the whole run (default: {threads})",
    )
    sub.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ella", description="Calibrated uncertainty for trained networks.")
    parser.add_argument("--version", action="version", version=f"ella {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,compare,eigen,eigenmap}")

    demo = sub.add_parser(
        "demo",
        help="MNIST-1D end to end: MAP vs KFAC-LLA vs last-layer LLA vs ELLA",
        description="Train two MAP networks on MNIST-1D (generated locally), fit every method, "
        "print one table per network and write report.json, report.md and "
        "reliability diagrams.",
    )
    demo.add_argument("--quick", action="store_true", help="2,000 test points and shorter fits, for smoke tests")
    _common(demo, "ella-demo", 2)
    demo.set_defaults(run=_demo)

    cmp = sub.add_parser(
        "compare",
        help="every method on the same MAP network: quality, cost, fidelity, shift, OOD",
        description="Train the data set's MAP network and compare every method on it, with "
        "shifted and out-of-distribution test sets where the data set has them.",
    )
    cmp.add_argument(
        "--dataset",
        required=True,
        help="mnist1d, digits, toy, fashion-mnist (the Debian package "
        "dataset-fashion-mnist, or --data-root), or image files on disk (mnist, kmnist, cifar10; see "
        "--data-root)",
    )
    cmp.add_argument("--model", default=None, help="the network: cnn or mlp (default: the data set's first)")
    cmp.add_argument("--methods", nargs="+", default=None, help="method names (default: all available)")
    cmp.add_argument(
        "--link", default="margin", choices=LINKS, help="link of every Gaussian-predictive method (default: margin)"
    )
    cmp.add_argument(
        "--laplace-prior",
        default="gridsearch",
        choices=("gridsearch", "marglik"),
        help="prior precision of the laplace-torch KFAC, diagonal and last-layer baselines: validation "
        "NLL or the Laplace marginal likelihood (default: gridsearch)",
    )
    cmp.add_argument(
        "--num-test", type=_positive_int, default=10000, help="MNIST-1D / torchvision test points (default: 10000)"
    )
    cmp.add_argument(
        "--data-root",
        default=None,
        help="folder with the image data set's files: its idx files, or torchvision's layout (never downloaded)",
    )
    _common(cmp, "ella-compare", 1)
    cmp.set_defaults(run=_compare)

    eigen = sub.add_parser(
        "eigen",
        help="fit NeuralEF / SpIN / Nystrom eigenfunctions and check them against the exact answer (table + plots)",
    )
    eigen.add_argument(
        "--kernel",
        choices=KERNELS,
        default="rbf",
        help="the kernel (default: rbf, whose eigenfunctions are known in closed form)",
    )
    eigen.add_argument("--solver", choices=SOLVERS, default="neuralef", help="the eigen-solver (default: neuralef)")
    eigen.add_argument(
        "--data",
        choices=EIGEN_DATA,
        default=None,
        help="default: gaussian-1d for rbf (closed form), moons for polynomial, circles for nngp, mnist1d for ntk",
    )
    eigen.add_argument("--k", type=_positive_int, default=5, help="number of eigenpairs (default: 5)")
    eigen.add_argument(
        "--steps", type=_positive_int, default=3000, help="NeuralEF / SpIN training steps (default: 3000)"
    )
    eigen.add_argument(
        "--num-points", type=_positive_int, default=None, help="Nystrom's M (default: half the training inputs)"
    )
    eigen.add_argument("--num-train", type=_positive_int, default=None, help="training inputs (default per data set)")
    _common(eigen, "ella-eigen", 1)
    eigen.set_defaults(run=_eigen)

    eigenmap = sub.add_parser(
        "eigenmap",
        help="NeuralEF on a graph: a block model's spectral embedding against the exact eigenvectors (JSON + plot)",
        description="Generate a stochastic block model with node features, learn the top k eigenfunctions of its "
        "normalised adjacency with NeuralEF (an embedding of the node, and an MLP on its features), and compare "
        "them with the exact eigenvectors and, by a linear probe, with the blocks; writes eigenmap.json and "
        "eigenmap.png.",
    )
    eigenmap.add_argument("--nodes", type=_positive_int, default=1000, help="nodes of the graph (default: 1000)")
    eigenmap.add_argument("--blocks", type=_positive_int, default=8, help="blocks of the model (default: 8)")
    eigenmap.add_argument("--features", type=_positive_int, default=16, help="node feature dimensions (default: 16)")
    eigenmap.add_argument("--k", type=_positive_int, default=8, help="eigenfunctions, at most --blocks (default: 8)")
    eigenmap.add_argument("--steps", type=_positive_int, default=1500, help="NeuralEF steps (default: 1500)")
    eigenmap.add_argument("--repeats", type=_positive_int, default=3, help="seeds --seed, --seed + 1, ... (default: 3)")
    _common(eigenmap, "ella-eigenmap", 2)
    eigenmap.set_defaults(run=_eigenmap)
    return parser


def main(argv=None) -> int:
    """Run the ``ella`` command with ``argv`` (default: the process's arguments); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(parser, args) or 0
    except ModuleNotFoundError as e:  # the library is installed without the lab's packages
        package = (e.name or "").split(".")[0]
        if package not in LAB_PACKAGES:
            raise
        print(
            f"ella: `ella {args.command}` needs {package}, which is not installed: pip install 'ella[lab]'",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
