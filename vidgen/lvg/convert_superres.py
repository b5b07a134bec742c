"""Published long-video GAN super-res networks -> the lvg-superres config and state dicts
(docs/IMPORT.md).

The reference ``VideoGenerator`` (super-res) wraps a StyleGAN3 generator ``SG3`` without
the Fourier input; its constructor arguments give :class:`SuperResModelConfig` and its
tensors move onto vidgen's names:

    SG3.synthesis.L{i}_{w}_{h}_{ch}.*  -> layers.{i}.*   (up/down filters: design constants)
    SG3.mapping.fc{i}.*, w_avg         -> mapping.layers.{i}.*, mapping.w_avg
    SG3.resamples.{i}.filter           -> design constant (the conditioning resampler of layer i)
    D: b{res}.fromrgb.* -> fromrgb.*; b{res}.{conv0,conv1,skip}.* -> blocks.{k}.*;
       b4.{conv,fc,out}.* -> conv.*, fc.*, out.*; *.resample_filter, upsample.filter: constants
"""

from __future__ import annotations

import re
from typing import Any

import torch

from vidgen.lvg.superres import SuperResDiscriminator, SuperResGenerator, SuperResModelConfig
from vidgen.nn.filters import linear_filter
from vidgen.train.statemap import (StateMap, move_alias_free_layer, move_resnet_discriminator,
                                   synthesis_layer_index)
from vidgen.train.statemap import scalar as _scalar

VIDEO_G_ARGS = {"hr_height", "hr_width", "lr_height", "lr_width", "temporal_context", "latent_z_dim",
                "latent_w_dim", "margin_size", "fourfeats", "num_fp16_res"}
SG3_ARGS = {"channel_base", "channel_max", "z_dim", "w_dim", "img_width", "img_height", "img_channels", "cond_width",
            "cond_height", "cond_context", "margin_size", "fourfeats", "num_fp16_res", "mapping_kwargs",
            "num_layers", "num_critical", "output_scale", "conv_clamp", "magnitude_ema_beta"}
VIDEO_D_ARGS = {"channels", "seq_length", "lr_height", "lr_width", "hr_height", "hr_width", "channels_base",
                "channels_max", "num_fp16_res", "conv_clamp", "minibatch_std_group_size",
                "minibatch_std_num_channels", "architecture", "pool_mode"}


def generator_config(video_kwargs: dict, sg3_kwargs: dict, problems: list[str], notes: list[str]) -> dict[str, Any]:
    """``model`` fields of the reference super-res ``VideoGenerator`` (and of its ``SG3``
    Generator record, whose arguments override the wrapper's defaults when present)."""
    v = {k: _scalar(x) for k, x in video_kwargs.items()}
    g = {k: _scalar(x) for k, x in sg3_kwargs.items()}
    for where, kwargs, known in (("VideoGenerator", v, VIDEO_G_ARGS), ("VideoGenerator.SG3", g, SG3_ARGS)):
        extra = sorted(set(kwargs) - known)
        if extra:
            problems.append(f"{where}: unknown constructor arguments {', '.join(extra)}")
        if kwargs.get("fourfeats"):
            problems.append(f"{where}: fourfeats=True (a Fourier-feature input; vidgen's super-res generator has none)")
        if kwargs.get("num_fp16_res"):
            notes.append(f"{where}: num_fp16_res={kwargs['num_fp16_res']} ignored (precision only)")
    out: dict[str, Any] = {
        "lowres": [g.get("cond_height", v.get("lr_height", 32)), g.get("cond_width", v.get("lr_width", 32))],
        "highres": [g.get("img_height", v.get("hr_height", 256)), g.get("img_width", v.get("hr_width", 256))],
        "context": g.get("cond_context", v.get("temporal_context", 4)),
        "z_dim": g.get("z_dim", v.get("latent_z_dim", 512)),
        "w_dim": g.get("w_dim", v.get("latent_w_dim", 512)),
        "margin": g.get("margin_size", v.get("margin_size", 10)),
    }
    for k in ("channel_base", "channel_max", "num_layers", "num_critical", "output_scale", "conv_clamp",
              "magnitude_ema_beta"):
        if k in g:
            out[k] = g[k]
    mapping = dict(g.get("mapping_kwargs") or {})
    extra = sorted(set(mapping) - {"num_layers"})
    if extra:
        problems.append(f"VideoGenerator.SG3.mapping_kwargs: unsupported arguments {', '.join(extra)}")
    if "num_layers" in mapping:
        out["mapping_layers"] = int(_scalar(mapping["num_layers"]))
    if g.get("img_channels", 3) != 3:
        problems.append(f"VideoGenerator.SG3: img_channels={g['img_channels']} (vidgen makes RGB)")
    return out


def discriminator_config(kwargs: dict, problems: list[str], notes: list[str]) -> dict[str, Any]:
    """``model`` fields of the reference super-res ``VideoDiscriminator``."""
    d = {k: _scalar(x) for k, x in kwargs.items()}
    extra = sorted(set(d) - VIDEO_D_ARGS)
    if extra:
        problems.append(f"VideoDiscriminator: unknown constructor arguments {', '.join(extra)}")
    for k, want in (("channels", 3), ("minibatch_std_num_channels", 0), ("architecture", "resnet"),
                    ("pool_mode", "fully_connected")):
        if k in d and d[k] != want:
            problems.append(f"VideoDiscriminator: {k}={d[k]!r} (vidgen implements {want!r})")
    out: dict[str, Any] = {}
    for k, field in (("seq_length", "frames"), ("channels_base", "d_channel_base"),
                     ("channels_max", "d_channel_max")):
        if k in d:
            out[field] = d[k]
    if d.get("conv_clamp", 256) != 256:
        notes.append(f"VideoDiscriminator: conv_clamp={d['conv_clamp']} (vidgen's D clamps at model.conv_clamp)")
    return out


def generator_state(source: dict[str, torch.Tensor], cfg: SuperResModelConfig, where: str = "G",
                    verify_constants: bool = True) -> StateMap:
    with torch.device("cpu" if verify_constants else "meta"):
        net = SuperResGenerator(cfg)
    sm = StateMap(source, where)
    names = sorted({k.split(".")[2] for k in sm.keys("SG3.synthesis.L")}, key=synthesis_layer_index)
    if [synthesis_layer_index(n) for n in names] != list(range(len(net.layers))):
        sm.problems.append(f"{where}: synthesis layers {', '.join(names)} do not match the {len(net.layers)} "
                           "layers of the config")
    for i, name in enumerate(names[:len(net.layers)]):
        layer = net.layers[i]
        move_alias_free_layer(sm, f"SG3.synthesis.{name}.", f"layers.{i}.", layer, verify_constants)
        resample = f"SG3.resamples.{i}.filter"
        expected = getattr(net, f"resample_{layer.spec.in_rate}", None)
        if sm.has(resample) or expected is not None:
            sm.constant(resample, expected, verify_constants)
    sm.move("SG3.mapping.w_avg", "mapping.w_avg")
    for i in range(cfg.mapping_layers):
        sm.move_prefix(f"SG3.mapping.fc{i}.", f"mapping.layers.{i}.", ("weight", "bias"))
    return sm


def discriminator_state(source: dict[str, torch.Tensor], cfg: SuperResModelConfig, where: str = "D",
                        verify_constants: bool = True) -> StateMap:
    sm = StateMap(source, where)
    top = max(cfg.highres)
    move_resnet_discriminator(sm, top, verify_constants)
    up = top // max(cfg.lowres)
    sm.constant("upsample.filter", torch.as_tensor(linear_filter(up), dtype=torch.float32), verify_constants)
    return sm


def build_networks(cfg: SuperResModelConfig, device: str = "meta"):
    with torch.device(device):
        return SuperResGenerator(cfg), SuperResDiscriminator(cfg)


# --- the importer of `vidgen import` -----------------------------------------------------------

TRAIN_STUBS = ("torch_utils.training_stats.Collector", "re._compile")  # the ADA sign collector of a train pickle


def _is_superres_g(obj: Any) -> bool:
    from vidgen import safe_pickle

    return safe_pickle.is_record(obj) and obj.class_name == "VideoGenerator" and \
        safe_pickle.is_record((obj.attr("_modules") or {}).get("SG3"))


def _optimizer_state(opt: Any, record: Any, sm: StateMap, net: str, problems: list[str]) -> dict[str, Any]:
    """A reference Adam state dict (moments by parameter index, in the module's parameter
    order) -> vidgen's form (moments by ``"net.param"`` name)."""
    from vidgen import safe_pickle

    names = list(safe_pickle.parameters(record))
    state = {}
    for idx, st in dict(opt.get("state") or {}).items():
        i = int(idx)
        if not 0 <= i < len(names) or names[i] not in sm.moved:
            problems.append(f"{net}_opt: state of parameter {idx} has no vidgen parameter")
            continue
        state[f"{net}.{sm.moved[names[i]]}"] = {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point()
                                                     else v) for k, v in dict(st).items()}
    return {"state": state}


class SuperResImporter:
    """``ckpt-<step>-G-ema.pkl`` (the EMA generator) and ``ckpt-<step>-train.pkl`` (G, D,
    optimisers, ADA pipes) of the long-video GAN's super-res phase (train_sres.py)."""

    allow_stubs: tuple[str, ...] = TRAIN_STUBS

    def detect(self, tree: Any) -> bool:
        if isinstance(tree, dict):
            return _is_superres_g(tree.get("G"))
        return _is_superres_g(tree)

    def convert(self, tree: Any, source) -> Any:
        from vidgen import safe_pickle
        from vidgen.train.published import ImportedRun, Problems

        parts = dict(tree) if isinstance(tree, dict) else {"G_ema": tree}
        problems, notes, report, errs = Problems(source), [], [], []
        g_rec = parts.get("G_ema") or parts["G"]
        sg3 = g_rec.attr("_modules")["SG3"]
        model = generator_config(g_rec.init_kwargs, sg3.init_kwargs, errs, notes)
        if safe_pickle.is_record(parts.get("D")):
            if parts["D"].class_name != "VideoDiscriminator":
                errs.append(f"D: unknown class {parts['D'].class_name}")
            model.update(discriminator_config(parts["D"].init_kwargs, errs, notes))
        for e in errs:
            problems.add(e)
        problems.raise_if_any()
        cfg = SuperResModelConfig(**{**model, "lowres": tuple(model["lowres"]), "highres": tuple(model["highres"])})
        networks, maps = {}, {}
        for key in ("G_ema", "G", "D"):
            rec = parts.get(key)
            if not safe_pickle.is_record(rec):
                continue
            fn = discriminator_state if key == "D" else generator_state
            sm = fn(safe_pickle.state_dict(rec), cfg, key)
            for p in sm.finish():
                problems.add(p)
            networks[key], maps[key] = sm.out, sm
            report.append(sm.summary())
        problems.raise_if_any()
        config: dict[str, Any] = {"model": model}
        loss: dict[str, Any] = {}
        optimizers, opt_problems = {}, []
        for net, key in (("G", "G_opt"), ("D", "D_opt")):
            opt = parts.get(key)
            if isinstance(opt, dict) and net in maps:
                optimizers[net] = _optimizer_state(opt, parts[net], maps[net], net, opt_problems)
                groups = opt.get("param_groups") or [{}]
                lr = groups[0].get("lr")
                if lr is not None:  # the reference stores D's lr with the lazy-R1 factor 16/17 applied
                    loss[f"lr_{net.lower()}"] = float(lr) * (17 / 16 if net == "D" else 1.0)
                report.append(f"{key}: Adam moments of {len(optimizers[net]['state'])} parameters, lr {lr}")
        for p in opt_problems:
            problems.add(p)
        problems.raise_if_any()
        recipe_state: dict[str, Any] = {}
        pipe = parts.get("augment")
        if safe_pickle.is_record(pipe):
            p = float(safe_pickle.state_dict(pipe).get("p", torch.zeros([])).item())
            recipe_state["ada"] = {"p": p, "sign_sum": 0.0, "count": 0}
            report.append(f"augment: ADA probability p = {p:.4g}")
        pipe = parts.get("in_augment")
        if safe_pickle.is_record(pipe):
            loss["input_p"] = float(safe_pickle.state_dict(pipe).get("p", torch.tensor(0.5)).item())
            std = _scalar(pipe.init_kwargs.get("scale_std", 0.08))
            loss["input_strength"] = float(std) / 0.01
            report.append(f"in_augment: low-res input corruption p = {loss['input_p']:.3g}, "
                          f"strength {loss['input_strength']:.3g}")
        if loss:
            config["loss"] = loss
        if "real_sign_collector" in parts:
            report.append("left out: real_sign_collector (ADA's running sign statistics restart at 0)")
        left = sorted(k for k in parts if k not in ("G_ema", "G", "D", "G_opt", "D_opt", "augment", "in_augment",
                                                     "real_sign_collector"))
        if left:
            report.append(f"left out: {', '.join(left)} (not part of an lvg-superres run)")
        m = re.search(r"ckpt-(\d+)", str(source))
        step = int(m.group(1)) if m else 0
        return ImportedRun(family="lvg-superres", config=config, networks=networks, optimizers=optimizers,
                           recipe_state=recipe_state, step=step, nimg=step * 32,
                           resolution=f"{cfg.lowres[0]}x{cfg.lowres[1]} -> {cfg.highres[0]}x{cfg.highres[1]}",
                           report=report + notes)


IMPORTER = SuperResImporter()
