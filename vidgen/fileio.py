"""File helpers every package shares: atomic writes, SHA-256 checksums, safetensors files.

An atomic write builds the file under a hidden temporary name in the destination folder
(so the final rename never crosses file systems), fsyncs it, renames it into place with
``os.replace`` and fsyncs the folder; an exception removes the temporary file, so a reader
sees either the old file or the complete new one, never half of it. :func:`atomic_dir` does
the same for a whole folder (a checkpoint, a prepared dataset).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

_BLOCK = 1 << 22  # bytes hashed per read


def temp_beside(final: str | os.PathLike, suffix: str = "") -> Path:
    """A hidden, unique name next to ``final`` that names its owner: ``.NAME.tmp-PID-HEX``
    (the ID of the process writing it), so a cleanup can tell a live writer's temporary
    from one left by a killed process (:func:`temp_owner`)."""
    final = Path(final)
    return final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


_OWNED = re.compile(r"\.tmp-(\d+)-[0-9a-f]{8}")


def temp_owner(path: str | os.PathLike) -> int | None:
    """PID of the process that made temporary ``path`` (None: a name without an owner)."""
    m = _OWNED.search(Path(path).name)
    return int(m.group(1)) if m else None


def pid_alive(pid: int) -> bool:
    """True when a process with this ID exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder (a folder: makes a rename inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write ``path`` through; on success it replaces ``path``.

    ``suffix`` keeps an extension on the temporary name for writers that look at it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new, empty temporary folder to build ``path`` in; on success every file in it is
    fsynced and it takes the place of ``path``. An existing ``path`` is moved aside first and
    deleted only after the new folder is in place, so at every moment ``path`` is either the
    old folder or the complete new one. On an exception the temporary folder is deleted and
    ``path`` is untouched. The parked old folder is named ``.NAME.tmp-PID-HEX.old`` (its
    owner's PID): if the process dies between the two renames, it is recoverable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    tmp.mkdir()
    old = None
    try:
        yield tmp
        for root, _, files in os.walk(tmp):
            for name in files:
                fsync_path(os.path.join(root, name))
            fsync_path(root)
        if path.exists():
            old = temp_beside(path, ".old")
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:  # put the old folder back
                os.replace(old, path)
                old = None
            raise
        fsync_path(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 1) -> Path:
    """Write ``obj`` as JSON (UTF-8, trailing newline) atomically; returns the path."""
    return write_bytes(path, (json.dumps(obj, indent=indent) + "\n").encode())


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None,
                      *, atomic: bool = True) -> Path:
    """Write ``{name: tensor}`` as a safetensors file, atomically unless ``atomic`` is False
    (a file inside a folder that is itself published atomically). Tensors are copied to the
    CPU and made contiguous; shared storage (tied weights) is cloned, since safetensors
    refuses it. The file is readable by everyone (0644 before the umask), like the JSON
    beside it. Returns the path."""
    import torch
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu", copy=True).contiguous() if isinstance(v, torch.Tensor) else v
            for k, v in tensors.items()}
    path = Path(path)
    if not atomic:
        save_file(flat, str(path), metadata=metadata)
        _public(path)
        return path
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=metadata)
        _public(tmp)
    return path


def _public(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o644 & ~umask)


def update_sha256(h: "hashlib._Hash", path: str | os.PathLike) -> None:
    """Feed the bytes of file ``path`` into hash ``h`` in blocks (memory stays bounded)."""
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of one file."""
    h = hashlib.sha256()
    update_sha256(h, path)
    return h.hexdigest()
