"""The one adapter between the data people have and ella: batches, inputs and model outputs.

**Batches** are what a loader yields:

* ``(x, y)`` tuples or lists, or ``(x,)`` for inputs alone (a third field, such as sample weights, is refused
  rather than dropped);
* dicts such as a tokenizer's ``{"input_ids": ..., "attention_mask": ..., "labels": ...}``: the targets are
  the entry ``"labels"``, the inputs every other entry.

**Inputs** ``x`` are a tensor ``(B, ...)`` or a dict of tensors sharing the batch dimension ``B``; a dict is
passed to the model as keyword arguments, ``model(**x)``. Every function here treats both alike, so the rest of
ella never asks which it holds.

**Outputs** of the model are a tensor, flattened to ``(B, C)``, or an object (or dict) with ``logits``, as
HuggingFace classifiers return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

import torch
from torch import nn
from torch.func import functional_call

Inputs = Union[torch.Tensor, Mapping]
TARGET_KEY = "labels"


def split_batch(batch, name: str = "train_loader") -> tuple[Inputs, torch.Tensor | None]:
    """``(inputs, targets)`` of one batch; ``targets`` is ``None`` for a bare input tensor."""
    if isinstance(batch, Mapping):
        if TARGET_KEY not in batch:
            raise ValueError(f"dict batches of `{name}` must hold the targets under {TARGET_KEY!r}; got keys "
                             f"{sorted(batch)}")
        inputs = {key: value for key, value in batch.items() if key != TARGET_KEY}
        return inputs, batch[TARGET_KEY]
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)):
        if len(batch) in (1, 2):  # (x,) holds inputs only, as a TensorDataset of inputs yields
            return batch[0], batch[1] if len(batch) == 2 else None
        raise ValueError(f"`{name}` must yield (x, y) batches; got a batch of {len(batch)} fields (extra fields "
                         "such as sample weights are not supported)")
    raise TypeError(f"`{name}` must yield (x, y) tuples or dicts with {TARGET_KEY!r}, got {type(batch).__name__}")


def check_inputs(x, name: str = "x") -> int:
    """Return the batch size ``B`` of inputs ``x``; a ``TypeError``/``ValueError`` naming ``name`` if they are not
    a tensor with a batch dimension (or a dict of such tensors of one length) or hold nan or inf."""
    tensors = x.values() if isinstance(x, Mapping) else [x]
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError(f"`{name}` must be a torch.Tensor or a dict of tensors, got {type(x).__name__}")
    sizes = {t.shape[0] if t.ndim else None for t in tensors}
    if None in sizes:
        raise ValueError(f"`{name}` must have a batch dimension: got a 0-d tensor (use x.unsqueeze(0) for one input)")
    if len(sizes) > 1:
        raise ValueError(f"the tensors of `{name}` must share their batch size, got {sorted(sizes)}")
    for t in tensors:  # nan and inf reach the extremes (nan propagates): two reductions, no boolean copy
        if t.dtype.is_floating_point and t.numel() and not all(torch.isfinite(v) for v in torch.aminmax(t)):
            raise ValueError(f"`{name}` holds nan or inf values")
    return sizes.pop()


def num_rows(x: Inputs) -> int:
    """``B``, the batch size of inputs."""
    return len(next(iter(x.values()))) if isinstance(x, Mapping) else len(x)


def take(x: Inputs, index) -> Inputs:
    """Rows ``index`` (a slice or an index tensor) of inputs."""
    if isinstance(x, Mapping):
        return {key: value[index] for key, value in x.items()}
    return x[index]


def chunks(x: Inputs, size: int):
    """Consecutive pieces of at most ``size`` rows."""
    for start in range(0, num_rows(x), size):
        yield take(x, slice(start, start + size))


def concat(pieces: list) -> Inputs:
    """Inputs (or targets) concatenated along the batch dimension."""
    if isinstance(pieces[0], Mapping):
        return {key: torch.cat([p[key] for p in pieces]) for key in pieces[0]}
    return torch.cat(pieces)


def to_model(x: Inputs, model: nn.Module) -> Inputs:
    """Inputs on the model's device, floating tensors in its dtype (integer tokens keep theirs)."""
    p = next(model.parameters())

    def move(t):
        return t.to(device=p.device, dtype=p.dtype if t.dtype.is_floating_point else None)

    return {key: move(value) for key, value in x.items()} if isinstance(x, Mapping) else move(x)


def logits(out) -> torch.Tensor:
    """A model's output as a ``(B, C)`` tensor: the tensor itself, flattened, or its ``logits``."""
    if not isinstance(out, torch.Tensor):
        out = out["logits"] if isinstance(out, Mapping) else getattr(out, "logits", None)
        if not isinstance(out, torch.Tensor):
            raise TypeError("the model must return a tensor or an object with a `logits` tensor")
    return out.reshape(out.shape[0], -1)


def call(model: nn.Module, x: Inputs) -> torch.Tensor:
    """``g(x)``, shape ``(B, C)``."""
    return logits(model(**x) if isinstance(x, Mapping) else model(x))


def functional(model: nn.Module, params: dict, x: Inputs) -> torch.Tensor:
    """``g(x, theta)`` for the parameter dict ``theta`` (the model's own buffers kept), shape ``(B, C)``."""
    if isinstance(x, Mapping):
        return logits(functional_call(model, params, (), dict(x)))
    return logits(functional_call(model, params, (x,)))


@torch.no_grad()
def outputs(model: nn.Module, x: Inputs, batch_size: int = 1024) -> torch.Tensor:
    """``g(x)`` in pieces of ``batch_size`` rows, shape ``(B, C)``."""
    return torch.cat([call(model, piece) for piece in chunks(x, batch_size)])


def collect(loader, name: str = "loader") -> tuple[Inputs, torch.Tensor | None]:
    """All inputs and targets of a loader, concatenated: for data that must be held whole (the training inputs
    a trajectory records functions on, small validation sets), never for a streamed fit."""
    xs, ys = [], []
    for batch in loader:
        x, y = split_batch(batch, name)
        check_inputs(x, name)
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError(f"`{name}` is empty: it yielded no data")
    return concat(xs), None if any(y is None for y in ys) else concat(ys)


def device(x: Inputs) -> torch.device:
    """The device inputs live on."""
    return next(iter(x.values())).device if isinstance(x, Mapping) else x.device


def spec(x: Inputs):
    """The shape of one row and the dtype of inputs, JSON-ready: what :func:`example` rebuilds inputs from."""
    if isinstance(x, Mapping):
        return {key: spec(value) for key, value in x.items()}
    return {"shape": list(x.shape[1:]), "dtype": str(x.dtype).removeprefix("torch.")}


def check_spec(x: Inputs, expected, name: str = "x") -> None:
    """Inputs must have rows of the shape, and a dtype of the kind (floating or not), of ``expected``
    (:func:`spec` of the inputs a method was fitted on)."""
    found = spec(x)
    if isinstance(expected, dict) and "shape" not in expected:
        if not isinstance(found, dict) or set(found) != set(expected):
            raise ValueError(f"`{name}` must be a dict with the keys {sorted(expected)}, got "
                             f"{sorted(found) if isinstance(found, dict) else type(x).__name__}")
        for key in expected:
            check_spec(x[key], expected[key], f"{name}[{key!r}]")
        return
    if "shape" not in found:
        raise ValueError(f"`{name}` must be a tensor, got a dict with the keys {sorted(found)}")
    if found["shape"] != expected["shape"]:
        raise ValueError(f"`{name}` has rows of shape {tuple(found['shape'])}, but the inputs were of shape "
                         f"{tuple(expected['shape'])} (a batch of them is (B, {', '.join(map(str, expected['shape']))}))")
    floating = [getattr(torch, s["dtype"]).is_floating_point for s in (found, expected)]
    if floating[0] != floating[1]:
        raise ValueError(f"`{name}` has dtype {found['dtype']}, but the inputs were {expected['dtype']}")


def example(input_spec: dict, model: nn.Module, rows: int = 2) -> Inputs:
    """``rows`` zero inputs of the given :func:`spec` on the model's device (floating ones in its dtype)."""
    if "shape" not in input_spec:
        return {key: example(value, model, rows) for key, value in input_spec.items()}
    dtype = getattr(torch, input_spec["dtype"])
    return to_model(torch.zeros(rows, *input_spec["shape"], dtype=dtype), model)
