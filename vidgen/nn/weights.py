"""Published weight files of the frozen networks inside models (CLIP's text tower, the DINO
ViT of a projected discriminator): found on the local disk, checked, never downloaded.

A file is looked up at an explicit path, else in ``$VIDGEN_CACHE/detectors/`` (default
``~/.cache/vidgen``: the folder of the metrics' detector files, so one copy of CLIP serves
both). A missing file, or one whose SHA-256 differs from the published digest, is an error
that names the file, the digest, where to download it and where to put it.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import torch

from vidgen.errors import VidgenError


class WeightFile(NamedTuple):
    filename: str
    sha256: str  # "" where no digest is published: the file's digest is then only reported
    url: str


def cache_dir() -> Path:
    return Path(os.environ.get("VIDGEN_CACHE", "~/.cache/vidgen")).expanduser()


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> digest, per process


def file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def verified_file(spec: WeightFile, path: str | os.PathLike | None, what: str, key: str = "") -> tuple[Path, str]:
    """(path, SHA-256) of the weight file ``spec`` at ``path`` or in the cache folder, after
    its digest matched the published one. ``key`` names the config key that sets the path."""
    default = cache_dir() / "detectors" / spec.filename
    file = Path(path).expanduser() if path else default
    if not file.is_file():
        where = "" if path else f" (or set $VIDGEN_CACHE{f', or give its path in the config key {key}' if key else ''})"
        digest = f" (SHA-256 {spec.sha256})" if spec.sha256 else ""
        raise VidgenError(f"{what}: weight file {spec.filename} not found at {file}. Download it from "
                          f"{spec.url}{digest} and put it at {file}{where}.")
    digest = file_sha256(file)
    if spec.sha256 and digest != spec.sha256:
        raise VidgenError(f"{what}: {file} has SHA-256 {digest}, expected {spec.sha256} ({spec.filename}); "
                          f"replace it with the file from {spec.url}.")
    return file, digest


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weight file: safetensors, a ``torch.save`` state dict (read with
    ``weights_only``), or a TorchScript archive (the OpenAI CLIP releases, read only after
    their digest matched)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            scripted = any(n.endswith("constants.pkl") for n in z.namelist())
        if scripted:
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VidgenError(f"{path} is not a readable weight file ({type(exc).__name__}: {str(exc)[:200]})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        raise VidgenError(f"{path} does not hold a state dict")
    return state
