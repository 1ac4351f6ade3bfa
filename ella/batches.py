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

**Calls** of the model with other weights (:func:`functional`) never touch the model itself, and the hidden
features ella reads off a layer (:func:`recorded_calls`) are the calling thread's own: a thread that runs the model
while ella works beside it sees the model as it was, and two predictions may run at once.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Mapping
from contextlib import contextmanager
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
            raise ValueError(
                f"dict batches of `{name}` must hold the targets under {TARGET_KEY!r}; got keys {sorted(batch)}"
            )
        inputs = {key: value for key, value in batch.items() if key != TARGET_KEY}
        return inputs, batch[TARGET_KEY]
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)):
        if len(batch) in (1, 2):  # (x,) holds inputs only, as a TensorDataset of inputs yields
            return batch[0], batch[1] if len(batch) == 2 else None
        raise ValueError(
            f"`{name}` must yield (x, y) batches; got a batch of {len(batch)} fields (extra fields "
            "such as sample weights are not supported)"
        )
    raise TypeError(f"`{name}` must yield (x, y) tuples or dicts with {TARGET_KEY!r}, got {type(batch).__name__}")


def check_inputs(x, name: str = "x") -> int:
    """Return the batch size ``B`` of inputs ``x``; a ``TypeError``/``ValueError`` naming ``name`` if they are not
    a tensor with a batch dimension (or a dict of such tensors of one length) or hold nan or inf."""
    tensors = x.values() if isinstance(x, Mapping) else [x]
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError(f"`{name}` must be a torch.Tensor or a dict of tensors, got {type(x).__name__}")
    if any(t.is_meta for t in tensors):
        raise ValueError(f"`{name}` is on the meta device: it has a shape but holds no values")
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
        found = out
        out = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
        if not isinstance(out, torch.Tensor):
            what = (
                f"a dict with keys {sorted(map(str, found))[:8]} and no `logits`"
                if isinstance(found, Mapping)
                else f"a {type(found).__name__} without a `logits` tensor"
            )
            raise TypeError(f"the model must return a tensor or an object with a `logits` tensor; it returned {what}")
    return out.reshape(out.shape[0], -1)


def call(model: nn.Module, x: Inputs) -> torch.Tensor:
    """``g(x)``, shape ``(B, C)``."""
    return logits(model(**x) if isinstance(x, Mapping) else model(x))


def functional(model: nn.Module, params: dict, x: Inputs) -> torch.Tensor:
    """``g(x, theta)`` for the parameter dict ``theta`` (the model's own buffers kept), shape ``(B, C)``.

    ``functional_call`` swaps the weights of the module it is given while it runs; it is given the calling
    thread's :func:`shadow` of ``model``, so the model itself never holds ``theta``."""
    module = shadow(model)
    if isinstance(x, Mapping):
        return logits(functional_call(module, params, (), dict(x)))
    return logits(functional_call(module, params, (x,)))


_SHADOWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {thread: (tensor ids, shadow)}
_SHADOWS_LOCK = threading.Lock()


def shadow(model: nn.Module) -> nn.Module:
    """The calling thread's copy of ``model``'s modules, sharing its parameters and buffers (no tensor is copied);
    made again when a module or a tensor of the model is replaced. (A model that cannot be deep-copied is its own
    shadow.)"""
    tensors = [*model.parameters(), *model.buffers()]
    key, thread = tuple(map(id, [*model.modules(), *tensors])), threading.get_ident()
    with _SHADOWS_LOCK:
        held = _SHADOWS.setdefault(model, {}).get(thread)
        if held is None or held[0] != key:
            try:
                held = key, copy.deepcopy(model, {id(t): t for t in tensors})
            except Exception:  # noqa: BLE001 - a module that cannot be copied swaps its own weights, as torch does
                held = key, model
            _SHADOWS[model][thread] = held
    return held[1]


@contextmanager
def recorded_calls(modules: Mapping[str, nn.Module]):
    """A list that receives ``(name, input, output)`` for every forward call of the named ``modules`` made by this
    thread while the context is open (forward hooks that ignore the calls of other threads)."""
    seen, thread = [], threading.get_ident()

    def hook(name):
        def record(_, inputs, output):
            if threading.get_ident() == thread:
                seen.append((name, inputs[0], output))

        return record

    hooks = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        yield seen
    finally:
        for handle in hooks:
            handle.remove()


@torch.no_grad()
def outputs(model: nn.Module, x: Inputs, batch_size: int = 1024) -> torch.Tensor:
    """``g(x)`` in pieces of ``batch_size`` rows, shape ``(B, C)``."""
    return torch.cat([call(model, piece) for piece in chunks(x, batch_size)])


def num_batches(loader) -> int | None:
    """``len(loader)``, or ``None`` for a loader without a length (a ``DataLoader`` over an ``IterableDataset``)."""
    try:
        return len(loader)
    except TypeError:
        return None


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
            raise ValueError(
                f"`{name}` must be a dict with the keys {sorted(expected)}, got "
                f"{sorted(found) if isinstance(found, dict) else type(x).__name__}"
            )
        for key in expected:
            check_spec(x[key], expected[key], f"{name}[{key!r}]")
        return
    if "shape" not in found:
        raise ValueError(f"`{name}` must be a tensor, got a dict with the keys {sorted(found)}")
    if found["shape"] != expected["shape"]:
        raise ValueError(
            f"`{name}` has rows of shape {tuple(found['shape'])}, but the inputs were of shape "
            f"{tuple(expected['shape'])} (a batch of them is "
            f"(B, {', '.join(map(str, expected['shape']))}))"
        )
    floating = [getattr(torch, s["dtype"]).is_floating_point for s in (found, expected)]
    if floating[0] != floating[1]:
        raise ValueError(f"`{name}` has dtype {found['dtype']}, but the inputs were {expected['dtype']}")


MAX_ROW = 2**24  # entries of one input row a saved :func:`spec` may declare (a 3 x 2048 x 2048 image is 12.6M)


def check_saved_spec(input_spec, where: str) -> dict:
    """A :func:`spec` read from a file: a shape of non-negative integers of at most :data:`MAX_ROW` entries and a
    torch dtype (or a dict of such), else a ``ValueError`` naming the file: nothing is allocated from it unchecked."""
    if isinstance(input_spec, dict) and "shape" not in input_spec and input_spec:
        return {key: check_saved_spec(value, where) for key, value in input_spec.items()}
    shape = input_spec.get("shape") if isinstance(input_spec, dict) else None
    dtype = getattr(torch, str(input_spec.get("dtype")), None) if isinstance(input_spec, dict) else None
    if (
        not isinstance(shape, list)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        or not isinstance(dtype, torch.dtype)
    ):
        raise ValueError(f"{where} is malformed: its input description {input_spec!r} is not a row shape and a dtype")
    entries = 1
    for n in shape:
        entries *= n
    if entries > MAX_ROW:
        raise ValueError(f"{where} is malformed: its inputs have rows of {entries:,} entries (at most {MAX_ROW:,})")
    return input_spec


def example(input_spec: dict, model: nn.Module, rows: int = 2) -> Inputs:
    """``rows`` zero inputs of the given :func:`spec` on the model's device (floating ones in its dtype)."""
    if "shape" not in input_spec:
        return {key: example(value, model, rows) for key, value in input_spec.items()}
    dtype = getattr(torch, input_spec["dtype"])
    return to_model(torch.zeros(rows, *input_spec["shape"], dtype=dtype), model)
