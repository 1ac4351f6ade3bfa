"""Files ella writes and reads: tensors plus JSON metadata, versioned and checksummed, never pickled code.

A file is one ``torch.save`` of a dict with plain entries only::

    {"format": kind, "version": int, "meta": "<JSON text>", "tensors": nested dicts / lists of tensors,
     "checksum": SHA-256 of the meta text and of every tensor's path, dtype, shape and bytes}

and is read back with ``torch.load(..., weights_only=True)``, which refuses any pickled object other than
tensors and plain containers, so a crafted file cannot run code. Every problem on reading (not a file, not
readable, another kind, an unsupported version, a malformed entry, a checksum that does not match the
content) raises one ``ValueError`` that names the file and the problem. The checksum is verified before the
metadata is parsed, and the metadata's size and the nesting of both parts are bounded.

The checksum detects accidents (a truncated copy, a flipped bit, a file edited by hand), not attackers: whoever
can write a file can recompute it. What a loader reads is checked against the model and the format besides.

Saving is atomic: the file is written to a temporary file in the same folder, flushed to the disk, then renamed
over the path, so a save that fails or is killed leaves the earlier file whole; a symbolic link at the path is
replaced by the new file, never written through.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import secrets
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

MAX_DEPTH = 16  # nesting of the tensor containers and of the metadata a file may hold
MAX_META = 2**22  # characters of metadata a file may hold (4 MiB)


T = TypeVar("T")


def leaves(tree, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """``(path, tensor)`` for every tensor of a nested dict / list (at most :data:`MAX_DEPTH` deep), in a
    canonical order (sorted keys)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"entry {prefix[:60]!r}... nests deeper than {MAX_DEPTH} levels")
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, Mapping):
        for key in sorted(tree, key=str):
            if not isinstance(key, str):
                raise ValueError(f"entry {prefix!r} has a key that is not a string: {key!r}")
            yield from leaves(tree[key], f"{prefix}/{key}", depth + 1)
    elif isinstance(tree, (list, tuple)):
        for i, item in enumerate(tree):
            yield from leaves(item, f"{prefix}/{i}", depth + 1)
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


def architecture(model: nn.Module) -> str:
    """SHA-256 of a model's modules: names, types and their settings (``extra_repr``), without the weights."""
    text = json.dumps([[name, type(m).__qualname__, m.extra_repr()] for name, m in model.named_modules()])
    return hashlib.sha256(text.encode()).hexdigest()


def write(path, kind: str, version: int, meta: dict, tensors) -> None:
    """Write ``meta`` (JSON-able) and ``tensors`` (nested dicts / lists of tensors, moved to the CPU) to ``path``,
    atomically (see the module docstring).

    Raises:
        OSError: the file could not be written (its folder is missing, the disk is full, ...), naming ``path``
            and the reason; an earlier file at ``path`` is left as it was.
    """
    path = Path(path)
    text = json.dumps(meta, sort_keys=True)
    cpu = _map(tensors, lambda t: t.detach().cpu())
    state = {"format": kind, "version": version, "meta": text, "tensors": cpu, "checksum": checksum(text, cpu)}
    folder = path.parent
    if not folder.is_dir():
        raise OSError(f"cannot save to {path}: the folder {folder} does not exist")
    mode = path.stat().st_mode & 0o777 if path.is_file() and not path.is_symlink() else None
    temporary = folder / f".{path.name}.{secrets.token_hex(8)}.partial"
    try:  # a new file as any other: its permissions from the umask (or the earlier file's)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise OSError(f"cannot save to {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on the disk before the name points at them
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)  # atomic; a symbolic link at `path` is replaced, its target untouched
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(e, (OSError, RuntimeError)):  # torch reports a short write as a RuntimeError
            reason = (
                (e.strerror or str(e))
                if isinstance(e, OSError)
                else "the file system took only part of it (a full disk, or a file-size limit)"
            )
            raise OSError(f"cannot save to {path} (the earlier file, if any, is unchanged): {reason}") from None
        raise
    with contextlib.suppress(OSError):  # the rename itself on the disk
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def load(path, map_location=None):
    """The object stored in ``path`` by ``torch.save``, read with ``weights_only=True`` (tensors and plain
    containers only); a ``ValueError`` naming the file if it is missing or cannot be read that way."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    _check_archive(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # the unpickler met a function or class it does not allow
            raise ValueError(
                f"{path} holds pickled objects other than tensors and plain containers: ella refuses to "
                "unpickle them (they could run code)"
            ) from None
        raise ValueError(f"{path} is not a readable ella file: its bytes are not a file `torch.save` wrote") from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupted files get one clear error
        raise ValueError(
            f"{path} is not a readable ella file: not a file `torch.save` wrote, or a damaged one "
            f"({type(e).__name__}: {str(e)[:120]})"
        ) from None


def _check_archive(path) -> None:
    """``torch.save`` writes a zip archive of stored (uncompressed) entries: anything else is refused before
    ``torch.load`` reads it, so a small compressed file cannot expand into gigabytes."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ValueError(
            f"{path} is not a readable ella file: not a file `torch.save` wrote, or a damaged one"
        ) from None
    packed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise ValueError(
            f"{path} is malformed: it holds compressed entries ({packed[0]}, ...), which `torch.save` never writes"
        )


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
    if len(text) > MAX_META:
        raise ValueError(f"{where} is malformed: {len(text):,} characters of metadata (at most {MAX_META:,})")
    try:  # the checksum first: nothing of a damaged file is parsed
        ok = checksum(text, tensors) == state["checksum"]
    except ValueError as e:
        raise ValueError(f"{where} is malformed: {e}") from None
    if not ok:
        raise ValueError(f"{where} is corrupted: its checksum does not match its content")
    try:
        meta = json.loads(text)
        _check_depth(meta)
    except (ValueError, RecursionError) as e:
        reason = f"its metadata nests deeper than {MAX_DEPTH} levels" if isinstance(e, RecursionError) else e
        raise ValueError(f"{where} is malformed: {reason}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{where} is malformed: its metadata is not a JSON object")
    return found, meta, tensors


def _check_depth(value, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise RecursionError
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        _check_depth(item, depth + 1)


def _map(tree, fn):
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        return {key: _map(value, fn) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_map(item, fn) for item in tree]
    return tree


def require(meta_or_tensors: dict, key: str, kind: type[T], where) -> T:
    """``meta_or_tensors[key]`` if it is an instance of ``kind`` (or of one of a tuple of kinds), else a
    ``ValueError`` naming the file."""
    value = meta_or_tensors.get(key) if isinstance(meta_or_tensors, dict) else None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ValueError(f"{where} is malformed: entry {key!r} is missing or of the wrong type")
    return value


def check_tensor(value, shape: tuple, where, name: str, minimum: float | None = None) -> torch.Tensor:
    """``value`` if it is a finite floating tensor of ``shape`` (at least ``minimum`` everywhere, where given), else a
    ``ValueError`` naming the file and the entry: what a loader reads is checked before it is used."""
    if not isinstance(value, torch.Tensor) or not value.dtype.is_floating_point:
        raise ValueError(f"{where} is malformed: entry {name!r} is not a floating-point tensor")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"{where} is malformed: entry {name!r} has shape {tuple(value.shape)}, expected {tuple(shape)}"
        )
    if not torch.isfinite(value).all() or (minimum is not None and (value < minimum).any()):
        bound = "" if minimum is None else f" and at least {minimum}"
        raise ValueError(f"{where} is malformed: entry {name!r} must be finite{bound}")
    return value


def check_number(value, where, name: str, positive: bool = True) -> float:
    """``value`` as a float if it is a finite (positive) number, else a ``ValueError`` naming the file."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (positive and value <= 0)
    ):
        raise ValueError(
            f"{where} is malformed: entry {name!r} must be a finite{' positive' if positive else ''} "
            f"number, got {value!r}"
        )
    return float(value)


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
