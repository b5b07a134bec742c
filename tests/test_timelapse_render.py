"""Re-rendering (docs/METHODS.md 2, "What users do"): frame counts, held factors, settings round trip."""

import numpy as np
import pytest
import torch

from vidgen.data.synthetic import make_timelapse
from vidgen.errors import ConfigError
from vidgen.render.writer import read_settings
from timelapse import rerender as rr
from timelapse.cli import main
from timelapse.model import Generator, ModelConfig, TimeStyle
from timelapse.time import DAY, TimeAxis, date_range

CFG = ModelConfig(resolution=16, channel_base=256, channel_max=32, z_dim=16, w_dim=16, cond_mlp_layers=2)
TINY = ["model.resolution=16", "model.channel_base=256", "model.channel_max=32", "model.z_dim=16",
        "model.w_dim=16", "model.cond_mlp_layers=2", "engine.batch=4", "engine.workers=0", "engine.device=cpu",
        "engine.steps=2"]


@pytest.fixture(scope="module")
def G():
    """A generator whose output depends on every factor (L moved away from the identity)."""
    torch.manual_seed(0)
    axis = TimeAxis(start=1609459200.0, num_days=800)  # 2021-01-01, trend + year + day
    g = Generator(CFG, axis).eval().requires_grad_(False)
    for m in g.modules():
        if isinstance(m, TimeStyle):
            m.time.weight.add_(torch.randn_like(m.time.weight) * 2)
    return g


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tl_render")
    make_timelapse(root / "frames", seed=1, size=(16, 16), days=40)
    args = ["train", "--data", str(root / "frames"), "--config", "configs/timelapse/tiny.yaml", "--out", str(root / "runs")]
    assert main(args + sum((["--set", s] for s in TINY), [])) == 0
    (run,) = (root / "runs").iterdir()
    return run


def features(G, plan):
    return G.time(plan.t)


def test_stabilize_counts_held_factors_and_frozen_trend(G):
    dates = date_range("2021-03-01..2021-10-31", "1d", hour=12)
    plan = rr.plan_stabilize(G, dates, seed=3, hour=9.0)
    assert len(plan) == 245
    c = features(G, plan)
    assert torch.allclose(c[:, 4:], c[:1, 4:], atol=1e-9)  # time of day held
    assert (torch.diff(plan.t[:, 0]) > 0).all()  # trend advances
    assert not torch.allclose(c[:, 2:4], c[:1, 2:4])  # year follows the dates
    held = rr.plan_stabilize(G, dates, seed=3, hour=9.0, year="hold")
    assert torch.allclose(features(G, held)[:, 2:4], features(G, held)[:1, 2:4], atol=1e-9)
    # one weather and the trend frozen: every frame identical
    frozen = rr.render_all(G, rr.plan_stabilize(G, dates[:20], 3, 9.0, "hold", freeze_trend=True))
    assert frozen.shape == (20, 16, 16, 3)
    assert np.abs(frozen.astype(int) - frozen[:1]).max() <= 1
    moving = rr.render_all(G, rr.plan_stabilize(G, dates[:20], 3, 9.0, "follow"))
    assert np.abs(moving.astype(int) - moving[:1]).max() > 1


@pytest.mark.parametrize("factor,col", [("trend", 0), ("year", 1), ("day", 2)])
def test_sweep_moves_one_factor(G, factor, col):
    plan = rr.plan_sweep(G, factor, base_seconds=1609459200.0 + 300 * DAY, frames=12, seeds=(0, 5))
    assert len(plan) == 24
    for other in {0, 1, 2} - {col}:
        assert torch.equal(plan.t[:, other], plan.t[:1, other].expand(24))
    assert plan.t[:12, col].unique().numel() == 12
    assert torch.equal(plan.t[:12], plan.t[12:])  # the same sweep for each seed
    frames = rr.render_all(G, plan)
    assert frames.shape == (24, 16, 16, 3) and not np.array_equal(frames[0], frames[12])
    with pytest.raises(ConfigError):
        rr.plan_sweep(G, "week", 1609459200.0, 4)


def test_day_sweep_covers_one_full_day(G):
    plan = rr.plan_sweep(G, "day", 1609459200.0 + 10.3 * DAY, frames=24)
    span_days = (plan.t[-1, 2] - plan.t[0, 2]) * G.axis.num_days
    assert float(span_days) == pytest.approx(23 / 24)
    assert float(G.axis.seconds(plan.t[0, 2].item()) % DAY) == pytest.approx(0.0, abs=1e-3)  # from midnight


def test_restyle_seeds_and_interpolation(G):
    dates = date_range("2021-05-01..2021-05-10", "1d", hour=12)
    plans = rr.plan_restyle(G, dates, seeds=[1, 2, 3])
    assert len(plans) == 3 and all(len(p) == 10 for p in plans)
    assert all(torch.equal(p.t, plans[0].t) for p in plans)  # the same dates for every weather
    tiles = np.concatenate(list(rr.tiled(G, plans, chunk=4)))
    assert tiles.shape == (10, 16, 16 * 3 + 2 * 2, 3)
    (interp,) = rr.plan_restyle(G, dates, seeds=[1, 2], interp=True)
    assert len(interp) == 10
    first = rr.render_all(G, interp)[0]
    assert np.array_equal(first, rr.render_all(G, plans[0])[0])  # starts at seed 1's weather
    assert torch.allclose(interp.ws[-1], plans[1].ws[-1], atol=1e-5)  # ends at seed 2's
    with pytest.raises(ConfigError, match="--interp"):
        rr.plan_restyle(G, dates, seeds=[1], interp=True)


def test_real_plans_from_latents(G):
    T = 5
    t = torch.linspace(0.1, 0.2, T, dtype=torch.float64)
    lat = {"t": t, "w": torch.randn(T, G.num_ws, 16)}
    for k, (h, w) in enumerate(G.noise_shapes):
        lat[f"noise{k}"] = torch.randn(T, 1, h, w)
    one = rr.plan_real(G, lat, "weather")
    assert len(one) == T and torch.equal(one.ws, one.ws[:1].expand_as(one.ws))
    assert torch.allclose(one.t[:, 0], t)  # each frame keeps its own time
    noon = rr.plan_real(G, lat, "hour", hour=12.0)
    assert torch.equal(noon.ws, lat["w"])  # each frame keeps its own weather
    assert torch.allclose(features(G, noon)[:, 4:], torch.tensor([-1.0, 0.0], dtype=torch.float64).expand(T, 2),
                          atol=1e-9)
    with pytest.raises(ConfigError, match="--hour"):
        rr.plan_real(G, lat, "hour")


def decode(path):
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_cli_render_settings_round_trip(run_dir, tmp_path):
    out = tmp_path / "stab.mp4"
    assert main(["render", "stabilize", "-c", str(run_dir), "--dates", "2021-03-01..2021-03-12", "--hour", "9",
                 "--seed", "4", "--out", str(out), "--device", "cpu"]) == 0
    s = read_settings(out)
    assert s["mode"] == "stabilize" and s["dates"] == "2021-03-01..2021-03-12" and s["hour"] == 9.0
    assert s["seed"] == 4 and s["step"] == 2 and s["axis"]["num_days"] >= 40
    first = decode(out)
    assert len(first) == 12
    again = tmp_path / "again.mp4"
    assert main(["render", "--from", str(out), "--out", str(again), "--device", "cpu"]) == 0
    assert np.array_equal(decode(again), first)
    assert read_settings(again)["seed"] == 4


def test_cli_image_modes_and_errors(run_dir, tmp_path, capsys):
    from PIL import Image

    grid = tmp_path / "grid.png"
    assert main(["render", "grid", "-c", str(run_dir), "--factor", "day", "--seeds", "0,1,2", "--frames", "5",
                 "--out", str(grid), "--device", "cpu"]) == 0
    with Image.open(grid) as im:
        assert im.size == (5 * 16 + 4 * 2, 3 * 16 + 2 * 2)
    assert read_settings(grid)["factor"] == "day"
    stack = tmp_path / "stack.png"
    assert main(["render", "stack", "-c", str(run_dir), "--out", str(stack), "--device", "cpu"]) == 0
    with Image.open(stack) as im:
        assert im.size == (16, 16)
    gif = tmp_path / "sweep.gif"
    assert main(["render", "sweep", "-c", str(run_dir), "--factor", "trend", "--frames", "7", "--out", str(gif)]) == 0
    assert read_settings(gif)["frames"] == 7
    assert main(["render", "grid", "-c", str(run_dir), "--factor", "day", "--out", str(tmp_path / "g.mp4")]) == 2
    assert "give a .png path" in capsys.readouterr().err
    assert main(["render", "stabilize", "-c", str(tmp_path), "--out", str(tmp_path / "x.mp4")]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_cli_invert_then_render_real_and_eval(run_dir, tmp_path):
    import json

    from timelapse.invert import read_latents

    frames = run_dir.parent.parent / "frames"
    lat = tmp_path / "lat.safetensors"
    assert main(["invert", "-c", str(run_dir), "--data", str(frames), "--skip", "6:", "--out", str(lat),
                 "--steps", "3", "--device", "cpu"]) == 0
    state, meta = read_latents(lat)
    assert state["done"].tolist() == [True] * 6 and meta["checkpoint"].endswith("step-000000002")
    for mode, extra in (("weather", []), ("hour", ["--hour", "6"])):
        out = tmp_path / f"real_{mode}.gif"
        assert main(["render", "real", "-c", str(run_dir), "--latents", str(lat), "--mode", mode, *extra,
                     "--out", str(out), "--device", "cpu"]) == 0
        s = read_settings(out)
        assert s["real_mode"] == mode and s["latents"] == str(lat)
        from PIL import Image

        with Image.open(out) as im:
            assert im.n_frames == 6
    report = tmp_path / "eval.json"
    assert main(["eval", "-c", str(run_dir), "--ratios", "8", "--out", str(report), "--device", "cpu"]) == 0
    ratios = json.loads(report.read_text())["variance_ratios"]
    assert not list(tmp_path.glob(".eval.json*"))  # written atomically: no temporary left behind
    assert sum(ratios[k] for k in ("z", "noise", "t")) == pytest.approx(1.0, abs=0.05)


def test_stabilize_holds_factors_in_a_layer_range_only(G):
    dates = date_range("2021-06-01..2021-06-02", "3h")
    plan = rr.plan_stabilize(G, dates, seed=1, hour=12.0, layers=(0, 2))
    assert plan.t.shape == (len(dates), G.num_ws, 3)
    c = G.time(plan.t)  # [T, L, 6]
    assert torch.allclose(c[:, :2, 4:], c[:1, :2, 4:], atol=1e-9)  # coarse layers: noon throughout
    assert not torch.allclose(c[:, 2:, 4:], c[:1, 2:, 4:])  # finer layers follow the clock
    full, part = (rr.render_all(G, rr.plan_stabilize(G, dates, 1, 12.0, layers=L)) for L in (None, (0, 2)))
    assert full.shape == part.shape and not np.array_equal(full, part)
    with pytest.raises(ConfigError, match="--layers"):
        rr.plan_stabilize(G, dates, 1, 12.0, layers=(3, 99))


def test_depicted_instant_of_plans(G):
    from timelapse.compare import depicted_seconds

    dates = date_range("2021-06-01..2021-06-05", "1d", hour=7)  # 07:00 each day
    plan = rr.plan_stabilize(G, dates, seed=0, hour=15.0)  # rendered at 15:00 of each date
    assert np.allclose(depicted_seconds(G.axis, plan.t), dates + 8 * 3600, atol=1e-2)
    sweep = rr.plan_sweep(G, "day", float(dates[0]), 4)  # one day from 00:00 of the base date
    assert np.allclose(depicted_seconds(G.axis, sweep.t), dates[0] - 7 * 3600 + np.arange(4) * 6 * 3600, atol=1e-2)


def test_cli_compare_real_puts_the_nearest_real_frame_beside(run_dir, tmp_path, capsys):
    from timelapse.compare import NearestReal

    frames = run_dir.parent.parent / "frames"
    out = tmp_path / "cmp"  # a folder of pngs: exact pixels
    assert main(["render", "stabilize", "-c", str(run_dir), "--dates", "2021-03-02..2021-03-06", "--hour", "10",
                 "--compare-real", str(frames), "--out", str(out), "--device", "cpu"]) == 0
    pngs = sorted(out.glob("*.png"))
    from PIL import Image

    got = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pngs])
    assert got.shape == (5, 16 + 16, 16 + 2 + 16, 3)  # label band over [generated | real]
    real = NearestReal(frames, (16, 16))
    instants = date_range("2021-03-02..2021-03-06", "1d", hour=10)
    idx = real.nearest(instants)
    assert all(np.abs(real.seconds[idx] - instants) <= np.abs(real.seconds[:, None] - instants).min(0) + 1e-6)
    assert np.array_equal(got[:, 16:, 18:], real.frames(idx))
    assert read_settings(out)["compare_real"] == str(frames)  # `render --from` repeats it
    assert main(["render", "grid", "-c", str(run_dir), "--factor", "day", "--compare-real", str(frames),
                 "--out", str(tmp_path / "g.png")]) == 2
    assert "--compare-real" in capsys.readouterr().err
