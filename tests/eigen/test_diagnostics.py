import json

import pytest
import torch

from ella.eigen import EigenComparison, EigenSolver, ExactEigen, RBFGaussianEigen, compare
from ella.eigen.diagnostics import reconstruction_error
from ella.kernels import RBF


class Perturbed(EigenSolver):
    """The exact eigenpairs with flipped signs, swapped functions and scaled eigenvalues: known errors."""

    kind = "perturbed"

    def __init__(self, exact, k, order, signs, scale):
        self.exact, self.k, self.order, self.signs = exact, k, order, torch.tensor(signs, dtype=torch.float64)
        self.eigenvalues_ = exact.eigenvalues[:k] * torch.tensor(scale, dtype=torch.float64)

    def fit(self, kernel, x):
        return self

    def state_dict(self):
        return {"kind": self.kind, "k": self.k}

    def load_state_dict(self, state, kernel):
        return self

    def __call__(self, x):
        return self.exact(x)[..., self.order] * self.signs


@pytest.fixture(scope="module")
def reference():
    return RBFGaussianEigen(6)


def test_exact_against_itself_is_perfect(reference):
    x_test = reference.sample(2000, seed=0)
    result = compare(reference, reference, x_test)
    assert isinstance(result, EigenComparison) and result.num_rows == 2000
    assert torch.all(result.eigenvalue_error == 0) and torch.allclose(result.cosine, torch.ones(6, dtype=torch.float64))
    assert result.orthogonality == result.orthogonality_exact < 0.2  # Monte Carlo over 2000 points
    assert result.reconstruction == result.reconstruction_exact


def test_signs_are_aligned_and_errors_are_exact(reference):
    x_test = reference.sample(500, seed=1)
    solver = Perturbed(reference, 3, [0, 2, 1], [-1.0, 1.0, -1.0], [1.1, 1.0, 0.5])
    result = compare(solver, reference, x_test)
    assert torch.allclose(result.eigenvalue_error, torch.tensor([0.1, 0.0, 0.5], dtype=torch.float64))
    assert abs(result.cosine[0] - 1) < 1e-12  # a flipped sign is not an error
    psi, ref = reference(x_test)[:, 0], solver(x_test)[:, 0]
    expected = (psi[:, 1] * ref[:, 1]).sum().abs() / (psi[:, 1].norm() * ref[:, 1].norm())
    assert torch.allclose(result.cosine[1], expected)  # swapped functions: their (small) overlap
    gram = reference.kernel_.gram(x_test)
    assert result.reconstruction == pytest.approx(reconstruction_error(gram, ref, solver.eigenvalues))
    manual = torch.linalg.matrix_norm(gram - (ref * solver.eigenvalues) @ ref.T) / torch.linalg.matrix_norm(gram)
    assert result.reconstruction == pytest.approx(manual.item())


def test_report_table_and_json(reference):
    result = compare(reference, reference, reference.sample(100))
    text = result.table("title")
    assert text.startswith("title") and "orthogonality" in text and "reconstruction" in text
    assert len(text.splitlines()) == 1 + 1 + 6 + 2
    assert json.loads(json.dumps(result.to_dict()))["cosine"][0] == pytest.approx(1.0)


def test_compare_with_an_exact_gram_decomposition():
    x = torch.randn(80, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = ExactEigen(4).fit(RBF(), x)
    result = compare(ExactEigen(3).fit(RBF(), x), exact, x)
    assert torch.allclose(result.cosine, torch.ones(3, dtype=torch.float64))
    assert result.orthogonality < 1e-10 and result.reconstruction > result.reconstruction_exact - 1e-12


def test_errors(reference):
    x = reference.sample(10)
    with pytest.raises(RuntimeError, match="fit"):
        compare(ExactEigen(3), reference, x)
    with pytest.raises(ValueError, match="k >= 7"):
        compare(Perturbed(RBFGaussianEigen(7), 7, list(range(7)), [1.0] * 7, [1.0] * 7), reference, x)
