"""Small helpers shared across the package: progress bars, stage timers, parameter vectors, seeds."""

from __future__ import annotations

import copy
import importlib
import time
from contextlib import contextmanager
from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from .distributed import is_main


def progress(iterable: Iterable, enabled: bool, desc: str, total: int | None = None, **kwargs):
    """A tqdm progress bar over ``iterable``, or the iterable itself when ``enabled`` is False (or on any rank but
    the first of several processes)."""
    if not enabled or not is_main():
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, mininterval=0.5, **kwargs)


@contextmanager
def timed(record: dict, name: str):
    """Add the wall-clock seconds of the ``with`` block to ``record[name]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        record[name] = record.get(name, 0.0) + time.perf_counter() - start


def require(module: str, package: str, extra: str, user: str):
    """Import an optional dependency, or raise an ImportError naming who needs it and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{user} needs {package}, which is not installed: pip install 'ella[{extra}]'") from e


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of a model's first parameter."""
    p = next(model.parameters())
    return p.device, p.dtype


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


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
