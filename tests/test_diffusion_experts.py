import math

import pytest
import torch

from vidgen.diffusion.edm import Denoiser, LossConfig
from vidgen.diffusion.experts import ExpertDenoiser, PaintWithWords, expert_ranges, finetune_expert, split_experts
from vidgen.diffusion.sample import GuidedDenoiser, SamplerConfig, sample
from vidgen.diffusion.toy2d import ToyMLP, make_toy
from vidgen.diffusion.unet import UNetConfig, build_denoiser
from vidgen.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


class Tagged(torch.nn.Module):
    def __init__(self, tag):
        super().__init__()
        self.tag, self.sigmas = tag, []

    def forward(self, x, sigma, labels=None, tokens=None):
        self.sigmas += torch.as_tensor(sigma).reshape(-1).tolist()
        return torch.full_like(x, float(self.tag))


def test_ranges_and_bad_boundaries():
    assert expert_ranges([0.5, 5.0]) == [(0.0, 0.5), (0.5, 5.0), (5.0, math.inf)]
    with pytest.raises(ConfigError, match="ascending"):
        expert_ranges([5.0, 0.5])


def test_each_step_routes_to_the_owning_expert_only():
    experts = [Tagged(0), Tagged(1), Tagged(2)]
    router = ExpertDenoiser(experts, [0.5, 5.0])
    den = GuidedDenoiser(router)
    sample(den, torch.randn(2, 3), SamplerConfig(steps=12))
    assert sum(router.calls) == den.nfe == 23  # one expert per evaluation: same cost
    for e, (lo, hi) in zip(experts, router.ranges):
        assert e.sigmas and all(lo < s <= hi for s in e.sigmas)
    # Per-sample sigma is routed per sample.
    out = router(torch.zeros(3, 1), torch.tensor([0.1, 1.0, 10.0]))
    assert out.flatten().tolist() == [0.0, 1.0, 2.0]
    assert router(torch.zeros(1, 1), 0.5).item() == 0.0  # (lo, hi]: 0.5 belongs to the low expert


def test_split_and_finetune_changes_only_that_expert():
    torch.manual_seed(0)
    gmm, classes = make_toy(depth=2)
    parent = Denoiser(ToyMLP(16, 2), label_dim=2, logvar_channels=8).eval()
    router = split_experts(parent, [1.0])
    lo_expert, hi_expert = router.experts
    before = [p.clone() for p in hi_expert.parameters()]
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            x, k = gmm.sample(64, generator=gen, return_index=True)
            yield x.float(), classes[k]
    losses = finetune_expert(lo_expert, batches(), router.ranges[0], LossConfig(P_mean=-1.0, P_std=1.2), steps=5)
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)
    assert all(torch.equal(a, b) for a, b in zip(before, hi_expert.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(parent.parameters(), lo_expert.parameters()))


def test_paint_with_words_bias_formula_and_effect():
    torch.manual_seed(0)
    q, k = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 3, 8)
    masks = torch.zeros(1, 3, 4, 4)
    masks[:, 1, :2] = 1.0  # token 1 painted on the top half
    pw = PaintWithWords(masks, weight=0.5)
    bias = pw.bias(q, k, torch.tensor([2.0]), (4, 4))
    qk_max = torch.einsum("bnqd,bnkd->bnqk", q, k).amax(dim=(2, 3), keepdim=True)
    expected = 0.5 * math.log(3.0) * qk_max / math.sqrt(8)
    assert torch.allclose(bias[:, :, :8, 1], expected.reshape(1, 2, 1).expand(1, 2, 8))
    assert bias[:, :, 8:].abs().max() == 0 and bias[..., 0].abs().max() == 0
    # Weaker at low noise: log(1 + sigma) -> 0.
    assert pw.bias(q, k, torch.tensor([0.01]), (4, 4)).abs().max() < bias.abs().max() / 50
    with pytest.raises(ConfigError, match="masks"):
        PaintWithWords(torch.zeros(1, 2, 4, 4)).bias(q, k, torch.tensor([1.0]), (4, 4))


def test_paint_with_words_moves_attention_in_unet():
    torch.manual_seed(0)
    den = build_denoiser(UNetConfig(preset="tiny", img_resolution=8, img_channels=3, label_dim=0, token_dim=6,
                                    cross_attn_resolutions=(4,))).eval()
    with torch.no_grad():
        den.net.out_gain.fill_(1.0)
    x, tokens = torch.randn(1, 3, 8, 8), torch.randn(1, 2, 6)
    masks = torch.zeros(1, 2, 8, 8)
    masks[:, 0, :, :4] = 1.0
    plain = den(x, 5.0, None, tokens)
    painted = den(x, 5.0, None, tokens, paint=PaintWithWords(masks, weight=2.0))
    assert not torch.allclose(plain, painted)
