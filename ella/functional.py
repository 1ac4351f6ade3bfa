"""Pure ``torch.func`` building blocks: Jacobians, Jacobian-vector products and weight perturbations.

Notation: the network is ``g(x, theta)`` in ``R^C`` with ``P`` trainable parameters ``theta``, and
``J(x) = dg/dtheta`` in ``R^{C x P}``. Flat parameter vectors follow the order of
``model.named_parameters()`` restricted to the parameters that require grad.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from ._utils import trainable_parameters, unflatten_like


def _output_fn(model: nn.Module):
    """``theta, x -> g(x, theta)`` for a batch ``x``, as a pure function of the parameter dict."""

    def g(params, x):
        out = functional_call(model, params, (x,))
        return out.reshape(out.shape[0], -1)

    return g


@torch.no_grad()
def _num_outputs(model: nn.Module, x: torch.Tensor) -> int:
    return model(x).reshape(len(x), -1).shape[1]


_JACOBIAN_BUDGET = 2**22  # entries of one chunk of Jacobians (16 MiB in float32) when chunk_size is None


def jacobians(model: nn.Module, x: torch.Tensor, chunk_size: int | None = None, return_outputs: bool = False):
    """Dense per-sample Jacobians ``J(x_b)`` of shape ``(B, C, P)``; for small networks and GLM predictives.

    Computed as ``vmap`` over inputs of reverse-mode ``jacrev`` (cost linear in B), ``chunk_size`` inputs at
    a time (``None``: as many as fit in about 16 MiB of float32 Jacobians). Parameters that do not require
    grad are held fixed. With ``return_outputs`` also returns ``g(x)`` ``(B, C)`` from the same pass.
    """
    params = trainable_parameters(model)
    g = _output_fn(model)
    if chunk_size is None:
        num_params = sum(p.numel() for p in params.values())
        chunk_size = max(1, min(256, _JACOBIAN_BUDGET // (_num_outputs(model, x[:1]) * num_params)))

    def one(xb):  # (J(x) (C, P), g(x) (C,)) for a single input
        out_fn = lambda p: (lambda o: (o, o))(g(p, xb.unsqueeze(0))[0])
        jac, out = jacrev(out_fn, has_aux=True)(params)
        return torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=1), out

    pieces = [vmap(one)(x[i : i + chunk_size]) for i in range(0, len(x), chunk_size)]
    J = torch.cat([j for j, _ in pieces]).detach()
    return (J, torch.cat([o for _, o in pieces]).detach()) if return_outputs else J


def jacobian_rows(model: nn.Module, x: torch.Tensor, index: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
    """Rows ``J_{c_b}(x_b) = d g_{c_b}(x_b) / d theta`` of shape ``(B, P)``: one output per input."""
    params = trainable_parameters(model)
    g = _output_fn(model)

    def one(xb, eb):  # gradient of the single output c_b at x_b (eb: one-hot of c_b)
        grad = torch.func.grad(lambda p: g(p, xb.unsqueeze(0))[0] @ eb)(params)
        return torch.cat([t.reshape(-1) for t in grad.values()])

    dtype = next(iter(params.values())).dtype
    onehot = torch.zeros(len(x), _num_outputs(model, x[:1]), dtype=dtype, device=x.device)
    onehot[torch.arange(len(x)), index] = 1
    rows = [vmap(one)(x[i : i + chunk_size], onehot[i : i + chunk_size]) for i in range(0, len(x), chunk_size)]
    return torch.cat(rows)


def jvps(model: nn.Module, x: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """Forward-mode products ``J(x) v_s`` for flat tangents ``V`` of shape ``(S, P)``; returns ``(B, C, S)``.

    One ``torch.func.jvp`` per tangent, vectorised over the S tangents with ``vmap``; no Jacobian is formed.
    """
    params = trainable_parameters(model)
    g = _output_fn(model)
    tangent_dicts = unflatten_like(tangents.to(next(iter(params.values())).dtype), params)

    def one(t):  # v -> J(x) v, shape (B, C)
        return jvp(lambda p: g(p, x), (params,), (t,))[1]

    return vmap(one)(tangent_dicts).permute(1, 2, 0)


@contextmanager
def perturbed(model: nn.Module, direction: torch.Tensor, eps: float):
    """Temporarily set ``theta <- theta + eps * direction`` in place.

    The original weights are copied before the change and copied back afterwards, also when the body
    raises, so they are restored bit for bit (adding and subtracting ``eps * v`` would not be exact).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            offset = 0
            for p in params:
                n = p.numel()
                p.add_(direction[offset : offset + n].view_as(p).to(p.dtype), alpha=eps)
                offset += n
        yield model
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
