"""Published EDM and EDM2 snapshots -> vidgen diffusion runs (``vidgen import``, docs/IMPORT.md).

EDM (Karras et al. 2022) writes ``dict(ema, loss_fn, augment_pipe, dataset_kwargs)``; ``ema`` is
a ``VPPrecond`` / ``VEPrecond`` / ``iDDPMPrecond`` / ``EDMPrecond`` around a ``SongUNet``
(DDPM++ / NCSN++) or a ``DhariwalUNet`` (ADM), in float32. EDM2 (Karras et al. 2024) writes
``EasyDict(encoder, dataset_kwargs, loss_fn, ema)``; ``ema`` is a ``Precond`` around its
magnitude-preserving ``UNet`` with every tensor stored in float16, and ``encoder`` says
whether the model works on pixels or on the latents of a named VAE (its scale and bias,
never its weights). The post-hoc EMA reconstructions have the same layout.

The file is read by :mod:`vidgen.safe_pickle` (no code from it runs). The constructor
arguments recorded in each network object, completed with the reference constructors'
defaults, give the typed config; tensor names map one to one (``model.`` / ``unet.`` ->
``net.``) and keep their dtype: a float16 EDM2 file gives a float16 network, which computes
like the reference (weights and Fourier buffers upcast to float32 on use; the gain of each
magnitude-preserving layer divided by sqrt(fan-in) in float16). Anything not understood
(an unknown class or argument) is an error that names it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

EDM_PRECONDS = {"VPPrecond": "vp", "VEPrecond": "ve", "iDDPMPrecond": "iddpm", "EDMPrecond": "edm"}
# Constructor defaults of the reference classes (NVlabs/edm training/networks.py,
# NVlabs/edm2 training/networks_edm2.py): arguments a file does not record take these.
PRECOND_DEFAULTS = {
    "vp": dict(beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5, model_type="SongUNet"),
    "ve": dict(sigma_min=0.02, sigma_max=100, model_type="SongUNet"),
    "iddpm": dict(C_1=0.001, C_2=0.008, M=1000, model_type="DhariwalUNet"),
    "edm": dict(sigma_min=0, sigma_max=float("inf"), sigma_data=0.5, model_type="DhariwalUNet"),
}
SONG_DEFAULTS = dict(label_dim=0, augment_dim=0, model_channels=128, channel_mult=[1, 2, 2, 2], channel_mult_emb=4,
                     num_blocks=4, attn_resolutions=[16], dropout=0.10, label_dropout=0, embedding_type="positional",
                     channel_mult_noise=1, encoder_type="standard", decoder_type="standard", resample_filter=[1, 1])
DHARIWAL_DEFAULTS = dict(label_dim=0, augment_dim=0, model_channels=192, channel_mult=[1, 2, 3, 4], channel_mult_emb=4,
                         num_blocks=3, attn_resolutions=[32, 16, 8], dropout=0.10, label_dropout=0)
EDM2_UNET_DEFAULTS = dict(model_channels=192, channel_mult=[1, 2, 3, 4], channel_mult_noise=None,
                          channel_mult_emb=None, num_blocks=3, attn_resolutions=[16, 8], label_balance=0.5,
                          concat_balance=0.5, resample_filter=[1, 1], channels_per_head=64, dropout=0,
                          res_balance=0.3, attn_balance=0.3, clip_act=256)
EDM_INTERFACE = ("img_resolution", "in_channels", "out_channels", "label_dim")
EDM2_INTERFACE = ("img_resolution", "img_channels", "label_dim")
LOSSES = {"VPLoss": "vp", "VELoss": "ve", "EDMLoss": "edm", "EDM2Loss": "edm"}


def _class(obj: Any) -> str:
    from vidgen import safe_pickle
    return safe_pickle.class_name(obj) if obj is not None else ""


def _child(record: Any, name: str) -> Any:
    """Sub-module ``name`` of a module record."""
    modules = record.state.get("_modules") or {}
    return modules.get(name)


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _ema(tree: Any) -> Any:
    return tree.get("ema") if isinstance(tree, dict) else None


def detect(tree: Any) -> bool:
    """An EDM or EDM2 training snapshot / reconstruction: ``ema`` is one of their Preconds."""
    ema = _ema(tree)
    name = _class(ema)
    if name in EDM_PRECONDS:
        return _child(ema, "model") is not None
    return name == "Precond" and _child(ema, "unet") is not None


def _known(args: dict, defaults: dict, problems, where: str) -> dict:
    """``args`` over ``defaults``; arguments the reference class does not have are problems."""
    problems.unknown_kwargs(where, args, defaults)
    return {**defaults, **{k: _plain(v) for k, v in args.items() if k in defaults}}


def edm_sections(precond_class: str, precond_args: dict, model_class: str, model_args: dict,
                 problems) -> tuple[dict, dict, dict]:
    """(model section, precond section, loss extras) of EDM's ``precond_class`` around
    ``model_class``; the args are constructor arguments, completed with the attributes the
    objects hold (the reference classes' defaults fill the rest)."""
    kind = EDM_PRECONDS[precond_class]
    interface = {"img_resolution": 0, "img_channels": 0, "label_dim": 0, "use_fp16": False}
    pre = _known(precond_args, {**PRECOND_DEFAULTS[kind], **interface}, problems, precond_class)
    if model_class not in ("SongUNet", "DhariwalUNet"):
        problems.add(f"{precond_class}.model: unknown network class {model_class!r} (known: SongUNet, DhariwalUNet)")
        return {}, {}, {}
    defaults = SONG_DEFAULTS if model_class == "SongUNet" else DHARIWAL_DEFAULTS
    net = _known(model_args, {**defaults, **{k: 0 for k in EDM_INTERFACE}}, problems, model_class)
    expected_out = net["in_channels"] * (2 if kind == "iddpm" else 1)
    if net["out_channels"] != expected_out:
        problems.add(f"{model_class}: out_channels {net['out_channels']} with {net['in_channels']} input channels "
                     f"under {precond_class} (expected {expected_out})")
    for key, want in (("img_resolution", net["img_resolution"]), ("img_channels", net["in_channels"]),
                      ("label_dim", net["label_dim"])):
        if pre[key] and pre[key] != want:
            problems.add(f"{precond_class}.{key} {pre[key]} differs from its network's {want}")
    if model_class == "SongUNet":
        arch = "ncsnpp" if net["embedding_type"] == "fourier" else "ddpmpp"
        extra = {k: net[k] for k in ("embedding_type", "encoder_type", "decoder_type", "channel_mult_noise")}
        extra["resample_filter"] = list(net["resample_filter"])
    else:
        arch, extra = "adm", {}
    model = dict(arch=arch, preset="", img_resolution=net["img_resolution"], img_channels=net["in_channels"],
                 label_dim=net["label_dim"], model_channels=net["model_channels"],
                 channel_mult=list(net["channel_mult"]), channel_mult_emb=net["channel_mult_emb"],
                 num_blocks=net["num_blocks"], attn_resolutions=list(net["attn_resolutions"]),
                 dropout=float(net["dropout"]), augment_dim=net["augment_dim"], logvar_channels=0, **extra)
    precond: dict[str, Any] = {"kind": kind}
    if kind == "vp":
        precond.update(beta_d=pre["beta_d"], beta_min=pre["beta_min"], M=pre["M"], epsilon_t=pre["epsilon_t"])
    elif kind == "iddpm":
        precond.update(C_1=pre["C_1"], C_2=pre["C_2"], M=pre["M"])
    elif kind == "ve":
        precond.update(sigma_min=float(pre["sigma_min"]), sigma_max=float(pre["sigma_max"]))
    else:  # EDM's supported range is everything unless the file narrows it
        if pre["sigma_min"] != 0:
            precond["sigma_min"] = float(pre["sigma_min"])
        if pre["sigma_max"] != float("inf"):
            precond["sigma_max"] = float(pre["sigma_max"])
    loss = {"label_dropout": float(net["label_dropout"]), "sigma_data": float(pre.get("sigma_data", 0.5))}
    return model, precond, loss


def edm2_sections(precond_args: dict, unet_args: dict, problems) -> tuple[dict, dict, dict]:
    """(model section, precond section, loss extras) of EDM2's ``Precond`` around its ``UNet``."""
    pre = _known(precond_args, {"img_resolution": 0, "img_channels": 0, "label_dim": 0, "use_fp16": True,
                                "sigma_data": 0.5, "logvar_channels": 128}, problems, "Precond")
    net = _known(unet_args, {**EDM2_UNET_DEFAULTS, **{k: 0 for k in EDM2_INTERFACE}}, problems, "UNet")
    if list(net["resample_filter"]) != [1, 1]:
        problems.add(f"UNet: resample_filter {net['resample_filter']} (vidgen's EDM2 U-Net resamples with [1, 1])")
    model = dict(arch="edm2", preset="", img_resolution=net["img_resolution"], img_channels=net["img_channels"],
                 label_dim=net["label_dim"], model_channels=net["model_channels"],
                 channel_mult=list(net["channel_mult"]), num_blocks=net["num_blocks"],
                 attn_resolutions=list(net["attn_resolutions"]), dropout=float(net["dropout"]),
                 channels_per_head=net["channels_per_head"], channel_mult_noise=net["channel_mult_noise"],
                 channel_mult_emb=net["channel_mult_emb"], logvar_channels=pre["logvar_channels"],
                 res_balance=float(net["res_balance"]), attn_balance=float(net["attn_balance"]),
                 label_balance=float(net["label_balance"]), concat_balance=float(net["concat_balance"]),
                 clip_act=float(net["clip_act"]) if net["clip_act"] is not None else 0.0)
    return model, {"kind": "edm"}, {"label_dropout": 0.0, "sigma_data": float(pre["sigma_data"])}


def sections_from_constructor(class_name: str, kwargs: dict, problems) -> tuple[dict, dict, dict]:
    """The sections of a network built as ``class_name(**kwargs)`` with the reference Precond
    classes, which pass the interface arguments and the rest on to their network (e.g. the
    published configurations listed with their constructor arguments)."""
    kwargs = dict(kwargs)
    if class_name == "Precond":
        unet = {k: kwargs.pop(k) for k in list(kwargs) if k in EDM2_UNET_DEFAULTS}
        unet.update({k: kwargs.get(k, 0) for k in EDM2_INTERFACE})
        return edm2_sections(kwargs, unet, problems)
    kind = EDM_PRECONDS.get(class_name)
    if kind is None:
        problems.add(f"unknown class {class_name!r}")
        return {}, {}, {}
    model_class = kwargs.pop("model_type", PRECOND_DEFAULTS[kind]["model_type"])
    net_keys = set(SONG_DEFAULTS if model_class == "SongUNet" else DHARIWAL_DEFAULTS) - {"label_dim"}
    model = {k: kwargs.pop(k) for k in list(kwargs) if k in net_keys}
    c = kwargs.get("img_channels", 0)
    model.update(img_resolution=kwargs.get("img_resolution", 0), in_channels=c, label_dim=kwargs.get("label_dim", 0),
                 out_channels=c * (2 if kind == "iddpm" else 1))
    return edm_sections(class_name, kwargs, model_class, model, problems)


def _record_args(record: Any, attrs: tuple, problems, where: str) -> dict:
    """Constructor arguments of a record, with the listed attributes it holds taking precedence."""
    if record.init_args:
        problems.add(f"{where}: positional constructor arguments {record.init_args!r}")
    args = dict(record.init_kwargs)
    args.update({k: record.state[k] for k in attrs if k in record.state})
    return args


def _sections(ema: Any, problems) -> tuple[dict, dict, dict]:
    if _class(ema) == "Precond":
        unet = _child(ema, "unet")
        if _class(unet) != "UNet":
            problems.add(f"Precond.unet: unknown network class {_class(unet)!r} (known: UNet)")
            return {}, {}, {}
        pre = _record_args(ema, ("sigma_data",), problems, "Precond")
        fourier = _child(ema, "logvar_fourier")
        if fourier is not None and "freqs" in (fourier.state.get("_buffers") or {}):
            pre["logvar_channels"] = int(fourier.state["_buffers"]["freqs"].numel())
        # Precond passes its other arguments on to UNet, which passes its own extras on to Block.
        pre = {k: v for k, v in pre.items() if k not in EDM2_UNET_DEFAULTS}
        return edm2_sections(pre, _record_args(unet, (), problems, "UNet"), problems)
    kind = EDM_PRECONDS[_class(ema)]
    model = _child(ema, "model")
    pre = _record_args(ema, tuple(k for k in PRECOND_DEFAULTS[kind] if k != "model_type"), problems, _class(ema))
    model_keys = set(SONG_DEFAULTS) | set(DHARIWAL_DEFAULTS)
    pre = {k: v for k, v in pre.items() if k not in model_keys or k == "label_dim"}
    return edm_sections(_class(ema), pre, _class(model), _record_args(model, ("label_dropout",), problems,
                                                                        _class(model)), problems)


def _loss(tree: Any, kind: str, sigma_data: float, problems, report: list[str]) -> dict:
    loss = tree.get("loss_fn")
    name = _class(loss)
    if loss is None:
        report.append("loss_fn: none in the file; the loss config keeps its defaults")
        return {}
    if name not in LOSSES:
        report.append(f"loss_fn: {name} is not one of {', '.join(LOSSES)}; the loss config keeps its defaults")
        return {}
    out: dict[str, Any] = {"uncertainty": name == "EDM2Loss", "sigma_data": sigma_data}
    if LOSSES[name] != kind:
        report.append(f"loss_fn: {name} trained a {kind} network")
    for key in ("P_mean", "P_std"):
        if key in loss.state:
            out[key] = float(_plain(loss.state[key]))
    return out


def _encoder(tree: Any, problems, report: list[str]) -> dict:
    enc = tree.get("encoder")
    name = _class(enc)
    if enc is None or name == "StandardRGBEncoder":
        return {"kind": "rgb"}
    if name != "StabilityVAEEncoder":
        problems.add(f"encoder: unknown class {name!r} (known: StandardRGBEncoder, StabilityVAEEncoder)")
        return {}
    st = enc.state
    vae = str(st.get("vae_name", ""))
    report.append(f"encoder: latents of VAE {vae!r} (scale and bias from the file; the VAE weights are not in "
                  "it: decoding needs its config.json and safetensors in $VIDGEN_CACHE/vae/ or --vae)")
    return {"kind": "vae", "vae": vae, "scale": [float(v) for v in np.asarray(st["scale"]).reshape(-1)],
            "bias": [float(v) for v in np.asarray(st["bias"]).reshape(-1)], "batch": int(st.get("batch_size", 8))}


def convert_tree(tree: Any, source: str | Path) -> tuple[dict, dict[str, torch.Tensor], list[str]]:
    """(diffusion config dict, state dict of the denoiser, report lines) of an EDM / EDM2
    snapshot read by :func:`vidgen.safe_pickle.load`. UnsupportedCheckpoint if it does not fit."""
    from vidgen import safe_pickle
    from vidgen.train.published import Problems

    problems = Problems(source)
    ema = _ema(tree)
    edm2 = _class(ema) == "Precond"
    report = [f"file: {'EDM2' if edm2 else 'EDM'} snapshot with keys {', '.join(map(str, tree))}"]
    model, precond, extras = _sections(ema, problems)
    problems.raise_if_any()
    kind = precond["kind"]
    prefix = "unet." if edm2 else "model."
    state = {}
    for key, value in safe_pickle.state_dict(ema).items():
        state["net." + key[len(prefix):] if key.startswith(prefix) else key] = value
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in state.values() if v.is_floating_point()})
    report.append(f"network: {_class(ema)}({_class(_child(ema, 'unet' if edm2 else 'model'))}) stored as "
                  f"{'/'.join(dtypes)}{' (kept: it computes as the reference does)' if dtypes == ['float16'] else ''}")
    loss = {**_loss(tree, kind, extras["sigma_data"], problems, report), **extras}
    if not edm2:
        loss["uncertainty"] = False
    encoder = _encoder(tree, problems, report) if edm2 else {"kind": "rgb"}
    problems.raise_if_any()
    if tree.get("augment_pipe") is not None:
        report.append(f"augment_pipe: {_class(tree['augment_pipe'])} not imported (vidgen trains diffusion "
                      "without geometric augmentation; the network's augment inputs stay unfed)")
    data_kwargs = tree.get("dataset_kwargs") or {}
    if data_kwargs:
        report.append(f"dataset: {data_kwargs.get('path', '?')} ({data_kwargs.get('class_name', '?')}), not needed "
                      "for sampling")
    pixel_res = model["img_resolution"]
    if encoder.get("kind") == "vae":
        pixel_res *= 8  # Stability's VAEs downsample by 8 (the img512 models: 64x64 latents of 512x512)
    config = {
        "model": model, "precond": precond, "loss": loss, "encoder": encoder,
        "data": {"resolution": pixel_res, "class_from_folder": model["label_dim"] > 0, "xflip": False,
                 "latents": encoder.get("kind") == "vae"},
        # EDM's generate.py: 18 Heun steps in float64; EDM2's generate_images.py: 32 in float32.
        "sample": {"steps": 32 if edm2 else 18, "dtype": "float32" if edm2 else "float64"},
        "ema": {"kind": "power", "sigma_rels": [_file_std(source)]} if edm2 else {"kind": "halflife"},
    }
    return config, state, report


def _file_std(source: str | Path) -> float:
    """The EMA width EDM2 writes into its file names (``...-0002147-0.050.pkl``), else 0.05."""
    m = re.search(r"-(0\.\d+)\.pkl$", str(source))
    return float(m.group(1)) if m else 0.05


class _Importer:
    """``Family.importer`` of the diffusion family (vidgen/train/published.py)."""

    allow_stubs: tuple[str, ...] = ()

    def detect(self, tree: Any) -> bool:
        return detect(tree)

    def convert(self, tree: Any, source: Path):
        from vidgen.train.published import ImportedRun
        config, state, report = convert_tree(tree, source)
        m = config["model"]
        return ImportedRun(family="diffusion", config=config, networks={"net_ema": state},
                           resolution=f"{m['img_resolution']}x{m['img_resolution']}", report=report)


IMPORTER = _Importer()
