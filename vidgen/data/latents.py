"""A prepared image dataset encoded once into VAE latents (``vidgen data prepare --latents VAE``).

Beside the JPEG shards of a prepared dataset (manifest.py), one folder per encoded resolution::

    DIR/latents-256x256/latents.json            format, VAE (spec, SHA-256, config), pixel and
                                                latent shapes, measured raw statistics, clips
    DIR/latents-256x256/<clip id>-0000.safetensors   "raw": float32 [N, 2C, h, w], frames 0..N-1

``raw`` holds the posterior mean and standard deviation of every frame (vae.py); training
draws a fresh posterior sample each time. The statistics are per channel over every pixel of
every frame: ``raw_mean = E[mean]`` and ``raw_std = sqrt(E[mean^2 + std^2] - raw_mean^2)``
(the mean and std of the posterior samples), the defaults of ``encoder.raw_mean/raw_std``.
The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from vidgen.data.manifest import PreparedClip, load_manifest, pick_resolution
from vidgen.data.vae import EncoderConfig, LatentCodec
from vidgen.errors import DataError
from vidgen.fileio import atomic_dir, write_safetensors

FORMAT = "vidgen-latents-1"
PART_FRAMES = 1024  # frames per safetensors part (one part in memory while encoding)


def latents_dir(root: str | Path, res: str) -> Path:
    return Path(root) / f"latents-{res}"


def encode_dataset(root: str | Path, vae: str, vae_sha256: str = "", resolutions: list[str] | None = None,
                   batch: int = 8, device="cpu", log=print) -> list[dict]:
    """Encode every frame of the prepared dataset ``root`` at each of ``resolutions`` (default:
    all prepared) with the VAE ``vae``. -> the latents.json of each folder written."""
    root = Path(root)
    manifest = load_manifest(root)
    if Path(vae).expanduser().exists():  # a path: recorded absolute, so training finds it from anywhere
        vae = str(Path(vae).expanduser().resolve())
    names = [pick_resolution(manifest, r, str(root)) for r in (resolutions or manifest["resolutions"])]
    codec = LatentCodec(EncoderConfig(kind="vae", vae=vae, vae_sha256=vae_sha256, batch=batch), device)
    out = []
    for res in names:
        folder = latents_dir(root, res)
        if folder.exists():
            raise DataError(f"{folder} exists already; remove it to encode {res} again")
        h, w = (int(v) for v in res.split("x"))
        f = codec.factor()
        if h % f or w % f:
            raise DataError(f"{root}: {res} is not divisible by the VAE's factor {f}; prepare a resolution that is")
        total = sum(int(c["num_frames"]) for c in manifest["clips"])
        s1 = s2 = None
        count, clips = 0, []
        with atomic_dir(folder) as tmp, tqdm(total=total, desc=f"encode {res}", unit="frame") as bar:
            for clip in manifest["clips"]:
                src, parts = PreparedClip(root, res, clip), []
                try:
                    for p, start in enumerate(range(0, len(src), PART_FRAMES)):
                        chunks = []
                        for a in range(start, min(start + PART_FRAMES, len(src)), batch * 4):
                            frames = src.get(range(a, min(a + batch * 4, start + PART_FRAMES, len(src))))
                            raw = codec.encode_pixels(torch.from_numpy(frames).permute(0, 3, 1, 2)).cpu()
                            mean, std = raw.double().chunk(2, dim=1)
                            m1, m2 = mean.sum((0, 2, 3)), (mean.square() + std.square()).sum((0, 2, 3))
                            s1, s2 = (m1, m2) if s1 is None else (s1 + m1, s2 + m2)
                            count += mean.shape[0] * mean.shape[2] * mean.shape[3]
                            chunks.append(raw)
                            bar.update(len(frames))
                        name = f"{clip['id']}-{p:04d}.safetensors"
                        write_safetensors(tmp / name, {"raw": torch.cat(chunks).contiguous()}, atomic=False)
                        parts.append(name)
                finally:
                    src.close()
                clips.append({"id": clip["id"], "num_frames": len(src), "parts": parts})
            raw_mean = s1 / count
            raw_std = (s2 / count - raw_mean.square()).clamp(min=0).sqrt()
            info = {"format": FORMAT, "vae": vae, "vae_sha256": codec.vae_sha256,
                    "vae_config": {k: v for k, v in codec.vae.config.items() if not k.startswith("_")},
                    "pixel_resolution": [h, w], "latent_shape": [int(raw.shape[1]) // 2, h // f, w // f],
                    "raw_mean": raw_mean.tolist(), "raw_std": raw_std.tolist(), "clips": clips}
            (tmp / "latents.json").write_text(json.dumps(info, indent=1, default=_json) + "\n")
        log(f"{folder}: {total} frames -> latents {info['latent_shape']} with VAE {vae} "
            f"(sha256 {codec.vae_sha256[:12]}...)")
        out.append(info)
    return out


def _json(v):
    if isinstance(v, (tuple, np.ndarray)):
        return list(v)
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def load_latents_info(root: str | Path, res: str) -> dict:
    path = latents_dir(root, res) / "latents.json"
    if not path.is_file():
        raise DataError(f"{root}: no latents at {res} ({path} is missing); encode them with "
                        f"`vidgen data prepare ... --resolution {res} --latents VAE`")
    info = json.loads(path.read_text())
    if info.get("format") != FORMAT:
        raise DataError(f"{path}: format {info.get('format')!r} is not {FORMAT}")
    return info


class LatentDataset(torch.utils.data.Dataset):
    """Every frame's raw latents: item i -> (raw float32 [2C, h, w], clip index)."""

    def __init__(self, root: str | Path, res: str):
        self.root, self.res = Path(root), res
        self.info = load_latents_info(root, res)
        self.index: list[tuple[int, str, int]] = []  # (clip, part file, row)
        for k, clip in enumerate(self.info["clips"]):
            for p, name in enumerate(clip["parts"]):
                n = min(PART_FRAMES, clip["num_frames"] - p * PART_FRAMES)
                self.index += [(k, name, r) for r in range(n)]
        self.num_classes = len(self.info["clips"])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        k, name, row = self.index[i]
        path = latents_dir(self.root, self.res) / name
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = f.get_slice("raw")[row:row + 1]
        except (OSError, SafetensorError) as exc:  # a missing or damaged part
            raise DataError(f"{path}: cannot read latents ({exc}); encode the dataset again") from None
        return raw[0].to(torch.float32), k
