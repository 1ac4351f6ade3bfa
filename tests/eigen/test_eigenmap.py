"""Neural Eigenmap: NeuralEF on the augmentation kernel, against the exact eigenfunctions of a discrete augmentation
(a finite input space, where p(x, x') is a matrix)."""

import pytest
import torch
from torch import nn

from ella.eigen import NeuralEigenmap

n, k = 12, 4


def discrete_augmentation():
    """``p(x | xbar)`` on 12 states (a random stochastic matrix with a heavy diagonal), clean inputs uniform; the
    exact eigenpairs of ``(T f)(x) = E_{p(x' | x)}[f(x')]``: ``S = diag(p)^-1/2 P diag(p)^-1/2`` with
    ``P = M^T diag(p_d) M`` the views' joint, ``f = u / sqrt(p)`` (unit second moment under ``p``)."""
    g = torch.Generator().manual_seed(3)
    M = torch.rand(n, n, generator=g, dtype=torch.float64) ** 4
    M = M + 3 * torch.diag(torch.rand(n, generator=g, dtype=torch.float64))
    M = M / M.sum(1, keepdim=True)
    P = M.T @ M / n
    p = P.sum(1)
    evals, U = torch.linalg.eigh(P / (p[:, None] * p[None, :]).sqrt())
    return M, p, evals.flip(0), U.flip(1) / p.sqrt()[:, None]


def encoder():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Embedding(n, 32), nn.Tanh(), nn.Linear(32, k)).double()  # a function of the state


def fitted(M, steps=1500):
    augment = lambda xbar: torch.multinomial(M[xbar], 1).squeeze(1)  # noqa: E731 - one view per clean input
    eigenmap = NeuralEigenmap(encoder(), k, augment, steps=steps, batch_size=512, lr=1e-2, progress=False)
    return eigenmap.fit(torch.arange(n).repeat(200))


def test_the_codes_are_the_augmentation_kernels_eigenfunctions_in_order():
    M, p, evals, F = discrete_augmentation()
    assert (evals[:k].diff() < -0.04).all()  # the top k apart
    eigenmap = fitted(M)
    psi = eigenmap(torch.arange(n))
    # the cosine in L2(p) of each code coordinate with its exact eigenfunction
    inner = (p[:, None] * psi * F[:, :k]).sum(0)
    cosine = inner.abs() / ((p[:, None] * psi**2).sum(0) * (p[:, None] * F[:, :k] ** 2).sum(0)).sqrt()
    assert (cosine >= 0.99).all(), cosine
    # the eigenvalues from 2^15 view pairs: within a few standard errors (about 0.006) of the exact ones
    assert torch.allclose(eigenmap.eigenvalues_, evals[:k], atol=0.02), (eigenmap.eigenvalues_, evals[:k])
    assert torch.equal(eigenmap(torch.arange(n), dim=2), psi[:, :2])  # a shorter code is a prefix


def test_a_fit_is_reproducible_and_round_trips_through_its_state():
    M, *_ = discrete_augmentation()
    one, two = fitted(M, steps=50), fitted(M, steps=50)  # the augmentations are seeded from `seed`
    x = torch.arange(n)
    assert torch.equal(one(x), two(x)) and torch.equal(one.eigenvalues_, two.eigenvalues_)
    back = NeuralEigenmap(encoder(), k, lambda xbar: xbar, progress=False).load_state_dict(one.state_dict())
    assert torch.equal(back(x), one(x)) and torch.equal(back.eigenvalues_, one.eigenvalues_)


def test_bad_arguments_are_refused():  # (the kernel's own: tests/kernels/test_augmentation.py)
    with pytest.raises(TypeError, match="`encoder` must be an nn.Module"):
        NeuralEigenmap(lambda x: x, k, lambda x: x)
    eigenmap = NeuralEigenmap(encoder(), k, lambda x: x, progress=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        eigenmap(torch.arange(3))
    M, *_ = discrete_augmentation()
    with pytest.raises(ValueError, match="`dim` = 5 exceeds the code length k = 4"):
        fitted(M, steps=5)(torch.arange(3), dim=5)
