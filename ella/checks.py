"""Input validation shared by every entry point.

Each check raises a ``ValueError`` or ``TypeError`` that names the offending argument and what was
expected, and runs before any long computation starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import batches, names
from .names import LIKELIHOODS

# Layers whose output depends on the training/eval flag: an uncertainty estimate built in training
# mode would silently use batch statistics or random masks.
_MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.GroupNorm)


def check_model(model: nn.Module, name: str = "model") -> nn.Module:
    """Reject a model that is not an ``nn.Module``, is in training mode with mode-dependent layers,
    has no trainable parameters, or holds non-finite weights."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"`{name}` must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        raise TypeError(
            f"`{name}` is wrapped in {type(model).__name__}: pass the network itself, `{name}.module` "
            "(ella splits the data over processes itself; see docs/distributed.md)"
        )
    if type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
        raise TypeError(
            f"`{name}` is compiled by torch.compile: pass the module it compiled, `{name}._orig_mod` "
            "(its parameter names carry a `_orig_mod.` prefix, and ella transforms the forward itself)"
        )
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
            raise ValueError(
                f"`{name}` is in training mode and has {', '.join(layers)} layers: call `{name}.eval()` "
                "first so that predictions use fixed statistics and no dropout"
            )


@torch.no_grad()
def check_deterministic(model: nn.Module, probe, name: str = "model", inputs: str = "`x`") -> torch.Tensor:
    """Two forward passes of the probe inputs must agree, whatever the outputs' scale: random layers left active
    (dropout applied in training mode, also through ``torch.nn.functional``) would make every prediction a random
    draw. The outputs must be finite. Returns the first pass's outputs ``(B, C)``."""
    first, second = batches.call(model, probe), batches.call(model, probe)
    check_finite_outputs(first, inputs)
    scale = float(first.abs().max())  # relative to the outputs themselves: a network of tiny outputs included
    if not torch.allclose(first, second, rtol=1e-4, atol=1e-5 * scale):
        raise ValueError(
            f"`{name}` gives different outputs for the same input: a random layer (dropout?) is active; "
            f"call `{name}.eval()`"
        )
    return first


def check_likelihood(likelihood) -> str:
    """Return the likelihood name if it is one of ``LIKELIHOODS``."""
    return check_choice(likelihood, "likelihood", LIKELIHOODS)


def check_choice(value, name: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}")
    return value


def check_loader(loader, name: str = "train_loader", reread: bool = False) -> None:
    """Reject an object that is not an iterable of batches, one that is known to be empty, and, where the loader is
    read more than once (``reread``), a one-shot iterator (a generator), which would be empty the second time."""
    if isinstance(loader, (torch.Tensor, str, bytes)) or not hasattr(loader, "__iter__"):
        raise TypeError(
            f"`{name}` must be an iterable of (x, y) batches such as a DataLoader, got {type(loader).__name__}"
        )
    if reread and isinstance(loader, Iterator):
        raise TypeError(
            f"`{name}` is a one-shot iterator ({type(loader).__name__}): `fit` reads it more than once, "
            "and it would be empty the second time; pass a DataLoader or a list of (x, y) batches"
        )
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
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (value < minimum if inclusive else value <= minimum)
    ):
        bound = (
            f"finite number >= {minimum:g}"
            if inclusive
            else ("positive finite number" if minimum == 0 else f"finite number > {minimum:g}")
        )
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


def check_fold_in(fold_in):
    """``"all"``, ``"tune"`` or a number of training points (0: none, the prior alone)."""
    if fold_in in names.FOLD_INS or (isinstance(fold_in, int) and not isinstance(fold_in, bool) and fold_in >= 0):
        return fold_in
    raise ValueError(f"`fold_in` must be 'all', 'tune' or a number of training points (0: none), got {fold_in!r}")


def check_residual(residual):
    """One of :data:`ella.names.RESIDUALS` or a positive number of random directions."""
    if isinstance(residual, str):
        return check_choice(residual, "residual", names.RESIDUALS)
    if isinstance(residual, int) and not isinstance(residual, bool) and residual > 0:
        return residual
    raise ValueError(f"`residual` must be one of {names.RESIDUALS} or a positive integer, got {residual!r}")


def check_noise(sigma_noise, likelihood: str | None = None):
    """``None`` (tuned) or the observation noise: a positive number, or a sequence of one per output (a tuple; a
    single value collapses to a number); with ``likelihood``, only for regression."""
    if sigma_noise is None:
        return None
    if likelihood is not None and likelihood != "regression":
        raise ValueError(f"`sigma_noise` applies to regression only, got {sigma_noise!r} for {likelihood}")
    if isinstance(sigma_noise, (list, tuple, torch.Tensor)):
        flat = torch.as_tensor(sigma_noise, dtype=torch.float64).flatten()
        values = tuple(check_float(float(v), "sigma_noise") for v in flat)
        if not values:
            raise ValueError("`sigma_noise` must hold at least one value")
        return values if len(values) > 1 else values[0]
    return check_float(sigma_noise, "sigma_noise")


def check_labels(y: torch.Tensor, num_classes: int, name: str = "train_loader") -> None:
    """Classification labels must be integers in ``[0, num_classes)``."""
    if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(
            f"labels of `{name}` must be an integer tensor of class indices, got "
            f"{getattr(y, 'dtype', type(y).__name__)}"
        )
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"labels of `{name}` must lie in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]"
        )


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
        raise ValueError(
            f"regression targets of `{name}` must have {num_outputs} values per input (the model's "
            f"outputs), got shape {tuple(y.shape)}"
        )
    if not torch.isfinite(y).all():
        raise ValueError(f"regression targets of `{name}` hold nan or inf values")
    return y.reshape(rows, num_outputs)


def check_finite_outputs(out: torch.Tensor, where: str, first: int = 0) -> None:
    """A ``ValueError`` naming the rows of ``out`` ``(B, C)`` (numbered from ``first``) that are not finite."""
    bad = (~torch.isfinite(out.reshape(len(out), -1)).all(1)).nonzero()[:, 0]
    if len(bad):
        rows = ", ".join(str(first + int(i)) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise ValueError(
            f"the model's outputs on {len(bad)} input(s) of {where} are not finite (NaN or inf): rows {rows}"
        )


def model_signature(model: nn.Module) -> tuple:
    """What identifies a network cheaply enough to check at every call: its modules (names and types) and, for
    every parameter and buffer, the tensor itself, its shape, dtype, ``requires_grad`` and its version counter,
    which every in-place change through autograd's view of it advances (an optimiser step, ``load_state_dict``,
    ``p.add_(...)`` under ``no_grad``). Writes through ``p.data`` are not seen: the full fingerprint of the
    values is checked when a posterior is loaded (:func:`ella.files.fingerprint`)."""
    modules = tuple((name, type(m).__qualname__) for name, m in model.named_modules())
    tensors = tuple(
        (kind, name, id(t), tuple(t.shape), t.dtype, t.requires_grad, t._version)
        for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers()))
        for name, t in named
    )
    return modules, tensors


def check_unchanged(model: nn.Module, signature: tuple, name: str = "model") -> None:
    """A ``ValueError`` saying what changed in ``model`` since its :func:`model_signature` was taken at ``fit``."""
    modules, tensors = model_signature(model)
    if modules != signature[0]:
        changed = next(((a, b) for a, b in zip(signature[0], modules) if a != b), None)
        what = (
            f"module {changed[0][0] or '<root>'!r} was a {changed[0][1]} and is a {changed[1][1]}"
            if changed
            else f"it had {len(signature[0])} modules and has {len(modules)}"
        )
        raise ValueError(f"`{name}`'s architecture changed since `fit` ({what}): fit again")
    if tensors != signature[1]:
        old = {t[:2]: t for t in signature[1]}
        for now in tensors:
            before = old.get(now[:2])
            if before != now:
                kind, tensor = now[:2]
                how = (
                    "is new"
                    if before is None
                    else "was replaced"
                    if before[2] != now[2]
                    else "changed its requires_grad"
                    if before[5] != now[5]
                    else "was modified in place"
                )
                raise ValueError(
                    f"`{name}` changed since `fit`: {kind} {tensor!r} {how}; the posterior belongs to the "
                    "weights it was fitted to: fit again (or load it onto those weights)"
                )
        raise ValueError(f"`{name}` changed since `fit`: a parameter or buffer was removed; fit again")
