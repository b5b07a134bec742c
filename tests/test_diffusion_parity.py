"""Imported EDM / EDM2 snapshots compute what the reference code computed: the fixtures in
../shared/data/reference/{edm,edm2} (made by NVlabs/edm and NVlabs/edm2; read in place, never
copied). Relative error = max |ours - reference| / max |reference| over the compared tensor."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vidgen import safe_pickle
from vidgen.cli import main
from vidgen.diffusion import convert
from vidgen.diffusion.load import load_denoiser
from vidgen.diffusion.sample import GuidedDenoiser, SamplerConfig, sample
from vidgen.diffusion.unet import UNetConfig, build_denoiser
from vidgen.nn import count_parameters
from vidgen.diffusion.precond import PrecondConfig
from vidgen.train.published import Problems, check_state_dict, load_and_convert, write_run

pytestmark = pytest.mark.usefixtures("one_thread")

EDM = {"vp": "edm-tiny-cond-vp-ddpmpp.pkl", "ve": "edm-tiny-cond-ve-ncsnpp.pkl", "adm": "edm-tiny-cond-edm-adm.pkl"}
EDM2 = {"main": "edm2-tiny-cond.pkl", "guide": "edm2-tiny-guide-cond.pkl", "guide_uncond": "edm2-tiny-guide-uncond.pkl",
        "latent": "edm2-tiny-latent-cond.pkl"}
D_TOL, SAMPLER_TOL = 1e-5, 1e-4


def rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


@pytest.fixture(scope="module")
def ref(shared_data) -> Path:
    return shared_data / "reference"


@pytest.fixture(scope="module")
def runs(ref, tmp_path_factory):
    """Every fixture pickle imported once (vidgen import's own path), by name."""
    root = tmp_path_factory.mktemp("imported")
    out = {}
    for name, file in [*EDM.items(), *EDM2.items()]:
        path = ref / ("edm2" if file.startswith("edm2") else "edm") / file
        write_run(load_and_convert(path), root / name, path)
        out[name] = root / name
    return out


def io(ref, which: str) -> dict:
    return load_file(str(ref / which / "io.safetensors"))


def call_with_f(den, *args):
    """D and the raw network output F of one call."""
    seen = []
    hook = den.net.register_forward_hook(lambda m, a, o: seen.append(o))
    try:
        with torch.no_grad():
            d = den(*args)
    finally:
        hook.remove()
    return d, seen[0]


@pytest.mark.parametrize("name", list(EDM))
def test_edm_denoisers_match_reference(ref, runs, name):
    t = io(ref, "edm")
    den, cfg = load_denoiser(runs[name])
    assert cfg.precond.kind == {"vp": "vp", "ve": "ve", "adm": "edm"}[name] and cfg.sample.dtype == "float64"
    x, s, labels = t["inputs/x"], t["inputs/sigma"], t["inputs/class_labels"]
    errors = {"D": 0.0, "F": 0.0, "D_label_none": 0.0}
    for i in range(len(s)):
        d, f = call_with_f(den, x[i], s[i].repeat(2), labels)
        errors["D"] = max(errors["D"], rel(d, t[f"{name}/D"][i]))
        errors["F"] = max(errors["F"], rel(f, t[f"{name}/F"][i]))
        with torch.no_grad():
            errors["D_label_none"] = max(errors["D_label_none"], rel(den(x[i], s[i].repeat(2), None),
                                                                     t[f"{name}/D_label_none"][i]))
    d, f = call_with_f(den, t["inputs/x_mixed"], t["inputs/sigma_mixed"], t["inputs/class_labels_mixed"])
    errors["D_mixed"], errors["F_mixed"] = rel(d, t[f"{name}/D_mixed"]), rel(f, t[f"{name}/F_mixed"])
    assert max(errors.values()) < D_TOL, errors
    assert (t[f"{name}/F"][0] - t[f"{name}/F"][-1]).abs().max() > 0.1  # F varies with sigma: not a degenerate net


@pytest.mark.parametrize("name", list(EDM2))
def test_edm2_denoisers_match_reference(ref, runs, name):
    t = io(ref, "edm2")
    den, cfg = load_denoiser(runs[name])
    assert next(den.net.parameters()).dtype == torch.float16  # the file's storage, computed as the reference does
    inputs = "inputs_latent" if name == "latent" else "inputs_pixel"
    x, s, labels = t[f"{inputs}/x"], t[f"{inputs}/sigma"], t[f"{inputs}/class_labels"]
    errors = {"D": 0.0, "F": 0.0, "D_label_none": 0.0}
    logvar = []
    for i in range(len(s)):
        seen = []
        hook = den.net.register_forward_hook(lambda m, a, o: seen.append(o))
        with torch.no_grad():
            d, lv = den(x[i], s[i].repeat(2), labels, return_logvar=True)
            d_none = den(x[i], s[i].repeat(2), None)
        hook.remove()
        errors["D"] = max(errors["D"], rel(d, t[f"{name}/D"][i]))
        errors["F"] = max(errors["F"], rel(seen[0], t[f"{name}/F"][i]))
        errors["D_label_none"] = max(errors["D_label_none"], rel(d_none, t[f"{name}/D_label_none"][i]))
        logvar.append(lv)
    errors["logvar"] = rel(torch.stack(logvar), t[f"{name}/logvar"])
    with torch.no_grad():
        d, lv = den(t[f"{inputs}/x_mixed"], t[f"{inputs}/sigma_mixed"], t[f"{inputs}/class_labels_mixed"],
                    return_logvar=True)
    errors["D_mixed"], errors["logvar_mixed"] = rel(d, t[f"{name}/D_mixed"]), rel(lv, t[f"{name}/logvar_mixed"])
    _, f = call_with_f(den, t[f"{inputs}/x_mixed"], t[f"{inputs}/sigma_mixed"], t[f"{inputs}/class_labels_mixed"])
    errors["F_mixed"] = rel(f, t[f"{name}/F_mixed"])
    assert max(errors.values()) < D_TOL, errors


EDM_RUNS = {"heun8": dict(steps=8), "heun18": dict(steps=18),
            "stoch18": dict(steps=18, churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.003)}


@pytest.mark.parametrize("name", list(EDM))
@pytest.mark.parametrize("run", list(EDM_RUNS))
def test_edm_sampler_matches_reference(ref, runs, name, run):
    """EDM's sampler in float64, with the net's sigma range and the recorded churn noise."""
    t = io(ref, "edm")
    den, cfg = load_denoiser(runs[name])
    p = f"{name}/{run}/"
    sigmas = []
    g = GuidedDenoiser(den, labels=t[p + "class_labels"])
    noise = t.get(p + "noise_f64")

    def record(x, sigma):
        sigmas.append(float(sigma))
        return g(x, sigma)
    record.sigma_limits, record.round_sigma = g.sigma_limits, g.round_sigma
    scfg = SamplerConfig(dtype=cfg.sample.dtype, **EDM_RUNS[run])
    with torch.no_grad():
        out = sample(record, t[p + "latents"], scfg, step_noise=(lambda i, x: noise[i]) if noise is not None else None)
    assert out.dtype == torch.float64
    assert np.allclose(sigmas, t[p + "call_sigma_f64"].numpy(), rtol=1e-12)
    assert rel(out, t[p + "out_f64"]) < SAMPLER_TOL
    assert torch.equal((out * 127.5 + 128).clip(0, 255).to(torch.uint8), t[p + "images_uint8"])


EDM2_RUNS = {  # (guide, cfg through the guide or the net itself, w, sampler settings)
    "plain32": (None, False, 1.0, dict(steps=32)),
    "cfg_same_net32": (None, True, 2.0, dict(steps=32)),
    "autog32": ("guide", False, 2.0, dict(steps=32)),
    "cfg_uncond_net32": ("guide_uncond", True, 1.4, dict(steps=32)),
    "autog8_calls": ("guide", False, 2.0, dict(steps=8)),
    "autog8_stoch": ("guide", False, 2.0, dict(steps=8, churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.003)),
}


@pytest.mark.parametrize("run", list(EDM2_RUNS))
def test_edm2_sampler_matches_reference(ref, runs, run):
    """EDM2's sampler in float32: no guidance, CFG through the net's zero label and through the
    unconditional guide, autoguidance; the stochastic run fed the recorded draws."""
    t = io(ref, "edm2")
    guide_name, use_cfg, w, kw = EDM2_RUNS[run]
    net, cfg = load_denoiser(runs["main"])
    guide = load_denoiser(runs[guide_name])[0] if guide_name else None
    p = f"sampler/{run}/"
    draws = iter(t[p + "step_noise"]) if p + "step_noise" in t else None
    den = GuidedDenoiser(net, guide=guide, cfg=use_cfg, guidance=w, labels=t[p + "labels"])
    scfg = SamplerConfig(dtype=cfg.sample.dtype, guidance=w, **kw)
    with torch.no_grad():
        out = sample(den, t[p + "noise"], scfg, step_noise=(lambda i, x: next(draws)) if draws else None)
    assert rel(out, t[p + "latents"]) < SAMPLER_TOL
    assert torch.equal((out * 127.5 + 128).clip(0, 255).to(torch.uint8), t[p + "images_uint8"])
    assert den.guide_nfe == (0 if w == 1 else den.nfe)
    if run == "autog8_calls":  # every recorded call, fed the recorded inputs
        with torch.no_grad():
            for x, s, d_net, d_gnet in zip(t[p + "call_x"], t[p + "call_sigma"], t[p + "call_D_net"],
                                           t[p + "call_D_gnet"]):
                assert rel(net(x, s, t[p + "labels"]), d_net) < D_TOL
                assert rel(guide(x, s, t[p + "labels"]), d_gnet) < D_TOL


@pytest.mark.parametrize("which", ["edm", "edm2"])
def test_every_published_layout_maps_every_key(ref, which):
    """Every published configuration (constructor arguments and every state-dict entry of the
    full-size networks): the converted config builds a network (on the meta device) whose state
    dict is the file's, key for key and shape for shape, with the same parameter count."""
    configs = json.loads((ref / which / "paper_shapes.json").read_text())["configs"]
    assert len(configs) >= (9 if which == "edm" else 10)
    prefix = "unet." if which == "edm2" else "model."
    for name, spec in configs.items():
        problems = Problems(name)
        model, precond, extras = convert.sections_from_constructor(spec["class_name"].rsplit(".", 1)[-1],
                                                                   spec["constructor_kwargs"], problems)
        problems.raise_if_any()
        cfg = UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in model.items()})
        den = build_denoiser(cfg, sigma_data=extras["sigma_data"], device="meta", precond=PrecondConfig(**precond))
        sd = {("net." + k[len(prefix):] if k.startswith(prefix) else k): torch.empty(shape, device="meta")
              for k, shape, _ in spec["state_dict"]}
        assert len(sd) == spec["num_state_dict_entries"], name
        assert check_state_dict(den, sd, name) == [], name
        assert count_parameters(den) == spec["param_count"], name


def test_detect_and_encoder_of_the_latent_file(ref, runs):
    tree = safe_pickle.load(ref / "edm2" / EDM2["latent"])
    assert convert.detect(tree)
    assert not convert.detect({"G_ema": tree["ema"]})
    den, cfg = load_denoiser(runs["latent"])
    enc = tree["encoder"].state
    assert cfg.encoder.kind == "vae" and cfg.encoder.vae == "stabilityai/sd-vae-ft-mse"
    assert np.array_equal(np.float32(cfg.encoder.scale), enc["scale"]) and np.array_equal(np.float32(cfg.encoder.bias),
                                                                                        enc["bias"])
    assert cfg.model.img_channels == 4 and cfg.data.latents and cfg.data.resolution == 64


def test_cli_reproduces_the_reference_generate_script(runs, ref, tmp_path, capsys):
    """`vidgen diffusion sample` draws noise, then the class, from each seed's generator as
    generate_images.py does: the reference's seeds give the reference's images."""
    t = io(ref, "edm2")
    out = tmp_path / "imgs"
    assert main(["diffusion", "sample", "--net", str(runs["main"]), "--guide", str(runs["guide"]), "--guidance", "2",
                 "--seeds", "16,17", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["nfe"] == 63 and report["guide_nfe"] == 63
    for i, seed in enumerate((16, 17)):
        img = np.asarray(Image.open(out / f"seed{seed:06d}.png"))
        assert np.array_equal(img, t["sampler/autog32/images_uint8"][i].permute(1, 2, 0).numpy())


def test_guidance_interval_and_cfg_refusal_with_imported_nets(runs, tmp_path, capsys):
    grid = str(tmp_path / "g.png")
    base = ["diffusion", "sample", "--net", str(runs["main"]), "--seeds", "0", "--steps", "8", "--out", grid]
    assert main(base + ["--guide", str(runs["guide"]), "--guidance", "2", "--interval", "0.28,2.9"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["nfe"] == 15 and 0 < report["guide_nfe"] < 15
    assert main(base + ["--cfg", "--guidance", "2"]) == 2  # EDM2 trains no label dropout
    assert "label dropout" in capsys.readouterr().err
    assert main(base + ["--cfg", "--guide", str(runs["guide_uncond"]), "--guidance", "1.4", "--interval", "0.28,2.9"]) == 0
    assert 0 < json.loads(capsys.readouterr().out.strip().splitlines()[-1])["guide_nfe"] < 15
    assert main(base + ["--guide", str(runs["latent"]), "--guidance", "2"]) == 2  # another space
    assert "--guide" in capsys.readouterr().err


@pytest.mark.slow
def test_must_show_import_and_autoguided_grid(ref, tmp_path, capsys):
    """The two-import + guided sampling command line of the issue, as written."""
    n, g = tmp_path / "N", tmp_path / "G"
    assert main(["import", str(ref / "edm2" / EDM2["main"]), "--out", str(n)]) == 0
    assert main(["import", str(ref / "edm2" / EDM2["guide"]), "--out", str(g)]) == 0
    capsys.readouterr()
    grid = tmp_path / "grid.png"
    assert main(["diffusion", "sample", "--net", str(n), "--guide", str(g), "--guidance", "2", "--seeds", "0-7",
                 "--out", str(grid)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 8
    img = np.asarray(Image.open(grid))
    assert img.std() > 10


def test_family_sampler_of_an_imported_run_gives_the_reference_images(runs, ref):
    """The registered Sampler (what `vidgen eval --fake` draws from): seeds 16, 17 of the
    imported main net without guidance are the reference's plain 32-step images."""
    from vidgen import registry
    sampler = registry.resolve(registry.get("diffusion").sampler)(runs["main"], "cpu")
    assert sampler.kind == "image" and sampler.frame_size == (16, 16)
    images = sampler.generate(16, 2)
    assert images.dtype == np.uint8 and images.shape == (2, 16, 16, 3)
    assert np.array_equal(images, io(ref, "edm2")["sampler/plain32/images_uint8"].permute(0, 2, 3, 1).numpy())


def test_an_imported_network_fine_tunes(runs, tmp_path):
    """`vidgen train diffusion --init IMPORTED_RUN`: the run's config is the base, the float16
    weights start a float32 training run."""
    rng = np.random.default_rng(0)
    data = tmp_path / "imgs"
    for c in range(4):  # the guide has 4 classes at 16x16
        (data / f"c{c}").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(data / f"c{c}" / f"{i}.png")
    out = tmp_path / "ft"
    assert main(["train", "diffusion", "--init", str(runs["guide"]), "--data", str(data), "--out", str(out),
                 "--set", "engine.steps=1", "--set", "engine.batch=2", "--set", "engine.workers=0",
                 "--set", "engine.checkpoint_every=1", "--set", "engine.sample_every=0"]) == 0
    tuned, cfg = load_denoiser(next(out.iterdir()), network="net")
    start, _ = load_denoiser(runs["guide"])
    assert cfg.model.model_channels == 32 and next(tuned.parameters()).dtype == torch.float32
    w0, w1 = start.net.out_conv.weight.float(), tuned.net.out_conv.weight
    assert not torch.equal(w0, w1) and (w1 - w0).norm() < 0.1 * w0.norm()  # one small step from the import
