"""Files ella writes and reads: tensors plus JSON metadata, versioned and checksummed, never pickled code.

A file is one ``torch.save`` of a dict with plain entries only::

    {"format": kind, "version": int, "meta": "<JSON text>", "tensors": nested dicts / lists of tensors,
     "checksum": SHA-256 of the meta text and of every tensor's path, dtype, shape and bytes}

and is read back with ``torch.load(..., weights_only=True)``, which refuses any pickled object other than
tensors and plain containers, so a crafted file cannot run code. Every problem on reading (not a file, not
readable, another kind, an unsupported version, a malformed entry, a checksum that does not match the
content) raises one ``ValueError`` that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

def leaves(tree, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(path, tensor)`` for every tensor of a nested dict / list, in a canonical order (sorted keys)."""
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, Mapping):
        for key in sorted(tree):
            if not isinstance(key, str):
                raise ValueError(f"entry {prefix!r} has a key that is not a string: {key!r}")
            yield from leaves(tree[key], f"{prefix}/{key}")
    elif isinstance(tree, (list, tuple)):
        for i, item in enumerate(tree):
            yield from leaves(item, f"{prefix}/{i}")
    else:
        raise ValueError(f"entry {prefix!r} is a {type(tree).__name__}, not a tensor")


def _hash_tensor(h, path: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{path}:{t.dtype}:{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def checksum(meta: str, tensors) -> str:
    """SHA-256 of the metadata text and of every tensor (path, dtype, shape, bytes)."""
    h = hashlib.sha256(meta.encode())
    for path, t in leaves(tensors):
        _hash_tensor(h, path, t)
    return h.hexdigest()


def fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's parameters *and* buffers (names, dtypes, shapes, bytes): identifies the exact network,
    batch-norm statistics included."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        _hash_tensor(h, name, t)
    return h.hexdigest()


def write(path, kind: str, version: int, meta: dict, tensors) -> None:
    """Write ``meta`` (JSON-able) and ``tensors`` (nested dicts / lists of tensors, moved to the CPU) to ``path``."""
    text = json.dumps(meta, sort_keys=True)
    cpu = _map(tensors, lambda t: t.detach().cpu())
    torch.save({"format": kind, "version": version, "meta": text, "tensors": cpu,
                "checksum": checksum(text, cpu)}, path)


def load(path, map_location=None):
    """The object stored in ``path`` by ``torch.save``, read with ``weights_only=True`` (tensors and plain
    containers only); a ``ValueError`` naming the file if it is missing or cannot be read that way."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path} holds pickled objects other than tensors and plain containers: ella refuses to "
                         "unpickle them (they could run code)") from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupted files get one clear error
        raise ValueError(f"{path} is not a readable ella file ({type(e).__name__}: {str(e)[:120]})") from None


def read(path, kind: str, version: int, map_location=None) -> tuple[int, dict, dict]:
    """``(version, meta, tensors)`` of a file written by :func:`write` with format ``kind`` and a version in
    ``1 .. version``; any problem is one ``ValueError`` naming ``path``."""
    return parse(load(path, map_location), kind, version, str(path))


def parse(state, kind: str, version: int, where: str) -> tuple[int, dict, dict]:
    """:func:`read` for an object already loaded from the file ``where``."""
    if not isinstance(state, dict) or state.get("format") != kind:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{where} is not an {kind} file (format {found!r})")
    found = state.get("version")
    if isinstance(found, bool) or not isinstance(found, int) or not 1 <= found <= version:
        raise ValueError(f"{where} has {kind} format version {found!r}; this ella reads versions 1 to {version}")
    text, tensors = state.get("meta"), state.get("tensors")
    if not isinstance(text, str) or not isinstance(state.get("checksum"), str):
        raise ValueError(f"{where} is malformed: its metadata or checksum is missing")
    try:
        meta = json.loads(text)
        ok = checksum(text, tensors) == state["checksum"]
    except ValueError as e:
        raise ValueError(f"{where} is malformed: {e}") from None
    if not ok:
        raise ValueError(f"{where} is corrupted: its checksum does not match its content")
    if not isinstance(meta, dict):
        raise ValueError(f"{where} is malformed: its metadata is not a JSON object")
    return found, meta, tensors


def _map(tree, fn):
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        return {key: _map(value, fn) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_map(item, fn) for item in tree]
    return tree


def require(meta_or_tensors: dict, key: str, kind, where) -> object:
    """``meta_or_tensors[key]`` if it is an instance of ``kind``, else a ``ValueError`` naming the file."""
    value = meta_or_tensors.get(key) if isinstance(meta_or_tensors, dict) else None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ValueError(f"{where} is malformed: entry {key!r} is missing or of the wrong type")
    return value


def _is_tensors(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, Mapping):
        return bool(value) and all(_is_tensors(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_is_tensors(v) for v in value)
    return False


def split(state: dict) -> tuple[dict, dict]:
    """``(meta, tensors)``: the entries of ``state`` that are tensors (or nested containers of them), and the rest,
    which must be JSON-ready; :func:`write` takes them apart, ``{**meta, **tensors}`` joins them again."""
    tensors = {key: value for key, value in state.items() if _is_tensors(value)}
    return {key: value for key, value in state.items() if key not in tensors}, tensors
