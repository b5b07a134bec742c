import pytest
import torch


pytestmark = pytest.mark.usefixtures("one_thread")

from vidgen.diffusion.gmm import GaussianMixture
from vidgen.diffusion.sample import GuidedDenoiser, SamplerConfig, edm_schedule, expected_nfe, sample
from vidgen.errors import ConfigError

MU = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
A = torch.tensor([[0.5, 0.0, 0.0], [0.2, 0.3, 0.0], [-0.1, 0.1, 0.2]], dtype=torch.float64)
COV = A @ A.T
GAUSS = GaussianMixture.gaussian(MU, COV)


def affine_map(cfg: SamplerConfig):
    """The Heun/Euler sampler is affine in the noise for a Gaussian's (linear) denoiser: push
    0 and the unit vectors through it -> (b, M) with x = M n + b; mean = b, cov = M M^T exactly."""
    noise = torch.cat([torch.zeros(1, 3), torch.eye(3)]).double()
    out = sample(GAUSS.denoise, noise, cfg)
    b = out[0]
    return b, (out[1:] - b).T


def exact_map(cfg: SamplerConfig):
    """The exact probability-flow ODE from sigma_max to sigma_min (x - mu scales by
    sqrt((lam + s^2) / (lam + S^2)) along each eigenvector), then the same final Euler step
    to sigma = 0 that every EDM sampler takes (x -> D(x; sigma_min))."""
    lam, vec = torch.linalg.eigh(COV)
    S, s = cfg.sigma_max, cfg.sigma_min
    scale = vec @ torch.diag(((lam + s ** 2) / (lam + S ** 2)).sqrt()) @ vec.T
    last = COV @ torch.linalg.inv(COV + s ** 2 * torch.eye(3, dtype=torch.float64))
    # x_T = S n; x_s = mu + scale (x_T - mu); x_0 = mu + last (x_s - mu)
    M = last @ scale * S
    b = MU - last @ scale @ MU
    return b, M


def test_schedule_endpoints():
    t = edm_schedule(18)
    assert t.shape == (19,)
    assert t[0].item() == pytest.approx(80.0) and t[17].item() == pytest.approx(0.002) and t[18] == 0
    assert bool((t[1:] < t[:-1]).all())


def test_heun_reproduces_gaussian_mean_and_cov():
    b, M = affine_map(SamplerConfig(steps=64))
    assert torch.linalg.norm(b - MU) / torch.linalg.norm(MU) < 0.01
    assert torch.linalg.norm(M @ M.T - COV) / torch.linalg.norm(COV) < 0.01


@pytest.mark.parametrize("n", [8, 16])
def test_heun_is_second_order(n):
    def err(steps):
        cfg = SamplerConfig(steps=steps)
        b, M = affine_map(cfg)
        be, Me = exact_map(cfg)
        return (torch.linalg.norm(M - Me) + torch.linalg.norm(b - be)).item()
    e1, e2 = err(n), err(2 * n)
    assert e2 <= e1 / 3, (e1, e2)
    # Euler is only first order: halving its step roughly halves the error.
    eu = [affine_map(SamplerConfig(steps=s, solver="euler")) for s in (n, 2 * n)]
    ex = exact_map(SamplerConfig(steps=n))
    ee = [(torch.linalg.norm(M - ex[1]) + torch.linalg.norm(b - ex[0])).item() for b, M in eu]
    assert ee[1] > ee[0] / 3


def test_heun_on_gaussian_mixture_matches_moments():
    gmm = GaussianMixture(torch.tensor([[-0.6, 0.0], [0.5, 0.4]], dtype=torch.float64),
                          torch.stack([torch.eye(2) * 0.04, torch.tensor([[0.05, 0.02], [0.02, 0.03]])]).double(),
                          torch.tensor([0.4, 0.6], dtype=torch.float64))
    noise = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = sample(gmm.denoise, noise, SamplerConfig(steps=64))
    fine = sample(gmm.denoise, noise, SamplerConfig(steps=256))  # same noise: discretisation error only
    assert torch.linalg.norm(x.mean(0) - fine.mean(0)) / torch.linalg.norm(fine.mean(0)) < 0.01
    assert torch.linalg.norm(torch.cov(x.T) - torch.cov(fine.T)) / torch.linalg.norm(torch.cov(fine.T)) < 0.01
    # Against the true moments, within Monte-Carlo error of 4000 samples.
    scale = gmm.cov().trace().sqrt()
    assert torch.linalg.norm(fine.mean(0) - gmm.mean()) / scale < 0.05
    assert torch.linalg.norm(torch.cov(fine.T) - gmm.cov()) / torch.linalg.norm(gmm.cov()) < 0.06


def test_stochastic_sampler_keeps_gaussian_moments():
    noise = torch.randn(20000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cfg = SamplerConfig(steps=64, churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.0)
    x = sample(GAUSS.denoise, noise, cfg, generator=torch.Generator().manual_seed(2))
    assert torch.linalg.norm(torch.cov(x.T) - COV) / torch.linalg.norm(COV) < 0.05


class Counter:
    def __init__(self, fn):
        self.fn, self.sigmas = fn, []

    def __call__(self, x, sigma, labels=None, tokens=None):
        self.sigmas.append(float(sigma))
        return self.fn(x)


@pytest.mark.parametrize("mode", ["cfg", "auto"])
def test_nfe_and_guide_only_inside_interval(mode):
    main = Counter(lambda x: x * 0.9)
    guide = Counter(lambda x: x * 0.8)
    interval = (0.28, 2.9)
    cfg = SamplerConfig(steps=32, guidance=2.0, interval=interval)
    den = GuidedDenoiser(main, guide=None if mode == "cfg" else guide, cfg=mode == "cfg", guidance=2.0,
                         interval=interval, labels=torch.zeros(2))
    sample(den, torch.randn(2, 3), cfg)
    assert den.nfe == 2 * 32 - 1 == expected_nfe(cfg)["nfe"]
    t = edm_schedule(32, dtype=torch.float32).tolist()  # the trajectory runs in the noise's dtype
    evals = [t[0]] + [s for i in range(1, 32) for s in (t[i], t[i])]  # t_hat_i and t_{i+1}
    inside = [s for s in evals if 0.28 < s <= 2.9]
    assert den.guide_nfe == len(inside) == expected_nfe(cfg)["guide_nfe"]
    assert 0 < den.guide_nfe < den.nfe
    assert sorted(den.guide_sigmas) == sorted(inside)
    if mode == "auto":
        assert sorted(guide.sigmas) == sorted(inside)


def test_guidance_formula_and_no_guide_when_w_is_one():
    main, guide = Counter(lambda x: x + 1.0), Counter(lambda x: x - 1.0)
    den = GuidedDenoiser(main, guide=guide, guidance=2.5)
    x = torch.zeros(1, 2)
    assert torch.allclose(den(x, 1.0), 2.5 * (x + 1) - 1.5 * (x - 1))
    plain = GuidedDenoiser(main, guide=guide, guidance=1.0)
    sample(plain, torch.randn(1, 2), SamplerConfig(steps=4))
    assert plain.guide_nfe == 0 and plain.nfe == 7


def test_bad_sampler_settings_raise():
    with pytest.raises(ConfigError, match="solver"):
        sample(GAUSS.denoise, torch.randn(1, 3).double(), SamplerConfig(solver="rk4"))
    with pytest.raises(ConfigError, match="interval"):
        SamplerConfig(interval=(3.0, 1.0)).check()
