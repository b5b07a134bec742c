import pytest
import torch

from vidgen.train.ada import AdaController


def test_ada_moves_towards_target_and_clips():
    ada = AdaController(target=0.6, speed_kimg=0.001, interval=1, p_max=0.5)
    for step in range(5):
        ada.accumulate(torch.ones(8))  # D is sure every real is real: overfitting, r_t = 1 > 0.6
        ada.step(step)
    assert ada.p == pytest.approx(0.5)  # clipped at p_max
    for step in range(5, 100):
        ada.accumulate(-torch.ones(8))
        ada.step(step)
    assert ada.p == 0.0


def test_ada_state_round_trip():
    ada = AdaController(interval=4)
    ada.accumulate(torch.tensor([1.0, -1.0, 1.0]))
    other = AdaController(interval=4)
    other.load_state_dict(ada.state_dict())
    assert other.state_dict() == ada.state_dict()
    assert other.r_t == pytest.approx(1 / 3)


def _rank(rank: int, world: int, init: str, out: str) -> None:
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    ada = AdaController(target=0.6, speed_kimg=0.1, interval=2, p_max=1.0)
    g = torch.Generator().manual_seed(rank)
    for step in range(6):  # rank 0 alone would raise p, rank 1 alone lower it
        ada.accumulate(torch.randn(5, generator=g) + (3.0 if rank == 0 else 0.6))
        ada.step(step)
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"p": ada.p, "state": ada.state_dict()}, f)
    dist.destroy_process_group()


def test_ada_statistic_is_summed_over_ranks(tmp_path):
    """Two gloo ranks end with the same p, equal to one controller fed both ranks' logits."""
    import json

    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'store'}"
    mp.spawn(_rank, args=(2, init, str(tmp_path / "r")), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"r.{i}").read_text()) for i in range(2)]
    assert got[0] == got[1]
    one = AdaController(target=0.6, speed_kimg=0.1, interval=2, p_max=1.0)
    gens = [torch.Generator().manual_seed(r) for r in range(2)]
    for step in range(6):
        for r in range(2):
            one.accumulate(torch.randn(5, generator=gens[r]) + (3.0 if r == 0 else 0.6))
        one.step(step)
    assert got[0]["p"] == pytest.approx(one.p) and 0 < one.p < 1


# --- the 'bgc' pipeline -------------------------------------------------------------------

from vidgen.train.ada import AdaOps, ada_augment  # noqa: E402

NONE = AdaOps(**{k: 0.0 for k in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
                                  "brightness", "contrast", "lumaflip", "hue", "saturation")})


def _only(**kw) -> AdaOps:
    return AdaOps(**{**NONE.__dict__, **kw})


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_ada_augment_identity_cases():
    x = torch.rand(6, 3, 4, 8, 8) * 2 - 1
    assert ada_augment(x, 0.0) is x
    torch.testing.assert_close(ada_augment(x, 1.0, NONE, _gen()), x, rtol=0, atol=0)


def test_ada_blits_are_exact():
    x = torch.rand(64, 3, 10, 12) * 2 - 1
    y = ada_augment(x, 1.0, _only(xflip=1.0), _gen())
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    same = (y == x).flatten(1).all(1)
    assert (flipped | same).all() and 15 < flipped.sum() < 49  # x-flip half the time
    sq = torch.rand(200, 3, 8, 8)
    y = ada_augment(sq, 0.5, _only(rotate90=1.0), _gen(1))
    turned = ~(y == sq).flatten(1).all(1)
    for i in torch.nonzero(turned).flatten().tolist():
        assert any(torch.equal(y[i], torch.rot90(sq[i], k, dims=(1, 2))) for k in (1, 2, 3))
    assert 0.25 < turned.float().mean() < 0.5  # p * 3/4 = 0.375
    y = ada_augment(x, 1.0, _only(xint=1.0), _gen(2))
    for i in range(8):  # every sample is x shifted by whole pixels (checked away from the edges)
        ok = any(torch.equal(y[i, :, 3:-3, 3:-3], x[i, :, 3 - dy:7 - dy, 3 - dx:9 - dx])
                 for dy in range(-1, 2) for dx in range(-1, 2))
        assert ok, i


def test_ada_geometry_keeps_constants_and_is_clip_consistent():
    const = torch.full((16, 3, 2, 9, 16), 0.3)
    y = ada_augment(const, 1.0, _only(xint=1.0, scale=1.0, rotate=1.0, aniso=1.0, xfrac=1.0), _gen())
    torch.testing.assert_close(y, const, atol=1e-5, rtol=0)
    frame = torch.rand(8, 3, 1, 9, 16)
    clip = frame.expand(8, 3, 3, 9, 16).contiguous()  # three equal frames per clip
    y = ada_augment(clip, 1.0, AdaOps(), _gen(3))
    torch.testing.assert_close(y[:, :, 0], y[:, :, 2], rtol=0, atol=1e-6)
    assert (y - clip).abs().amax(dim=(1, 2, 3, 4)).min() > 0  # every clip changed


def test_ada_colour_ops():
    x = torch.rand(32, 3, 6, 6) * 2 - 1
    y = ada_augment(x, 1.0, _only(brightness=1.0), _gen())
    d = y - x
    torch.testing.assert_close(d, d[:, :1, :1, :1].expand_as(d), atol=1e-6, rtol=0)  # one offset each
    y = ada_augment(x, 1.0, _only(hue=1.0), _gen(1))  # rotation about the luma axis keeps r + g + b
    torch.testing.assert_close(y.sum(1), x.sum(1), atol=1e-5, rtol=0)
    gray = x[:, :1].expand(32, 3, 6, 6)
    for ops in (_only(hue=1.0), _only(saturation=1.0)):  # grey stays grey and unchanged
        torch.testing.assert_close(ada_augment(gray, 1.0, ops, _gen(2)), gray, atol=1e-5, rtol=0)


def test_ada_augment_is_differentiable_and_seeded():
    x = (torch.rand(4, 3, 2, 8, 8) * 2 - 1).requires_grad_()
    y = ada_augment(x, 0.9, AdaOps(), _gen(5))
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    torch.testing.assert_close(ada_augment(x.detach(), 0.9, AdaOps(), _gen(5)), y.detach(), rtol=0, atol=0)


def test_ada_pipeline_presets():
    assert AdaOps.preset("bgc") == AdaOps()
    bg, b = AdaOps.preset("bg"), AdaOps.preset("b")
    assert bg.scale == 1.0 and bg.brightness == 0.0 and bg.hue == 0.0
    assert b.xflip == 1.0 and b.rotate == 0.0 and b.saturation == 0.0
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    y = ada_augment(x, 1.0, b, _gen())
    assert set(y.unique().tolist()) <= set(x.unique().tolist())  # blits only move pixels
    assert not torch.equal(y, x)
    with pytest.raises(ValueError, match="'bgcx'.*b, bg, bgc"):
        AdaOps.preset("bgcx")
