"""Must show: the top eigenpairs of the exact empirical NTK of a small trained MNIST-1D network.

NeuralEF against the exact eigendecomposition of the 3,000 x 3,000 Gram matrix (300 inputs x 10 classes,
dense Jacobians), checked on held-out inputs; Nystrom and SpIN (a quarter of the steps: each of its steps
costs several of NeuralEF's) on the same data, reported only. The solvers' wall-clock comparison is in
``benchmarks/eigen.py``.
"""

import pytest
import torch

from ella.eigen import EigenfunctionNet, ExactEigen, NeuralEF, Nystrom, SpIN, compare
from ella.eigen.nets import mlp_body
from ella.kernels import EmpiricalNTK
from ella_lab import models
from ella_lab.data import loaders, mnist1d
from ella_lab.train import train_map

K = 10
STEPS = 800  # full batches of all 3,000 rows
SPIN_STEPS = STEPS // 4


@pytest.fixture(scope="module")
def ntk_problem():
    data = mnist1d(num_train=1000, num_val=100, num_test=200)
    model = models.mlp(40, (16, 16), 10, seed=0)  # 1,098 weights: a spectrum with clear gaps
    train_loader, _, _ = loaders(data, batch_size=100, seed=0)
    train_map(model, train_loader, steps=1000, lr=3e-3, seed=0, progress=False, num_threads=1)
    kernel = EmpiricalNTK(model, "exact", progress=False)
    x, x_test = data.train.tensors[0][:300], data.test.tensors[0]
    exact = ExactEigen(K + 2).fit(kernel, x)  # float64 eigendecomposition of the 3,000 x 3,000 Gram matrix
    return kernel, x, x_test, exact


def eigenfunction_mlp(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EigenfunctionNet(mlp_body(40, 10 * K, width=256), 10, K)


@pytest.mark.slow
def test_neuralef_recovers_the_exact_ntk_eigenpairs(ntk_problem):
    kernel, x, x_test, exact = ntk_problem
    solver = NeuralEF(K, net=eigenfunction_mlp(), steps=STEPS, batch_size=len(x), lr=3e-3, seed=0, progress=False)
    solver.fit(kernel, x)
    result = compare(solver, exact, x_test)
    print("\n" + result.table("NeuralEF, exact NTK of an MNIST-1D MLP"))
    assert torch.all(result.eigenvalue_error < 0.05), result.table()
    assert torch.all(result.cosine[:5] > 0.9), result.table()

    nystrom = Nystrom(K, num_points=len(x), seed=0).fit(kernel, x)  # one class per input: 300 of 3,000 rows
    print(compare(nystrom, exact, x_test).table("Nystrom, M = 300 rows"))

    spin = SpIN(
        K, net=eigenfunction_mlp(), steps=SPIN_STEPS, batch_size=len(x), lr=3e-3, momentum=0.0, seed=0, progress=False
    ).fit(kernel, x)
    spin_result = compare(spin, exact, x_test)
    print(spin_result.table(f"SpIN, {SPIN_STEPS} steps"))
    assert torch.isfinite(spin_result.eigenvalue_error).all()
