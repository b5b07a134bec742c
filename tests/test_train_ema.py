
import pytest
import torch
from torch import nn

from vidgen.train.ema import (BetaEMA, HalflifeEMA, PowerEMA, gamma_to_sigma_rel, list_snapshots, make_ema,
                              power_beta, read_snapshot, sigma_rel_to_gamma)
from vidgen.train.recipe import EMASpec


def test_sigma_rel_gamma_values_of_edm2_and_round_trip():
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for s in (0.01, 0.05, 0.1, 0.2, 0.28):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(s)) == pytest.approx(s, rel=1e-9)
    with pytest.raises(ValueError):
        sigma_rel_to_gamma(0.3)


def _net(value: float) -> nn.Module:
    net = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(value)
    return net


def test_power_ema_equals_the_closed_form_power_weights():
    gamma = sigma_rel_to_gamma(0.1)
    spec = EMASpec(kind="power", sigma_rels=(0.1,))
    net = _net(0.0)
    ema = make_ema("net", net, spec)
    thetas = torch.randn(30).double()
    for t, th in enumerate(thetas, start=1):
        with torch.no_grad():
            net.weight.fill_(float(th))
        ema.update(net, t, t * 4, 4)
    T = len(thetas)
    w = torch.tensor([(t ** (gamma + 1) - (t - 1) ** (gamma + 1)) / T ** (gamma + 1) for t in range(1, T + 1)]).double()
    assert float(w.sum()) == pytest.approx(1.0)
    got = ema.copies()["net_ema"].weight[0, 0].item()
    assert got == pytest.approx(float((w * thetas).sum()), abs=1e-5)
    assert power_beta(1, gamma) == 0.0


def test_beta_and_halflife_decays():
    net = _net(1.0)
    b = BetaEMA("G", net, EMASpec(kind="beta", beta=0.99, warmup_steps=10))
    assert b.beta(5, 0, 8) == pytest.approx(0.495) and b.beta(50, 0, 8) == pytest.approx(0.99)
    h = HalflifeEMA("G", net, EMASpec(kind="halflife", halflife_kimg=10.0, rampup=None))
    assert h.beta(1, 8, 8) == pytest.approx(0.5 ** (8 / 10_000))
    hr = HalflifeEMA("G", net, EMASpec(kind="halflife", halflife_kimg=10.0, rampup=0.05))
    assert hr.beta(1, 800, 8) == pytest.approx(0.5 ** (8 / 40))  # limited to 5% of images seen
    # copies are frozen and in eval mode; parameters average, the new weights pull them
    copy = h.copies()["G_ema"]
    assert not copy.training and not any(p.requires_grad for p in copy.parameters())
    with torch.no_grad():
        net.weight.fill_(3.0)
    b.update(net, 5, 40, 8)
    assert b.copies()["G_ema"].weight[0, 0].item() == pytest.approx(0.495 * 1 + 0.505 * 3)


def test_power_snapshots_files_and_metadata(tmp_path):
    spec = EMASpec(kind="power", sigma_rels=(0.05, 0.1), snapshot_every=2)
    net = _net(2.0)
    ema = make_ema("net", net, spec)
    assert isinstance(ema, PowerEMA) and list(ema.copies()) == ["net_ema", "net_ema_s0.1"]
    for t in range(1, 5):
        ema.update(net, t, 8 * t, 8)
        ema.snapshot(t, 8 * t, tmp_path)
    snaps = list_snapshots(tmp_path, "net")
    assert [(i["sigma_rel"], i["step"]) for _, i in snaps] == [(0.05, 2), (0.05, 4), (0.1, 2), (0.1, 4)]
    state, info = read_snapshot(snaps[-1][0])
    assert snaps[-1][0].name == "net-000000004-s0.1000.safetensors"
    assert info["gamma"] == pytest.approx(sigma_rel_to_gamma(0.1)) and info["nimg"] == 32
    assert torch.equal(state["weight"], ema.copies()["net_ema_s0.1"].weight)


def test_unknown_kind_is_a_config_error():
    from vidgen.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown kind"):
        make_ema("G", _net(0), EMASpec(kind="polynomial"))
