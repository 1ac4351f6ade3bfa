import pytest
import torch

from ella.eigen import NeuralEF, neuralef_loss
from ella.eigen.nets import FeatureHead, L2BatchNorm, eigenfunction_net
from ella.kernels import EmpiricalNTK

from tests.conftest import tiny_mlp


def exact_eigenpairs(K, k):
    """Operator eigenpairs of a Gram matrix over n rows: mu = eig / n, psi scaled to unit mean square."""
    n = K.shape[0]
    evals, evecs = torch.linalg.eigh(K)
    return evals.flip(0)[:k] / n, evecs.flip(1)[:, :k] * n**0.5


def cosines(psi, exact):
    """|cos| between learned and exact eigenfunctions over the rows (sign-free)."""
    psi = psi.reshape(-1, psi.shape[-1])
    return ((psi * exact).sum(0) / (psi.norm(dim=0) * exact.norm(dim=0))).abs()


@pytest.fixture(scope="module")
def problem():
    model = tiny_mlp(in_features=3, hidden=16, out_features=2, seed=0)
    x = torch.randn(128, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kernel = EmpiricalNTK(model, "exact", progress=False)
    return model, x, kernel, kernel.gram(x)


def test_full_batch_objective_is_the_exact_rayleigh_quotient(problem):
    _, x, kernel, K = problem
    psi = torch.randn(len(x), 2, 3, dtype=torch.float64)
    psi = psi / psi.pow(2).mean(dim=(0, 1)).sqrt()
    n = K.shape[0]
    R = psi.reshape(n, 3).T @ K @ psi.reshape(n, 3) / n**2
    for kwargs in ({"phi": kernel.features(x)}, {"gram": K}):
        loss, eig = neuralef_loss(psi, num_data=len(x), **kwargs)
        assert torch.allclose(eig, R.diagonal(), rtol=1e-10)
        expected = -(R.diagonal().sum() - (torch.triu(R, 1) ** 2 / R.diagonal()[:, None]).sum())
        assert torch.allclose(loss, expected, rtol=1e-10)


def test_minibatch_rayleigh_quotients_are_unbiased_for_the_training_operator(problem):
    _, x, kernel, K = problem
    mu, vecs = exact_eigenpairs(K, 3)
    psi = vecs.reshape(len(x), 2, 3)  # exact eigenfunctions: their Rayleigh quotients are mu
    phi = kernel.features(x)
    g = torch.Generator().manual_seed(0)
    batches = [idx for _ in range(100) for idx in torch.randperm(len(x), generator=g).split(16)]
    corrected = torch.stack([neuralef_loss(psi[i], phi=phi[i], num_data=len(x))[1] for i in batches]).mean(0)
    assert torch.allclose(corrected, mu, rtol=0.03), corrected / mu
    # the plain batch V-statistic Psi^T K_b Psi / (B C)^2 over-weights the diagonal blocks
    naive = torch.stack(
        [
            (phi[i].reshape(-1, phi.shape[-1]).T @ psi[i].reshape(-1, 3)).pow(2).sum(0)
            / phi.shape[-1]
            / (len(i) * 2) ** 2
            for i in batches
        ]
    ).mean(0)
    assert (naive / mu - 1).max() > 0.05


def test_neuralef_recovers_ordered_ntk_eigenpairs(problem):
    _, x, kernel, K = problem
    mu, vecs = exact_eigenpairs(K, 4)
    solver = NeuralEF(4, steps=1500, batch_size=64, lr=3e-3, seed=0, progress=False).fit(kernel, x)
    learned = solver.eigenvalues
    assert torch.all(learned[:-1] >= learned[1:] * 0.97), learned  # ordered (up to near-ties)
    assert torch.all((learned - mu).abs() / mu < 0.10), (learned, mu)
    assert torch.all(cosines(solver(x), vecs) > 0.9), cosines(solver(x), vecs)
    # unit mean square on the training rows exactly (the final pass sets the norm), and orthogonal to 1e-2
    psi = solver(x).reshape(-1, 4)
    gram = psi.T @ psi / len(psi)
    assert torch.allclose(gram.diagonal(), torch.ones(4, dtype=psi.dtype), atol=1e-12)
    assert (gram - torch.diag(gram.diagonal())).abs().max() < 1e-2


def test_neuralef_is_reproducible(problem):
    _, x, kernel, _ = problem
    a = NeuralEF(2, steps=30, batch_size=32, seed=5, progress=False).fit(kernel, x)
    b = NeuralEF(2, steps=30, batch_size=32, seed=5, progress=False).fit(kernel, x)
    assert torch.equal(a(x), b(x)) and torch.equal(a.eigenvalues, b.eigenvalues)


def test_default_net_is_a_head_on_the_model_and_copy_widens_its_last_linear_layer(problem):
    model, x, _, _ = problem
    head = eigenfunction_net(model, 5, x, 2)
    assert isinstance(head.body, FeatureHead) and head.body.head[1].in_features == 16  # the hidden width
    assert head(x).shape == (len(x), 2, 5)
    net = eigenfunction_net(model, 5, x, 2, body="copy")
    assert net.body[-1].out_features == 10 and net.body[0].in_features == 3
    assert net(x).shape == (len(x), 2, 5)
    assert not torch.equal(net.body[0].weight, model[0].weight)  # freshly initialised


def test_head_net_reads_the_eigenfunctions_off_the_models_hidden_features(problem):
    model, x, kernel, K = problem
    before = {name: value.clone() for name, value in model.state_dict().items()}
    solver = NeuralEF(4, net="head", steps=1500, batch_size=64, lr=3e-3, seed=0, progress=False).fit(kernel, x)
    net = solver.net_
    assert isinstance(net.body, FeatureHead) and net.body.model is model  # held, not copied
    # only the head is trained and saved; the model is untouched
    assert {id(p) for p in net.parameters()} == {id(p) for p in net.body.head.parameters()}
    assert all(name.startswith(("body.head.", "norm.")) for name in net.state_dict())
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    # the model's outputs and the eigenfunctions from one forward pass of the model
    forwards = []
    hook = model.register_forward_hook(lambda *args: forwards.append(1))
    try:
        out, psi = solver.outputs_and_eigenfunctions(model, x)
    finally:
        hook.remove()
    assert len(forwards) == 1 and torch.equal(out, model(x).detach()) and torch.allclose(psi, solver(x))
    # the eigenpairs, as close to the exact ones as those of the default network
    mu, vecs = exact_eigenpairs(K, 4)
    assert torch.all((solver.eigenvalues - mu).abs() / mu < 0.10), (solver.eigenvalues, mu)
    assert torch.all(cosines(solver(x), vecs) > 0.9), cosines(solver(x), vecs)


def test_head_net_needs_a_model_that_ends_in_a_linear_layer(problem):
    _, x, _, _ = problem
    ends_in_tanh = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh()).double()
    with pytest.raises(ValueError, match="`net='head'` reads the eigenfunctions off the input of the model's last"):
        NeuralEF(2, net="head", steps=5, progress=False).fit(EmpiricalNTK(ends_in_tanh, "exact"), x)
    with pytest.raises(ValueError, match="`net` must be one of"):
        NeuralEF(2, net="wide")


def test_l2_batch_norm_normalises_in_training_and_uses_running_norm_in_eval():
    norm = L2BatchNorm(3)
    psi = torch.randn(50, 2, 3) * torch.tensor([1.0, 5.0, 0.1])
    out = norm.train()(psi)
    assert torch.allclose(out.pow(2).mean(dim=(0, 1)), torch.ones(3), atol=1e-5)
    assert torch.allclose(norm.eval()(psi), out, atol=1e-5)  # first batch initialises the running norm


def test_errors_before_fit_and_for_bad_arguments(problem):
    _, x, kernel, _ = problem
    with pytest.raises(RuntimeError, match="fit"):
        NeuralEF(2).eigenvalues
    with pytest.raises(ValueError, match="k"):
        NeuralEF(0)
    with pytest.raises(ValueError, match="`k`"):
        NeuralEF(len(x) * 2 + 1, progress=False).fit(kernel, x)
    with pytest.raises(TypeError, match="kernel"):
        NeuralEF(2, progress=False).fit("ntk", x)
