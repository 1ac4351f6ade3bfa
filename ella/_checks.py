"""Input validation shared by every entry point.

Each check raises a ``ValueError`` or ``TypeError`` that names the offending argument and what was
expected, and runs before any long computation starts.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import batches

LIKELIHOODS = ("classification", "regression")

# Layers whose output depends on the training/eval flag: an uncertainty estimate built in training
# mode would silently use batch statistics or random masks.
_MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.GroupNorm)


def check_model(model: nn.Module, name: str = "model") -> nn.Module:
    """Reject a model that is not an ``nn.Module``, is in training mode with mode-dependent layers,
    has no trainable parameters, or holds non-finite weights."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"`{name}` must be a torch.nn.Module, got {type(model).__name__}")
    check_mode(model, name)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"`{name}` has no parameters that require grad")
    for pname, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"`{name}` has non-finite values in parameter `{pname}`")
    return model


def check_mode(model: nn.Module, name: str = "model") -> None:
    """A model in training mode with batch-norm or dropout layers is refused (cheap: no forward pass)."""
    if model.training:
        layers = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _MODE_DEPENDENT)})
        if layers:
            raise ValueError(f"`{name}` is in training mode and has {', '.join(layers)} layers: call `{name}.eval()` "
                             "first so that predictions use fixed statistics and no dropout")


@torch.no_grad()
def check_deterministic(model: nn.Module, probe, name: str = "model") -> None:
    """Two forward passes of the probe inputs must agree: random layers left active (dropout applied in training
    mode, also through ``torch.nn.functional``) would make every prediction a random draw."""
    first, second = batches.call(model, probe), batches.call(model, probe)
    scale = first.abs().max().clamp_min(1.0)
    if not torch.allclose(first, second, rtol=1e-4, atol=1e-5 * float(scale)):
        raise ValueError(f"`{name}` gives different outputs for the same input: a random layer (dropout?) is active; "
                         f"call `{name}.eval()`")


def check_likelihood(likelihood) -> str:
    """Return the likelihood name if it is one of ``LIKELIHOODS``."""
    return check_choice(likelihood, "likelihood", LIKELIHOODS)


def check_choice(value, name: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}")
    return value


def check_loader(loader, name: str = "train_loader") -> None:
    """Reject an object that is not an iterable of batches, or one that is known to be empty."""
    if isinstance(loader, (torch.Tensor, str, bytes)) or not hasattr(loader, "__iter__"):
        raise TypeError(f"`{name}` must be an iterable of (x, y) batches such as a DataLoader, got "
                        f"{type(loader).__name__}")
    if isinstance(loader, DataLoader):
        try:
            n = len(loader.dataset)
        except TypeError:
            return
        if n == 0:
            raise ValueError(f"`{name}` is empty: it holds no data")


def check_int(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`{name}` must be {what}, got {value!r}")
    return value


def check_positive_int(value, name: str) -> int:
    """Return ``value`` if it is a positive integer."""
    return check_int(value, name, 1)


def check_float(value, name: str, minimum: float = 0.0, inclusive: bool = False) -> float:
    """Return ``value`` as a float if it is a finite real number above ``minimum`` (or equal, if ``inclusive``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
            value < minimum if inclusive else value <= minimum):
        bound = f"finite number >= {minimum:g}" if inclusive else (
            "positive finite number" if minimum == 0 else f"finite number > {minimum:g}")
        raise ValueError(f"`{name}` must be a {bound}, got {value!r}")
    return float(value)


def check_bool(value, name: str) -> bool:
    """Return ``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}")
    return value


def check_grid(values, name: str) -> torch.Tensor:
    """A non-empty 1-D float64 tensor of finite positive values, sorted increasing."""
    try:
        grid = torch.as_tensor(values, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"`{name}` must be a list of positive numbers, got {values!r}") from None
    if grid.numel() == 0 or not torch.isfinite(grid).all() or not (grid > 0).all():
        raise ValueError(f"`{name}` must be a non-empty list of finite positive numbers, got {values!r}")
    return grid.sort().values


def check_labels(y: torch.Tensor, num_classes: int, name: str = "train_loader") -> None:
    """Classification labels must be integers in ``[0, num_classes)``."""
    if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"labels of `{name}` must be an integer tensor of class indices, got "
                         f"{getattr(y, 'dtype', type(y).__name__)}")
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels of `{name}` must lie in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]")


def check_gram(gram: torch.Tensor, name: str = "kernel", rtol: float = 1e-6) -> None:
    """Raise a ``ValueError`` if a square Gram matrix is non-finite or not symmetric."""
    if not torch.isfinite(gram).all():
        raise ValueError(f"`{name}` gave a Gram matrix with non-finite entries (nan or inf)")
    asym = (gram - gram.T).abs().max()
    if asym > rtol * gram.abs().max().clamp_min(torch.finfo(gram.dtype).tiny):
        raise ValueError(f"`{name}` gave a non-symmetric Gram matrix: max |K - K^T| = {asym.item():.3g}")


def check_targets(y, rows: int, num_outputs: int, likelihood: str, name: str) -> torch.Tensor:
    """Targets of one batch of ``rows`` inputs: classification labels in ``[0, C)`` ``(B,)``, or regression
    values, ``C`` per input and finite, returned as ``(B, C)``."""
    if y is None:
        raise ValueError(f"`{name}` must yield (x, y) batches with targets")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"targets of `{name}` must be tensors, got {type(y).__name__}")
    if y.ndim == 0 or len(y) != rows:
        raise ValueError(f"`{name}` yielded a batch of {rows} inputs with {len(y) if y.ndim else 'scalar'} targets")
    if likelihood == "classification":
        if y.ndim != 1:
            raise ValueError(f"labels of `{name}` must have shape (B,), got {tuple(y.shape)}")
        check_labels(y, num_outputs, name)
        return y
    if not y.dtype.is_floating_point:
        raise ValueError(f"regression targets of `{name}` must be floating point, got {y.dtype}")
    if y[0].numel() != num_outputs:
        raise ValueError(f"regression targets of `{name}` must have {num_outputs} values per input (the model's "
                         f"outputs), got shape {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError(f"regression targets of `{name}` hold nan or inf values")
    return y.reshape(rows, num_outputs)
