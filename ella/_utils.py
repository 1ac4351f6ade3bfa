"""Small helpers shared across the package: loaders, batching, progress bars, parameter vectors."""

from __future__ import annotations

import copy
import hashlib
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_loader


def progress(iterable: Iterable, enabled: bool, desc: str, total: int | None = None, **kwargs):
    """A tqdm progress bar over ``iterable``, or the iterable itself when ``enabled`` is False."""
    if not enabled:
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, **kwargs)


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of a model's first parameter."""
    p = next(model.parameters())
    return p.device, p.dtype


def collect(loader, name: str = "train_loader", device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate all ``(x, y)`` batches of a loader into two tensors.

    Inputs are moved to ``device`` and floating inputs cast to ``dtype``; labels are moved to ``device``.
    Raises a ``ValueError`` naming ``name`` if the loader yields nothing or not ``(x, y)`` pairs.
    """
    check_loader(loader, name)
    xs, ys = [], []
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(f"`{name}` must yield (x, y) batches, got {type(batch).__name__}")
        xs.append(batch[0])
        ys.append(batch[1])
    if not xs or sum(len(x) for x in xs) == 0:
        raise ValueError(f"`{name}` is empty: it yielded no data")
    x, y = torch.cat(xs), torch.cat(ys)
    if device is not None:
        x, y = x.to(device), y.to(device)
    if dtype is not None and x.dtype.is_floating_point:
        x = x.to(dtype)
    return x, y


@torch.no_grad()
def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Apply ``fn`` to ``x`` in chunks along the first dimension and concatenate the results."""
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def residual_rms(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """``sqrt(mean (y - g(x))^2)``: the training RMSE used as a regression model's observation noise."""
    return (targets.reshape(outputs.shape) - outputs).pow(2).mean().sqrt().item()


def trainable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached views of the parameters that require grad, keyed by name: theta in the math."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def reinitialised(template: nn.Module) -> nn.Module:
    """A copy of ``template`` with every ``reset_parameters`` called (from the current global RNG)."""
    net = copy.deepcopy(template)
    for module in net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return net


def num_parameters(model: nn.Module) -> int:
    """P, the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def unflatten_like(vector: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split a flat ``(..., P)`` tensor into a dict shaped like ``params`` (leading dims kept)."""
    out, offset = {}, 0
    lead = vector.shape[:-1]
    for name, p in params.items():
        n = p.numel()
        out[name] = vector[..., offset : offset + n].reshape(*lead, *p.shape)
        offset += n
    return out


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the names, shapes, dtypes and bytes of all parameters: identifies the exact weights."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
