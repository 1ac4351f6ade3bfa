"""NeuralEF on graphs: a stochastic block model's spectral embedding against its exact eigenvectors and its classes.

The experiment of ``ella eigenmap`` (:mod:`ella_lab.eigenmap`) at the README's settings: a 1,000-node networkx block
model with 8 blocks and 16-dimensional noisy node features, the top 8 eigenfunctions of its normalised adjacency
learned on full batches by an embedding of the node and by an MLP on its features, against the exact eigenvectors and
a linear probe of the blocks; median [min, max] of 3 seeds. Writes ``graph_eigenmap.json`` and ``graph_eigenmap.png``.

    python benchmarks/graph_eigenmap.py [--nodes 1000] [--blocks 8] [--k 8] [--steps 1500] [--seeds 0 1 2]
"""

from __future__ import annotations

import json

from ella_lab.eigenmap import run_graph_eigenmap
from ella_lab.report import benchmark_parser, parse_benchmark


def main(argv=None) -> dict:
    parser = benchmark_parser(__doc__, threads=2)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parse_benchmark(parser, argv)
    result = run_graph_eigenmap(
        args.out, args.nodes, args.blocks, args.features, args.k, args.steps, args.seeds, False, "graph_eigenmap"
    )
    print(json.dumps(result["median"], indent=1))
    return result


if __name__ == "__main__":
    main()
