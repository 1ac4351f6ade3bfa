"""The graph kernel: the normalised adjacency read from a sparse matrix, and NeuralEF recovering its top
eigenvectors (the spectral embedding) against the exact eigendecomposition."""

import pytest
import torch
from torch import nn

from ella.eigen import NeuralEF
from ella.eigen.nets import EigenfunctionNet
from ella.kernels import GraphKernel


def block_model(seed: int = 0):
    """A stochastic block model of 600 nodes whose blocks differ in size and cohesion (internal degree 30 down to
    4, about 3 edges out of each node): the top eigenvalues of its normalised adjacency are well apart."""
    sizes = [120, 100, 80, 70, 60, 50, 40, 30, 25, 25]
    internal = [30, 24, 19, 15, 12, 9.5, 7.5, 6, 5, 4]
    blocks = torch.cat([torch.full((s,), b) for b, s in enumerate(sizes)])
    p_in = torch.tensor([d / s for d, s in zip(internal, sizes)], dtype=torch.float64)[blocks]
    same = blocks[:, None] == blocks[None, :]
    probability = torch.where(same, p_in[:, None].expand(len(blocks), -1), torch.tensor(0.005, dtype=torch.float64))
    g = torch.Generator().manual_seed(seed)
    upper = (torch.rand(probability.shape, generator=g, dtype=torch.float64) < probability).double().triu(1)
    return upper + upper.T


def normalised(A: torch.Tensor) -> torch.Tensor:
    d = A.sum(1)
    return A / (d[:, None] * d[None, :]).sqrt()


def test_the_gram_blocks_are_the_normalised_adjacency_from_every_form_of_graph():
    A = block_model()
    K = normalised(A)
    i, j = torch.tensor([5, 0, 599, 17]), torch.tensor([3, 5, 17, 598, 0])
    edges = A.triu().nonzero().T  # each edge once
    for given in (A, A.to_sparse(), A.to_sparse_csr(), edges):
        kernel = GraphKernel(given, num_nodes=len(A)) if given is edges else GraphKernel(given)
        assert torch.allclose(kernel.gram(i, j), K[i][:, j], atol=1e-15)
        assert torch.allclose(kernel.gram(i), K[i][:, i], atol=1e-15)
    assert torch.allclose(GraphKernel(torch.cat([edges, edges.flip(0)], 1)).gram(i, j), K[i][:, j])  # both ways
    weighted = A * torch.rand(A.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    weighted = weighted.triu() + weighted.triu().T
    assert torch.allclose(GraphKernel(weighted.to_sparse()).gram(i, j), normalised(weighted)[i][:, j])


def test_bad_graphs_and_inputs_are_refused_with_the_reason():
    A = block_model()
    for bad, message in [
        (A[:, :-1], r"must be a square \(N, N\) matrix"),
        (A.triu(), "must be symmetric"),
        (-A, "non-negative"),
        (A * float("nan"), "finite"),
        (torch.zeros(3, 3), "node 0 has no edge"),
        ([[0, 1], [1, 0]], "must be a torch.Tensor"),
    ]:
        with pytest.raises((ValueError, TypeError), match=message):
            GraphKernel(bad)
    with pytest.raises(ValueError, match=r"edges name nodes outside \[0, 3\)"):
        GraphKernel(torch.tensor([[0, 1], [1, 5]]), num_nodes=3)
    kernel = GraphKernel(A.to_sparse())
    with pytest.raises(ValueError, match="inputs `x1` are node indices"):
        kernel.gram(torch.randn(4))
    with pytest.raises(ValueError, match=r"node indices outside \[0, 600\)"):
        kernel.gram(torch.tensor([1, 600]))


def test_neuralef_recovers_the_top_eigenvectors_of_the_indefinite_normalised_adjacency():
    A = block_model()
    N, k = len(A), 8
    evals, evecs = torch.linalg.eigh(normalised(A))
    evals, evecs = evals.flip(0), evecs.flip(1)
    assert evals[-1] < -0.1 and (evals[: k + 1].diff().abs() > 0.004).all()  # indefinite; the top k apart
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        body = nn.Sequential(nn.Embedding(N, 64), nn.Tanh(), nn.Linear(64, k)).double()  # a function of the node
    solver = NeuralEF(k, net=EigenfunctionNet(body, 1, k), steps=1500, batch_size=N, lr=1e-2, progress=False)
    nodes = torch.arange(N)
    solver.fit(GraphKernel(A.to_sparse()), nodes)
    psi = solver(nodes)[:, 0, :]
    cosine = (nn.functional.normalize(psi, dim=0) * evecs[:, :k]).sum(0).abs()
    assert (cosine >= 0.95).all(), cosine
    # operator eigenvalues on the uniform measure over the nodes: the Gram matrix's over N, in order
    assert torch.allclose(solver.eigenvalues * N, evals[:k], rtol=0.02)
    # and the fitted solver round-trips through its state like every solver
    again = NeuralEF(k, net=EigenfunctionNet(body, 1, k), progress=False)
    again.load_state_dict(solver.state_dict(), GraphKernel(A.to_sparse()))
    assert torch.equal(again(nodes), solver(nodes)) and torch.equal(again.eigenvalues, solver.eigenvalues)
