import torch
from torch.autograd.functional import jacobian

from ella.functional import jacobian_rows, jacobians, jvps, perturbed_outputs
from ella.utils import trainable_parameters


def dense_jacobian(model, x):
    """Reference J(x) (B, C, P) by autograd over the flat parameter vector."""
    params = trainable_parameters(model)
    flat = torch.cat([p.reshape(-1) for p in params.values()])

    def g(theta):
        out, offset = {}, 0
        for name, p in params.items():
            out[name] = theta[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return torch.func.functional_call(model, out, (x,))

    return jacobian(g, flat)


def test_jacobians_match_autograd(mlp, inputs):
    assert torch.allclose(jacobians(mlp, inputs, chunk_size=7), dense_jacobian(mlp, inputs), atol=1e-12)


def test_jacobians_chunking_outputs_and_frozen_parameters(mlp, inputs):
    J, out = jacobians(mlp, inputs, chunk_size=3, return_outputs=True)
    # chunks change only the round-off of the matrix products (BLAS picks their blocking by shape)
    assert torch.allclose(jacobians(mlp, inputs), J, atol=1e-14, rtol=0) and torch.allclose(out, mlp(inputs))
    mlp[0].weight.requires_grad_(False)  # frozen weights are held fixed: P shrinks
    try:
        assert torch.allclose(jacobians(mlp, inputs), dense_jacobian(mlp, inputs), atol=1e-12)
        assert jacobians(mlp, inputs).shape[-1] == J.shape[-1] - mlp[0].weight.numel()
    finally:
        mlp[0].weight.requires_grad_(True)


def test_jvps_match_dense_jacobian(mlp, inputs):
    J = dense_jacobian(mlp, inputs)
    V = torch.randn(5, J.shape[-1], dtype=torch.float64)
    assert torch.allclose(jvps(mlp, inputs, V), torch.einsum("bcp,sp->bcs", J, V), atol=1e-12)


def test_jacobian_rows_select_one_output_per_input(mlp, inputs):
    J = dense_jacobian(mlp, inputs)
    index = torch.arange(len(inputs)) % 3
    assert torch.allclose(
        jacobian_rows(mlp, inputs, index, chunk_size=6), J[torch.arange(len(inputs)), index], atol=1e-12
    )


def test_perturbed_outputs_evaluate_shifted_weights_without_touching_the_model(mlp, inputs):
    before = {n: (p.detach().clone(), p._version) for n, p in mlp.named_parameters()}
    P = sum(p.numel() for p, _ in before.values())
    v = torch.randn(P, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = perturbed_outputs(mlp, inputs, v, 0.1)
    shifted = {
        n: p + 0.1 * v[o : o + p.numel()].view_as(p)
        for (n, (p, _)), o in zip(
            before.items(), torch.tensor([0] + [p.numel() for p, _ in before.values()]).cumsum(0).tolist()
        )
    }
    assert torch.allclose(out, torch.func.functional_call(mlp, shifted, (inputs,)), atol=1e-12)
    for name, p in mlp.named_parameters():  # the same bits, and no in-place write at all
        assert torch.equal(p, before[name][0]) and p._version == before[name][1]


def test_jacobians_and_jvps_take_dict_inputs():
    class DictNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(3, 4).double(), torch.nn.Linear(2, 4).double()

        def forward(self, left, right):
            return torch.tanh(self.a(left) + self.b(right))

    net = DictNet().eval()
    g = torch.Generator().manual_seed(0)
    x = {
        "left": torch.randn(5, 3, generator=g, dtype=torch.float64),
        "right": torch.randn(5, 2, generator=g, dtype=torch.float64),
    }
    params = trainable_parameters(net)
    flat = torch.cat([p.reshape(-1) for p in params.values()])

    def g_of_theta(theta):
        out, offset = {}, 0
        for name, p in params.items():
            out[name] = theta[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return torch.func.functional_call(net, out, (), x)

    J = jacobian(g_of_theta, flat)
    assert torch.allclose(jacobians(net, x, chunk_size=2), J, atol=1e-12)
    V = torch.randn(3, J.shape[-1], dtype=torch.float64, generator=g)
    assert torch.allclose(jvps(net, x, V), torch.einsum("bcp,sp->bcs", J, V), atol=1e-12)
