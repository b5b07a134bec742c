"""Tiny settings of every family for tests that train each one for a few steps (identical
ranks, post-hoc EMA): family -> (config file or None, --set overrides, data maker or
"synthetic", running statistics the family keeps)."""

from pathlib import Path

import numpy as np
from PIL import Image

from vidgen.data.synthetic import make_drive, make_shapes, make_timelapse


def _superres_clips(root: Path) -> None:
    yy, xx = np.mgrid[0:48, 0:64]
    for c in range(2):
        folder = root / f"clip{c}"
        folder.mkdir(parents=True)
        for t in range(14):
            img = np.stack([(xx * 4 + t * 3 + c * 40) % 256, (yy * 5) % 256, (xx + yy + t * 7) % 256], -1)
            Image.fromarray(img.astype(np.uint8)).save(folder / f"{t:06d}.png")


def _image_classes(root: Path) -> None:
    rng = np.random.default_rng(0)
    for c, colour in enumerate(([200, 40, 40], [40, 40, 200])):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(4):
            img = np.clip(np.array(colour) + rng.normal(0, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i:03d}.png")


FAMILIES = {
    "lvg-lowres": ("configs/lvg/lowres-tiny.yaml", [
        "data.resolution=[18, 32]", "data.clip_len=16", "model.slack=8",
        "model.G.temporal_channels=[8, 8, 8, 8, 8, 8, 8]", "model.G.spatial_channels=[8, 8, 8, 4, 4]",
        "model.G.latent.noise_channels=2", "model.G.latent.num_filters=4", "model.G.latent.min_rate=20",
        "model.G.latent.max_rate=60", "model.G.latent.w_dim=8", "model.D.channels=[4, 8, 8, 8, 8]",
        "model.D.temporal_ksize=3", "model.D.head_channels=8", "model.D.head_convs=2", "loss.r1_interval=2",
        "engine.batch=2", "ema.warmup_steps=2"],
        lambda root: make_drive(root, frames=40, size=(36, 64), videos=1), ("magnitude",)),
    "lvg-superres": (None, [
        "model.lowres=[12,16]", "model.highres=[24,32]", "model.z_dim=8", "model.w_dim=8", "model.channel_base=256",
        "model.channel_max=8", "model.num_layers=4", "model.margin=3", "model.d_channel_base=64",
        "model.d_channel_max=16", "engine.batch=4", "loss.r1_interval=2", "ema.warmup_steps=2",
        "augment.interval=1", "augment.speed_kimg=0.01"], _superres_clips, ("w_avg", "magnitude_ema")),
    "timelapse": ("configs/timelapse/tiny.yaml", [
        "model.resolution=16", "model.channel_base=256", "model.channel_max=32", "model.z_dim=16", "model.w_dim=16",
        "model.cond_mlp_layers=2", "engine.batch=4", "loss.pl_interval=2", "loss.r1_interval=2"],
        lambda root: make_timelapse(root, seed=0, size=(16, 16), days=40), ("w_avg", "pl_mean")),
    "diffusion": ("configs/diffusion/tiny.yaml", [
        "engine.batch=4", "data.resolution=8", "model.img_resolution=8", "data.class_from_folder=true",
        "model.label_dim=2", "loss.label_dropout=0.2", "ema.snapshot_every=100"], _image_classes, ()),
    "sg3": ("configs/sg3/tiny.yaml", ["engine.batch=4", "loss.r1_interval=2", "augment.speed_kimg=0.01"],
            "synthetic", ("w_avg", "magnitude_ema")),
    "stylegan-t": ("configs/stylegan-t/tiny.yaml", [
        "data.resolution=16", "G.img_resolution=16", "G.channel_base=256", "G.channel_max=16", "G.gn_groups=4",
        "text.dim=16", "D.dino.embed_dim=16", "D.dino.depth=2", "D.dino.hooks=[0,1]", "D.dino.img_size=32",
        "engine.batch=4", "D.virtual_batch=2"],
        lambda root: make_shapes(root, seed=0, size=16, count=24, objects=(1, 2)), ("x_avg", "weight_u")),
}
