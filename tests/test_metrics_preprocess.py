"""What each detector is fed (docs/METRICS.md, "What each detector sees"): DINOv2 (the
dgm-eval FD_DINOv2 protocol and EDM2's torch variant), CLIP, I3D (the StyleGAN-V FVD call)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vidgen.metrics.preprocess import IMAGENET_MEAN, IMAGENET_STD, clip_input, dinov2_input

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n=2, h=37, w=91, seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, 3, h, w), dtype=np.uint8))


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_dinov2_input_is_pil_bicubic_to_224_then_imagenet_normalisation():
    x = _images()
    want = []
    for img in x.permute(0, 2, 3, 1).numpy():  # PIL by hand: the dgm-eval protocol
        want.append(np.asarray(Image.fromarray(img).resize((224, 224), Image.Resampling.BICUBIC)))
    want = _normalise(torch.from_numpy(np.stack(want)).permute(0, 3, 1, 2).float(), IMAGENET_MEAN, IMAGENET_STD)
    got = dinov2_input(x)
    assert got.shape == (2, 3, 224, 224) and torch.allclose(got, want, atol=1e-6)
    # PIL rounds to uint8: every value is an ImageNet-normalised integer pixel
    pixels = (got * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) * 255
    assert torch.allclose(pixels, pixels.round(), atol=1e-3) and pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3


def test_dinov2_torch_mode_is_edm2s_unclamped_antialiased_bicubic():
    x = torch.zeros(1, 3, 40, 40, dtype=torch.uint8)
    x[..., ::2, :] = 255  # stripes: bicubic overshoots, and the torch variant does not clamp
    got = dinov2_input(x, mode="torch")
    want = _normalise(F.interpolate(x.float(), size=(224, 224), mode="bicubic", antialias=True), IMAGENET_MEAN,
                      IMAGENET_STD)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, dinov2_input(x, mode="pil"), atol=1e-2)


def test_dinov2_network_sees_its_preprocessing():
    from vidgen.metrics.dinov2 import DinoV2ViT, ViTConfig

    net = DinoV2ViT(ViTConfig(dim=32, depth=1, heads=2)).eval()
    seen = {}
    net.patch_embed.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    x = _images(h=50, w=70)
    net(x)
    assert torch.equal(seen["x"], dinov2_input(x))


def test_clip_input_resizes_the_shorter_side_and_centre_crops():
    x = _images(n=1, h=40, w=100)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    got = clip_input(x, 32, mean, std)
    img = Image.fromarray(x[0].permute(1, 2, 0).numpy()).resize((80, 32), Image.Resampling.BICUBIC)
    want = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None, :, :, 24:56].float()
    assert got.shape == (1, 3, 32, 32) and torch.allclose(got, _normalise(want, mean, std), atol=1e-6)


def test_i3d_gets_uint8_clips_and_the_reference_arguments():
    from vidgen.metrics.detectors import I3D_KWARGS, I3DDetector

    class Recorder(torch.nn.Module):  # stands in for the TorchScript module of the FVD code
        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = False) -> torch.Tensor:
            assert x.dtype == torch.uint8 and x.dim() == 5 and x.shape[1] == 3
            assert rescale and resize and return_features
            return x.float().mean(dim=(1, 2, 3, 4))[:, None].repeat(1, 400)

    det = I3DDetector(Recorder(), "0" * 64)
    clips = torch.randint(0, 256, (2, 3, 16, 36, 64), dtype=torch.uint8)
    out = det(clips)
    assert out.shape == (2, 400) and torch.allclose(out[:, 0], clips.float().mean(dim=(1, 2, 3, 4)))
    assert I3D_KWARGS == {"rescale": True, "resize": True, "return_features": True}
