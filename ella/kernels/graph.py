"""A graph as a kernel on its nodes: the normalised adjacency ``D^{-1/2} A D^{-1/2}`` as the Gram matrix.

The inputs are node indices (a long tensor ``(B,)``), so an eigenfunction network maps a node to its ``k``
coordinates (through the node's features, an embedding of its index, ...). The Gram block of nodes ``i`` and ``j``
is ``A_ij / sqrt(d_i d_j)`` with ``d`` the (weighted) degrees, read from a sparse adjacency: the ``N x N`` matrix is
never formed. Its eigenvectors are those of the graph's normalised Laplacian ``I - D^{-1/2} A D^{-1/2}`` (the
top eigenvalues of the kernel are its smallest), whose leading ones are the graph's spectral embedding.

The kernel is not positive semi-definite in general (its eigenvalues lie in ``[-1, 1]``); NeuralEF's objective still
recovers its top ``k`` eigenfunctions when at least ``k - 1`` of its eigenvalues are positive (Deng, Shi et al.,
"Neural Eigenfunctions Are Structured Representation Learners"), and its Rayleigh quotients are the eigenvalues
of the operator ``K / N`` on the uniform measure over the nodes.
"""

from __future__ import annotations

import torch

from .base import Kernel


class GraphKernel(Kernel):
    """``kappa(i, j) = A_ij / sqrt(d_i d_j)`` on the nodes of a graph with adjacency ``A``.

    Args:
        adjacency: ``(N, N)``, dense or sparse (COO or CSR), symmetric, non-negative, with every node of positive
            degree; weights allowed. Or an ``(2, E)`` long tensor of edges ``(i, j)``, each given once or in both
            directions (made symmetric, unit weights), with ``num_nodes``.
        num_nodes: N, where ``adjacency`` is an edge list (default: the largest index plus one).

    Raises:
        ValueError: an adjacency that is not square, symmetric, finite and non-negative, a node without an edge,
            or edges outside ``[0, num_nodes)``.
    """

    num_outputs = 1
    row_name = "graph"
    positive_semidefinite = False

    def __init__(self, adjacency: torch.Tensor, num_nodes: int | None = None):
        matrix = _adjacency(adjacency, num_nodes).coalesce()
        degree = torch.sparse.sum(matrix, dim=1).to_dense()
        if (degree <= 0).any():
            lonely = int((degree <= 0).nonzero()[0])
            raise ValueError(f"`adjacency`: node {lonely} has no edge (degree 0): the normalised adjacency needs d > 0")
        i, j = matrix.indices()
        scale = degree.rsqrt()
        values = matrix.values() * scale[i] * scale[j]  # A_ij / sqrt(d_i d_j)
        self.num_nodes = matrix.shape[0]
        self.normalised = torch.sparse_coo_tensor(
            matrix.indices(), values, matrix.shape, check_invariants=True
        ).coalesce()

    def _nodes(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 1 or x.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"the graph kernel's inputs `{name}` are node indices, a long tensor (B,), got {x!r:.60}")
        if len(x) and (x.min() < 0 or x.max() >= self.num_nodes):
            raise ValueError(f"`{name}` holds node indices outside [0, {self.num_nodes})")
        return x.long().cpu()

    def gram(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        """The block ``(B1, B2)`` of the normalised adjacency at the nodes ``x1`` and ``x2``."""
        rows = self._nodes(x1, "x1")
        cols = rows if x2 is None else self._nodes(x2, "x2")
        # the rows, then the columns, of the sparse matrix: only the block is ever dense
        block = self.normalised.index_select(0, rows).index_select(1, cols)
        return block.to_dense().to(x1.device)

    def infer_num_outputs(self, x: torch.Tensor) -> int:
        return 1

    def check(self, x: torch.Tensor) -> None:
        self._nodes(x, "x")


def _adjacency(adjacency, num_nodes: int | None) -> torch.Tensor:
    """``adjacency`` as a float64 sparse COO ``(N, N)`` matrix, checked."""
    if not isinstance(adjacency, torch.Tensor):
        raise TypeError(
            f"`adjacency` must be a torch.Tensor (N, N) or an edge list (2, E), got {type(adjacency).__name__}"
        )
    if adjacency.ndim == 2 and adjacency.shape[0] == 2 and not adjacency.dtype.is_floating_point:  # an edge list
        edges = adjacency.long()
        n = int(edges.max()) + 1 if num_nodes is None else num_nodes
        if edges.numel() and (edges.min() < 0 or edges.max() >= n):
            raise ValueError(f"`adjacency`: edges name nodes outside [0, {n})")
        both = torch.cat([edges, edges.flip(0)], dim=1)
        ones = torch.ones(both.shape[1], dtype=torch.float64)
        matrix = torch.sparse_coo_tensor(both, ones, (n, n), check_invariants=True).coalesce()
        return torch.sparse_coo_tensor(matrix.indices(), matrix.values().clamp(max=1.0), (n, n), check_invariants=True)
    if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
        raise ValueError(
            f"`adjacency` must be a square (N, N) matrix or an edge list (2, E), got {tuple(adjacency.shape)}"
        )
    sparse = adjacency.to_sparse_coo() if adjacency.layout != torch.strided else adjacency.to_sparse()
    matrix = sparse.double().coalesce()
    if not torch.isfinite(matrix.values()).all() or (matrix.values() < 0).any():
        raise ValueError("`adjacency` must hold finite, non-negative weights")
    transposed = matrix.transpose(0, 1).coalesce()
    if not torch.equal(matrix.indices(), transposed.indices()) or not torch.allclose(
        matrix.values(), transposed.values()
    ):
        raise ValueError("`adjacency` must be symmetric (an undirected graph)")
    return matrix
