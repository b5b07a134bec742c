"""engine.precision (vidgen/train/precision.py, vidgen/nn/fp16.py): the plan per family, the
StyleGAN-style float16 layers with clamping, bfloat16 autocast and float16 loss scaling, on
the CPU; the CUDA paths when a GPU is present."""

import pytest
import torch
from safetensors.torch import load_file

from vidgen.config import load_config
from vidgen.errors import ConfigError
from vidgen.nn.fp16 import fp16_layers, fp16_octave, run_in_fp16, run_in_fp32
from vidgen.train import checkpoint as ckpt
from vidgen.train.dist import DistInfo
from vidgen.train.engine import Trainer, train
from vidgen.train.precision import LossScaler, plan_precision
from vidgen.train.toy import ToyGANConfig, ToyGANRecipe

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
SG3 = ["engine.batch=4", "engine.workers=0", "engine.device=cpu", "loss.r1_interval=2"]
TOY = ["engine.batch=4", "data.resolution=8", "model.channels=8", "model.z_dim=8", "data.num=32",
       "engine.workers=0", "engine.device=cpu", "engine.log_every=4", "model.r1_interval=3"]


def test_plan_per_family_and_device():
    from vidgen.diffusion.recipe import DiffusionRecipe
    from vidgen.lvg.recipe import LowResRecipe
    from vidgen.lvg.recipe_superres import SuperResRecipe
    from vidgen.sg3.recipe import SG3Recipe
    from vidgen.stylegan_t.recipe import StyleGANTRecipe
    from timelapse.recipe import TimelapseRecipe
    mixed = {r.family: r.mixed_precision for r in (DiffusionRecipe, LowResRecipe, SuperResRecipe, SG3Recipe,
                                                   StyleGANTRecipe, TimelapseRecipe, ToyGANRecipe)}
    assert mixed == {"diffusion": "bf16", "lvg-lowres": "fp32", "lvg-superres": "fp16-layers", "sg3": "fp16-layers",
                     "stylegan-t": "bf16", "timelapse": "fp16-layers", "toygan": "fp32"}
    assert plan_precision("auto", CPU, "fp16-layers").name == "fp32"  # the references train on GPUs
    assert plan_precision("mixed", CPU, "fp16-layers").fp16_layers
    assert plan_precision("mixed", CPU, "bf16").autocast == torch.bfloat16
    assert plan_precision("mixed", CPU, "fp32").name == "fp32"
    fp16 = plan_precision("fp16", CPU, "fp32")
    assert fp16.autocast == torch.float16 and fp16.loss_scaling and not fp16.fp16_layers
    with pytest.raises(ConfigError, match="engine.precision.*'fp64' is not one of"):
        load_config(ToyGANConfig, None, ["engine.precision=fp64"])


def test_fp16_octaves_follow_stylegan2():
    # 256 px, num_fp16_res=4: the blocks at 32, 64, 128, 256 (StyleGAN2-ADA's fp16_resolution = 32)
    assert [r for r in (4, 8, 16, 32, 64, 128, 256) if fp16_octave(r, 256, 4)] == [32, 64, 128, 256]
    assert [r for r in (4, 8, 16) if fp16_octave(r, 16, 4)] == [8, 16]  # never below 8
    assert not any(fp16_octave(r, 256, 0) for r in (8, 256))


def _sg3(*extra):
    from vidgen.sg3.recipe import SG3Config, SG3Recipe
    return SG3Recipe(load_config(SG3Config, "configs/sg3/tiny.yaml", SG3 + list(extra)), CPU)


def test_fp16_layers_compute_in_half_and_clamp():
    """sg3's top layers take float16 inputs, the rest float32; the output is float32, close to
    the float32 network's and not equal to it (the half layers did run in half)."""
    torch.manual_seed(0)
    recipe = _sg3("model.resolution=32")  # layers at rates 16 and 32
    G = recipe.G.eval()
    z = torch.randn(4, G.cfg.z_dim)
    c = G.labels(torch.arange(4) % 4, 4)
    with torch.no_grad():
        ref = G(z, c)
    chosen = recipe.fp16_layers(1)  # the rate-32 layers; D's fromrgb and 32x32 block
    names = {id(m) for m, _ in chosen}
    synth = [layer for layer in G.synthesis.layers]
    assert 0 < sum(id(layer) in names for layer in synth) < len(synth)  # the high-rate layers only
    assert any(id(m) in names for m in recipe.D.modules())
    for layer, inputs in chosen:
        run_in_fp16(layer, inputs)
    seen = {}  # the input dtype each layer computes with (hooks run after run_in_fp16's cast)
    for layer in synth:
        layer.register_forward_pre_hook(lambda m, a: seen.__setitem__(id(m), a[0].dtype))
    clamp = recipe.cfg.model.conv_clamp
    peaks = []
    for layer in synth:
        if id(layer) in names and not layer.spec.is_torgb:
            layer.register_forward_hook(lambda m, a, out: peaks.append(float(out.abs().max())))
    try:
        with torch.no_grad():
            out = G(z, c)
    except RuntimeError as exc:  # an op without a float16 CPU kernel in this torch build
        pytest.skip(f"float16 layers need ops this CPU build lacks: {exc}")
    assert {seen[id(layer)] for layer in synth if id(layer) in names} == {torch.float16}
    assert {seen[id(layer)] for layer in synth if id(layer) not in names} == {torch.float32}
    assert out.dtype == torch.float32 and ref.std() > 0.01
    err = (out - ref).abs().max().item()
    assert 0 < err < 0.05 * ref.abs().max().item(), err
    assert peaks and max(peaks) <= clamp
    assert fp16_layers(G) and fp16_layers(recipe.D)
    run_in_fp32(G)
    assert fp16_layers(G) == []
    with torch.no_grad():
        assert torch.equal(G(z, c), ref)


def test_conv_clamp_holds_in_fp16_layers():
    """Pre-activations far beyond the clamp (but in float16 range) leave a half layer clamped
    to +-conv_clamp (StyleGAN2/3), so the next layer's input stays bounded."""
    torch.manual_seed(0)
    recipe = _sg3()
    layer = next(m for m, _ in recipe.fp16_layers(2) if hasattr(m, "spec") and not m.spec.is_torgb)
    run_in_fp16(layer)
    s = layer.spec
    x = torch.randn(2, s.in_channels, s.in_size[1], s.in_size[0]) * 2000  # unit-gain conv: outputs ~1e3-1e4
    with torch.no_grad():
        try:
            y = layer(x, torch.randn(2, layer.affine.weight.shape[1]))
        except RuntimeError as exc:
            pytest.skip(f"float16 layers need ops this CPU build lacks: {exc}")
        run_in_fp32(layer)
        layer.conv_clamp = None
        unclamped = layer(x, torch.randn(2, layer.affine.weight.shape[1]))
    assert torch.isfinite(y).all() and y.abs().max() <= recipe.cfg.model.conv_clamp
    assert y.abs().max() == recipe.cfg.model.conv_clamp and unclamped.abs().max() > 1000


@pytest.mark.parametrize("family", ["sg3", "timelapse", "lvg-superres"])
def test_mixed_training_steps(family, tmp_path):
    """engine.precision=mixed on the CPU: the trained networks run their top layers in float16,
    the EMA copy in float32; a few steps stay finite and the checkpoint is float32."""
    from test_train_ranks import FAMILIES
    config, sets, maker, _ = FAMILIES[family]
    data = "synthetic"
    if maker != "synthetic":
        (tmp_path / "data").mkdir()
        maker(tmp_path / "data")
        data = str(tmp_path / "data")
    import vidgen.families  # noqa: F401 (registers them)
    from vidgen.registry import recipe_class
    recipe_cls = recipe_class(family)
    cfg = load_config(recipe_cls.config_class, config,
                      sets + ["engine.workers=0", "engine.device=cpu", "engine.precision=mixed", "engine.num_fp16_res=2",
                              f"data.path={data}", f"engine.out_dir={tmp_path / 'runs'}", "engine.steps=2",
                              "engine.checkpoint_every=2", "engine.log_every=1"])
    tr = Trainer(recipe_cls, cfg, DistInfo())
    assert tr.precision.name == "fp16-layers"
    assert fp16_layers(tr.nets["G"]) and fp16_layers(tr.nets["D"]) and not fp16_layers(tr.emas["G"].copies()["G_ema"])
    try:
        run = train(recipe_cls, cfg)
    except RuntimeError as exc:
        pytest.skip(f"float16 layers need ops this CPU build lacks: {exc}")
    nets = load_file(str(ckpt.read_checkpoint(run).path / "networks.safetensors"))
    floats = [v for v in nets.values() if v.is_floating_point()]
    assert all(v.dtype in (torch.float32, torch.float64) and torch.isfinite(v).all() for v in floats)


def _toy_trainer(tmp_path, *extra) -> Trainer:
    cfg = load_config(ToyGANConfig, None, [*TOY, f"engine.out_dir={tmp_path}", *extra])
    return Trainer(ToyGANRecipe, cfg, DistInfo())


def _batch(tr: Trainer):
    ds = tr.recipe.dataset()
    return torch.stack([ds[i] if isinstance(ds[i], torch.Tensor) else ds[i][0] for i in range(4)])


def test_bf16_autocast_on_cpu(tmp_path):
    tr = _toy_trainer(tmp_path, "engine.precision=bf16")
    dtypes = set()
    for m in tr.nets["G"].modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) or type(m).__name__ in ("FullyConnected", "Conv"):
            m.register_forward_hook(lambda m, a, out: dtypes.add(out.dtype))
    before = {k: v.clone() for k, v in tr.nets["G"].state_dict().items()}
    stats = tr.train_step(_batch(tr))
    assert torch.bfloat16 in dtypes  # the matmuls / convs ran in bfloat16
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    after = tr.nets["G"].state_dict()
    assert all(v.dtype == before[k].dtype for k, v in after.items())  # weights stay float32
    assert max((after[k] - before[k]).abs().max() for k in before if before[k].is_floating_point()) > 0


def test_fp16_loss_scaling_skips_overflow_and_resumes(tmp_path):
    tr = _toy_trainer(tmp_path, "engine.precision=fp16")
    assert tr.scaler is not None and tr.autocast.fast_dtype == torch.float16
    batch = _batch(tr)
    tr.scaler.scale = 2.0 ** 127  # the scaled loss overflows: every phase's step is skipped
    before = {k: v.clone() for k, v in tr.nets["G"].state_dict().items()}
    try:
        tr.train_step(batch)
    except RuntimeError as exc:
        pytest.skip(f"float16 autocast needs ops this CPU build lacks: {exc}")
    assert tr.scaler.skipped >= 1 and tr.scaler.scale < 2.0 ** 127
    assert all(torch.equal(v, before[k]) for k, v in tr.nets["G"].state_dict().items())
    tr.scaler.scale = 2.0 ** 10
    for _ in range(2):
        tr.train_step(batch)
    assert tr.scaler.good_steps >= 2
    moved = max((tr.nets["G"].state_dict()[k] - v).abs().max() for k, v in before.items() if v.is_floating_point())
    assert moved > 0
    # the scale is checkpointed with the run and restored on resume
    path = tr.save(tmp_path / "run", "toygan")
    state = ckpt.read_checkpoint(path).state["loss_scale"]
    assert state == tr.scaler.state_dict()
    other = _toy_trainer(tmp_path, "engine.precision=fp16")
    other.load(ckpt.read_checkpoint(path))
    assert other.scaler.state_dict() == tr.scaler.state_dict()


def test_loss_scaler_grows_and_shrinks():
    s = LossScaler(scale=8.0, growth_interval=2)
    s.update(True)
    s.update(True)
    assert s.scale == 16.0
    s.update(False)
    assert s.scale == 8.0 and s.good_steps == 0 and s.skipped == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA precision paths need a GPU")
@pytest.mark.parametrize("precision", ["mixed", "fp16", "bf16"])
def test_cuda_precision_paths(precision, tmp_path):
    from vidgen.sg3.recipe import SG3Config, SG3Recipe
    cfg = load_config(SG3Config, "configs/sg3/tiny.yaml",
                      ["engine.batch=4", "engine.workers=0", "engine.device=cuda", f"engine.precision={precision}",
                       f"engine.out_dir={tmp_path}", "engine.steps=4", "engine.checkpoint_every=4"])
    run = train(SG3Recipe, cfg)
    nets = load_file(str(ckpt.read_checkpoint(run).path / "networks.safetensors"))
    assert all(torch.isfinite(v).all() for v in nets.values() if v.is_floating_point())
