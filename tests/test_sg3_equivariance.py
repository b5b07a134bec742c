"""Equivariance metrics (vidgen.metrics.equivariance): the pixel-space transforms, the sign
conventions of the input transform, and the metric on exactly equivariant and on
non-equivariant 'generators'."""

import math

import pytest
import torch

from vidgen.metrics.equivariance import (equivariance_protocol, equivariance_psnr, evaluate_equivariance,
                                         fractional_translate, integer_translate, pseudo_rotate, rotate)

pytestmark = pytest.mark.usefixtures("one_thread")
RES = 32


def bandlimited(seeds, transform=None, res=RES, freqs=4, move_with_input=True):
    """A generator whose images are sums of sinusoids (frequencies <= 4 cycles per image, well
    below Nyquist) evaluated at q = A p + b for pixel centres p in [-1/2, 1/2]^2, with
    transform [[A, b], [0, 1]] (the Fourier input's convention). Exactly equivariant."""
    out = []
    m = torch.eye(3, dtype=torch.float64) if transform is None or not move_with_input else transform.double()
    ax = (torch.arange(res, dtype=torch.float64) + 0.5) / res - 0.5
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    p = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1)  # [H, W, 3]
    q = p @ m.t()
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        f = (torch.rand(3, freqs, 2, generator=g, dtype=torch.float64) * 2 - 1) * 4
        ph = torch.rand(3, freqs, generator=g, dtype=torch.float64) * 2 * math.pi
        arg = torch.einsum("hwd,cfd->cfhw", q[..., :2], f) * 2 * math.pi + ph[:, :, None, None]
        out.append(torch.sin(arg).mean(1) * 0.9)
    return torch.stack(out).float()


def psnr(a, b, mask):
    mse = ((a - b).square() * mask).sum() / mask.sum()
    return 20 * math.log10(2) - 10 * math.log10(mse.item())


def test_integer_translation_is_exact_where_defined():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    y, mask = integer_translate(x, 2 / 8, -1 / 8)
    assert torch.equal(y[..., 0:7, 2:], x[..., 1:8, 0:6]) and mask.sum() == 2 * 3 * 7 * 6
    assert torch.equal(y * (1 - mask), torch.zeros_like(y))


def test_pixel_transforms_match_moving_the_continuous_signal():
    x = bandlimited([1, 2])
    t = (0.07, -0.043)
    shifted = torch.eye(3)
    shifted[:2, 2] = -torch.tensor(t)
    truth = bandlimited([1, 2], shifted)
    y, mask = fractional_translate(x, *t)
    assert psnr(y, truth, mask) > 40
    angle = 0.6
    c, s = math.cos(-angle), math.sin(-angle)
    turned = bandlimited([1, 2], torch.tensor([[c, s, 0], [-s, c, 0], [0, 0, 1.0]]))
    y, mask = rotate(x, angle)
    truth_f, truth_mask = pseudo_rotate(turned, angle)
    assert psnr(y, truth_f, mask * truth_mask) > 30
    assert psnr(y, pseudo_rotate(x, angle)[0], mask * truth_mask) < 15  # rotating did move it


@pytest.mark.parametrize("move,lo,hi", [(True, 35, math.inf), (False, 0, 20)])
def test_metric_on_equivariant_and_on_frozen_generators(move, lo, hi):
    calls = []

    def render(seeds, transform):
        calls.append(None if transform is None else transform.clone())
        return bandlimited(seeds, transform, move_with_input=move)

    values = equivariance_psnr(render, ("eqt_int", "eqt_frac", "eqr"), num=8, batch=4, seed=3)
    assert len(calls) == 2 * 4  # per batch: as drawn, then one transformed call per metric
    for kind, v in values.items():
        assert lo < v <= hi, (kind, values)
    if move:
        assert values["eqt_int"] > 60  # whole-pixel shifts of an exactly equivariant signal
    assert values == equivariance_psnr(render, ("eqt_int", "eqt_frac", "eqr"), num=8, batch=4, seed=3)


def test_protocol_names_and_report_entries():
    p = equivariance_protocol("eqt50k_int")
    assert (p.kind, p.num) == ("eqt_int", 50_000)
    assert equivariance_protocol("eqt50k_frac").kind == "eqt_frac"
    assert equivariance_protocol("eqr200").num == 200
    for bad in ("eqt50k", "eqr50k_int", "fid50k_full", "eqt0_int"):
        assert equivariance_protocol(bad) is None
    protos = [equivariance_protocol(n) for n in ("eqt4_int", "eqt4_frac", "eqr4")]
    report = evaluate_equivariance(protos, lambda s, t: bandlimited(s, t), seed=0, batch=2)
    assert set(report) == {"eqt4_int", "eqt4_frac", "eqr4"}
    assert report["eqr4"]["unit"] == "dB" and report["eqr4"]["protocol"]["num_images"] == 4


def test_config_r_is_rotation_equivariant_and_config_t_is_not():
    """On the sg3 sampler's render interface: untrained generators already show their
    architecture's equivariances (config R: 1x1 convs and radial filters)."""
    from vidgen.sg3.family import SG3Sampler
    from vidgen.sg3.networks import Generator, SG3ModelConfig

    values = {}
    for arch, base, cmax in (("T", 512, 32), ("R", 1024, 64)):
        torch.manual_seed(0)
        cfg = SG3ModelConfig(arch=arch, resolution=16, z_dim=32, w_dim=32, channel_base=base, channel_max=cmax,
                             num_layers=6, num_critical=2, margin=4)
        values[arch] = equivariance_psnr(SG3Sampler(Generator(cfg).eval()).render, num=16, batch=16, seed=0)
    assert values["R"]["eqr"] > values["T"]["eqr"] + 15, values
    assert min(values["T"]["eqt_int"], values["T"]["eqt_frac"]) > 35, values
