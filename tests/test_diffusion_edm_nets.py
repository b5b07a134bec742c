"""EDM's networks (DDPM++, NCSN++, ADM) and preconditionings (VP, VE, iDDPM, EDM)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidgen.cli import main
from vidgen.diffusion.edm import LossConfig, edm_loss, training_sigma
from vidgen.diffusion.edm_layers import Conv2d, PositionalEmbedding
from vidgen.diffusion.precond import Denoiser, PrecondConfig, iddpm_sigmas, vp_sigma, vp_sigma_inv
from vidgen.diffusion.unet import UNetConfig, build_denoiser
from vidgen.nn import count_parameters
from vidgen.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

# EDM's published configurations (edm/paper_shapes.json of the reference fixtures; train.py).
PAPER = {
    "edm-cifar10-cond-vp": 55_735_299,
    "edm-cifar10-cond-ve": 56_400_643,
    "edm-ffhq64-uncond-vp": 61_805_571,
    "edm-ffhq64-uncond-ve": 62_761_091,
    "edm-imagenet64-cond-adm": 295_899_267,
}


@pytest.mark.parametrize("config", list(PAPER))
def test_paper_configs_have_exact_parameter_counts(config, capsys):
    assert main(["diffusion", "train", "--config", f"configs/diffusion/{config}.yaml", "--dry-run"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["parameters"] == PAPER[config]


def tiny_net(arch: str, kind: str = "edm", label_dim: int = 3, seed: int = 0):
    """A tiny network whose zero-initialised output layers are perturbed, so F depends on
    its inputs (otherwise D would be c_skip x whatever the network)."""
    torch.manual_seed(seed)
    cfg = UNetConfig(arch=arch, img_resolution=8, img_channels=3, label_dim=label_dim, model_channels=16,
                     channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dropout=0.0, channels_per_head=16)
    den = build_denoiser(cfg, precond=PrecondConfig(kind=kind))
    with torch.no_grad():
        for p in den.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return den.eval()


@pytest.mark.parametrize("arch", ["ddpmpp", "ncsnpp", "adm"])
def test_networks_depend_on_input_noise_and_label(arch):
    den = tiny_net(arch)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        f = den.net(x, torch.tensor([0.1, 0.1]), F.one_hot(torch.tensor([0, 0]), 3).float())
        assert f.shape == x.shape
        other_label = den.net(x, torch.tensor([0.1, 0.1]), F.one_hot(torch.tensor([2, 2]), 3).float())
        other_noise = den.net(x, torch.tensor([1.5, 1.5]), F.one_hot(torch.tensor([0, 0]), 3).float())
    scale = f.abs().mean()
    assert (f[0] - f[1]).abs().mean() > 1e-2 * scale  # the two images differ
    assert (f - other_label).abs().mean() > 1e-3 * scale
    assert (f - other_noise).abs().mean() > 1e-3 * scale


def test_resampling_convs_are_box_filters_and_nearest_for_the_two_tap_filter():
    x = torch.randn(2, 4, 8, 8)
    down = Conv2d(4, 4, 0, down=True, resample_filter=(1, 1))
    up = Conv2d(4, 4, 0, up=True, resample_filter=(1, 1))
    assert torch.allclose(down(x), F.avg_pool2d(x, 2), atol=1e-6)
    assert torch.allclose(up(x), F.interpolate(x, scale_factor=2, mode="nearest"), atol=1e-6)
    blur = Conv2d(4, 4, 0, down=True, resample_filter=(1, 3, 3, 1))
    assert torch.allclose(blur(torch.ones(1, 4, 8, 8))[..., 1:-1, 1:-1], torch.ones(1, 4, 2, 2))  # unit DC gain


def test_fused_down_sampling_conv_keeps_the_grid_and_dc_gain():
    """NCSN++'s residual path: convolve, then filter and decimate. A constant image c gives
    c * sum(w) + b in the interior (the filter has unit DC gain), on the half-size grid."""
    torch.manual_seed(0)
    fused = Conv2d(3, 5, 3, down=True, resample_filter=(1, 3, 3, 1), fused_resample=True)
    y = fused(torch.full((1, 3, 12, 12), 0.7))
    assert y.shape == (1, 5, 6, 6)
    expected = 0.7 * fused.weight.sum((1, 2, 3)) + fused.bias
    assert torch.allclose(y[0, :, 2:-2, 2:-2], expected.reshape(5, 1, 1).expand(5, 2, 2), atol=1e-5)


def test_positional_embedding_frequencies():
    emb = PositionalEmbedding(8, endpoint=True)(torch.tensor([2.0]))
    freqs = (1 / 10000) ** (torch.arange(4) / 3)  # endpoint: the last frequency is 1/max_positions
    assert torch.allclose(emb, torch.cat([(2 * freqs).cos(), (2 * freqs).sin()])[None], atol=1e-6)


class Probe(torch.nn.Module):
    """A raw network that records its inputs and returns a fixed output."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out, self.seen = out, {}

    def forward(self, x, c_noise, labels=None, tokens=None):
        self.seen = dict(x=x, c_noise=c_noise)
        return self.out


@pytest.mark.parametrize("kind", ["edm", "vp", "ve", "iddpm"])
def test_preconditioning_formulas(kind):
    """D = c_skip x + c_out F(c_in x; c_noise) with the coefficients of EDM table 1."""
    torch.manual_seed(0)
    x, f = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    sigma = torch.tensor([0.3, 7.0])
    probe = Probe(torch.cat([f, torch.randn_like(f)], 1) if kind == "iddpm" else f)
    den = Denoiser(probe, logvar_channels=0, precond=PrecondConfig(kind=kind))
    d = den(x, sigma)
    s = sigma.reshape(-1, 1, 1, 1)
    if kind == "edm":
        c_skip, c_out, c_in = 0.25 / (s ** 2 + 0.25), s * 0.5 / (s ** 2 + 0.25).sqrt(), 1 / (s ** 2 + 0.25).sqrt()
        c_noise = sigma.log() / 4
    elif kind == "ve":
        c_skip, c_out, c_in, c_noise = 1, s, 1, (sigma / 2).log()
    else:
        c_skip, c_out, c_in = 1, -s, 1 / (s ** 2 + 1).sqrt()
        if kind == "vp":
            c_noise = 999 * vp_sigma_inv(sigma, 19.9, 0.1)
        else:
            u = iddpm_sigmas(1000, 0.001, 0.008)
            c_noise = 999 - (sigma[:, None] - u[None]).abs().argmin(1).float()
    assert torch.allclose(d, c_skip * x + c_out * f, atol=1e-5)
    assert torch.allclose(probe.seen["x"], c_in * x, atol=1e-6)
    assert torch.allclose(probe.seen["c_noise"], c_noise, rtol=1e-5)


def test_vp_and_iddpm_noise_ranges():
    vp = Denoiser(Probe(None), logvar_channels=0, precond=PrecondConfig(kind="vp"))
    assert vp.sigma_min == pytest.approx(float(vp_sigma(1e-5, 19.9, 0.1)), rel=1e-6)
    assert vp.sigma_max == pytest.approx(math.sqrt(math.exp(0.5 * 19.9 + 0.1) - 1), rel=1e-5)
    assert float(vp_sigma_inv(vp_sigma(torch.tensor(0.3), 19.9, 0.1), 19.9, 0.1)) == pytest.approx(0.3, rel=1e-5)
    iddpm = Denoiser(Probe(None), logvar_channels=0, precond=PrecondConfig(kind="iddpm"))
    u = iddpm.u
    assert u.shape == (1001,) and u[-1] == 0 and bool((u[1:] < u[:-1]).all())
    assert iddpm.sigma_max == pytest.approx(float(u[0])) and iddpm.sigma_min == pytest.approx(float(u[999]))
    s = torch.tensor([float(u[10]) * 1.001, float(u[500]) * 0.999])
    assert torch.equal(iddpm.round_sigma(s), u[[10, 500]])
    ve = Denoiser(Probe(None), logvar_channels=0, precond=PrecondConfig(kind="ve"))
    assert (ve.sigma_min, ve.sigma_max) == (0.02, 100.0)
    with pytest.raises(ConfigError, match="sigma_min"):
        Denoiser(Probe(None), logvar_channels=0, precond=PrecondConfig(kind="vp", sigma_min=0.1))


@pytest.mark.parametrize("kind", ["edm", "vp", "ve", "iddpm"])
def test_training_noise_follows_the_preconditioning(kind):
    torch.manual_seed(0)
    den = Denoiser(Probe(None), logvar_channels=0, precond=PrecondConfig(kind=kind))
    sigma, weight = training_sigma(den, 20000, LossConfig(P_mean=-1.2, P_std=1.2))
    if kind == "edm":
        assert sigma.log().mean().item() == pytest.approx(-1.2, abs=0.03)
        assert torch.allclose(weight, (sigma ** 2 + 0.25) / (0.5 * sigma) ** 2)
        return
    assert torch.allclose(weight, 1 / sigma ** 2)
    assert sigma.min() >= den.sigma_min * 0.999 and sigma.max() <= den.sigma_max * 1.001
    if kind == "ve":  # log-uniform: ln sigma uniform over [ln 0.02, ln 100]
        z = (sigma.log() - math.log(0.02)) / math.log(100 / 0.02)
        assert z.mean().item() == pytest.approx(0.5, abs=0.01) and z.var().item() == pytest.approx(1 / 12, abs=0.005)
    if kind == "vp":  # t = sigma^-1 uniform on [eps_t, 1]
        t = vp_sigma_inv(sigma.double(), 19.9, 0.1)
        assert t.mean().item() == pytest.approx(0.5, abs=0.01)
    if kind == "iddpm":
        assert torch.isin(sigma, den.u[:-1]).all() and len(sigma.unique()) > 900


@pytest.mark.parametrize("arch,kind", [("ddpmpp", "vp"), ("ncsnpp", "ve"), ("adm", "iddpm"), ("adm", "edm")])
def test_losses_train_the_networks(arch, kind):
    """A few Adam steps on one fixed batch lower its loss (same noise draws each step)."""
    den = tiny_net(arch, kind).train()
    x = torch.rand(8, 3, 8, 8) * 2 - 1
    labels = torch.arange(8) % 3
    opt = torch.optim.Adam(den.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        torch.manual_seed(1)
        loss = edm_loss(den, x, labels, LossConfig(uncertainty=False)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0], losses


def test_uncertainty_needs_the_head_and_sigma_range_needs_edm():
    den = Denoiser(Probe(torch.zeros(1, 3, 2, 2)), logvar_channels=0, precond=PrecondConfig(kind="vp"))
    with pytest.raises(ConfigError, match="uncertainty"):
        edm_loss(den, torch.zeros(1, 3, 2, 2), None, LossConfig(uncertainty=True))
    with pytest.raises(ConfigError, match="sigma_range"):
        edm_loss(den, torch.zeros(1, 3, 2, 2), None, LossConfig(uncertainty=False, sigma_range=(0.1, 1.0)))


def test_count_is_the_same_on_meta_and_cpu():
    cfg = UNetConfig(arch="ncsnpp", img_resolution=16, img_channels=3, label_dim=2, model_channels=16,
                     channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,), augment_dim=9)
    assert count_parameters(build_denoiser(cfg, device="meta")) == count_parameters(build_denoiser(cfg))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from PIL import Image
    root = tmp_path_factory.mktemp("imgs")
    rng = torch.Generator().manual_seed(0)
    for c in range(2):
        (root / f"class{c}").mkdir()
        for i in range(4):
            img = (torch.rand(12, 12, 3, generator=rng) * 80 + 120 * c).to(torch.uint8).numpy()
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize("arch,kind", [("ddpmpp", "vp"), ("ncsnpp", "ve"), ("adm", "edm")])
def test_train_and_sample_from_the_command_line(image_folder, tmp_path, arch, kind, capsys):
    """`vidgen diffusion train` with an EDM network and preconditioning, then `sample` with the
    stochastic sampler: per-seed churn noise, so a seed's image does not depend on its batch."""
    from PIL import Image
    out = tmp_path / "runs"
    assert main(["diffusion", "train", "--data", str(image_folder), "--config", "configs/diffusion/tiny.yaml",
                 "--out", str(out), "--set", f"model.arch={arch}", "--set", f"precond.kind={kind}",
                 "--set", "loss.uncertainty=false", "--set", "data.resolution=8", "--set", "model.img_resolution=8",
                 "--set", "data.class_from_folder=true", "--set", "model.label_dim=2", "--set", "engine.steps=2",
                 "--set", "engine.batch=2", "--set", "engine.workers=0", "--set", "engine.checkpoint_every=2",
                 "--set", "engine.sample_every=0", "--set", "ema.snapshot_every=0"]) == 0
    run = next(out.iterdir())
    churn = ["--S-churn", "40", "--S-min", "0.05", "--S-max", "50", "--S-noise", "1.003", "--steps", "4"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["diffusion", "sample", "--net", str(run), "--seeds", "0-2", "--out", str(a), *churn]) == 0
    assert main(["diffusion", "sample", "--net", str(run), "--seeds", "2", "--out", str(b), *churn]) == 0
    same = [np.asarray(Image.open(p / "seed000002.png")).astype(int) for p in (a, b)]
    # the same draws; a batch of 3 and of 1 may round differently in the last bit (a level at most)
    assert np.abs(same[0] - same[1]).max() <= 1 and (same[0] == same[1]).mean() > 0.95
    other = np.asarray(Image.open(a / "seed000001.png")).astype(int)
    assert np.abs(other - same[0]).mean() > 5  # another seed, another image
    from vidgen.render.writer import read_png_settings
    settings = read_png_settings(a / "seed000002.png")
    assert settings["churn"] == 40 and settings["S_noise"] == 1.003
