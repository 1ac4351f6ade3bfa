"""Pure ``torch.func`` building blocks: Jacobians, Jacobian-vector products and perturbed outputs.

Notation: the network is ``g(x, theta)`` in ``R^C`` with ``P`` trainable parameters ``theta``, and
``J(x) = dg/dtheta`` in ``R^{C x P}``. Flat parameter vectors follow the order of
``model.named_parameters()`` restricted to the parameters that require grad. Inputs ``x`` are a tensor or a
dict of tensors (:mod:`ella.batches`). Nothing here modifies the model: every function evaluates it at
other weights through ``torch.func.functional_call`` on the calling thread's shadow of it
(:func:`ella.batches.functional`), so other threads never see those weights.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import jacrev, jvp, vmap

from . import batches
from .utils import num_parameters, trainable_parameters, unflatten_like

JACOBIAN_BUDGET = 2**22  # entries of one chunk of dense Jacobians (16 MiB in float32)
# torch's forward-mode AD levels are one stack per process, not per thread: two threads inside `jvp` at once corrupt
# each other's levels (internal asserts, or wrong tangents), so forward-mode products take turns
_FORWARD_AD = threading.Lock()


def jacobian_chunk(num_outputs: int, num_params: int) -> int:
    """Inputs per chunk of dense Jacobians: about :data:`JACOBIAN_BUDGET` entries, at most 256 inputs."""
    return max(1, min(256, JACOBIAN_BUDGET // (num_outputs * num_params)))


def _single(x, xb):
    """One input ``xb`` (a row of ``x``) as a batch of one."""
    return {k: v.unsqueeze(0) for k, v in xb.items()} if isinstance(x, Mapping) else xb.unsqueeze(0)


def jacobians(model: nn.Module, x, chunk_size: int | None = None, return_outputs: bool = False):
    """Dense per-sample Jacobians ``J(x_b)`` of shape ``(B, C, P)``; for small networks and GLM predictives.

    Computed as ``vmap`` over inputs of reverse-mode ``jacrev`` (cost linear in B), ``chunk_size`` inputs at
    a time (``None``: :func:`jacobian_chunk`). Parameters that do not require grad are held fixed. With
    ``return_outputs`` also returns ``g(x)`` ``(B, C)`` from the same pass.
    """
    params = trainable_parameters(model)
    if chunk_size is None:
        with torch.no_grad():
            C = batches.call(model, batches.take(x, slice(0, 1))).shape[1]
        chunk_size = jacobian_chunk(C, num_parameters(model))

    def one(xb):  # (J(x) (C, P), g(x) (C,)) for a single input
        def out_fn(p):
            out = batches.functional(model, p, _single(x, xb))[0]
            return out, out

        jac, out = jacrev(out_fn, has_aux=True)(params)
        return torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=1), out

    pieces = [vmap(one)(piece) for piece in batches.chunks(x, chunk_size)]
    J = torch.cat([j for j, _ in pieces]).detach()
    return (J, torch.cat([o for _, o in pieces]).detach()) if return_outputs else J


def jacobian_rows(model: nn.Module, x, index: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
    """Rows ``J_{c_b}(x_b) = d g_{c_b}(x_b) / d theta`` of shape ``(B, P)``: one output per input."""
    params = trainable_parameters(model)

    def one(xb, cb):  # gradient of the single output c_b at x_b
        grad = torch.func.grad(lambda p: batches.functional(model, p, _single(x, xb))[0, cb])(params)
        return torch.cat([t.reshape(-1) for t in grad.values()])

    rows = [
        vmap(one)(batches.take(x, slice(i, i + chunk_size)), index[i : i + chunk_size])
        for i in range(0, batches.num_rows(x), chunk_size)
    ]
    return torch.cat(rows)


def jvps(model: nn.Module, x, tangents: torch.Tensor) -> torch.Tensor:
    """Forward-mode products ``J(x) v_s`` for flat tangents ``V`` of shape ``(S, P)``; returns ``(B, C, S)``.

    One ``torch.func.jvp`` per tangent, vectorised over the S tangents with ``vmap``; no Jacobian is formed.
    """
    params = trainable_parameters(model)
    tangent_dicts = unflatten_like(tangents.to(next(iter(params.values())).dtype), params)

    def one(t):  # v -> J(x) v, shape (B, C)
        return jvp(lambda p: batches.functional(model, p, x), (params,), (t,))[1]

    with _FORWARD_AD:
        return vmap(one)(tangent_dicts).permute(1, 2, 0)


@torch.no_grad()
def perturbed_outputs(model: nn.Module, x, direction: torch.Tensor, eps: float) -> torch.Tensor:
    """``g(x, theta + eps v)`` for a flat direction ``v`` ``(P,)``, shape ``(B, C)``.

    The perturbed weights are a new parameter dict passed to ``functional_call``: the model's own tensors are
    never written, so nothing needs restoring, whatever interrupts the call.
    """
    params = trainable_parameters(model)
    step = unflatten_like(direction, params)
    return batches.functional(model, {n: p + eps * step[n].to(p.dtype) for n, p in params.items()}, x)
