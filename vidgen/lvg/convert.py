"""Published long-video GAN low-res checkpoints -> ``lvg-lowres`` runs (``vidgen import``,
docs/IMPORT.md).

Reads what the reference training script writes (``ckpt-<step>-G-ema.pkl``: the generator;
``ckpt-<step>-train.pkl``: G, D and both Adam states) through :mod:`vidgen.safe_pickle`, so
every network is a record of its constructor arguments, attributes and tensors. The
architecture is read from those arguments and checked against what vidgen's networks can
express; the tensors are renamed (and the learned input reshaped) to vidgen's state-dict
names. Buffers that are functions of the configuration (the temporal filter bank, the
resampling filters) are not imported but compared with vidgen's own design, so a file made
with other filter settings is refused instead of rendering something else.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vidgen import safe_pickle as sp
from vidgen.lvg.latent import LatentConfig, design_filter_bank
from vidgen.lvg.lowres import spatial_sizes
from vidgen.nn.filters import kaiser_lowpass, linear_filter
from vidgen.train.published import ImportedRun, Problems

DERIVED = "derived"
_LINEAR = linear_filter(2)
Rule = tuple[str, Any]  # (vidgen name or DERIVED, transform)


def _rename(rules: list[tuple[str, str]], key: str) -> str | None:
    for pattern, repl in rules:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, repl, key)
    return None


_G_RULES = [
    (r"spatial_input", "const"),
    (r"temporal_layers\.(\d+)\.(.*)", r"temporal_blocks.\1.\2"),
    (r"spatial_layers\.(\d+)\.(.*)", r"spatial_blocks.\1.\2"),
    (r"latent_mapping\.layer_(\d+)\.(weight|bias)", r"latent.mapping.layers.\1.\2"),
    (r"w_to_temp_input\.(weight|bias)", r"w_to_input.\1"),
    (r"to_rgb\.input_magnitude_ema\.magnitude_ema", "to_rgb.mag.magnitude"),
    (r"to_rgb\.(weight|bias|affine\.weight|affine\.bias)", r"to_rgb.\1"),
]
_BLOCK_RULES = {"weight_0": "weight0", "weight_1": "weight1", "weight_skip": "weight_skip", "bias_0": "bias0",
                "bias_1": "bias1", "affine_0.weight": "affine0.weight", "affine_0.bias": "affine0.bias",
                "affine_1.weight": "affine1.weight", "affine_1.bias": "affine1.bias",
                "input_magnitude_ema_0.magnitude_ema": "mag0.magnitude",
                "input_magnitude_ema_1.magnitude_ema": "mag1.magnitude"}
_G_DERIVED = re.compile(r"(temporal|spatial)_layers\.\d+\.(temporal|spatial)_upsample\.filter|"
                        r"temporal_emb\.(blur_filters|output_scale)|temporal_downsample_latent\.filter")
_D_RULES = [
    (r"blocks\.(\d+)\.conv_vid\.weight", r"blocks.\1.from_rgb.weight"),
    (r"blocks\.(\d+)\.conv_vid\._bias", r"blocks.\1.from_rgb.bias"),
    (r"blocks\.(\d+)\.conv_([01])\.weight", r"blocks.\1.conv\2.weight"),
    (r"blocks\.(\d+)\.conv_([01])\._bias", r"blocks.\1.conv\2.bias"),
    (r"blocks\.(\d+)\.conv_skip\.weight", r"blocks.\1.skip.weight"),
    (r"epilogue\.conv1d_(\d+)\.weight", r"head_convs.\1.weight"),
    (r"epilogue\.conv1d_(\d+)\._bias", r"head_convs.\1.bias"),
    (r"epilogue\.linear_0\.(weight|bias)", r"fc.\1"),
    (r"epilogue\.linear_1\.(weight|bias)", r"out.\1"),
]
_D_DERIVED = re.compile(r"blocks\.\d+\.conv_(1|skip)\.downsample\._downsample_filter")


def generator_key(key: str) -> Rule | None:
    """(vidgen name, transform) of a reference low-res G tensor; (DERIVED, None) for buffers
    rebuilt from the config; None if unknown."""
    if _G_DERIVED.fullmatch(key):
        return DERIVED, None
    if key == "spatial_input":  # [1, C, 1, h, w] -> [C, h, w]
        return "const", lambda t: t.reshape(t.shape[1], t.shape[3], t.shape[4])
    m = re.fullmatch(r"(temporal|spatial)_layers\.(\d+)\.(.*)", key)
    if m:
        leaf = _BLOCK_RULES.get(m.group(3))
        return (f"{m.group(1)}_blocks.{m.group(2)}.{leaf}", None) if leaf else None
    name = _rename(_G_RULES, key)
    return (name, None) if name else None


def discriminator_key(key: str) -> Rule | None:
    if _D_DERIVED.fullmatch(key):
        return DERIVED, None
    name = _rename(_D_RULES, key)
    return (name, None) if name else None


# --- architecture ------------------------------------------------------------------------------
_G_KWARGS = {"out_height", "out_width", "temporal_emb_dim", "latent_w_dim", "temporal_ksize", "spatial_ksize",
             "temporal_padding", "spatial_padding", "output_scale", "num_fp16_layers", "embedding_kwargs",
             "mapping_kwargs"}
_G_CLASSES = {"VideoGenerator", "Synthesis3dResBlock", "FullyConnectedLayer", "MagnitudeEMA", "BlurredNoise",
              "LatentMappingNetwork", "TemporalKaiserDownsample", "TemporalLinearUpsample",
              "SpatialBilinearUpsample", "ToRGB", "ModuleList"}
_BLUR_KWARGS = {"channels", "min_sampling_rate", "max_sampling_rate", "blur_widths", "cutoff", "width",
                "sampling_rate_base", "normalize_per_filter"}
_MAP_KWARGS = {"temporal_emb_dim", "latent_w_dim", "num_layers", "activation", "lrate_mul", "normalize_input"}
_D_KWARGS = {"seq_length", "max_edge", "channels", "channels_base", "channels_max", "spatial_ksize", "temporal_ksize",
             "spatial_ksize_1", "temporal_ksize_1", "conv_clamp", "num_fp16_res", "epilogue_kwargs"}
_D_CLASSES = {"VideoDiscriminator", "DiscriminatorBlock", "Conv3dLayer", "Downsample3d", "DiscriminatorEpilogue",
              "Conv1dLayer", "FullyConnectedLayer", "ModuleList"}
_EPI_KWARGS = {"in_res", "in_seq_length", "in_channels", "channels", "temporal_ksize", "num_conv1d_layers",
               "num_linear_layers", "conv_clamp", "num_downsamples"}


def _expect(problems: Problems, where: str, what: str, got: Any, want: Any) -> None:
    if got != want:
        problems.add(f"{where}: {what} is {got!r}; vidgen's network has {want!r}")


def is_lowres_generator(obj: Any) -> bool:
    return sp.is_record(obj) and obj.class_name == "VideoGenerator" and "temporal_layers" in (obj.attr("_modules") or {})


def is_lowres_discriminator(obj: Any) -> bool:
    return sp.is_record(obj) and obj.class_name == "VideoDiscriminator" and "epilogue" in (obj.attr("_modules") or {}) \
        and obj.attr("seq_length") is not None


def generator_config(G: Any, problems: Problems) -> tuple[dict[str, Any], tuple[int, int]]:
    """(``model.G`` config dict, output (H, W)) of a reference low-res generator record."""
    problems.unknown_kwargs("VideoGenerator", G.init_kwargs, _G_KWARGS)
    problems.unknown_classes("the generator", {r.class_name for _, r in sp.modules(G)}, _G_CLASSES)
    mods = dict(sp.modules(G))
    H, W = int(G.attr("out_height")), int(G.attr("out_width"))
    _expect(problems, "VideoGenerator", "spatial_padding", G.attr("spatial_padding"), 0)
    t_layers = [mods[f"temporal_layers.{i}"] for i in range(6) if f"temporal_layers.{i}" in mods]
    s_layers = [mods[f"spatial_layers.{i}"] for i in range(4) if f"spatial_layers.{i}" in mods]
    if len(t_layers) != 6 or len(s_layers) != 4 or "temporal_layers.6" in mods or "spatial_layers.4" in mods:
        problems.add("the generator does not have 6 temporal and 4 spatial blocks")
        return {}, (H, W)
    sizes = spatial_sizes(H, W)
    t_spec = [(True, False, sizes[0]), (True, True, sizes[1]), (True, False, sizes[1]), (True, True, sizes[2]),
              (True, False, sizes[2]), (False, False, sizes[2])]
    s_spec = [(False, True, sizes[3]), (False, False, sizes[3]), (False, sizes[4] != sizes[3], sizes[4]),
              (False, False, sizes[4])]
    clamps = set()
    cur = sizes[0]  # an output size of None keeps the (upsampled) input size
    for name, layers, spec, kt in (("temporal_layers", t_layers, t_spec, G.attr("temporal_ksize")),
                                   ("spatial_layers", s_layers, s_spec, 1)):
        for i, (rec, (t_up, s_up, size)) in enumerate(zip(layers, spec)):
            where = f"{name}.{i}"
            _expect(problems, where, "temporal_up", bool(rec.attr("temporal_up")), t_up)
            _expect(problems, where, "spatial_up", bool(rec.attr("spatial_up")), s_up)
            up = (cur[0] * 2, cur[1] * 2) if rec.attr("spatial_up") else cur
            cur = (rec.attr("out_height") or up[0], rec.attr("out_width") or up[1])
            _expect(problems, where, "output size", cur, size)
            _expect(problems, where, "temporal_ksize", rec.attr("temporal_ksize"), kt)
            _expect(problems, where, "spatial_ksize", rec.attr("spatial_ksize"), G.attr("spatial_ksize"))
            _expect(problems, where, "activation", rec.attr("activation"), "lrelu")
            _expect(problems, where, "magnitude_ema", rec.attr("magnitude_ema"), True)
            _expect(problems, where, "demodulate", rec.attr("demodulate"), True)
            clamps.add(rec.attr("activation_clamp"))
    rgb = mods.get("to_rgb")
    if rgb is not None:
        clamps.add(rgb.attr("activation_clamp"))
        _expect(problems, "to_rgb", "magnitude_ema", rgb.attr("magnitude_ema"), True)
    if len(clamps) != 1 or None in clamps:
        problems.add(f"the generator's layers use activation clamps {sorted(map(str, clamps))}; vidgen has one clamp")
    tc = [t_layers[0].attr("in_channels")] + [r.attr("out_channels") for r in t_layers]
    sc = [s_layers[0].attr("in_channels")] + [r.attr("out_channels") for r in s_layers]
    for i in range(1, 6):
        _expect(problems, f"temporal_layers.{i}", "in_channels", t_layers[i].attr("in_channels"), tc[i])
    _expect(problems, "spatial_layers.0", "in_channels", sc[0], tc[-1])
    blur, mapping = mods.get("temporal_emb"), mods.get("latent_mapping")
    down = mods.get("temporal_downsample_latent")
    if blur is None or mapping is None or down is None:
        problems.add("the generator lacks its temporal_emb, latent_mapping or temporal_downsample_latent")
        return {}, (H, W)
    problems.unknown_kwargs("BlurredNoise", blur.init_kwargs, _BLUR_KWARGS)
    problems.unknown_kwargs("LatentMappingNetwork", mapping.init_kwargs, _MAP_KWARGS)
    if float(blur.attr("sampling_rate_base")) <= 1:
        problems.add("temporal_emb: linearly spaced filter rates (sampling_rate_base <= 1) are not supported")
    _expect(problems, "temporal_emb", "normalize_per_filter", float(blur.attr("normalize_per_filter")), 1.0)
    _expect(problems, "latent_mapping", "activation", mapping.attr("activation"), "lrelu")
    _expect(problems, "latent_mapping", "normalize_input", mapping.attr("normalize_input"), True)
    _expect(problems, "temporal_downsample_latent", "(scale, filter_size, cutoff, width, sampling_rate, padding)",
            tuple(down.attr(k) for k in ("scale", "filter_size", "cutoff", "width", "sampling_rate", "padding")),
            (2, 6, 1.0, 6.0, 4.0, 0))
    for name, rec in mods.items():
        if rec.class_name in ("TemporalLinearUpsample", "SpatialBilinearUpsample"):
            _expect(problems, name, "(scale, padding)", (rec.attr("scale"), rec.attr("padding")), (2, 0))
    widths = int(blur.attr("blur_widths"))
    latent = {"noise_channels": int(blur.attr("channels")) // widths, "num_filters": widths,
              "min_rate": float(blur.attr("min_sampling_rate")), "max_rate": float(blur.attr("max_sampling_rate")),
              "cutoff": float(blur.attr("cutoff")), "width": float(blur.attr("width")),
              "w_dim": int(G.attr("latent_w_dim")), "mapping_layers": int(mapping.attr("num_layers")),
              "lr_multiplier": float(mapping.attr("lrate_mul"))}
    cfg = {"temporal_channels": tc, "spatial_channels": sc, "temporal_ksize": int(G.attr("temporal_ksize")),
           "spatial_ksize": int(G.attr("spatial_ksize")), "temporal_padding": int(G.attr("temporal_padding")),
           "w_downsample_taps": 12, "output_scale": float(G.attr("output_scale")),
           "conv_clamp": float(next(iter(clamps))) if len(clamps) == 1 and None not in clamps else 256.0,
           "latent": latent}
    return cfg, (H, W)


def discriminator_config(D: Any, problems: Problems) -> tuple[dict[str, Any], int, int]:
    """(``model.D`` config dict, clip length, max edge) of a reference low-res D record."""
    problems.unknown_kwargs("VideoDiscriminator", D.init_kwargs, _D_KWARGS)
    problems.unknown_classes("the discriminator", {r.class_name for _, r in sp.modules(D)}, _D_CLASSES)
    mods = dict(sp.modules(D))
    blocks = [mods[f"blocks.{i}"] for i in range(4) if f"blocks.{i}" in mods]
    epi = mods.get("epilogue")
    if len(blocks) != 4 or "blocks.4" in mods or epi is None:
        problems.add("the discriminator does not have 4 blocks and an epilogue")
        return {}, 0, 0
    problems.unknown_kwargs("DiscriminatorEpilogue", epi.init_kwargs, _EPI_KWARGS)
    T, E = int(D.attr("seq_length")), int(D.attr("max_edge"))
    _expect(problems, "VideoDiscriminator", "channels", D.attr("channels"), 3)
    _expect(problems, "blocks.0", "vid_channels", blocks[0].attr("vid_channels"), 3)
    _expect(problems, "blocks.0", "temporal_ksize", blocks[0].attr("temporal_ksize"), 1)
    kt, ks = int(blocks[1].attr("temporal_ksize")), int(blocks[1].attr("spatial_ksize"))
    for i, b in enumerate(blocks):
        where = f"blocks.{i}"
        _expect(problems, where, "spatial_down", bool(b.attr("spatial_down")), E > 32 if i == 0 else True)
        _expect(problems, where, "temporal_down", bool(b.attr("temporal_down")), i > 0 and T >= 2 ** (i + 1))
        _expect(problems, where, "(spatial_ksize_1, temporal_ksize_1)",
                (b.attr("spatial_ksize_1"), b.attr("temporal_ksize_1")), (None, None))
        _expect(problems, where, "conv_clamp", b.attr("conv_clamp"), D.attr("conv_clamp"))
        _expect(problems, where, "spatial_ksize", b.attr("spatial_ksize"), ks)
        if i > 0:
            _expect(problems, where, "temporal_ksize", b.attr("temporal_ksize"), kt)
            _expect(problems, where, "vid_channels", b.attr("vid_channels"), 0)
    _expect(problems, "epilogue", "temporal_ksize", epi.attr("temporal_ksize"), 3)
    _expect(problems, "epilogue", "num_linear_layers", epi.attr("num_linear_layers"), 2)
    _expect(problems, "epilogue", "num_downsamples", epi.attr("num_downsamples"), 0)
    channels = [blocks[0].attr("in_channels")] + [b.attr("out_channels") for b in blocks]
    cfg = {"channels": channels, "temporal_ksize": kt, "spatial_ksize": ks, "head_channels": int(epi.attr("channels")),
           "head_convs": int(epi.attr("num_conv1d_layers")), "conv_clamp": float(D.attr("conv_clamp") or 0)}
    if D.attr("conv_clamp") is None:
        problems.add("the discriminator has no activation clamp; vidgen's clamps at conv_clamp")
    return cfg, T, E


# --- tensors -----------------------------------------------------------------------------------
def convert_tensors(sd: dict[str, torch.Tensor], rule: Callable[[str], Rule | None], what: str,
                    problems: Problems) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """(vidgen state dict, reference name -> vidgen name, derived keys) of a reference state dict."""
    out, names, derived, unknown = {}, {}, [], []
    for k, v in sd.items():
        r = rule(k)
        if r is None:
            unknown.append(k)
        elif r[0] == DERIVED:
            derived.append(k)
        else:
            name, fn = r
            out[name] = (fn(v) if fn else v).float().contiguous()
            names[k] = name
    if unknown:
        problems.add(f"{what}: unknown tensors {', '.join(unknown[:6])}" + (" ..." if len(unknown) > 6 else ""))
    return out, names, derived


def _max_diff(a: torch.Tensor, b: Any) -> float:
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    a = a.double().reshape(b.shape) if a.numel() == b.numel() else None
    return float("inf") if a is None else float((a - b).abs().max())


def check_generator_buffers(sd: dict[str, torch.Tensor], latent: dict[str, Any], problems: Problems) -> float:
    """Compare the generator's derived buffers with vidgen's design; the largest difference."""
    worst = 0.0
    bank = design_filter_bank(LatentConfig(**latent))  # reversed at the start; the reference's at the end
    filters, scale = sd.get("temporal_emb.blur_filters"), sd.get("temporal_emb.output_scale")
    if filters is None or scale is None:
        problems.add("the generator lacks its temporal filter bank")
    else:
        eff = filters[:, 0, :].double() * scale.double().reshape(-1, 1)
        worst = max(worst, _max_diff(eff, bank[:, ::-1].copy()))
    for k, v in sd.items():
        if k.endswith("upsample.filter"):
            worst = max(worst, _max_diff(v, _LINEAR))
        elif k == "temporal_downsample_latent.filter":
            worst = max(worst, _max_diff(v, kaiser_lowpass(12, 1.0, 6.0, 8.0)))
    if worst > 1e-6:
        problems.add(f"the generator's filters differ from vidgen's design (max |diff| {worst:.3g})")
    return worst


def check_discriminator_buffers(sd: dict[str, torch.Tensor], problems: Problems) -> float:
    worst = max([_max_diff(v, _LINEAR) for k, v in sd.items() if _D_DERIVED.fullmatch(k)], default=0.0)
    if worst > 1e-7:
        problems.add(f"the discriminator's downsampling filters differ from [1, 3, 3, 1] / 8 (max |diff| {worst:.3g})")
    return worst


def optimizer_state(opt: Any, record: Any, names: dict[str, str], prefix: str, problems: Problems,
                    where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """({"state": {vidgen param name: Adam state}}, hyper-parameters) of a reference Adam
    state dict over ``record.parameters()`` (indices in the reference's parameter order)."""
    if not isinstance(opt, dict) or "param_groups" not in opt:
        problems.add(f"{where} is not an optimizer state dict")
        return {}, {}
    order = list(sp.parameters(record))
    groups = opt["param_groups"]
    n = sum(len(g.get("params", [])) for g in groups)
    if n != len(order) or len(groups) != 1:
        problems.add(f"{where}: {len(groups)} parameter groups over {n} parameters; the network has {len(order)}")
        return {}, {}
    params = sp.parameters(record)
    state = {}
    for idx, st in (opt.get("state") or {}).items():
        ref = order[groups[0]["params"].index(idx)]
        if ref not in names:
            continue
        shape = tuple(params[ref].shape)
        fix = (lambda t: t.reshape(t.shape[1], t.shape[3], t.shape[4])) if ref == "spatial_input" else (lambda t: t)
        state[f"{prefix}.{names[ref]}"] = {k: fix(v) if isinstance(v, torch.Tensor) and tuple(v.shape) == shape
                                           else v for k, v in st.items()}
    g = groups[0]
    return {"state": state}, {"lr": float(g["lr"]), "betas": tuple(float(b) for b in g["betas"]),
                              "eps": float(g.get("eps", 1e-8))}


def lazy_interval(beta2: float, base: float = 0.99) -> int:
    """The lazy-regularisation interval k behind betas ** (k / (k + 1)) (StyleGAN2), 1 if none."""
    if beta2 <= 0 or beta2 >= 1 or abs(beta2 - base) < 1e-12:
        return 1
    c = math.log(beta2) / math.log(base)
    return max(1, round(c / (1 - c))) if c < 1 else 1


# --- the importer ------------------------------------------------------------------------------
class LowResImporter:
    """``vidgen import`` of the reference's low-res checkpoints: a generator pickle (usually
    G_ema) or a training checkpoint ``{"G", "D", "G_opt", "D_opt"}``."""

    allow_stubs: tuple[str, ...] = ()

    def detect(self, tree: Any) -> bool:
        if is_lowres_generator(tree):
            return True
        return isinstance(tree, dict) and is_lowres_generator(tree.get("G")) and is_lowres_discriminator(tree.get("D"))

    def convert(self, tree: Any, source: Path) -> ImportedRun:
        problems = Problems(source)
        train = isinstance(tree, dict)
        G = tree["G"] if train else tree
        g_cfg, (H, W) = generator_config(G, problems)
        problems.raise_if_any()
        g_sd, g_names, g_derived = convert_tensors(sp.state_dict(G), generator_key, "the generator", problems)
        worst = check_generator_buffers(sp.state_dict(G), g_cfg["latent"], problems)
        config: dict[str, Any] = {"data": {"resolution": [H, W]}, "model": {"G": g_cfg}}
        n_g = sp.num_params(G)
        report = [f"generator: {n_g:,} parameters, {len(g_sd)} tensors mapped onto vidgen's names",
                  f"left out: {len(g_derived)} filter buffers, rebuilt from the config (they equal vidgen's "
                  f"design to {worst:.1e})"]
        if G.attr("num_fp16_layers"):
            report.append(f"float16 layers ({G.attr('num_fp16_layers')} in the reference's training) are a precision "
                          "setting: vidgen computes in float32 (bf16 autocast on CUDA)")
        networks = {("G" if train else "G_ema"): g_sd}
        optimizers = {}
        if train:
            D = tree["D"]
            d_cfg, T, E = discriminator_config(D, problems)
            problems.raise_if_any()
            if E != max(H, W):
                problems.add(f"the discriminator pads to {E}x{E}; vidgen pads to the long edge {max(H, W)}")
            d_sd, d_names, d_derived = convert_tensors(sp.state_dict(D), discriminator_key, "the discriminator",
                                                       problems)
            check_discriminator_buffers(sp.state_dict(D), problems)
            networks["D"] = d_sd
            config["model"]["D"] = d_cfg
            config["data"]["clip_len"] = T
            report.append(f"discriminator: {sp.num_params(D):,} parameters for {T}-frame clips, "
                          f"{len(d_derived)} filter buffers left out (rebuilt)")
            g_opt, g_hyper = optimizer_state(tree.get("G_opt"), G, g_names, "G", problems, "G_opt")
            d_opt, d_hyper = optimizer_state(tree.get("D_opt"), D, d_names, "D", problems, "D_opt")
            problems.raise_if_any()
            optimizers = {"G": g_opt, "D": d_opt}
            k = lazy_interval(d_hyper["betas"][1], g_hyper["betas"][1])
            c = k / (k + 1) if k > 1 else 1.0
            config["loss"] = {"lr_g": g_hyper["lr"], "lr_d": d_hyper["lr"] / c, "betas": list(g_hyper["betas"]),
                              "r1_interval": k if k > 1 else 16}
            moments = sum(len(o["state"]) for o in optimizers.values())
            report.append(f"optimisers: Adam lr G {g_hyper['lr']:g}, D {d_hyper['lr'] / c:g} (x {k}/{k + 1} for "
                          f"the lazy R1 every {k} steps), betas {g_hyper['betas']}; moments of {moments} parameters")
            report.append("not in the file: G_ema (the G_ema pickle of the same step holds it), the EMA settings, "
                          "R1 gamma and augmentation (vidgen's defaults are used)")
        else:
            report.append("not in the file: the training clip length (data.clip_len keeps its default) and "
                          "the discriminator")
        problems.raise_if_any()
        return ImportedRun(family="lvg-lowres", config=config, networks=networks, optimizers=optimizers,
                           resolution=f"{H}x{W}", report=report, step=_step_from_name(source))


def _step_from_name(source: Path) -> int:
    """The step in the reference's checkpoint names (``ckpt-000100-G-ema.pkl``), else 0."""
    m = re.search(r"ckpt-(\d+)-", Path(source).name)
    return int(m.group(1)) if m else 0


LOWRES_IMPORTER = LowResImporter()
