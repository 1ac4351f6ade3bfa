"""The ``ella`` command: a thin shell over the library (parse, call, print, write files)."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> None:
    from .demo import run_demo

    run_demo(out=args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ella", description="Calibrated uncertainty for trained networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="MNIST-1D end to end: MAP vs KFAC-LLA vs last-layer LLA vs ELLA")
    demo.add_argument("--out", default="ella-demo", help="report folder (default: ella-demo/)")
    demo.add_argument("--quick", action="store_true", help="a smaller run for smoke tests (under 3 minutes)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the MAP training and of every method")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
