"""Input validation shared by every entry point.

Each check raises a ``ValueError`` or ``TypeError`` that names the offending argument and what was
expected, and runs before any long computation starts.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

LIKELIHOODS = ("classification", "regression")

# Layers whose output depends on the training/eval flag: an uncertainty estimate built in training
# mode would silently use batch statistics or random masks.
_MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.GroupNorm)


def check_model(model: nn.Module, name: str = "model") -> None:
    """Reject a model that is not an ``nn.Module``, is in training mode with mode-dependent layers,
    has no trainable parameters, or holds non-finite weights."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"`{name}` must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        layers = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _MODE_DEPENDENT)})
        if layers:
            raise ValueError(
                f"`{name}` is in training mode and has {', '.join(layers)} layers: call `{name}.eval()` "
                "first so that predictions use fixed statistics and no dropout"
            )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"`{name}` has no parameters that require grad")
    for pname, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"`{name}` has non-finite values in parameter `{pname}`")


def check_likelihood(likelihood: str) -> str:
    """Return the likelihood name if it is one of ``LIKELIHOODS``."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"`likelihood` must be one of {LIKELIHOODS}, got {likelihood!r}")
    return likelihood


def check_loader(loader, name: str = "train_loader") -> None:
    """Reject an object that is not an iterable of ``(x, y)`` batches, or one that is known to be empty."""
    if not hasattr(loader, "__iter__"):
        raise TypeError(f"`{name}` must be an iterable of (x, y) batches such as a DataLoader")
    if isinstance(loader, DataLoader):
        try:
            n = len(loader.dataset)
        except TypeError:
            return
        if n == 0:
            raise ValueError(f"`{name}` is empty: it holds no data")


def check_labels(y: torch.Tensor, num_classes: int, name: str = "train_loader") -> None:
    """Classification labels must be integers in ``[0, num_classes)``."""
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"labels of `{name}` must be integer class indices, got dtype {y.dtype}")
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"labels of `{name}` must lie in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]"
        )


def check_positive_int(value, name: str) -> int:
    """Return ``value`` if it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return value


def check_gram(gram: torch.Tensor, name: str = "kernel", rtol: float = 1e-6) -> None:
    """Raise a ``ValueError`` if a square Gram matrix is non-finite or not symmetric."""
    if not torch.isfinite(gram).all():
        raise ValueError(f"`{name}` gave a Gram matrix with non-finite entries (nan or inf)")
    asym = (gram - gram.T).abs().max()
    if asym > rtol * gram.abs().max().clamp_min(torch.finfo(gram.dtype).tiny):
        raise ValueError(f"`{name}` gave a non-symmetric Gram matrix: max |K - K^T| = {asym.item():.3g}")


def check_targets(y: torch.Tensor, num_outputs: int, likelihood: str, name: str) -> None:
    """Classification: labels in ``[0, C)``; regression: ``C`` target values per input."""
    if likelihood == "classification":
        check_labels(y, num_outputs, name)
    elif y.numel() != len(y) * num_outputs:
        raise ValueError(f"targets of `{name}` must have {num_outputs} values per input to match the model outputs")
