"""Published StyleGAN3 networks -> vidgen's sg3 config and state dicts (docs/IMPORT.md).

The reference Generator's constructor arguments (``init_kwargs`` of the pickled record)
give the typed :class:`SG3ModelConfig`; its tensors are moved onto vidgen's names:

    synthesis.input.*              -> synthesis.input.*
    synthesis.L{i}_{size}_{ch}.*   -> synthesis.layers.{i}.*   (up/down filters: design constants)
    mapping.fc{i}.*, embed, w_avg  -> mapping.layers.{i}.*, mapping.embed.*, mapping.w_avg
    D: b{res}.fromrgb.*            -> fromrgb.*;  b{res}.{conv0,conv1,skip}.* -> blocks.{k}.*
       b4.{conv,fc,out}.*          -> conv.*, fc.*, out.*;  mapping.fc{i}.* -> mapping.layers.{i}.*
       *.resample_filter           -> design constants ([1, 3, 3, 1] low-pass)

Arguments vidgen has no equivalent for are errors that name them; arguments that only
choose a precision (``num_fp16_res``) are noted and ignored (vidgen runs float32 or bf16).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from vidgen.sg3.networks import Generator, SG3ModelConfig
from vidgen.train.statemap import (StateMap, move_alias_free_layer, move_resnet_discriminator,
                                   synthesis_layer_index)
from vidgen.train.statemap import scalar as _scalar

# reference constructor argument -> SG3ModelConfig field (None: checked or ignored below)
G_ARGS = {
    "z_dim": "z_dim", "w_dim": "w_dim", "c_dim": "c_dim", "img_resolution": "resolution",
    "img_channels": "img_channels", "channel_base": "channel_base", "channel_max": "channel_max",
    "num_layers": "num_layers", "num_critical": "num_critical", "first_cutoff": "first_cutoff",
    "first_stopband": "first_stopband", "last_stopband_rel": "last_stopband_rel", "margin_size": "margin",
    "output_scale": "output_scale", "conv_clamp": "conv_clamp", "magnitude_ema_beta": "magnitude_ema_beta",
    "mapping_kwargs": None, "conv_kernel": None, "use_radial_filters": None, "num_fp16_res": None,
    "filter_size": None, "lrelu_upsampling": None,
}
G_FIXED = {"filter_size": 6, "lrelu_upsampling": 2}  # arguments vidgen supports at these values only
MAPPING_ARGS = {"num_layers", "lr_multiplier", "w_avg_beta"}
D_ARGS = {"c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max", "num_fp16_res",
          "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs"}
D_BLOCK_ARGS = {"freeze_layers", "activation", "resample_filter", "fp16_channels_last"}
D_MAPPING_ARGS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier"}
D_EPILOGUE_ARGS = {"mbstd_group_size", "mbstd_num_channels", "activation"}


def g_config(kwargs: dict, problems: list[str], notes: list[str]) -> dict[str, Any]:
    """The ``model`` fields of a reference StyleGAN3 Generator's constructor arguments."""
    kwargs = {k: _scalar(v) for k, v in kwargs.items()}
    unknown = sorted(set(kwargs) - set(G_ARGS))
    if unknown:
        problems.append(f"Generator: unknown constructor arguments {', '.join(unknown)}")
    out = {field: kwargs[k] for k, field in G_ARGS.items() if field and k in kwargs}
    for k, v in G_FIXED.items():
        if k in kwargs and kwargs[k] != v:
            problems.append(f"Generator: {k}={kwargs[k]} (vidgen implements {v})")
    kernel, radial = kwargs.get("conv_kernel", 3), bool(kwargs.get("use_radial_filters", False))
    if (kernel, radial) == (3, False):
        out["arch"] = "T"
    elif (kernel, radial) == (1, True):
        out["arch"] = "R"
    else:
        problems.append(f"Generator: conv_kernel={kernel} with use_radial_filters={radial} is neither "
                        "config T (3, False) nor config R (1, True)")
    mapping = {k: _scalar(v) for k, v in dict(kwargs.get("mapping_kwargs") or {}).items()}
    extra = sorted(set(mapping) - MAPPING_ARGS)
    if extra:
        problems.append(f"Generator.mapping_kwargs: unknown arguments {', '.join(extra)}")
    if mapping.get("lr_multiplier", 0.01) != 0.01:
        problems.append(f"Generator.mapping_kwargs: lr_multiplier={mapping['lr_multiplier']} (vidgen uses 0.01)")
    if "num_layers" in mapping:
        out["mapping_layers"] = int(mapping["num_layers"])
    if mapping.get("w_avg_beta") is not None:
        out["w_avg_beta"] = float(mapping["w_avg_beta"])
    if kwargs.get("num_fp16_res"):
        notes.append(f"Generator: num_fp16_res={kwargs['num_fp16_res']} ignored (vidgen computes in float32, "
                     "or bf16 with engine.precision)")
    return out


def d_config(kwargs: dict, problems: list[str], notes: list[str]) -> dict[str, Any]:
    """The ``model.d_*`` fields of a reference StyleGAN2 Discriminator's constructor arguments."""
    kwargs = {k: _scalar(v) for k, v in kwargs.items()}
    unknown = sorted(set(kwargs) - D_ARGS)
    if unknown:
        problems.append(f"Discriminator: unknown constructor arguments {', '.join(unknown)}")
    if kwargs.get("architecture", "resnet") != "resnet":
        problems.append(f"Discriminator: architecture={kwargs['architecture']!r} (vidgen implements 'resnet')")
    out: dict[str, Any] = {}
    for k, field in (("channel_base", "d_channel_base"), ("channel_max", "d_channel_max"),
                     ("conv_clamp", "d_conv_clamp"), ("cmap_dim", "d_cmap_dim")):
        if kwargs.get(k) is not None:
            out[field] = kwargs[k]
    for part, known in (("block_kwargs", D_BLOCK_ARGS), ("mapping_kwargs", D_MAPPING_ARGS),
                        ("epilogue_kwargs", D_EPILOGUE_ARGS)):
        sub = {k: _scalar(v) for k, v in dict(kwargs.get(part) or {}).items()}
        extra = sorted(set(sub) - known)
        if extra:
            problems.append(f"Discriminator.{part}: unknown arguments {', '.join(extra)}")
        if sub.get("activation", "lrelu") != "lrelu":
            problems.append(f"Discriminator.{part}: activation={sub['activation']!r} (vidgen implements 'lrelu')")
        for k in ("embed_features", "layer_features"):
            if sub.get(k) is not None:
                problems.append(f"Discriminator.{part}: {k}={sub[k]} (vidgen uses the label embedding width)")
        if sub.get("lr_multiplier", 0.01) != 0.01:
            problems.append(f"Discriminator.{part}: lr_multiplier={sub['lr_multiplier']} (vidgen uses 0.01)")
        if part == "block_kwargs" and list(sub.get("resample_filter", [1, 3, 3, 1])) != [1, 3, 3, 1]:
            problems.append(f"Discriminator.block_kwargs: resample_filter={sub['resample_filter']} "
                            "(vidgen implements [1, 3, 3, 1])")
        if part == "block_kwargs" and sub.get("freeze_layers"):
            notes.append(f"Discriminator: freeze_layers={sub['freeze_layers']} is a training option; not imported")
        if part == "mapping_kwargs" and "num_layers" in sub:
            out["d_mapping_layers"] = int(sub["num_layers"])
        if part == "epilogue_kwargs":
            if sub.get("mbstd_group_size") is not None:
                out["d_mbstd_group"] = int(sub["mbstd_group_size"])
            if "mbstd_num_channels" in sub:
                out["d_mbstd_channels"] = int(sub["mbstd_num_channels"])
    return out


def generator_state(source: dict[str, torch.Tensor], cfg: SG3ModelConfig, where: str = "G",
                    verify_constants: bool = True) -> StateMap:
    """Moves a reference Generator's tensors onto vidgen names (``StateMap.out``).
    With ``verify_constants`` the filter buffers are compared with vidgen's own design
    (this builds the generator on the CPU); without, only their shapes (meta device)."""
    device = "cpu" if verify_constants else "meta"
    with torch.device(device):
        net = Generator(cfg)
    sm = StateMap(source, where)
    sm.move_prefix("synthesis.input.", "synthesis.input.",
                   ("weight", "transform", "freqs", "phases", "affine.weight", "affine.bias"))
    layer_names = sorted({k.split(".")[1] for k in sm.keys("synthesis.L")}, key=synthesis_layer_index)
    if [synthesis_layer_index(n) for n in layer_names] != list(range(len(net.synthesis.layers))):
        sm.problems.append(f"{where}: synthesis layers {', '.join(layer_names)} do not match the "
                           f"{len(net.synthesis.layers)} layers of the config")
    for i, name in enumerate(layer_names[:len(net.synthesis.layers)]):
        move_alias_free_layer(sm, f"synthesis.{name}.", f"synthesis.layers.{i}.", net.synthesis.layers[i],
                              verify_constants)
    sm.move_prefix("mapping.", "mapping.", ("w_avg", "embed.weight", "embed.bias"))
    for i in range(cfg.mapping_layers):
        sm.move_prefix(f"mapping.fc{i}.", f"mapping.layers.{i}.", ("weight", "bias"))
    return sm


def discriminator_state(source: dict[str, torch.Tensor], cfg: SG3ModelConfig, where: str = "D",
                        verify_constants: bool = True) -> StateMap:
    """Moves a reference StyleGAN2 Discriminator's tensors onto vidgen names."""
    sm = StateMap(source, where)
    move_resnet_discriminator(sm, cfg.resolution, verify_constants)
    for i in range(cfg.d_mapping_layers):
        sm.move_prefix(f"mapping.fc{i}.", f"mapping.layers.{i}.", ("weight", "bias"))
    sm.move_prefix("mapping.", "mapping.", ("embed.weight", "embed.bias"))
    return sm


# --- the importer of `vidgen import` -----------------------------------------------------------

ADA_OPS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast", "lumaflip",
           "hue", "saturation")
ADA_OTHER_OPS = ("imgfilter", "noise", "cutout")


def _is_sg3_generator(obj: Any) -> bool:
    from vidgen import safe_pickle

    if not safe_pickle.is_record(obj) or obj.class_name != "Generator" or "img_resolution" not in obj.init_kwargs:
        return False
    return "synthesis.input.freqs" in safe_pickle.state_dict(obj)


def _augment_settings(pipe: Any, notes: list[str]) -> tuple[dict[str, Any], float]:
    """(augment section, p) of a reference AugmentPipe record."""
    from vidgen import safe_pickle

    mult = {k: float(_scalar(pipe.attr(k, 0.0))) for k in ADA_OPS + ADA_OTHER_OPS}
    on = {k for k, v in mult.items() if v}
    blits, geometry = {"xflip", "rotate90", "xint"}, {"scale", "rotate", "aniso", "xfrac"}
    pipeline = "b" if on <= blits else "bg" if on <= blits | geometry else "bgc"
    if on - set(ADA_OPS) or any(v not in (0.0, 1.0) for v in mult.values()) or \
            on != {k for k in ADA_OPS[:{"b": 3, "bg": 7, "bgc": 12}[pipeline]]}:
        notes.append(f"augment_pipe: ops {sorted(on)} with multipliers {mult} are approximated by vidgen's "
                     f"ADA pipeline {pipeline!r}")
    p = float(safe_pickle.state_dict(pipe).get("p", torch.zeros([])).item())
    return {"kind": "ada", "pipeline": pipeline, "p": p}, p


class SG3Importer:
    """StyleGAN3 snapshots (``network-snapshot-<kimg>.pkl``: G, D, G_ema, augment_pipe,
    training_set_kwargs), as NVlabs/stylegan3 writes and publishes them."""

    allow_stubs: tuple[str, ...] = ()

    def detect(self, tree: Any) -> bool:
        if isinstance(tree, dict):
            return any(_is_sg3_generator(tree.get(k)) for k in ("G_ema", "G"))
        return _is_sg3_generator(tree)

    def convert(self, tree: Any, source) -> Any:
        from vidgen import safe_pickle
        from vidgen.train.published import ImportedRun, Problems

        nets = dict(tree) if isinstance(tree, dict) else {"G_ema": tree}
        problems, notes, report = Problems(source), [], []
        errs: list[str] = []
        g_rec = nets.get("G_ema") or nets["G"]
        model = g_config(g_rec.init_kwargs, errs, notes)
        if safe_pickle.is_record(nets.get("D")):
            if nets["D"].class_name != "Discriminator":
                errs.append(f"D: unknown class {nets['D'].class_name}")
            model.update(d_config(nets["D"].init_kwargs, errs, notes))
        for e in errs:
            problems.add(e)
        problems.raise_if_any()
        cfg = SG3ModelConfig(**model)
        converted: dict[str, dict[str, torch.Tensor]] = {}
        for key in ("G_ema", "G", "D"):
            rec = nets.get(key)
            if not safe_pickle.is_record(rec):
                continue
            fn = discriminator_state if key == "D" else generator_state
            sm = fn(safe_pickle.state_dict(rec), cfg, key)
            for p in sm.finish():
                problems.add(p)
            converted[key] = sm.out
            report.append(sm.summary())
        problems.raise_if_any()
        config: dict[str, Any] = {"model": model}
        recipe_state: dict[str, Any] = {}
        if safe_pickle.is_record(nets.get("augment_pipe")):
            augment, p = _augment_settings(nets["augment_pipe"], notes)
            config["augment"] = augment
            recipe_state["ada"] = {"p": p, "sign_sum": 0.0, "count": 0}
            report.append(f"augment_pipe: ADA probability p = {p:.4g}")
        data = nets.get("training_set_kwargs")
        if isinstance(data, dict):
            config["data"] = {"labels": "folders" if cfg.c_dim else "none", "mirror": bool(data.get("xflip", False))}
            report.append(f"training data: {data.get('path', '?')} ({data.get('resolution', '?')} px, "
                          f"labels {bool(data.get('use_labels'))}, x-flips {bool(data.get('xflip'))})")
        if cfg.arch == "R":
            report.append("config R: the discriminator's blur fade-in is off (loss.blur_sigma 0), as when "
                          "StyleGAN3 resumes from a snapshot")
        m = re.search(r"snapshot-(\d+)", str(source))
        nimg = int(m.group(1)) * 1000 if m else 0
        left = sorted(k for k in nets if k not in ("G_ema", "G", "D", "augment_pipe", "training_set_kwargs"))
        if left:
            report.append(f"left out: {', '.join(left)} (not part of an sg3 run)")
        return ImportedRun(family="sg3", config=config, networks=converted, recipe_state=recipe_state, step=0,
                           nimg=nimg, resolution=f"{cfg.resolution}x{cfg.resolution}",
                           report=report + notes)


IMPORTER = SG3Importer()
