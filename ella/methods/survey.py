"""The door pass of ``fit``: one read of the loaders that checks every batch before any long work starts.

:func:`survey` iterates the training loader (and the validation loader) once, without keeping them:

* every batch is split by :mod:`ella.batches` and checked: inputs finite, one target per input, labels in
  ``[0, C)`` or finite regression targets with ``C`` values each;
* it counts the training inputs ``N`` and reads ``C`` off the model's outputs on the first batch;
* it keeps a seeded uniform sample of ``sample_size`` training inputs (reservoir sampling, so ``N`` need not be
  known in advance; all of them, in loader order, when ``N <= sample_size``);
* for regression it measures the MAP's RMSE per output ``rho`` on the validation data (the training data
  without it): the per-output scales of the observation noise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .. import batches
from ..checks import check_deterministic, check_loader, check_targets
from ..utils import progress, seeded_generator


@dataclass
class Survey:
    """What the door pass learned about the data."""

    num_train: int  # N
    num_outputs: int  # C
    num_val: int  # V (0 without validation data)
    sample: object | None  # the kept training inputs (M, ...), on the CPU, or None
    output_scale: torch.Tensor | None  # rho (C,), regression only
    input_spec: dict  # the shape of one input row and its dtype (batches.spec)


class _Reservoir:
    """A uniform sample of ``size`` rows of a stream (Algorithm R), seeded."""

    def __init__(self, size: int, seed: int):
        self.size, self.seen, self.rows = size, 0, None
        self.generator = seeded_generator(seed)
        self.kept: list = []

    def add(self, x) -> None:
        B = batches.num_rows(x)
        take = min(B, max(0, self.size - self.seen))
        if take:  # fill
            self.kept.append(batches.take(x, slice(0, take)))
        if take < B:  # replace: row i of the stream (0-based) lands in slot j ~ U{0..i} if j < size
            if self.rows is None:
                self.rows = batches.concat(self.kept)
            positions = torch.arange(self.seen + take, self.seen + B)
            slots = (torch.rand(len(positions), generator=self.generator) * (positions + 1)).long()
            for hit in (slots < self.size).nonzero()[:, 0].tolist():  # in stream order: a later row wins
                _assign(self.rows, slots[hit].item(), batches.take(x, slice(take + hit, take + hit + 1)))
        self.seen += B

    def result(self):
        if self.rows is not None:
            return self.rows
        return batches.concat(self.kept) if self.kept else None


def _assign(rows, slot: int, row) -> None:
    if isinstance(rows, dict):
        for key in rows:
            rows[key][slot] = row[key][0]
    else:
        rows[slot] = row[0]


def _iterate(loader, name: str, show: bool):
    total = batches.num_batches(loader)
    for batch in progress(loader, show, f"reading {name}", total=total):
        x, y = batches.split_batch(batch, name)
        rows = batches.check_inputs(x, f"inputs of {name}")
        if rows == 0:
            continue
        yield x, y, rows


@torch.no_grad()
def survey(
    model: nn.Module,
    likelihood: str,
    train_loader,
    val_loader=None,
    sample_size: int = 0,
    seed: int = 0,
    progress_bar: bool = False,
) -> Survey:
    """Read and check the loaders once (see the module docstring). ``train_loader`` may be ``None`` for a method
    that learns from validation data alone (temperature scaling), not both."""
    if train_loader is None and val_loader is None:
        raise ValueError("`train_loader` is required: an iterable of (x, y) batches")
    for name, loader in (("train_loader", train_loader), ("val_loader", val_loader)):
        if loader is not None:  # both before any work; a fit reads each loader more than once
            check_loader(loader, name, reread=True)
    if (
        val_loader is not None
        and train_loader is not None
        and (val_loader is train_loader or getattr(val_loader, "dataset", None) is getattr(train_loader, "dataset", 0))
    ):
        warnings.warn(
            "`val_loader` reads the training data: what is tuned on it (the prior, the noise, the residual) "
            "then favours a posterior as confident as the fit to those points, and a noise below the test "
            "error; pass held-out data",
            UserWarning,
            stacklevel=4,
        )
    reservoir = _Reservoir(sample_size, seed) if sample_size else None
    sizes, C, spec = {}, None, None
    for name, loader in (("train_loader", train_loader), ("val_loader", val_loader)):
        if loader is None:
            continue
        sizes[name] = 0
        for x, y, rows in _iterate(loader, name, progress_bar):
            if C is None:
                spec = batches.spec(x)
                out = check_deterministic(model, batches.to_model(batches.take(x, slice(0, 8)), model), inputs=name)
                C = out.shape[1]
                if likelihood == "classification" and C < 2:
                    raise ValueError(
                        f"the model gives {C} output for classification: it needs one logit per class. "
                        "For a one-logit binary classifier z(x), return `torch.cat([torch.zeros_like(z), "
                        "z], 1)` (softmax of [0, z] is sigmoid(z))"
                    )
            batches.check_spec(x, spec, f"inputs of {name}")
            check_targets(y, rows, C, likelihood, name)
            if reservoir is not None and name == "train_loader":
                reservoir.add(x)
            sizes[name] += rows
        if sizes[name] == 0:
            raise ValueError(f"`{name}` is empty: it yielded no data")
    N, V = sizes.get("train_loader", 0), sizes.get("val_loader", 0)
    scale = None
    if likelihood == "regression":
        scale = output_rmse(model, val_loader if V else train_loader, "val_loader" if V else "train_loader", C)
    return Survey(N, C, V, reservoir.result() if reservoir is not None else None, scale, spec)


@torch.no_grad()
def outputs_and_targets(fn, model: nn.Module, loader, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x)`` ``(V, C)`` (float64, CPU; ``x`` moved to the model) and the targets of a (validation-sized)
    loader."""
    outs, ys = [], []
    for batch in loader:
        x, y = batches.split_batch(batch, name)
        outs.append(fn(batches.to_model(x, model)).double().cpu())
        ys.append(y.cpu())
    return torch.cat(outs), torch.cat(ys)


@torch.no_grad()
def output_rmse(model: nn.Module, loader, name: str, num_outputs: int) -> torch.Tensor:
    """The model's root-mean-square error per output on a loader, ``(C,)`` float64 (floored at a tiny value),
    streamed batch by batch."""
    total, count = torch.zeros(num_outputs, dtype=torch.float64), 0
    for batch in loader:
        x, y = batches.split_batch(batch, name)
        out = batches.call(model, batches.to_model(x, model)).double().cpu()
        total += (y.reshape(out.shape).double() - out).pow(2).sum(0)
        count += len(out)
    return (total / count).sqrt().clamp_min(1e-12)
