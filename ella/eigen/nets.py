"""Eigenfunction networks, ``x -> psi(x)`` in ``R^{C x k}`` with the L2 batch-norm head of NeuralEF, and the base of
the solvers that train one (:class:`~ella.eigen.NeuralEF`, :class:`~ella.eigen.SpIN`)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import batches
from .._checks import check_bool, check_float, check_int, check_positive_int
from .._utils import reinitialised
from ..kernels.base import Kernel
from .solver import EigenSolver


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


class NetworkSolver(EigenSolver):
    """A solver that trains an eigenfunction network: its configuration, its initial network and the restoring of a
    saved one. The network given as ``net`` is configuration: ``fit`` trains a copy (``net_``). Without ``net`` the
    default network copies the architecture of ``model``, or of the kernel's ``model`` (an NTK's network)."""

    net_: nn.Module | None = None

    def __init__(self, k: int, net: nn.Module | None, model: nn.Module | None, steps: int, batch_size: int,
                 lr: float, momentum: float, seed: int, progress: bool, population: bool):
        self.k = check_positive_int(k, "k")
        self.steps = check_positive_int(steps, "steps")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        for name, value in (("net", net), ("model", model)):
            if value is not None and not isinstance(value, nn.Module):
                raise TypeError(f"`{name}` must be an nn.Module, got {type(value).__name__}")
        self.net, self.model = net, model
        self.lr, self.momentum = check_float(lr, "lr"), check_float(momentum, "momentum", inclusive=True)
        if self.momentum >= 1:
            raise ValueError(f"`momentum` must lie in [0, 1), got {momentum!r}")
        self.seed, self.progress = check_int(seed, "seed", 0), check_bool(progress, "progress")
        self.population = check_bool(population, "population")

    def _template(self, kernel: Kernel | None) -> nn.Module | None:
        return self.model if self.model is not None else getattr(kernel, "model", None)

    def _initial_net(self, x, num_outputs: int, kernel: Kernel | None) -> nn.Module:
        """A fresh copy of ``net``, or the default network for these inputs (seeded)."""
        if self.net is not None:
            return copy.deepcopy(self.net)
        return eigenfunction_net(self._template(kernel), self.k, x, num_outputs, seed=self.seed)

    def _load_net(self, state: dict, kernel: Kernel | None) -> None:
        """Rebuild ``net_`` with the saved weights; the fitted values every network solver has."""
        anchor = next((m for m in (self._template(kernel), self.net) if m is not None), None)
        example = batches.example(state["input_spec"], anchor if anchor is not None else nn.Linear(1, 1))
        net = self._initial_net(example, state["num_outputs"], kernel)
        try:
            net.load_state_dict(state["net"])
        except RuntimeError as e:
            raise ValueError(f"the saved eigenfunction network does not fit this {type(self).__name__}'s network: "
                             f"{e}") from None
        self.net_, self.num_outputs_, self.input_spec_ = net.eval(), state["num_outputs"], state["input_spec"]
        self.eigenvalues_, self.history_ = state["eigenvalues"], []

    def _net_state(self) -> dict:
        self._check_fitted()
        return {"kind": self.kind, "k": self.k, "eigenvalues": self.eigenvalues_, "net": self.net_.state_dict(),
                "num_outputs": self.num_outputs_, "input_spec": self.input_spec_}
