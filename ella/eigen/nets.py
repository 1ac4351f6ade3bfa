"""Eigenfunction networks, ``x -> psi(x)`` in ``R^{C x k}`` with the L2 batch-norm head of NeuralEF, and the base of
the solvers that train one (:class:`~ella.eigen.NeuralEF`, :class:`~ella.eigen.SpIN`)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import batches, files
from ..checks import check_bool, check_choice, check_float, check_int, check_positive_int
from ..kernels.base import Kernel
from ..utils import reinitialised
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


class FeatureHead(nn.Module):
    """A body that reads the eigenfunctions off a trained model's own hidden features: ``h(x)``, the input of the
    model's last ``nn.Linear``, mapped by a small SiLU MLP (the only trained part) to ``C k`` outputs.

    The model is held, not registered: it is neither trained, nor saved with the body, nor copied. Where the
    model's outputs are needed too (ELLA's prediction), :meth:`outputs_and_features` gives both from one forward
    pass, so the eigenfunctions cost one pass of the head on top of the MAP forward.
    """

    def __init__(self, model: nn.Module, layer: str, out_features: int, width: int = 128, depth: int = 2):
        super().__init__()
        self._held, self.layer = (model,), layer  # a tuple keeps the model out of the module tree
        linear = model.get_submodule(layer)
        self.head = mlp_body(linear.in_features, out_features, width, depth).to(linear.weight)

    @property
    def model(self) -> nn.Module:
        return self._held[0]

    @torch.no_grad()
    def outputs_and_features(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's outputs ``(B, C)`` and hidden features ``h(x)`` ``(B, d)``, from one forward pass."""
        with batches.recorded_calls({self.layer: self.model.get_submodule(self.layer)}) as seen:
            out = batches.call(self.model, x)
        return out, seen[-1][1]

    def forward(self, x=None, **inputs) -> torch.Tensor:  # a tensor, or the keyword inputs of a dict batch
        return self.head(self.outputs_and_features(inputs or x)[1])


class EigenfunctionNet(nn.Module):
    """``body(x)`` of shape ``(B, C * k)`` reshaped to ``(B, C, k)`` and passed through :class:`L2BatchNorm`."""

    def __init__(self, body: nn.Module, num_outputs: int, k: int):
        super().__init__()
        self.body, self.num_outputs, self.k = body, num_outputs, k
        first = next(body.parameters(), None)  # the norm's statistics in the body's dtype, on its device
        self.norm = L2BatchNorm(k) if first is None else L2BatchNorm(k).to(device=first.device, dtype=first.dtype)

    def raw(self, x) -> torch.Tensor:
        """Unnormalised outputs, shape ``(B, C, k)``."""
        return batches.call(self.body, x).reshape(-1, self.num_outputs, self.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.raw(x))

    @torch.no_grad()
    def trained_input(self, x, chunk: int = 1024):
        """What the trained part of the network reads: for a :class:`FeatureHead` body the model's hidden
        features ``h(x)`` ``(N, d)``, computed once (the model is frozen, so they never change while the head
        trains), otherwise ``x`` itself. :meth:`raw_from` maps them to the unnormalised outputs."""
        if isinstance(self.body, FeatureHead):
            return torch.cat([self.body.outputs_and_features(piece)[1] for piece in batches.chunks(x, chunk)])
        return x

    def raw_from(self, z) -> torch.Tensor:
        """Unnormalised outputs ``(B, C, k)`` from rows of :meth:`trained_input` (equal to :meth:`raw` of the
        inputs they were computed from)."""
        body = self.body.head if isinstance(self.body, FeatureHead) else self.body
        return batches.call(body, z).reshape(-1, self.num_outputs, self.k)

    def with_outputs(self, model: nn.Module, x) -> tuple[torch.Tensor, torch.Tensor]:
        """``model(x)`` ``(B, C)`` and ``psi(x)`` ``(B, C, k)``: one forward pass of ``model`` when the body is a
        :class:`FeatureHead` on it."""
        if isinstance(self.body, FeatureHead) and self.body.model is model:
            out, h = self.body.outputs_and_features(x)
            return out, self.norm(self.body.head(h).reshape(-1, self.num_outputs, self.k))
        return batches.call(model, x), self(x)


def mlp_body(in_features: int, out_features: int, width: int = 256, depth: int = 2) -> nn.Module:
    """A ``depth``-hidden-layer SiLU MLP on flattened inputs."""
    layers, d = [nn.Flatten()], in_features
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.SiLU()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, out_features))


def _last_linear(model: nn.Module, x) -> str | None:
    """Name of the ``nn.Linear`` whose output is the model's output, found by tracing one call."""
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    with batches.recorded_calls(linears) as calls, torch.no_grad():
        out = batches.call(model, x)
    if calls and calls[-1][2].numel() == out.numel() and torch.equal(calls[-1][2].reshape(out.shape), out):
        return calls[-1][0]
    return None


NETS = ("copy", "head")


def eigenfunction_net(
    model: nn.Module | None, k: int, x, num_outputs: int, seed: int = 0, body: str | None = None
) -> EigenfunctionNet:
    """The default eigenfunction network for ``k`` eigenfunctions of a kernel with ``num_outputs`` outputs.

    If ``model``'s output is that of an ``nn.Linear`` layer: with ``body="head"`` (or ``None``) a
    :class:`FeatureHead` on ``model``'s own hidden features (the model itself, frozen, and a 2-layer MLP); with
    ``body="copy"`` a freshly initialised copy of ``model`` whose last layer is widened to ``num_outputs * k``
    outputs (the classifier's own architecture, as in the NeuralEF and ELLA papers; one forward pass gives all k
    eigenfunctions). Otherwise a 2-layer MLP on the flattened inputs (an error for ``body="head"``).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        name = _last_linear(model, batches.take(x, slice(0, 2))) if model is not None else None
        if name is None:
            if body == "head":
                raise ValueError(
                    "`net='head'` reads the eigenfunctions off the input of the model's last nn.Linear: "
                    "the model's output must be that layer's (or use `net='copy'`)"
                )
            if not isinstance(x, torch.Tensor):
                raise ValueError(
                    "the default eigenfunction network of a model that does not end in nn.Linear is an "
                    "MLP on tensor inputs: pass `net` for these inputs"
                )
            net = mlp_body(x[0].numel(), num_outputs * k)
            if model is not None:
                p = next(model.parameters())
                net = net.to(device=p.device, dtype=p.dtype)
            else:
                net = net.to(device=x.device, dtype=x.dtype if x.dtype.is_floating_point else None)
        elif body in (None, "head"):
            net = FeatureHead(model, name, num_outputs * k)
        else:
            net = reinitialised(model)
            parent_name, _, attr = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            old = getattr(parent, attr)
            new = nn.Linear(old.in_features, num_outputs * k, bias=old.bias is not None)
            setattr(parent, attr, new.to(device=old.weight.device, dtype=old.weight.dtype))
        for p in net.parameters():
            p.requires_grad_(True)
    p0 = next(net.parameters())
    return EigenfunctionNet(net, num_outputs, k).to(device=p0.device, dtype=p0.dtype)


class NetworkSolver(EigenSolver):
    """A solver that trains an eigenfunction network: its configuration, its initial network and the restoring of a
    saved one. A network given as ``net`` is configuration: ``fit`` trains a copy (``net_``). Otherwise the default
    network (:func:`eigenfunction_net`) is built on ``model``, or on the kernel's ``model`` (an NTK's network):
    ``net="head"`` (or ``None``) a head on its hidden features, ``net="copy"`` a widened copy of its architecture."""

    net_: nn.Module | None = None

    @classmethod
    def named(cls, k: int, *, seed: int = 0, progress: bool = True, model: nn.Module | None = None, net=None):
        return cls(k, net=net, model=model, seed=seed, progress=progress)

    def __init__(
        self,
        k: int,
        *,
        net: nn.Module | str | None,
        model: nn.Module | None,
        steps: int,
        batch_size: int,
        lr: float,
        momentum: float,
        seed: int,
        progress: bool,
        population: bool,
    ):
        self.k = check_positive_int(k, "k")
        self.steps = check_positive_int(steps, "steps")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if isinstance(net, str):
            check_choice(net, "net", NETS)
        elif net is not None and not isinstance(net, nn.Module):
            raise TypeError(f"`net` must be an nn.Module or one of {NETS}, got {type(net).__name__}")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
        self.net, self.model = net, model
        self.lr, self.momentum = check_float(lr, "lr"), check_float(momentum, "momentum", inclusive=True)
        if self.momentum >= 1:
            raise ValueError(f"`momentum` must lie in [0, 1), got {momentum!r}")
        self.seed, self.progress = check_int(seed, "seed", 0), check_bool(progress, "progress")
        self.population = check_bool(population, "population")

    def _template(self, kernel: Kernel | None) -> nn.Module | None:
        return self.model if self.model is not None else getattr(kernel, "model", None)

    def _initial_net(self, x, num_outputs: int, kernel: Kernel | None, body: str | None = None) -> nn.Module:
        """A fresh copy of ``net``, or the default network for these inputs (seeded; ``body`` overrides ``net``)."""
        if isinstance(self.net, nn.Module):
            return copy.deepcopy(self.net)
        return eigenfunction_net(self._template(kernel), self.k, x, num_outputs, seed=self.seed, body=body or self.net)

    def _load_net(self, state: dict, kernel: Kernel | None) -> None:
        """Rebuild ``net_`` with the saved weights; the fitted values every network solver has."""
        body = check_choice(state.get("body") or "copy", "the saved `body`", NETS)  # files before "head": "copy"
        anchor = next((m for m in (self._template(kernel), self.net) if isinstance(m, nn.Module)), None)
        spec = batches.check_saved_spec(state.get("input_spec"), "the saved eigenfunction network")
        num_outputs = state.get("num_outputs")
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
            raise ValueError(f"the saved eigenfunction network has {num_outputs!r} outputs, not a positive integer")
        example = batches.example(spec, anchor if anchor is not None else nn.Linear(1, 1))
        net = self._initial_net(example, state["num_outputs"], kernel, body)
        try:
            net.load_state_dict(state["net"])
        except RuntimeError as e:
            raise ValueError(
                f"the saved eigenfunction network does not fit this {type(self).__name__}'s network: {e}"
            ) from None
        self.net_, self.num_outputs_, self.input_spec_ = net.eval(), state["num_outputs"], state["input_spec"]
        self.eigenvalues_ = files.check_tensor(state.get("eigenvalues"), (self.k,), "the saved solver", "eigenvalues")
        self.history_ = []

    def _net_state(self) -> dict:
        self._check_fitted()
        return {
            "kind": self.kind,
            "k": self.k,
            "eigenvalues": self.eigenvalues_,
            "net": self.net_.state_dict(),
            "body": "head" if isinstance(getattr(self.net_, "body", None), FeatureHead) else "copy",
            "num_outputs": self.num_outputs_,
            "input_spec": self.input_spec_,
        }
