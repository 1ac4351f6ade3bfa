"""Fit time of ``ella_neuralef`` against laplace-torch's own ELLA (``laplace_torch_ella``) on the MNIST-1D CNN,
repeated: the benchmark table fits each once, and one fit of either swings by tens of percent on a shared machine.

Trains the CNN's MAP network once, then fits the two methods of the benchmark table (its settings) ``--repeats``
times, alternating, in one process with the same thread count, and writes the median seconds of each with the
spread and the median of the per-repeat ratios (``fit_speed.json``; ``benchmarks/run.py`` states it as a target).

    python benchmarks/fit_speed.py [--repeats 3] [--threads 1] [--out benchmarks/results]
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from ella_lab.compare.cost import timed
from ella_lab.compare.methods import Settings, build
from ella_lab.compare.problems import make_problem
from ella_lab.report import benchmark_parser, parse_benchmark

METHODS = ("ella_neuralef", "laplace_torch_ella")


def main(argv=None) -> dict:
    args = parse_benchmark(benchmark_parser(__doc__, threads=1, repeats=3), argv)
    problem = make_problem("mnist1d", "cnn", progress=False)
    train, val, _ = problem.loaders()
    seconds = {name: [] for name in METHODS}
    for repeat in range(args.repeats):
        for name in METHODS:
            method = build(name, problem, Settings())
            seconds[name].append(timed(method.fit, train, val)[1])
            print(f"repeat {repeat + 1}: {name} {seconds[name][-1]:.1f} s", flush=True)
    ratios = [b / a for a, b in zip(*seconds.values())]
    result = {
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "torch": torch.__version__,
        "seconds": {
            name: {"median": statistics.median(s), "min": min(s), "max": max(s), "all": s}
            for name, s in seconds.items()
        },
        "speedup": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fit_speed.json").write_text(json.dumps(result, indent=2))
    print(
        f"laplace_torch_ella / ella_neuralef fit time: {result['speedup']['median']:.1f}x "
        f"[{result['speedup']['min']:.1f}, {result['speedup']['max']:.1f}] over {args.repeats} repeats"
    )
    return result


if __name__ == "__main__":
    main()
