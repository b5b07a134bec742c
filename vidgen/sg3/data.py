"""Training images of the sg3 family: (image [3, R, R] in [-1, 1], class index) items.

``data.path`` is read with the shared data layer (vidgen.data.datasets.ClipDataset, one
frame per item): a prepared dataset, a folder of images, a folder of image folders, videos
or zips. With ``labels: folders`` each of those sources (a sub-folder, a video, a zip) is
one class, numbered in name order. ``mirror`` adds the x-flipped copy of every image
(StyleGAN's --mirror). ``path: synthetic`` makes :class:`SyntheticBlobs`, a procedural
class-conditional set for try-outs and tests.
"""

from __future__ import annotations

import math

import torch

from vidgen.errors import ConfigError, DataError


class SyntheticBlobs(torch.utils.data.Dataset):
    """Soft discs on a dark gradient: the class picks the disc's colour, the index its
    position, size and the background's direction. Item i is a pure function of i."""

    COLOURS = torch.tensor([[0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.25, 0.35, 0.95], [0.95, 0.85, 0.2],
                            [0.8, 0.3, 0.85], [0.2, 0.85, 0.9], [0.95, 0.55, 0.15], [0.85, 0.85, 0.85]])

    def __init__(self, num: int, resolution: int, classes: int, seed: int = 2021):
        if not 1 <= classes <= len(self.COLOURS):
            raise ConfigError(f"synthetic data has 1 to {len(self.COLOURS)} classes; got {classes}")
        self.num, self.res, self.classes, self.seed = num, resolution, classes, seed

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        label = i % self.classes
        cy, cx = (torch.rand(2, generator=g) * 0.6 + 0.2).tolist()
        radius = float(torch.rand((), generator=g) * 0.15 + 0.15)
        angle = float(torch.rand((), generator=g) * 2 * math.pi)
        ax = (torch.arange(self.res) + 0.5) / self.res
        yy, xx = torch.meshgrid(ax, ax, indexing="ij")
        disc = torch.sigmoid((radius - ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()) * self.res * 0.5)
        back = 0.15 + 0.1 * (math.cos(angle) * (xx - 0.5) + math.sin(angle) * (yy - 0.5))
        img = back[None] * (1 - disc) + self.COLOURS[label][:, None, None] * disc
        return img * 2 - 1, label


class ImageSet(torch.utils.data.Dataset):
    """Frames of the clips under ``root`` as images [3, R, R]; ``labels``: the clip's class."""

    def __init__(self, root: str, resolution: int, labels: bool):
        from vidgen.data.datasets import ClipDataset

        self.frames = ClipDataset(root, clip_len=1, resolution=(resolution, resolution), random_start=False)
        names = self.frames.sources.names
        self.class_names = sorted(set(names))
        self.labels = labels
        self.class_of = [self.class_names.index(names[k]) for k, _ in self.frames.windows]
        if labels and len(self.class_names) < 2:
            raise DataError(f"{root}: labels 'folders' needs one sub-folder (or video, or zip) per class; "
                            f"found {len(self.class_names)}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.labels else 0

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.frames[i][:, 0], (self.class_of[i] if self.labels else 0)


class Mirrored(torch.utils.data.Dataset):
    """``base`` followed by its x-flipped copy."""

    def __init__(self, base: torch.utils.data.Dataset):
        self.base = base

    def __len__(self) -> int:
        return 2 * len(self.base)

    def __getitem__(self, i: int):
        img, label = self.base[i % len(self.base)]
        return (img.flip(-1) if i >= len(self.base) else img), label
