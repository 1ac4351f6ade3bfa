"""``Trajectory``: M snapshots of one training run, as functions on the training inputs and/or as weights.

What a trajectory can hold (at least one of the first two):

* functions: ``g(x_n, theta_m)`` on the ``N`` training inputs, stored as an anchor ``a_n = g(x_n, theta_1)``
  (full precision) plus deviations ``d_mn = g(x_n, theta_m) - a_n`` (``(M, N, C)``, float16 allowed: the
  deviations are small, so rounding them costs little). The anchor cancels in every centred quantity.
* weights: the snapshots' state dicts, in memory or as files on disk (read lazily, one at a time), from
  which ``g(x, theta_m)`` is available at any ``x``.
* always: the streaming SWA/SWAG moments of the weights (:class:`~ella.trajectory.moments.WeightMoments`).

Saved trajectories are :mod:`ella.files` files (tensors and JSON metadata, checksummed, never unpickled code)
carrying the model's parameter count, checked on load.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from .. import files
from ..utils import num_parameters, progress
from .moments import WeightMoments
from .snapshots import SnapshotFiles, check_snapshot, flat_parameters, with_parameters

TRAJECTORY_FORMAT = "ella-trajectory"
TRAJECTORY_VERSION = 2  # 2: tensors and JSON metadata in an ella.files file


class Trajectory:
    """The recorded snapshots ``theta_1, ..., theta_M`` of one run (see the module docstring).

    Built by :class:`~ella.trajectory.TrajectoryRecorder`, :meth:`from_checkpoints`, :meth:`from_directory`
    or :meth:`load`, rarely by hand.

    Args:
        model: a network of the recorded architecture (its weights are not used).
        steps: the training step of every snapshot (length M >= 2).
        moments: SWA/SWAG moments of the M snapshots.
        inputs: the training inputs the functions were recorded on, ``(N, ...)``.
        anchor: the first snapshot's outputs on them, ``(N, C)``.
        deviations: every snapshot's outputs minus ``anchor``, ``(M, N, C)``.
        snapshots: M state dicts, or a :class:`~ella.trajectory.snapshots.SnapshotFiles`.
        meta: free-form information (schedule, seconds, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        steps,
        moments: WeightMoments,
        *,
        inputs=None,
        anchor=None,
        deviations=None,
        snapshots=None,
        meta: dict | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        steps = list(steps)
        if len(steps) < 2:
            raise ValueError(f"a trajectory needs at least 2 snapshots, got {len(steps)}")
        if deviations is None and snapshots is None:
            raise ValueError("a trajectory needs recorded functions (`deviations`) or weight `snapshots`")
        if deviations is not None and (
            len(deviations) != len(steps)
            or anchor is None
            or inputs is None
            or deviations.shape[1:] != anchor.shape
            or len(inputs) != len(anchor)
        ):
            raise ValueError("`deviations` (M, N, C), `anchor` (N, C) and `inputs` (N, ...) must agree with M steps")
        if snapshots is not None and len(snapshots) != len(steps):
            raise ValueError(f"{len(snapshots)} weight snapshots for {len(steps)} steps")
        if moments.count != len(steps):
            raise ValueError(f"the weight moments hold {moments.count} snapshots for {len(steps)} steps")
        self.model = copy.deepcopy(model).eval()  # the architecture: functional_call's template
        self.steps, self.moments, self.meta = steps, moments, dict(meta or {})
        self.inputs, self.anchor, self.deviations, self.snapshots = inputs, anchor, deviations, snapshots
        self._index = None

    # ---------------------------------------------------------------- what it holds
    @property
    def num_snapshots(self) -> int:
        """M."""
        return len(self.steps)

    @property
    def has_functions(self) -> bool:
        return self.deviations is not None

    @property
    def has_weights(self) -> bool:
        return self.snapshots is not None

    def __repr__(self) -> str:
        parts = [f"M={self.num_snapshots}", f"steps {self.steps[0]}..{self.steps[-1]}"]
        if self.has_functions:
            parts.append(f"functions on N={len(self.anchor)} inputs ({self.deviations.dtype})")
        if self.has_weights:
            parts.append("weights on disk" if isinstance(self.snapshots, SnapshotFiles) else "weights in memory")
        return f"Trajectory({', '.join(parts)})"

    # ---------------------------------------------------------------- functions
    def lookup(self, x: torch.Tensor) -> torch.Tensor | None:
        """Row indices of ``x`` among the recorded inputs, or ``None`` if some input was not recorded."""
        if not self.has_functions:
            return None
        if x.shape == self.inputs.shape and torch.equal(x.to(self.inputs.device), self.inputs):
            return torch.arange(len(x))
        if self._index is None:  # exact match of the input bytes
            self._index = {row.numpy().tobytes(): i for i, row in enumerate(self.inputs.detach().cpu())}
        rows = [self._index.get(row.numpy().tobytes()) for row in x.detach().cpu().to(self.inputs.dtype)]
        return None if any(r is None for r in rows) else torch.tensor(rows)

    def recorded_functions(self, index: torch.Tensor, dtype=None) -> torch.Tensor:
        """Deviations ``d_mn = g(x_n, theta_m) - a_n`` at recorded rows ``index``, shape ``(M, B, C)``."""
        d = self.deviations[:, index.to(self.deviations.device)]
        return d.to(dtype or self.anchor.dtype)

    # ---------------------------------------------------------------- weights
    def snapshot(self, m: int) -> dict[str, torch.Tensor]:
        """The state dict ``theta_m``."""
        if not self.has_weights:
            raise ValueError("this trajectory recorded functions only: record weights for snapshots at any x")
        return self.snapshots[m]

    @torch.no_grad()
    def outputs(self, x: torch.Tensor, state: dict[str, torch.Tensor], batch_size: int = 1024) -> torch.Tensor:
        """``g(x, theta)`` for the state dict ``theta`` on this trajectory's architecture, ``(B, C)``."""
        out = [functional_call(self.model, state, (x[i : i + batch_size],)) for i in range(0, len(x), batch_size)]
        return torch.cat(out).reshape(len(x), -1)

    def functions(self, x: torch.Tensor, batch_size: int = 1024, show_progress: bool = False) -> torch.Tensor:
        """``g(x, theta_m)`` for every snapshot, shape ``(M, B, C)`` (M forward passes)."""
        bar = progress(range(self.num_snapshots), show_progress, "SGD-trajectory functions")
        return torch.stack([self.outputs(x, self.snapshot(m), batch_size) for m in bar])

    def swa_state(self) -> dict[str, torch.Tensor]:
        """State dict with the SWA mean ``theta_swa`` as parameters and the last snapshot's buffers (without
        weight snapshots: the recorded model's buffers at the end). Buffers such as batch-norm statistics
        must be recomputed for the averaged weights (:func:`~ella.trajectory.swa_model` does)."""
        base = self.snapshot(self.num_snapshots - 1) if self.has_weights else self.model.state_dict()
        return with_parameters(base, self.moments.mean, self.model)

    # ---------------------------------------------------------------- construction and persistence
    @classmethod
    def from_snapshots(
        cls, snapshots, model: nn.Module, steps=None, rank: int = 20, meta: dict | None = None
    ) -> "Trajectory":
        """A weights-only trajectory from state dicts (a list, or :class:`SnapshotFiles`), moments folded in."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        if len(snapshots) < 2:
            raise ValueError(f"a trajectory needs at least 2 snapshots, got {len(snapshots)}")
        moments = WeightMoments(rank)
        dtype = next(model.parameters()).dtype
        for m in range(len(snapshots)):
            state = snapshots[m]  # files are checked as they are read, dicts here
            if not isinstance(snapshots, SnapshotFiles):
                check_snapshot(state, model, f"snapshot {m}")
            moments.update(flat_parameters(state, model, dtype))
        steps = list(range(1, len(snapshots) + 1)) if steps is None else list(steps)
        return cls(model, steps, moments, snapshots=snapshots, meta=meta)

    @classmethod
    def from_checkpoints(cls, paths, model: nn.Module, rank: int = 20, in_memory: bool = False) -> "Trajectory":
        """A trajectory from checkpoint files a user already has (state_dict files, in training order).

        Args:
            paths: the files; each is a ``state_dict`` or a dict with one under ``"state_dict"``,
                ``"model_state_dict"`` or ``"model"`` (an ella snapshot file works too).
            model: a network of the same architecture.
            rank: K of the SWAG low-rank part.
            in_memory: keep all snapshots in memory instead of reading the files when needed.

        Raises:
            ValueError: fewer than 2 paths, or a file that is missing, unreadable, of another architecture or
                non-finite (the message names the snapshot and its file).
        """
        paths = [Path(p) for p in paths]
        if len(paths) < 2:
            raise ValueError(f"`paths` must name at least 2 checkpoint files, got {len(paths)}")
        for m, p in enumerate(paths):  # fail on a missing file before reading any weights
            if not p.is_file():
                raise ValueError(f"snapshot {m}: no such file {str(p)!r}")
        files = SnapshotFiles(paths[0].parent, model, paths)
        snapshots = [files[m] for m in range(len(files))] if in_memory else files
        return cls.from_snapshots(snapshots, model, rank=rank, meta={"checkpoints": [str(p) for p in paths]})

    @classmethod
    def from_directory(cls, directory, model: nn.Module, rank: int = 20) -> "Trajectory":
        """The weight snapshots a :class:`~ella.trajectory.TrajectoryRecorder` wrote to ``directory``."""
        files = SnapshotFiles(directory, model)
        if len(files) < 2:
            raise ValueError(
                f"`directory` {str(directory)!r} holds {len(files)} snapshot files; a trajectory needs at least 2"
            )
        return cls.from_snapshots(files, model, steps=files.steps(), rank=rank, meta={"directory": str(directory)})

    def save(self, path) -> None:
        """Write the trajectory to one file: functions, moments, steps, and the weight snapshots if they are
        in memory (snapshots on disk are referenced by their paths)."""
        on_disk = isinstance(self.snapshots, SnapshotFiles)
        moments = self.moments.state_dict()
        tensors = {
            "moments": {"mean": moments["mean"], "sq_mean": moments["sq_mean"], "deviations": moments["deviations"]}
        }
        if self.has_functions:
            tensors.update(inputs=self.inputs, anchor=self.anchor, deviations=self.deviations)
        if self.has_weights and not on_disk:
            tensors["snapshots"] = list(self.snapshots)
        meta = {
            "num_params": num_parameters(self.model),
            "steps": self.steps,
            "rank": moments["rank"],
            "count": moments["count"],
            "meta": _json_ready(self.meta),
            "snapshot_files": [str(p) for p in self.snapshots.paths] if on_disk else None,
        }
        files.write(path, TRAJECTORY_FORMAT, TRAJECTORY_VERSION, meta, tensors)

    @classmethod
    def load(cls, path, model: nn.Module) -> "Trajectory":
        """Read a trajectory written by :meth:`save` for ``model``'s architecture; format, version, checksum,
        parameter count and every snapshot are checked, and any problem is one ``ValueError`` naming the file."""
        _, meta, tensors = files.read(
            path, TRAJECTORY_FORMAT, TRAJECTORY_VERSION, map_location=next(model.parameters()).device
        )
        where = str(path)
        num_params = files.require(meta, "num_params", int, where)
        if num_params != num_parameters(model):
            raise ValueError(
                f"`model` has {num_parameters(model)} parameters but the trajectory in {where} was "
                f"recorded for a model with {num_params}"
            )
        steps = files.require(meta, "steps", list, where)
        moments = files.require(tensors, "moments", dict, where)
        try:
            moments = WeightMoments.from_state_dict(
                {
                    "rank": files.require(meta, "rank", int, where),
                    "count": files.require(meta, "count", int, where),
                    **moments,
                }
            )
            snapshots = tensors.get("snapshots")
            if snapshots is not None:
                snapshots = [check_snapshot(s, model, f"snapshot {m} of {where}") for m, s in enumerate(snapshots)]
            elif meta.get("snapshot_files"):
                paths = [Path(p) for p in meta["snapshot_files"]]
                snapshots = SnapshotFiles(paths[0].parent, model, paths)
            return cls(
                model,
                steps,
                moments,
                inputs=tensors.get("inputs"),
                anchor=tensors.get("anchor"),
                deviations=tensors.get("deviations"),
                snapshots=snapshots,
                meta=meta.get("meta"),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where} is malformed: {type(e).__name__}: {e}") from None


def _json_ready(value):
    """``value`` with tuples as lists and anything JSON cannot hold as its ``repr``."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
