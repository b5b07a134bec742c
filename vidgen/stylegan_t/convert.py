"""`vidgen import` of StyleGAN-T network snapshots (the reference's
``network-snapshot-<kimg>.pkl``, docs/IMPORT.md).

The reference writes ``dill.dump(dict(G, D, G_ema, training_set_kwargs))``: modules are
pickled with their classes referenced by import path (``networks.generator.Generator``,
``open_clip.model.CLIP``, timm's ``VisionTransformer``, ...), so they are read here as inert
records (vidgen/safe_pickle.py): their attributes and tensors, nothing imported or called.
Two things are stored *by value*, as code: the forward hooks that collect the DINO block
outputs (closures) and torch's spectral-norm hook classes. They are never run: the records
only tell which blocks were hooked and the spectral-norm settings (dim 0, one power
iteration, eps 1e-12), and vidgen's discriminator computes the same features and
normalisation natively (vidgen/stylegan_t/discriminator.py).

The architecture is read from the records (attributes and tensor shapes) into a
StyleGANTConfig; the tensors are renamed to vidgen's modules. The published weights of the
frozen parts (CLIP's text tower in G, the DINO ViT in D) are in the snapshot and come with it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidgen import safe_pickle
from vidgen.stylegan_t.discriminator import DinoConfig
from vidgen.stylegan_t.generator import RESAMPLE
from vidgen.train.published import ImportedRun, Problems

# ViT-L/14's text tower, as open_clip configures it (the architecture StyleGAN-T ships with)
VIT_L14_TEXT = {"embed_dim": 768, "width": 768, "heads": 12, "layers": 12, "vocab_size": 49408, "context_length": 77}


def _g_key(k: str) -> str:
    k = re.sub(r"^mapping\.mlp\.fc(\d+)\.", r"mapping.mlp.\1.", k)
    k = k.replace("mapping.clip.model.", "text.model.")
    k = re.sub(r"^synthesis\.b(\d+)\.", r"synthesis.blocks.b\1.", k)
    return k.replace(".convs1.", ".convs.")


def _d_key(k: str) -> str:
    k = k.replace("dino.model.model.", "dino.vit.")
    for old, new in ((".main.0.0.", ".conv0."), (".main.0.1.", ".norm0."), (".main.1.fn.0.", ".conv1."),
                     (".main.1.fn.1.", ".norm1.")):
        k = k.replace(old, new)
    return k


def _full(record: Any) -> str:
    return getattr(record, "stub_name", "") or f"{getattr(record, 'module_name', '')}.{safe_pickle.class_name(record)}"


def _channels_base_max(channels: dict[int, int], problems: Problems) -> tuple[int, int]:
    """(channel_base, channel_max) with ``min(base // res, max)`` = the stored channels."""
    cmax = max(channels.values())
    below = [(r, c) for r, c in sorted(channels.items()) if c < cmax]
    base = below[0][1] * below[0][0] if below else cmax * max(channels)
    if any(min(base // r, cmax) != c for r, c in channels.items()):
        problems.add(f"G: channels per resolution {channels} do not follow min(base // res, max)")
    return base, cmax


def generator_config(G: Any, problems: Problems) -> tuple[dict, dict]:
    """(G section, text section) of the config, from the generator record."""
    mods = dict(safe_pickle.modules(G))
    syn, mapping = mods["synthesis"], mods["mapping"]
    resolutions = list(syn.attr("block_resolutions") or [])
    channels = {r: int(mods[f"synthesis.b{r}"].attr("out_channels")) for r in resolutions}
    base, cmax = _channels_base_max(channels, problems)
    first = mods[f"synthesis.b{resolutions[0]}"]
    convs = [k for k in mods if re.fullmatch(rf"synthesis\.b{resolutions[0]}\.convs1\.\d+", k)]
    norms = [m for k, m in mods.items() if k.endswith(".norm") and k.startswith("synthesis.")]
    fcs = sorted(k for k in mods if re.fullmatch(r"mapping\.mlp\.fc\d+", k))
    layer = mods[f"synthesis.b{resolutions[0]}.convs1.0"]
    inp = mods[f"synthesis.b{resolutions[0]}.input"]
    g = {"z_dim": int(G.attr("z_dim")), "img_resolution": int(G.attr("img_resolution")),
         "img_channels": int(G.attr("img_channels")), "channel_base": base, "channel_max": cmax,
         "num_res_blocks": len(convs) // 2, "start_resolution": resolutions[0],
         "architecture": first.attr("architecture"), "mapping_layers": len(fcs),
         "mapping_lr": float(mods[fcs[0]].attr("bias_gain")), "x_avg_beta": mapping.attr("x_avg_beta"),
         "conv_clamp": float(layer.attr("conv_clamp") or 0), "gn_groups": int(norms[0].attr("num_groups")) if norms else 32,
         "fourier_bandwidth": float(inp.attr("bandwidth")), "train_mode": G.attr("train_mode")}
    if g["train_mode"] not in ("all", "text_encoder"):
        problems.add(f"G.train_mode {g['train_mode']!r} (vidgen trains 'all' or 'text_encoder')")
    if not G.attr("conditional"):
        problems.add("G: an unconditional StyleGAN-T (conditional=False) is not supported")
    return g, text_config(mods, problems)


def text_config(mods: dict[str, Any], problems: Problems) -> dict:
    """The text section: ViT-L-14 when the CLIP tower has its shapes, else a custom arch."""
    if "mapping.clip.model" not in mods:
        problems.add("G.mapping has no CLIP text encoder")
        return {}
    sd = safe_pickle.state_dict(mods["mapping.clip.model"])
    vocab, width = sd["token_embedding.weight"].shape
    attn = mods["mapping.clip.model.transformer.resblocks.0.attn"]
    gelu = mods["mapping.clip.model.transformer.resblocks.0.mlp.gelu"]
    arch = {"embed_dim": int(sd["text_projection"].shape[1]), "width": int(width), "heads": int(attn.attr("num_heads")),
            "layers": len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
            "vocab_size": int(vocab), "context_length": int(sd["positional_embedding"].shape[0])}
    quick = safe_pickle.class_name(gelu) == "QuickGELU"
    if arch == VIT_L14_TEXT and quick:  # the published OpenAI CLIP ViT-L/14
        return {"kind": "clip", "arch": "ViT-L-14", "pretrained": True}
    return {"kind": "clip", "arch": "custom", "custom": {**arch, "quick_gelu": quick}, "pretrained": False}


def discriminator_config(D: Any, problems: Problems) -> tuple[dict, bool]:
    """(D section, whether DiffAugment is on), from the discriminator record."""
    mods = dict(safe_pickle.modules(D))
    vit = mods.get("dino.model.model")
    if vit is None or safe_pickle.class_name(vit) != "VisionTransformer":
        problems.add("D: no timm VisionTransformer at dino.model.model")
        return {}, False
    blocks = sorted(int(k.rsplit(".", 1)[1]) for k in mods if re.fullmatch(r"dino\.model\.model\.blocks\.\d+", k))
    # the hooked blocks (their hooks are code, never run: only where they are is read)
    hooks = [b for b in blocks if mods[f"dino.model.model.blocks.{b}"].attr("_forward_hooks")]
    hook_patch = bool(mods["dino.model.model.pos_drop"].attr("_forward_hooks"))
    pe = mods["dino.model.model.patch_embed"]
    img = pe.attr("img_size")
    dino = {"embed_dim": int(vit.attr("embed_dim")), "depth": len(blocks),
            "num_heads": int(mods["dino.model.model.blocks.0.attn"].attr("num_heads")),
            "patch_size": int(pe.attr("patch_size")[0]), "img_size": int(img[0] if isinstance(img, (tuple, list)) else img),
            "hooks": hooks, "hook_patch": hook_patch}
    d = DinoConfig()
    dino["pretrained"] = all(dino[k] == getattr(d, k) for k in ("embed_dim", "depth", "num_heads", "patch_size", "img_size"))
    head = mods["heads.0"]
    conv = mods["heads.0.main.1.fn.0"]
    bn = mods["heads.0.main.0.1"]
    for name, m in mods.items():
        if safe_pickle.class_name(m) != "SpectralConv1d":
            continue
        norms = [h for h in (m.attr("_forward_pre_hooks") or {}).values() if isinstance(h.state, dict) and "dim" in h.state]
        s = norms[0].state if norms else {}
        if (s.get("dim"), s.get("n_power_iterations"), s.get("eps")) != (0, 1, 1e-12):
            problems.add(f"D.{name}: spectral norm {s or 'settings not found'} (vidgen: dim 0, 1 iteration, eps 1e-12)")
    cfg = {"dino": dino, "cmap_dim": int(head.attr("cmap_dim")), "kernel_size": int(conv.attr("kernel_size")[0]),
           "virtual_batch": int(bn.attr("virtual_bs")), "p_crop": float(D.attr("p_crop"))}
    return cfg, bool(D.attr("diffaug"))


def _check_filters(sd: dict[str, torch.Tensor], problems: Problems) -> None:
    """The resampling filters the reference stores as buffers are vidgen's fixed [1, 3, 3, 1]."""
    want = torch.from_numpy(np.outer(RESAMPLE, RESAMPLE) / np.outer(RESAMPLE, RESAMPLE).sum()).float()
    bad = [k for k, v in sd.items() if k.endswith("resample_filter") and not torch.allclose(v.float(), want)]
    if bad:
        problems.add(f"G: resampling filters other than [1, 3, 3, 1] ({bad[0]})")


def convert_generator(record: Any, problems: Problems) -> dict[str, torch.Tensor]:
    sd = safe_pickle.state_dict(record)
    _check_filters(sd, problems)
    return {_g_key(k): v for k, v in sd.items() if not k.endswith("resample_filter")}


def convert_discriminator(record: Any) -> dict[str, torch.Tensor]:
    return {_d_key(k): v for k, v in safe_pickle.state_dict(record).items()}


class StyleGANTImporter:
    """The importer of family ``stylegan-t`` (vidgen/train/published.py)."""

    allow_stubs = (
        "networks.*", "open_clip.*", "timm.*", "torchvision.transforms.*",
        "torch.nn.utils.spectral_norm.*", "torch.Tensor",
        # what dill needs to rebuild classes and functions stored by value: read as records, never called
        "dill._dill", "dill._dill.*", "builtins.getattr", "builtins.setattr", "builtins.__dict__",
        "_operator.or_", "_functools.reduce", "typing.Any", "typing.TypeVar",
        "_frozen_importlib.ModuleSpec", "_frozen_importlib_external.SourceFileLoader",
    )

    def detect(self, tree: Any) -> bool:
        if not isinstance(tree, dict):
            return False
        g = tree.get("G_ema", tree.get("G"))
        return safe_pickle.is_record(g) and _full(g) == "networks.generator.Generator"

    def convert(self, tree: Any, source: Path) -> ImportedRun:
        problems = Problems(source)
        g_rec = tree.get("G_ema", tree.get("G"))
        g_cfg, text = generator_config(g_rec, problems)
        config: dict[str, Any] = {"G": g_cfg, "text": text, "data": {"resolution": g_cfg["img_resolution"]},
                                  "loss": {"gan": "hinge"}}
        networks: dict[str, dict[str, torch.Tensor]] = {}
        for name in ("G", "G_ema"):
            if safe_pickle.is_record(tree.get(name)):
                networks[name] = convert_generator(tree[name], problems)
        report = [f"G: {g_cfg['img_resolution']}x{g_cfg['img_resolution']}, channel base {g_cfg['channel_base']}, "
                  f"max {g_cfg['channel_max']}, {g_cfg['num_res_blocks']} residual pairs per resolution; text "
                  f"encoder {text.get('arch')} ({'OpenAI weights, in the file' if text.get('pretrained') else 'from the file'})"]
        d_rec = tree.get("D")
        if safe_pickle.is_record(d_rec) and _full(d_rec) == "networks.discriminator.ProjectedDiscriminator":
            d_cfg, diffaug = discriminator_config(d_rec, problems)
            config["D"] = d_cfg
            config["augment"] = {"kind": "diffaug" if diffaug else "none"}
            networks["D"] = convert_discriminator(d_rec)
            report.append(f"D: DINO ViT ({d_cfg.get('dino', {}).get('embed_dim')} wide) features after the patch "
                          f"embedding and blocks {d_cfg.get('dino', {}).get('hooks')}; its forward hooks and the "
                          "spectral-norm hook classes stored as code in the file were not run (vidgen computes both)")
        else:
            report.append("D: not in the file")
        problems.raise_if_any()
        data = tree.get("training_set_kwargs") or {}
        if isinstance(data, dict) and data.get("path"):
            report.append(f"training data of the snapshot: {data['path']} (not carried over; pass --data)")
        res = g_cfg["img_resolution"]
        return ImportedRun(family="stylegan-t", config=config, networks=networks, resolution=f"{res}x{res}",
                           report=report)


IMPORTER = StyleGANTImporter()
