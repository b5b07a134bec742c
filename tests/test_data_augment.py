"""Clip-consistent augmentation: same parameters for all frames, different per clip."""

import torch

from vidgen.data.augment import AugmentConfig, augment, color, cutout, time_stretch, translate, xflip


def static_clips(b=6, t=5, h=16, w=16):
    frame = torch.rand(b, 3, 1, h, w) * 2 - 1
    return frame.expand(-1, -1, t, -1, -1).contiguous()  # every frame of a clip identical


def test_every_op_is_identical_across_frames_and_differs_across_clips():
    x = static_clips()
    g = torch.Generator().manual_seed(0)
    for op in (lambda v: xflip(v, 0.5, g), lambda v: color(v, g), lambda v: translate(v, 0.25, g),
               lambda v: cutout(v, 0.5, g),
               lambda v: augment(v, AugmentConfig(time_stretch=0), g)):
        y = op(x)
        assert y.shape == x.shape
        assert torch.allclose(y, y[:, :, :1].expand_as(y), atol=1e-6)  # same for every frame
        delta = (y - x)[:, :, 0].flatten(1)
        assert len({tuple(d.round(decimals=4).tolist()) for d in delta}) > 1  # per clip different


def test_generator_determinism_and_images():
    x = torch.rand(4, 3, 6, 8, 8) * 2 - 1
    a = augment(x, generator=torch.Generator().manual_seed(3))
    b = augment(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    img = torch.rand(4, 3, 8, 8)
    assert augment(img, generator=torch.Generator().manual_seed(0)).shape == img.shape


def test_translate_shifts_content_exactly():
    x = torch.zeros(1, 1, 2, 8, 8)
    x[..., 3, 3] = 1.0
    g = torch.Generator().manual_seed(0)
    y = translate(x, 0.25, g)
    ys, xs = torch.nonzero(y[0, 0, 0], as_tuple=True)
    assert len(ys) == 1 and abs(int(ys) - 3) <= 2 and abs(int(xs) - 3) <= 2
    assert torch.equal(y[:, :, 0], y[:, :, 1])


def test_time_stretch_resamples_a_linear_ramp():
    t = 9
    ramp = torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1).expand(8, 1, t, 2, 2).contiguous()
    y = time_stretch(ramp, 1.0, torch.Generator().manual_seed(1))[:, 0, :, 0, 0]  # [B, T]
    free = (y > 1e-6) & (y < t - 1 - 1e-6)  # not clamped at either end
    speeds = []
    for row, ok in zip(y, free):
        both = ok[1:] & ok[:-1]
        steps = (row[1:] - row[:-1])[both]
        assert len(steps) >= 1
        assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-4)  # constant speed
        assert 0.5 - 1e-4 <= float(steps[0]) <= 2.0 + 1e-4                 # factor in [1/2, 2]
        speeds.append(round(float(steps[0]), 3))
    assert len(set(speeds)) > 1


def test_differentiable():
    x = (torch.rand(2, 3, 4, 8, 8) * 2 - 1).requires_grad_()
    augment(x, generator=torch.Generator().manual_seed(0)).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
