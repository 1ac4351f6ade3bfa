"""The graph experiment of ``ella eigenmap``: NeuralEF on a stochastic block model's normalised adjacency, against its
exact eigenvectors and its blocks.

A networkx stochastic block model (blocks of different sizes and cohesion, about 3 edges out of each node) with node
features (the block's random centre plus noise). The kernel is its normalised adjacency
(:class:`ella.kernels.GraphKernel`, indefinite); NeuralEF learns the top ``k`` eigenfunctions on full batches with
two networks: an embedding of the node's index (a free function of the node) and an MLP on the node's features. Per
seed and as the median [min, max] over the seeds: ``|cosine|`` of each learned eigenfunction with the exact
eigenvector (``torch.linalg.eigh``), the largest relative eigenvalue error, fit seconds, and the accuracy of a linear
probe of the blocks (logistic regression on half the nodes, scored on the other half) from the first ``d``
coordinates of the exact eigenvectors, of each learned code, and from the raw features.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from torch import nn  # noqa: E402

from ella.eigen import NeuralEF  # noqa: E402
from ella.eigen.nets import EigenfunctionNet, mlp_body  # noqa: E402
from ella.kernels import GraphKernel  # noqa: E402

from .compare.cost import timed  # noqa: E402

METHODS = ("embedding", "features_mlp")


def block_model(nodes: int, blocks: int, features: int, seed: int):
    """``(adjacency (N, N) float64, labels (N,), features (N, F))``: block sizes decreasing from twice the smallest,
    internal degrees from 30 down to 4 (so that the top eigenvalues are apart), 3 expected edges out of a node."""
    weights = np.linspace(2.0, 1.0, blocks)
    sizes = np.floor(nodes * weights / weights.sum()).astype(int)
    sizes[0] += nodes - sizes.sum()
    internal = np.geomspace(30.0, 4.0, blocks)
    q = 3.0 / nodes
    probs = [[min(internal[i] / sizes[i], 1.0) if i == j else q for j in range(blocks)] for i in range(blocks)]
    graph = nx.stochastic_block_model(sizes.tolist(), probs, seed=seed)
    adjacency = torch.tensor(nx.to_numpy_array(graph, nodelist=range(nodes)), dtype=torch.float64)
    labels = torch.tensor([graph.nodes[i]["block"] for i in range(nodes)])
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(blocks, features, generator=g, dtype=torch.float64)
    return adjacency, labels, centres[labels] + 1.5 * torch.randn(nodes, features, generator=g, dtype=torch.float64)


def probe(codes: torch.Tensor, labels: torch.Tensor, seed: int) -> float:
    """Test accuracy of a logistic regression of the labels on ``codes``, trained on a random half of the nodes."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    train, test = order[: len(order) // 2], order[len(order) // 2 :]
    z = ((codes - codes[train].mean(0)) / codes[train].std(0).clamp_min(1e-12)).numpy()
    model = LogisticRegression(max_iter=2000).fit(z[train], labels[train].numpy())
    return float(model.score(z[test], labels[test].numpy()))


def run_seed(nodes: int, blocks: int, num_features: int, k: int, steps: int, seed: int, progress: bool) -> dict:
    """One seed's row (see the module docstring)."""
    adjacency, labels, features = block_model(nodes, blocks, num_features, seed)
    degree = adjacency.sum(1)
    keep = degree > 0  # (a node without an edge has no place in the normalised adjacency)
    adjacency, labels, features = adjacency[keep][:, keep], labels[keep], features[keep]
    N = len(adjacency)
    d = adjacency.sum(1)
    evals, evecs = torch.linalg.eigh(adjacency / (d[:, None] * d[None, :]).sqrt())
    evals, evecs = evals.flip(0)[:k], evecs.flip(1)[:, :k]
    kernel, index = GraphKernel(adjacency.to_sparse()), torch.arange(N)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bodies = {
            "embedding": nn.Sequential(nn.Embedding(N, 64), nn.Tanh(), nn.Linear(64, k)).double(),
            "features_mlp": nn.Sequential(_Lookup(features), mlp_body(features.shape[1], k, width=128)).double(),
        }
    row = {"seed": seed, "nodes": N, "exact_eigenvalues": evals.tolist(), "probe": {}}
    dims = [d for d in (1, 2, 4, 8, 16, 32) if d <= k]
    row["probe"]["exact"] = {d: probe(evecs[:, :d], labels, seed) for d in dims}
    row["probe"]["raw_features"] = probe(features, labels, seed)
    for name, body in bodies.items():
        net = EigenfunctionNet(body, 1, k)
        solver = NeuralEF(k, net=net, steps=steps, batch_size=N, lr=1e-2, seed=seed, progress=progress)
        _, seconds = timed(solver.fit, kernel, index)
        psi = solver(index)[:, 0, :]
        cosine = (nn.functional.normalize(psi, dim=0) * evecs).sum(0).abs()
        row[name] = {
            "cosine": cosine.tolist(),
            "eigenvalue_error": float((solver.eigenvalues * N / evals - 1).abs().max()),
            "fit_seconds": seconds,
        }
        row["probe"][name] = {d: probe(psi[:, :d], labels, seed) for d in dims}
    return row


class _Lookup(nn.Module):
    """Node index -> the node's features (fixed)."""

    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.register_buffer("features", features)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.features[nodes]


def summary(values: list[float]) -> list[float]:
    return [statistics.median(values), min(values), max(values)]


def plot(rows: list[dict], methods, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    k = len(rows[0]["exact_eigenvalues"])
    for offset, name in zip((-0.2, 0.2), methods):
        cos = np.array([r[name]["cosine"] for r in rows])
        left.bar(np.arange(1, k + 1) + offset, np.median(cos, 0), width=0.4, label=name)
    left.set(xlabel="eigenfunction j", ylabel="|cosine| with the exact eigenvector", ylim=(0, 1.05))
    left.legend(loc="lower left")
    dims = list(rows[0]["probe"]["exact"])
    for name in ("exact", *methods):
        acc = np.array([[r["probe"][name][d] for d in dims] for r in rows])
        right.plot(dims, np.median(acc, 0), marker="o", label=name)
    right.axhline(
        statistics.median(r["probe"]["raw_features"] for r in rows), color="grey", ls="--", label="raw features"
    )
    right.set(xscale="log", xlabel="code length d", ylabel="linear-probe accuracy (blocks)")
    right.set_xticks(dims, [str(d) for d in dims])
    right.minorticks_off()
    right.legend(loc="lower right")
    fig.suptitle(
        f"NeuralEF on a {rows[0]['nodes']}-node block model's normalised adjacency (median of {len(rows)} seeds)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_graph_eigenmap(
    out,
    nodes: int = 1000,
    blocks: int = 8,
    features: int = 16,
    k: int = 8,
    steps: int = 1500,
    seeds=(0, 1, 2),
    progress: bool = True,
    name: str = "eigenmap",
) -> dict:
    """Run the graph experiment for every seed; write ``<name>.json`` (every run and the medians) and ``<name>.png``
    (the cosines per eigenfunction and the probe accuracy against the code length) into ``out``; return the result.

    Raises:
        ValueError: ``k`` above the number of blocks' top eigenvalues the experiment is built to separate.
    """
    if k > blocks:
        raise ValueError(f"`k` = {k} exceeds `blocks` = {blocks}: the block model's top eigenvalues past it crowd")
    rows = []
    for seed in seeds:
        rows.append(run_seed(nodes, blocks, features, k, steps, seed, progress))
        if progress:
            print(f"seed {seed}: min |cosine| " + ", ".join(f"{m} {min(rows[-1][m]['cosine']):.4f}" for m in METHODS))
    settings = dict(nodes=nodes, blocks=blocks, features=features, k=k, steps=steps, seeds=list(seeds))
    result = {"settings": settings, "runs": rows, "median": medians(rows)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, METHODS, out / f"{name}.png")
    return result


def medians(rows: list[dict]) -> dict:
    """The median [min, max] over the seeds of every figure of :func:`run_seed`."""
    return {
        method: {
            "min_cosine": summary([min(r[method]["cosine"]) for r in rows]),
            "eigenvalue_error": summary([r[method]["eigenvalue_error"] for r in rows]),
            "fit_seconds": summary([r[method]["fit_seconds"] for r in rows]),
            "probe": {d: summary([r["probe"][method][d] for r in rows]) for d in rows[0]["probe"][method]},
        }
        for method in METHODS
    } | {
        "exact": {"probe": {d: summary([r["probe"]["exact"][d] for r in rows]) for d in rows[0]["probe"]["exact"]}},
        "raw_features": {"probe": summary([r["probe"]["raw_features"] for r in rows])},
    }
