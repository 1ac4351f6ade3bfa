import pytest
import torch
from torch.autograd.functional import jacobian

from ella._utils import trainable_parameters
from ella.functional import jacobian_rows, jacobians, jvps, perturbed


def dense_jacobian(model, x):
    """Reference J(x) (B, C, P) by autograd over the flat parameter vector."""
    params = trainable_parameters(model)
    flat = torch.cat([p.reshape(-1) for p in params.values()])

    def g(theta):
        out, offset = {}, 0
        for name, p in params.items():
            out[name] = theta[offset: offset + p.numel()].view_as(p)
            offset += p.numel()
        return torch.func.functional_call(model, out, (x,))

    return jacobian(g, flat)


def test_jacobians_match_autograd(mlp, inputs):
    assert torch.allclose(jacobians(mlp, inputs, chunk_size=7), dense_jacobian(mlp, inputs), atol=1e-12)


def test_jacobians_chunking_outputs_and_frozen_parameters(mlp, inputs):
    J, out = jacobians(mlp, inputs, chunk_size=3, return_outputs=True)
    assert torch.equal(jacobians(mlp, inputs), J) and torch.allclose(out, mlp(inputs))
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
    assert torch.allclose(jacobian_rows(mlp, inputs, index, chunk_size=6), J[torch.arange(len(inputs)), index],
                          atol=1e-12)


def test_perturbed_shifts_weights_and_restores_them_bitwise(mlp):
    before = [p.detach().clone() for p in mlp.parameters()]
    P = sum(p.numel() for p in before)
    v = torch.randn(P, dtype=torch.float64)
    with perturbed(mlp, v, 0.1):
        shifted = torch.cat([p.detach().reshape(-1) for p in mlp.parameters()])
        assert torch.allclose(shifted, torch.cat([b.reshape(-1) for b in before]) + 0.1 * v)
    assert all(torch.equal(p, b) for p, b in zip(mlp.parameters(), before))


def test_perturbed_restores_weights_on_exception(mlp):
    before = [p.detach().clone() for p in mlp.parameters()]
    P = sum(p.numel() for p in before)
    with pytest.raises(RuntimeError, match="boom"):
        with perturbed(mlp, torch.ones(P, dtype=torch.float64), 1.0):
            raise RuntimeError("boom")
    assert all(torch.equal(p, b) for p, b in zip(mlp.parameters(), before))
