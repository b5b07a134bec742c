"""Captioned images for text-conditioned models (StyleGAN-T, text-conditioned EDM2).

Three layouts, each image with one caption:

- a folder of images with a ``.txt`` file of the same name beside each (``cat.png`` +
  ``cat.txt``), searched recursively; images without a caption are skipped and counted;
- a JSONL file, one ``{"file": ..., "text": ...}`` object per line (``image`` / ``caption``
  are accepted too), paths relative to the file's folder;
- a prepared dataset (``vidgen data prepare`` of such a folder): its frames, with captions
  from ``captions.jsonl`` in the dataset folder (lines ``{"clip": ID or name, "frame": N,
  "text": ...}``) or else from the ``.txt`` files beside the prepared sources.

``CaptionedImages[i] -> {"img": float [3, R, R] in [-1, 1], "caption": int}``; the caption is
an index into ``texts`` (unique captions), so batches stay tensors that split cleanly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from vidgen.data.datasets import ClipDataset, to_float
from vidgen.data.images import IMAGE_EXTS, decode_image, read_file
from vidgen.data.manifest import MANIFEST, load_manifest
from vidgen.data.resize import crop_resize
from vidgen.data.sources import FolderSource, natural_key
from vidgen.errors import DataError


def _read_caption(path: Path) -> str:
    try:
        return " ".join(path.read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the caption ({exc})") from None


def folder_items(root: Path) -> tuple[list[tuple[Path, str]], int]:
    """(image, caption) of every image under ``root`` with a ``.txt`` beside it, in natural
    order, and the number of images without one."""
    items, missing = [], 0
    for p in sorted(root.rglob("*"), key=lambda p: natural_key(str(p.relative_to(root)))):
        if p.suffix.lower() not in IMAGE_EXTS or not p.is_file() or any(s.startswith(".") for s in p.parts):
            continue
        txt = p.with_suffix(".txt")
        if txt.is_file():
            items.append((p, _read_caption(txt)))
        else:
            missing += 1
    return items, missing


def jsonl_items(path: Path) -> list[tuple[Path, str]]:
    """(image, caption) of each line of a JSONL file."""
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path}:{n}: not a JSON object ({exc})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: not a JSON object")
        file, text = (row.get("file") or row.get("image")), (row.get("text") or row.get("caption"))
        if not isinstance(file, str) or not isinstance(text, str):
            raise DataError(f"{path}:{n}: needs the keys \"file\" and \"text\" (strings)")
        p = Path(file) if Path(file).is_absolute() else path.parent / file
        if not p.is_file():
            raise DataError(f"{path}:{n}: image {p} does not exist")
        items.append((p, " ".join(text.split())))
    return items


def _prepared_captions(root: Path, manifest: dict) -> dict[tuple[int, int], str]:
    """(clip number, frame) -> caption of a prepared dataset."""
    clips = manifest["clips"]
    out: dict[tuple[int, int], str] = {}
    sidecar = root / "captions.jsonl"
    if sidecar.is_file():
        by_name = {c["id"]: k for k, c in enumerate(clips)} | {c["name"]: k for k, c in enumerate(clips)}
        for n, line in enumerate(sidecar.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out[(by_name[str(row["clip"])], int(row["frame"]))] = " ".join(str(row["text"]).split())
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{sidecar}:{n}: needs \"clip\" (a clip id or name of the manifest), \"frame\" "
                                f"and \"text\" ({type(exc).__name__}: {exc})") from None
        return out
    for k, c in enumerate(clips):
        src = Path(c["source"])
        if not src.is_dir():
            continue
        files = FolderSource(src).files
        for j, i in enumerate(c.get("source_indices") or range(c["num_frames"])):
            txt = files[i].with_suffix(".txt")
            if txt.is_file():
                out[(k, j)] = _read_caption(txt)
    return out


class CaptionedImages(torch.utils.data.Dataset):
    """Square images at ``resolution`` with their captions (see the module docstring)."""

    def __init__(self, path: str | Path, resolution: int, xflip: bool = False):
        self.path, self.resolution, self.xflip = Path(path), int(resolution), xflip
        if not self.path.exists():
            raise DataError(f"{self.path} does not exist; give a folder of images with .txt captions, "
                            "a JSONL file or a prepared dataset")
        self.base: ClipDataset | None = None
        self.files: list[Path] = []
        self.missing = 0
        if self.path.is_file():
            if self.path.suffix.lower() != ".jsonl":
                raise DataError(f"{self.path}: captioned data is a folder, a .jsonl file or a prepared dataset")
            pairs = jsonl_items(self.path)
        elif (self.path / MANIFEST).is_file():
            self.base = ClipDataset(self.path, clip_len=1, resolution=(self.resolution, self.resolution),
                                    random_start=False)
            caps = _prepared_captions(self.path, load_manifest(self.path))
            keep = [i for i, w in enumerate(self.base.windows) if tuple(w) in caps]
            self.missing = len(self.base.windows) - len(keep)
            self.windows = [self.base.windows[i] for i in keep]
            pairs = [(None, caps[tuple(w)]) for w in self.windows]
        else:
            pairs, self.missing = folder_items(self.path)
        if not pairs:
            raise DataError(f"{self.path}: no captioned image ({self.missing} images without a caption); put "
                            "NAME.txt beside NAME.png, or list images in a JSONL file")
        self.files = [p for p, _ in pairs]
        self.texts = sorted({t for _, t in pairs})
        index = {t: i for i, t in enumerate(self.texts)}
        self.captions = np.asarray([index[t] for _, t in pairs], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.captions)

    def caption(self, i: int) -> str:
        return self.texts[int(self.captions[i])]

    def image(self, i: int) -> torch.Tensor:
        """Item ``i``'s image, float [3, R, R] in [-1, 1] (centre-cropped, resized)."""
        R = self.resolution
        if self.base is not None:
            k, j = self.windows[i]
            return self.base.sources.read(k, [j])[0][0]
        path = self.files[i]
        frame = crop_resize(decode_image(read_file(path), str(path)), (R, R))  # centre crop, resize (docs/METHODS.md 12)
        return to_float(rearrange(torch.from_numpy(np.array(frame)), "h w c -> c h w"))

    def __getitem__(self, i: int) -> dict:
        x = self.image(i)
        if self.xflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return {"img": x, "caption": int(self.captions[i])}
