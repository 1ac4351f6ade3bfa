"""Eigenfunction networks: ``x -> psi(x)`` in ``R^{C x k}``, with the L2 batch-norm head of NeuralEF."""

from __future__ import annotations

import torch
from torch import nn

from .. import batches
from .._utils import reinitialised


class L2BatchNorm(nn.Module):
    """Scale every eigenfunction to unit mean square: ``psi_j <- psi_j / sqrt(mean_rows psi_j^2)``.

    In training mode the mean runs over the ``B * C`` rows of the batch and a running average of the
    norm is kept (``norm <- m norm + (1 - m) batch_norm``); in eval mode the running norm is used.
    """

    def __init__(self, k: int, momentum: float = 0.9, eps: float = 1e-12):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_norm", torch.ones(k))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, psi: torch.Tensor) -> torch.Tensor:  # psi: (B, C, k)
        if not self.training:
            return psi / self.running_norm
        norm = psi.pow(2).mean(dim=(0, 1)).add(self.eps).sqrt()
        with torch.no_grad():
            if self.initialized:
                self.running_norm.mul_(self.momentum).add_(norm.detach(), alpha=1 - self.momentum)
            else:
                self.running_norm.copy_(norm.detach())
                self.initialized.fill_(True)
        return psi / norm


class EigenfunctionNet(nn.Module):
    """``body(x)`` of shape ``(B, C * k)`` reshaped to ``(B, C, k)`` and passed through :class:`L2BatchNorm`."""

    def __init__(self, body: nn.Module, num_outputs: int, k: int):
        super().__init__()
        self.body, self.num_outputs, self.k = body, num_outputs, k
        self.norm = L2BatchNorm(k)

    def raw(self, x) -> torch.Tensor:
        """Unnormalised outputs, shape ``(B, C, k)``."""
        return batches.call(self.body, x).reshape(-1, self.num_outputs, self.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.raw(x))


def mlp_body(in_features: int, out_features: int, width: int = 256, depth: int = 2) -> nn.Module:
    """A ``depth``-hidden-layer SiLU MLP on flattened inputs."""
    layers, d = [nn.Flatten()], in_features
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.SiLU()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, out_features))


def _last_linear(model: nn.Module, x) -> str | None:
    """Name of the ``nn.Linear`` whose output is the model's output, found by tracing one call."""
    calls = []
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: calls.append((name, o)))
             for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            out = batches.call(model, x)
    finally:
        for h in hooks:
            h.remove()
    if calls and calls[-1][1].numel() == out.numel() and torch.equal(calls[-1][1].reshape(out.shape), out):
        return calls[-1][0]
    return None


def eigenfunction_net(model: nn.Module | None, k: int, x, num_outputs: int,
                      seed: int = 0) -> EigenfunctionNet:
    """The default eigenfunction network for ``k`` eigenfunctions of a kernel with ``num_outputs`` outputs.

    If ``model`` ends in an ``nn.Linear`` layer, a freshly initialised copy of ``model`` whose last layer
    is widened to ``num_outputs * k`` outputs (the classifier's own architecture, as in NeuralEF; one
    forward pass gives all k eigenfunctions). Otherwise a 2-layer MLP on the flattened inputs.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        name = _last_linear(model, batches.take(x, slice(0, 2))) if model is not None else None
        if name is None:
            if not isinstance(x, torch.Tensor):
                raise ValueError("the default eigenfunction network of a model that does not end in nn.Linear is an "
                                 "MLP on tensor inputs: pass `net` for these inputs")
            body = mlp_body(x[0].numel(), num_outputs * k)
            if model is not None:
                p = next(model.parameters())
                body = body.to(device=p.device, dtype=p.dtype)
            else:
                body = body.to(device=x.device, dtype=x.dtype if x.dtype.is_floating_point else None)
        else:
            body = reinitialised(model)
            parent_name, _, attr = name.rpartition(".")
            parent = body.get_submodule(parent_name) if parent_name else body
            old = getattr(parent, attr)
            new = nn.Linear(old.in_features, num_outputs * k, bias=old.bias is not None)
            setattr(parent, attr, new.to(device=old.weight.device, dtype=old.weight.dtype))
        for p in body.parameters():
            p.requires_grad_(True)
    p0 = next(body.parameters())
    return EigenfunctionNet(body, num_outputs, k).to(device=p0.device, dtype=p0.dtype)
