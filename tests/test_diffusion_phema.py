import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from vidgen.diffusion.edm import Denoiser, LossConfig, edm_loss
from vidgen.diffusion.phema import (discrete_profile, profile_dot, profile_error, reconstruct, solve_weights,
                                    write_reconstruction)
from vidgen.diffusion.toy2d import ToyMLP, make_toy
from vidgen.errors import VidgenError
from vidgen.train.ema import make_ema, sigma_rel_to_gamma
from vidgen.train.recipe import EMASpec


pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot_grid(total, count, sigma_rels=(0.05, 0.10)):
    t = np.arange(1, count + 1) * total / count
    return (np.concatenate([t] * len(sigma_rels)),
            np.concatenate([np.full(count, sigma_rel_to_gamma(s)) for s in sigma_rels]))


def test_profile_dot_matches_numerical_integral():
    tau = np.linspace(0, 1000, 2_000_001)
    p = lambda t, g: np.where(tau <= t, (g + 1) * tau ** g / t ** (g + 1), 0.0)
    for (ta, ga, tb, gb) in [(600, 6.9, 1000, 17.0), (1000, 6.9, 400, 3.0), (700, 10.0, 700, 10.0)]:
        numeric = np.trapezoid(p(ta, ga) * p(tb, gb), tau)
        assert profile_dot(ta, ga, tb, gb) == pytest.approx(numeric, rel=1e-4)


def test_engine_discrete_profile_is_the_cell_integral_and_sums_to_one():
    gamma = sigma_rel_to_gamma(0.1)
    w = discrete_profile(500, gamma)
    assert w.sum() == pytest.approx(1.0)
    # Same weights as running the engine's per-step decay beta_t = (1 - 1/t)^(gamma + 1).
    acc = np.zeros(500)
    for t in range(1, 501):
        beta = (1 - 1 / t) ** (gamma + 1)
        acc *= beta
        acc[t - 1] = 1 - beta
    assert np.allclose(acc, w)


def test_reconstruct_007_from_005_and_010_within_one_percent():
    total = 100_000
    t_i, g_i = snapshot_grid(total, 64)
    g_r = sigma_rel_to_gamma(0.07)
    x = solve_weights(t_i, g_i, total, g_r)
    assert profile_error(t_i, g_i, x, total, g_r) < 0.01
    # The same weights on the engine's discrete per-step profiles (a shorter run, 6400 steps).
    total = 6400
    t_i, g_i = snapshot_grid(total, 64)
    x = solve_weights(t_i, g_i, total, g_r)
    rows = np.stack([np.pad(discrete_profile(int(t), g), (0, total - int(t))) for t, g in zip(t_i, g_i)])
    target = discrete_profile(total, g_r)
    assert np.linalg.norm(x @ rows - target) / np.linalg.norm(target) < 0.01


def test_sparse_snapshots_reconstruct_worse():
    g_r = sigma_rel_to_gamma(0.07)
    errs = [profile_error(*snapshot_grid(1000, n), solve_weights(*snapshot_grid(1000, n), 1000, g_r), 1000, g_r)
            for n in (4, 64)]
    assert errs[0] > 5 * errs[1]


def flat(state):
    return torch.cat([v.flatten().double() for k, v in sorted(state.items()) if v.is_floating_point()])


def test_reconstruction_on_real_training_weights(tmp_path):
    torch.manual_seed(0)
    gmm, classes = make_toy(depth=3)
    den = Denoiser(ToyMLP(32, 2), label_dim=2, logvar_channels=16)
    opt = torch.optim.Adam(den.parameters(), lr=3e-3, betas=(0.9, 0.99))
    steps, every = 512, 8  # 64 snapshots over the run
    tracked = make_ema("net", den, EMASpec(kind="power", sigma_rels=(0.05, 0.10), snapshot_every=every))
    direct = make_ema("net", den, EMASpec(kind="power", sigma_rels=(0.07,)))
    gen = torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        x, k = gmm.sample(128, generator=gen, return_index=True)
        loss = edm_loss(den, x.float(), classes[k], LossConfig(P_mean=-1.0, P_std=1.2)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        tracked.update(den, step, step * 128, 128)
        direct.update(den, step, step * 128, 128)
        tracked.snapshot(step, step * 128, tmp_path / "phema")
    (state, info), = reconstruct(tmp_path / "phema", [0.07])
    assert info["step"] == steps and info["num_snapshots"] == 128 and info["profile_error"] < 0.01
    ema05, ema10 = (flat(m.state_dict()) for m in tracked.copies().values())
    ema07 = flat(direct.copies()["net_ema"].state_dict())
    recon = flat(state)
    assert (recon - ema07).norm() < 0.05 * (ema05 - ema10).norm()
    out = write_reconstruction(tmp_path / "out.safetensors", state, info, config={"model": {"preset": "tiny"}})
    with safe_open(str(out), framework="pt") as f:
        assert "config" in f.metadata()


def test_reconstruct_errors_name_the_folder(tmp_path):
    with pytest.raises(VidgenError, match="no power-EMA snapshots"):
        reconstruct(tmp_path, [0.07])


@pytest.mark.slow
def test_reconstruction_on_engine_training_run(tmp_path):
    """A real run through the engine tracks 0.05, 0.10 and 0.07; 0.07 rebuilt from the
    0.05 / 0.10 snapshots alone lands next to the tracked 0.07 copy."""
    import numpy as np
    from PIL import Image

    from vidgen.cli import main
    from vidgen.train.checkpoint import read_checkpoint, resolve_checkpoint
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
    assert main(["diffusion", "train", "--data", str(tmp_path / "img"), "--config", "configs/diffusion/tiny.yaml",
                 "--out", str(tmp_path / "runs"), "--set", "engine.steps=64", "--set", "engine.batch=4",
                 "--set", "engine.workers=0", "--set", "engine.checkpoint_every=64", "--set", "engine.sample_every=0",
                 "--set", "data.resolution=8", "--set", "model.img_resolution=8",
                 "--set", "ema.sigma_rels=[0.05,0.10,0.07]", "--set", "ema.snapshot_every=1"]) == 0
    run = next((tmp_path / "runs").iterdir())
    (state, info), = reconstruct(run / "phema", [0.07], sources=[0.05, 0.10])
    assert info["num_snapshots"] == 128
    c = read_checkpoint(resolve_checkpoint(run))
    ema05, ema10, ema07 = (flat(c.network_state(n)) for n in ("net_ema", "net_ema_s0.1", "net_ema_s0.07"))
    assert (flat(state) - ema07).norm() < 0.05 * (ema05 - ema10).norm()


def test_combine_copies_constant_buffers():
    from vidgen.diffusion.phema import combine
    states = [{"w": torch.tensor([1.0, 2.0]) * i, "freqs": torch.tensor([3.0, 4.0]), "n": torch.tensor(7)}
              for i in (1, 2)]
    out = combine(states, np.array([0.3, 0.69]))  # weights summing to 0.99, as a fit may
    assert torch.equal(out["freqs"], torch.tensor([3.0, 4.0])) and out["n"].item() == 7
    assert torch.allclose(out["w"], torch.tensor([1.68, 3.36]))


def test_streaming_accumulator_matches_weighted_sum_and_takes_named_buffers():
    from vidgen.diffusion.phema import Accumulator
    torch.manual_seed(0)
    states = [{"w": torch.randn(3, 4), "b": torch.randn(2), "k": torch.tensor(5)} for _ in range(4)]
    weights = np.array([0.1, -0.2, 0.5, 0.6])
    acc = Accumulator(weights, buffers={"b"})
    for s in states:
        acc.add(s)
    out = acc.result()
    assert torch.allclose(out["w"], sum(w * s["w"] for w, s in zip(weights, states)).float(), atol=1e-6)
    assert torch.equal(out["b"], states[-1]["b"]) and out["k"].item() == 5


def test_edm2_snapshot_pickles_reproduce_the_reference_reconstruction(shared_data, tmp_path, capsys):
    """EDM2's own power-EMA snapshots (nimg 1024 .. 5120, sigma_rel 0.05 / 0.10) -> sigma_rel
    0.070 at 5120 images: the reference's coefficients and float16 network (phema/expected)."""
    from safetensors.torch import load_file

    from vidgen.cli import main
    from vidgen.diffusion.load import load_denoiser
    from vidgen.diffusion.phema import reconstruct_pickles

    folder = shared_data / "reference" / "edm2" / "phema"
    expected = load_file(str(folder / "expected.safetensors"))
    [(state, info, config)] = reconstruct_pickles(folder / "snapshots", [0.07])
    coefs, ref = np.asarray(info["weights"]), expected["coefs"].numpy().ravel()
    assert info["nimg"] == 5120 and info["num_snapshots"] == 10 and len(ref) == 10
    assert np.abs(coefs - ref).max() / np.abs(ref).max() < 1e-5
    worst = 0.0
    for key, value in expected.items():
        if key.startswith("reconstructed/"):
            name = key[len("reconstructed/"):]
            ours = state["net." + name[len("unet."):] if name.startswith("unet.") else name]
            assert ours.dtype == torch.float16  # stored like the reference's output
            worst = max(worst, ((ours.float() - value).abs().max() / value.abs().max().clamp(min=1e-30)).item())
    assert worst < 1e-5
    # From the command line; the result samples.
    out = tmp_path / "ph"
    assert main(["diffusion", "phema", "--snapshots", str(folder / "snapshots"), "--sigma-rel", "0.07",
                 "--out", str(out)]) == 0
    path = out / "phema-0000005-0.070.safetensors"
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == str(path)
    net, cfg = load_denoiser(path)
    assert next(net.parameters()).dtype == torch.float16 and cfg.model.img_resolution == 8
    assert main(["diffusion", "sample", "--net", str(path), "--seeds", "0-1", "--steps", "4",
                 "--out", str(tmp_path / "g.png")]) == 0
