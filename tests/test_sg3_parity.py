"""StyleGAN3 parity with the reference code (../shared/data/reference/stylegan3, made by
NVlabs/stylegan3): the fixture snapshots read without running their code, converted, and
run on the recorded inputs; every recorded output within 1e-5 relative (max|diff| / max|ref|)
in float32. Plus the full-size layouts of paper_shapes.json: every key used, none left over,
the same parameter count."""

import json

import pytest
import torch

from vidgen.sg3.convert import d_config, discriminator_state, g_config, generator_state
from vidgen.sg3.networks import Generator, SG3ModelConfig, build_discriminator

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5


@pytest.fixture(scope="module")
def ref(shared_data):
    return shared_data / "reference" / "stylegan3"


@pytest.fixture(scope="module")
def io(ref):
    from safetensors.torch import load_file

    return load_file(ref / "io.safetensors")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def varies(x: torch.Tensor) -> bool:
    """The samples of a batch differ (a degenerate network would make them equal)."""
    return bool(((x - x[:1]).flatten(1).abs().amax(1)[1:] > 1e-3 * x.abs().max()).all())


def convert(ref_dir, name: str):
    from vidgen import safe_pickle

    tree = safe_pickle.load(ref_dir / name)
    problems, notes = [], []
    cfg = SG3ModelConfig(**g_config(tree["G_ema"].init_kwargs, problems, notes),
                         **d_config(tree["D"].init_kwargs, problems, notes))
    assert problems == [] and notes == []
    nets = {}
    for key, state_fn, build in (("G_ema", generator_state, Generator), ("G", generator_state, Generator),
                                 ("D", discriminator_state, build_discriminator)):
        sm = state_fn(safe_pickle.state_dict(tree[key]), cfg, key)
        assert sm.finish() == [], sm.problems  # every tensor used; filters equal vidgen's design
        assert len(sm.used) == len(sm.source) and sm.constants > 0
        net = build(cfg).eval()
        net.load_state_dict(sm.out, strict=True)
        nets[key] = net
    return cfg, nets


@pytest.mark.parametrize("tag,name", [("t", "stylegan3-t-snapshot.pkl"), ("r", "stylegan3-r-snapshot.pkl")])
def test_images_and_logits_match_the_reference(ref, io, tag, name):
    cfg, nets = convert(ref, name)
    assert cfg.arch == tag.upper() and cfg.c_dim == (4 if tag == "t" else 0)
    G, D = nets["G_ema"], nets["D"]
    z, c = io[f"{tag}_z"], io[f"{tag}_c"]
    c = c if c.shape[1] else None
    errs = {}
    with torch.no_grad():
        ws = G.mapping(z, c)
        ws07 = G.mapping(z, c, psi=0.7)
        errs["ws"] = rel_err(ws, io[f"{tag}_ws"])
        errs["ws_psi07"] = rel_err(ws07, io[f"{tag}_ws_psi07"])
        img = G.synthesis(ws)
        errs["img"] = rel_err(img, io[f"{tag}_img"])
        errs["img_psi07"] = rel_err(G.synthesis(ws07), io[f"{tag}_img_psi07"])
        errs["img_transformed"] = rel_err(G.synthesis(ws, transform=io[f"{tag}_input_transform"]),
                                          io[f"{tag}_img_transformed"])
        logits = D(io[f"{tag}_D_input"], None if c is None else torch.cat([c, c]))
        errs["D_logits"] = rel_err(logits, io[f"{tag}_D_logits"])
        # G and G_ema are different networks in the file (different perturbations).
        assert rel_err(nets["G"](z, c), img) > 1e-3
    print(f"stylegan3-{tag} worst relative errors:", {k: f"{v:.2e}" for k, v in errs.items()})
    assert max(errs.values()) <= TOL, errs
    assert varies(img) and varies(logits)
    assert rel_err(io[f"{tag}_img_transformed"], io[f"{tag}_img"]) > 0.05  # the transform changes the image


def paper_source(entry: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape, *_ in entry["state_dict"]}


@pytest.mark.parametrize("name", ["G_T_1024", "G_R_1024", "G_T_256", "G_R_256",
                                  "D_T_1024", "D_R_1024", "D_T_256", "D_R_256"])
def test_full_size_layouts_import_every_key(ref, name):
    entry = json.loads((ref / "paper_shapes.json").read_text())["networks"][name]
    kwargs = {k: v for k, v in entry["constructor"].items() if k != "class_name"}
    problems, notes = [], []
    if name.startswith("G"):
        cfg = SG3ModelConfig(**g_config(kwargs, problems, notes))
        sm = generator_state(paper_source(entry), cfg, name, verify_constants=False)
        with torch.device("meta"):
            net = Generator(cfg)
    else:
        d = d_config(kwargs, problems, notes)
        cfg = SG3ModelConfig(resolution=kwargs["img_resolution"], c_dim=kwargs["c_dim"], **d)
        sm = discriminator_state(paper_source(entry), cfg, name, verify_constants=False)
        with torch.device("meta"):
            net = build_discriminator(cfg)
    assert problems == [] and sm.finish() == []
    assert len(sm.used) == len(entry["state_dict"])  # 100% of the keys
    want = net.state_dict()
    assert set(sm.out) == set(want) and all(tuple(sm.out[k].shape) == tuple(want[k].shape) for k in want)
    assert sum(p.numel() for p in net.parameters()) == entry["num_params"]


def test_unknown_constructor_arguments_are_listed():
    problems, notes = [], []
    g_config({"z_dim": 512, "img_resolution": 256, "foo": 1, "conv_kernel": 1, "use_radial_filters": False,
              "filter_size": 4}, problems, notes)
    text = "; ".join(problems)
    assert "unknown constructor arguments foo" in text and "filter_size=4" in text and "conv_kernel=1" in text
    problems = []
    d_config({"architecture": "skip", "epilogue_kwargs": {"bar": 2}}, problems, notes)
    assert any("architecture='skip'" in p for p in problems) and any("bar" in p for p in problems)


def test_importer_refuses_what_it_cannot_map(ref):
    from vidgen import safe_pickle
    from vidgen.sg3.convert import IMPORTER
    from vidgen.train.published import UnsupportedCheckpoint

    tree = safe_pickle.load(ref / "stylegan3-t-snapshot.pkl")
    assert IMPORTER.detect(tree) and not IMPORTER.detect({"G": tree["D"]})
    tree["G_ema"].init_kwargs["use_fancy_filters"] = True
    tree["D"].init_kwargs["architecture"] = "skip"
    with pytest.raises(UnsupportedCheckpoint, match="use_fancy_filters.*architecture='skip'"):
        IMPORTER.convert(tree, ref / "stylegan3-t-snapshot.pkl")
    tree = safe_pickle.load(ref / "stylegan3-t-snapshot.pkl")
    tree["G"].state["_modules"]["synthesis"].state["_modules"]["L3_36_64"].state["_buffers"]["extra"] = torch.zeros(2)
    with pytest.raises(UnsupportedCheckpoint, match="G: 1 tensors vidgen does not know: synthesis.L3_36_64.extra"):
        IMPORTER.convert(tree, ref / "stylegan3-t-snapshot.pkl")
