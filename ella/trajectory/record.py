"""Record a trajectory from any training loop: ``recorder(step, model)`` once per step (or epoch).

    recorder = TrajectoryRecorder(x_train, start=1, every=5, max_snapshots=200, storage_dtype=torch.float16)
    train_map(model, loader, steps=1000, callback=recorder)     # or call recorder(step, model) yourself
    trajectory = recorder.trajectory

A snapshot is taken at steps ``start, start + every, ...`` until ``max_snapshots`` are held. What is kept
(``store``):

* ``"functions"``: ``g(x_n, theta_m)`` on the given training inputs, streamed into a buffer of
  ``max_snapshots x N x C`` values in ``storage_dtype`` (the deviations from the first snapshot's outputs;
  see :class:`~ella.trajectory.Trajectory`): memory is bounded by the schedule, not by the run's length.
* ``"weights"``: the state dicts, in memory, or one versioned file per snapshot in ``directory``.
  ``resume=True`` continues a directory written by an earlier (interrupted) run.
* ``"both"``.

The SWA/SWAG moments of the weights are accumulated in every case (``swag_rank`` deviations kept).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from ..batches import collect
from ..checks import check_positive_int
from .moments import WeightMoments
from .snapshots import SnapshotFiles, check_snapshot, flat_parameters, model_state, read_checkpoint, save_snapshot
from .store import Trajectory

STORES = ("functions", "weights", "both")


@dataclass(frozen=True)
class Schedule:
    """Snapshot steps ``start, start + every, ...``, at most ``max_snapshots`` of them."""

    start: int = 1
    every: int = 1
    max_snapshots: int = 100

    def __post_init__(self):
        if isinstance(self.start, bool) or not isinstance(self.start, int) or self.start < 0:
            raise ValueError(f"`start` must be a non-negative integer step, got {self.start!r}")
        check_positive_int(self.every, "every")
        check_positive_int(self.max_snapshots, "max_snapshots")

    def due(self, step: int, count: int) -> bool:
        """Whether ``step`` is a snapshot step, with ``count`` snapshots already taken."""
        return count < self.max_snapshots and step >= self.start and (step - self.start) % self.every == 0


class TrajectoryRecorder:
    """A callback ``recorder(step, model)`` that records snapshots of a training run on a :class:`Schedule`.

    Args:
        inputs: the training inputs ``(N, ...)`` (a tensor, or a loader of ``(x, y)`` batches) on which the
            functions are recorded; needed for ``store="functions"`` / ``"both"``.
        store: ``"functions"``, ``"weights"`` or ``"both"``.
        start: the first snapshot step (the :class:`Schedule`).
        every: steps between snapshots.
        max_snapshots: the most snapshots kept; later steps are not recorded.
        storage_dtype: dtype of the stored functions (e.g. ``torch.float16``); default the model's.
        directory: where weight snapshots are written (one file each); ``None`` keeps them in memory.
        resume: continue the snapshots already in ``directory`` (they are re-read at the first call).
        swag_rank: K, the deviations kept for the SWAG low-rank part.
        batch_size: inputs per forward pass when recording functions.
    """

    def __init__(
        self,
        inputs=None,
        *,
        store: str = "functions",
        start: int = 1,
        every: int = 1,
        max_snapshots: int = 100,
        storage_dtype: torch.dtype | None = None,
        directory=None,
        resume: bool = False,
        swag_rank: int = 20,
        batch_size: int = 1024,
    ):
        if store not in STORES:
            raise ValueError(f"`store` must be one of {STORES}, got {store!r}")
        self.store = store
        self.record_functions, self.record_weights = store in ("functions", "both"), store in ("weights", "both")
        if self.record_functions:
            if inputs is None:
                raise ValueError(f"`inputs` (the training inputs) are needed to record functions (store={store!r})")
            inputs = inputs if isinstance(inputs, torch.Tensor) else collect(inputs, "inputs")[0]
            if inputs.ndim < 1 or len(inputs) == 0:
                raise ValueError("`inputs` must be a non-empty tensor of training inputs (N, ...)")
        floating = isinstance(storage_dtype, torch.dtype) and storage_dtype.is_floating_point
        if storage_dtype is not None and not floating:
            raise ValueError(f"`storage_dtype` must be a floating torch.dtype, got {storage_dtype!r}")
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None and not self.record_weights:
            raise ValueError("`directory` is where weight snapshots go: use store='weights' or 'both'")
        existing = len(SnapshotFiles(self.directory, None)) if self.directory is not None else 0
        if existing and not resume:
            raise ValueError(
                f"`directory` {str(directory)!r} already holds {existing} snapshot files: pass "
                "resume=True to continue them, or another directory"
            )
        if resume and self.directory is None:
            raise ValueError("`resume=True` continues the snapshots in `directory`: give a `directory`")
        self.schedule = Schedule(start, every, max_snapshots)
        self.inputs, self.storage_dtype, self.resume = inputs, storage_dtype, resume
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.moments = WeightMoments(swag_rank)
        self.steps: list[int] = []
        self.snapshots: list | None = [] if self.record_weights and self.directory is None else None
        self.anchor = self._buffer = self._template = self._evaluator = None
        self.seconds = 0.0

    # ---------------------------------------------------------------- recording
    def __call__(self, step: int, model: nn.Module) -> None:
        if self._template is None:
            self._start(model)
        if self.schedule.due(step, len(self.steps)):
            self.record(step, model)

    def record(self, step: int, model: nn.Module) -> None:
        """Take one snapshot of ``model`` now (whatever the schedule), labelled ``step``."""
        if self._template is None:
            self._start(model)
        start = time.perf_counter()
        m = len(self.steps)
        state = model_state(model)
        check_snapshot(state, self._template, f"snapshot {m} (step {step})")
        self._add(step, state, model)
        self.seconds += time.perf_counter() - start

    def _add(self, step: int, state: dict, model: nn.Module | None) -> None:
        m = len(self.steps)
        dtype = next(self._template.parameters()).dtype
        self.moments.update(flat_parameters(state, self._template, dtype))
        if self.record_functions:
            self._store_functions(m, step, self._outputs(model, state))
        if self.record_weights:
            if self.directory is None:
                self.snapshots.append(state)
            else:
                self.directory.mkdir(parents=True, exist_ok=True)
                save_snapshot(SnapshotFiles.path(self.directory, m), state, step, m)
        self.steps.append(int(step))

    @torch.no_grad()
    def _outputs(self, model: nn.Module | None, state: dict) -> torch.Tensor:
        """``g(x_n, theta_m)`` on the recorded inputs, in eval mode (the model's mode is restored)."""
        p = next(self._template.parameters())
        x = self.inputs.to(device=p.device, dtype=p.dtype if self.inputs.dtype.is_floating_point else None)
        if model is None:  # a snapshot re-read from disk: g(x, theta_m) by functional_call in eval mode
            if self._evaluator is None:
                self._evaluator = copy.deepcopy(self._template).eval()
            out = [
                functional_call(self._evaluator, state, (x[i : i + self.batch_size],))
                for i in range(0, len(x), self.batch_size)
            ]
            return torch.cat(out).reshape(len(x), -1)
        was_training = model.training
        model.eval()
        try:
            out = torch.cat([model(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)])
        finally:
            model.train(was_training)
        return out.reshape(len(x), -1)

    def _store_functions(self, m: int, step: int, out: torch.Tensor) -> None:
        if self.anchor is None:  # a_n = g(x_n, theta_1), full precision; the buffer holds d_mn = g - a_n
            self.anchor = out.clone()
            dtype = self.storage_dtype or out.dtype
            self._buffer = torch.empty(self.schedule.max_snapshots, *out.shape, dtype=dtype, device=out.device)
        if out.shape != self.anchor.shape:
            raise ValueError(
                f"snapshot {m} (step {step}) has outputs of shape {tuple(out.shape)}, the first "
                f"snapshot {tuple(self.anchor.shape)}"
            )
        d = (out - self.anchor).to(self._buffer.dtype)
        if not torch.isfinite(d).all():
            raise ValueError(
                f"snapshot {m} (step {step}) has non-finite outputs, or outputs that overflow "
                f"storage_dtype={self._buffer.dtype}"
            )
        self._buffer[m] = d

    def _start(self, model: nn.Module) -> None:
        """Fix the architecture at the first call; with ``resume``, re-read the snapshots of ``directory`` (in
        order) as if they had just been recorded."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"the recorder is called as recorder(step, model); got {type(model).__name__}")
        self._template = model
        if not self.resume:
            return
        for m, path in enumerate(SnapshotFiles(self.directory, model).paths):
            if path != SnapshotFiles.path(self.directory, m):
                raise ValueError(f"snapshot {m}: expected {SnapshotFiles.path(self.directory, m)}, found {path}")
            state, step = read_checkpoint(path, model, f"snapshot {m}")
            self._add(step, state, None)

    # ---------------------------------------------------------------- result
    @property
    def trajectory(self) -> Trajectory:
        """The snapshots recorded so far as a :class:`~ella.trajectory.Trajectory` (needs at least 2)."""
        M = len(self.steps)
        if M < 2:
            raise ValueError(
                f"the recorder holds {M} snapshot(s); a trajectory needs at least 2 (check the "
                f"schedule {self.schedule} against the number of training steps)"
            )
        functions = {}
        if self.record_functions:
            functions = dict(inputs=self.inputs, anchor=self.anchor, deviations=self._buffer[:M])
        snapshots = self.snapshots
        if self.record_weights and self.directory is not None:
            snapshots = SnapshotFiles(
                self.directory, self._template, [SnapshotFiles.path(self.directory, m) for m in range(M)]
            )
        meta = {"schedule": asdict(self.schedule), "store": self.store, "record_seconds": self.seconds}
        moments = WeightMoments.from_state_dict(self.moments.state_dict())  # a copy: recording may go on
        return Trajectory(self._template, list(self.steps), moments, snapshots=snapshots, meta=meta, **functions)
