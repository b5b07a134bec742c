"""The time-lapse GAN against the reference release's own outputs (../shared/data/reference/
timelapse, made by running harskish/tlgan): a snapshot read without running its code, imported,
then every recorded output reproduced from the recorded inputs and random draws within 1e-5
relative (max |diff| / max |ref|) in float32."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vidgen import safe_pickle
from vidgen.config import config_from_dict
from timelapse.importer import IMPORTER
from timelapse.model import Discriminator, Generator
from timelapse.recipe import TimelapseConfig
from timelapse.time import TimeAxis

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5


@pytest.fixture(scope="module")
def ref(shared_data):
    folder = shared_data / "reference" / "timelapse"
    return folder, safe_pickle.load(folder / "network-snapshot.pkl"), load_file(str(folder / "io.safetensors"))


@pytest.fixture(scope="module")
def nets(ref):
    folder, tree, _ = ref
    run = IMPORTER.convert(tree, folder / "network-snapshot.pkl")
    cfg = config_from_dict(TimelapseConfig, run.config)
    axis = TimeAxis(cfg.time.start, cfg.time.num_days, cfg.time.lin_scale)
    out = {}
    for name in ("G", "G_ema", "D"):
        net = Discriminator(cfg.model, axis) if name == "D" else Generator(cfg.model, axis)
        net.load_state_dict(run.networks[name])
        out[name] = net.eval().requires_grad_(False)
    return out, axis


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def test_timestamps_to_conditioning(ref, nets):
    _, _, io = ref
    (G, D), axis = (nets[0]["G_ema"], nets[0]["D"]), nets[1]
    t = axis.normalize(io["timestamps_unix"].numpy())
    assert np.array_equal(t, io["t_normalized_f64"].numpy())
    t32 = torch.tensor(t, dtype=torch.float32)
    assert torch.equal(t32, io["t_label"][:, 0])
    assert rel(G.time(t32), io["c_fourier"]) <= TOL and rel(D.time(t32), io["c_fourier"]) <= TOL
    assert rel(torch.tensor(axis.frequencies), io["cond_frequencies"][1:]) <= TOL  # [-1 (trend), year, day]
    assert io["c_fourier"][:, 4].std() > 0.5  # the daily pair varies across the recorded times


def test_generator_images(ref, nets):
    _, _, io = ref
    G = nets[0]["G_ema"]
    t = io["t_label"][:, 0]
    z = io["z"]
    assert rel(G.map(z), io["ws"]) <= TOL
    assert rel(G.map(z, psi=0.7), io["ws_psi07"]) <= TOL
    const = G(z.repeat_interleave(10, 0), t.repeat(2), noise="const")
    assert rel(const, io["img_const"]) <= TOL
    assert io["img_const"][:10, :, 2:30].std(0).mean() > 0.01  # images differ across the times
    assert rel(G(z, t[[4, 7]], psi=0.7, noise="const"), io["img_psi07"]) <= TOL
    draws = [io[f"noise_random.{i:02d}"] for i in range(len(G.convs))]
    assert [tuple(d.shape[-2:]) for d in draws] == G.noise_shapes  # one draw per conv, in order
    assert rel(G(z, t[[4, 7]], noise=draws), io["img_random_noise"]) <= TOL
    assert rel(G(z, t[[4, 7]], noise="const"), io["img_random_noise"]) > 1e-3  # the draws matter


def test_generators_differ_and_discriminator_logits(ref, nets):
    _, _, io = ref
    nets_, _ = nets
    t = io["t_label"][:, 0]
    z = io["z"].repeat_interleave(10, 0)
    # G (training copy) is not G_ema: the snapshot's two generators are both imported
    assert rel(nets_["G"](z, t.repeat(2), noise="const"), io["img_const"]) > 1e-2
    logits = nets_["D"](io["img_const"][:4], t.repeat(2)[:4])
    assert rel(logits[:, None], io["D_logits"]) <= TOL
    assert io["D_logits"].std() > 0.05


def test_import_then_render_and_init(ref, tmp_path, capsys):
    """`vidgen import` -> a run folder that `timelapse render` and `timelapse train --init` take."""
    from vidgen.cli import main as vidgen_main
    from vidgen.render.writer import read_settings
    from vidgen.data.synthetic import make_timelapse
    from datetime import datetime, timezone
    from timelapse.cli import main as tl_main
    from timelapse.rerender import load_generator

    folder, _, io = ref
    run = tmp_path / "imported"
    assert vidgen_main(["import", str(folder / "network-snapshot.pkl"), "--out", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "family:      timelapse" in printed and "267,827" in printed and "326,816" in printed
    G, info = load_generator(run)
    t = io["t_label"][:, 0]
    assert rel(G(io["z"].repeat_interleave(10, 0), t.repeat(2), noise="const"), io["img_const"]) <= TOL
    out = tmp_path / "day.mp4"
    assert tl_main(["render", "sweep", "-c", str(run), "--factor", "day", "--frames", "6", "--out", str(out),
                    "--device", "cpu"]) == 0
    assert read_settings(out)["axis"]["num_days"] == 912
    # fine-tuning from it: the run keeps the imported time axis and starts from its networks
    frames = tmp_path / "frames"
    make_timelapse(frames, seed=0, size=(32, 32), days=20, start=datetime(2020, 3, 1, tzinfo=timezone.utc))
    assert tl_main(["train", "--init", str(run), "--data", str(frames), "--out", str(tmp_path / "runs"),
                    "--set", "engine.steps=1", "--set", "engine.batch=4", "--set", "engine.workers=0",
                    "--set", "engine.device=cpu"]) == 0
    (new_run,) = (tmp_path / "runs").iterdir()
    G2, _ = load_generator(new_run)
    assert G2.axis == G.axis and G2.cfg.time_phase == "float32"
