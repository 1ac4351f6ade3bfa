"""The Rayleigh-quotient math of the learned solvers, against its definitions."""

import torch

from ella.eigen.rayleigh import paired_quotients, rayleigh_quotients


def test_full_batch_quotients_are_psi_k_psi_over_the_rows_squared():
    g = torch.Generator().manual_seed(0)
    N, C, k = 7, 2, 3
    psi = torch.randn(N, C, k, generator=g, dtype=torch.float64)
    L = torch.randn(N * C, N * C, generator=g, dtype=torch.float64)
    K = L @ L.T
    flat = psi.reshape(N * C, k)
    blocks = K.reshape(N, C, N, C).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
    diag = flat.T @ (blocks @ psi).reshape(N * C, k)
    assert torch.allclose(rayleigh_quotients(flat.T @ K @ flat, diag, N, C, N), flat.T @ K @ flat / (N * C) ** 2)


def test_paired_quotients_are_the_symmetrised_products_of_the_views():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(6, 1, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 1, 3, generator=g, dtype=torch.float64, requires_grad=True)
    R, R_sg = paired_quotients(a, b)
    expected = torch.einsum("bi,bj->ij", a[:, 0], b[:, 0]) / 6
    assert torch.allclose(R, (expected + expected.T) / 2) and torch.allclose(R_sg, R)
    # sg(psi_i) on the left: R_sg[i, j] carries no gradient through coordinate i of either view
    R_sg[0, 1].backward()
    assert a.grad[:, 0, 0].abs().sum() == 0 and b.grad[:, 0, 0].abs().sum() == 0
    assert a.grad[:, 0, 1].abs().sum() > 0 and b.grad[:, 0, 1].abs().sum() > 0
