"""Weight snapshots ``theta_m``: state dicts checked against a model, flattened, saved and loaded.

A snapshot is a model's ``state_dict`` (parameters and buffers). Parameters are compared with the model by
name and shape and must be finite; every error names the snapshot (its index and file). The flat vector
``theta`` of a snapshot follows the order of ``model.named_parameters()`` restricted to the parameters that
require grad, as everywhere in ella.

Files written here are :mod:`ella.files` files (versioned, checksummed, no pickled code). Checkpoints a user
already has can be read too, with ``weights_only=True``: a plain ``state_dict`` file, or a dict holding one under
``"state_dict"``, ``"model_state_dict"`` or ``"model"``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import files

SNAPSHOT_FORMAT = "ella-snapshot"
SNAPSHOT_VERSION = 2  # 2: an ella.files file
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model.state_dict()``: the snapshot ``theta_m`` (with buffers)."""
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def check_snapshot(state, model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Return ``state`` if it fits ``model``'s architecture and its parameters are finite.

    Raises:
        TypeError: ``state`` is not a dict of tensors.
        ValueError: a parameter is missing, has another shape, or holds non-finite values; or ``state`` has
            entries the model does not know. The message names ``name`` (the snapshot).
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TypeError(f"{name} must be a state_dict (a dict of tensors), got {type(state).__name__}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{name} does not match the model's architecture: missing entries {missing[:5]}, "
            f"unexpected entries {unexpected[:5]}"
        )
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise ValueError(
                f"{name} does not match the model's architecture: `{key}` has shape "
                f"{tuple(state[key].shape)}, the model expects {tuple(ref.shape)}"
            )
    for key, _ in model.named_parameters():
        if not torch.isfinite(state[key]).all():
            raise ValueError(f"{name} has non-finite values in parameter `{key}`")
    return state


def flat_parameters(state: dict[str, torch.Tensor], model: nn.Module, dtype=torch.float64) -> torch.Tensor:
    """``theta`` of a snapshot: its trainable parameters concatenated in ``model``'s order, shape ``(P,)``."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return torch.cat([state[n].reshape(-1).to(dtype) for n in names])


def with_parameters(state: dict[str, torch.Tensor], theta: torch.Tensor, model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``state`` whose trainable parameters are replaced by the flat vector ``theta``."""
    out, offset = dict(state), 0
    for n, p in model.named_parameters():
        if p.requires_grad:
            out[n] = theta[offset : offset + p.numel()].reshape(p.shape).to(device=p.device, dtype=p.dtype)
            offset += p.numel()
    return out


def save_snapshot(path, state: dict[str, torch.Tensor], step: int, index: int) -> None:
    """Write one snapshot file (its step and index, the state_dict on the CPU)."""
    files.write(
        path, SNAPSHOT_FORMAT, SNAPSHOT_VERSION, {"step": int(step), "index": int(index)}, {"state_dict": dict(state)}
    )


def read_checkpoint(path, model: nn.Module, name: str) -> tuple[dict[str, torch.Tensor], int | None]:
    """``(state_dict, step)`` of an ella snapshot file or of a user's checkpoint, checked against ``model``."""
    where = f"{name} ({path})"
    obj = files.load(path, map_location=next(model.parameters()).device)
    step = None
    if isinstance(obj, dict) and obj.get("format") == SNAPSHOT_FORMAT:
        _, meta, tensors = files.parse(obj, SNAPSHOT_FORMAT, SNAPSHOT_VERSION, where)
        obj, step = files.require(tensors, "state_dict", dict, where), files.require(meta, "step", int, where)
    elif isinstance(obj, dict):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    return check_snapshot(obj, model, where), step


class SnapshotFiles:
    """The snapshots of a directory written by the recorder (``snapshot_00000.pt``, ...), read lazily.

    Behaves like a read-only list of state dicts: ``len(files)``, ``files[m]`` (loaded and checked on access),
    so that only one snapshot is in memory at a time.
    """

    PATTERN = "snapshot_{:05d}.pt"

    def __init__(self, directory, model: nn.Module, paths: list[Path] | None = None):
        self.directory, self.model = Path(directory), model
        self.paths = sorted(self.directory.glob("snapshot_*.pt")) if paths is None else list(paths)

    @classmethod
    def path(cls, directory, index: int) -> Path:
        return Path(directory) / cls.PATTERN.format(index)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, m: int) -> dict[str, torch.Tensor]:
        return read_checkpoint(self.paths[m], self.model, f"snapshot {m}")[0]

    def steps(self) -> list[int | None]:
        """The recorded step of every snapshot (loads each file once)."""
        return [read_checkpoint(p, self.model, f"snapshot {m}")[1] for m, p in enumerate(self.paths)]
