"""`vidgen import` for the time-lapse GAN: the reference release's training snapshots
(``network-snapshot-*.pkl``: a dict of G, D, G_ema, augment_pipe, training_set_kwargs) ->
a timelapse run folder that `timelapse render | invert | eval` and `timelapse train --init`
take (docs/IMPORT.md). The file is read by :mod:`vidgen.safe_pickle`; nothing in it runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from vidgen import safe_pickle
from vidgen.errors import ConfigError
from vidgen.train.published import ImportedRun, Problems
from timelapse.convert import Converted, convert_discriminator, convert_generator, model_config, time_noise
from timelapse.time import TimeAxis, TimeFeatures

KNOWN_CLASSES = {"Generator", "Discriminator", "AugmentPipe", "MappingNetwork", "SynthesisNetwork", "SynthesisBlock",
                 "SynthesisLayer", "ToRGBLayer", "CondStyle", "ConditioningTransform", "FullyConnectedLayer",
                 "Conv2dLayer", "DiscriminatorBlock", "DiscriminatorEpilogue", "MinibatchStdLayer"}
# The reference's 12 ADA operations (blits, general geometry, colour) are vidgen's 'bgc' pipeline.
ADA_BGC = {"xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast", "lumaflip",
           "hue", "saturation"}


def _record(tree: Any, key: str):
    obj = tree.get(key) if isinstance(tree, dict) else None
    return obj if safe_pickle.is_record(obj) else None


def _axis_buffers(axis: TimeAxis) -> dict[str, torch.Tensor]:
    """The buffers in which vidgen's networks keep their time axis."""
    return {f"time.{k}": v for k, v in TimeFeatures(axis).state_dict().items()}


class TimelapseImporter:
    allow_stubs: tuple[str, ...] = ()

    def detect(self, tree: Any) -> bool:
        g = _record(tree, "G_ema") or _record(tree, "G")
        return g is not None and g.class_name == "Generator" and "cond_args" in (g.init_kwargs or {})

    def convert(self, tree: Any, source: Path) -> ImportedRun:
        problems = Problems(source)
        problems.unknown_classes("snapshot", safe_pickle.summary(tree), KNOWN_CLASSES)
        problems.raise_if_any()
        g_ema, g, d = _record(tree, "G_ema"), _record(tree, "G"), _record(tree, "D")
        g_main = g_ema or g
        try:
            cfg, axis, rect = model_config(dict(g_main.init_kwargs), dict(d.init_kwargs) if d is not None else None)
            noise = time_noise(g_main.init_kwargs["cond_args"], axis)
        except ConfigError as exc:
            problems.add(str(exc))
            problems.raise_if_any()
        report = [f"time axis: {axis.num_days} days from {axis.start:.0f} (epoch s, UTC), factors "
                  f"{', '.join(axis.factors)}; the trend enters c as {axis.lin_scale} t"]
        networks: dict[str, dict[str, torch.Tensor]] = {}
        for name, rec in (("G", g), ("G_ema", g_ema), ("D", d)):
            if rec is None:
                report.append(f"{name}: not in the file")
                continue
            conv: Converted = (convert_discriminator if name == "D" else convert_generator)(
                safe_pickle.state_dict(rec), cfg.resolution)
            if conv.left_over:
                problems.add(f"{name}: tensors vidgen's network has no place for: {', '.join(conv.left_over[:6])}")
            sd = {**conv.state, **_axis_buffers(axis)}
            if name != "D":
                sd["out_rect"] = torch.tensor(rect, dtype=torch.int64)
            networks[name] = sd
            report.append(f"{name}: {len(conv.used)} tensors, {len(conv.checked)} resampling filters checked "
                          f"([1, 3, 3, 1]), {safe_pickle.num_params(rec):,} parameters")
        problems.raise_if_any()
        config: dict[str, Any] = {
            "model": {k: v for k, v in cfg.__dict__.items()},
            "time": {"start": axis.start, "num_days": axis.num_days, "lin_scale": axis.lin_scale,
                     "dequantize": g_main.init_kwargs["cond_args"].get("dequant", "gauss") == "gauss",
                     "d_noise_trend": noise.trend, "d_noise_year_days": noise.year_days,
                     "d_noise_day_days": noise.day_days},
        }
        aug = _record(tree, "augment_pipe")
        if aug is not None:
            ops = {k for k, v in (aug.init_kwargs or {}).items() if v}
            p = safe_pickle.state_dict(aug).get("p")
            p = float(p) if isinstance(p, torch.Tensor) and p.numel() == 1 else 0.0
            if ops == ADA_BGC:
                config["augment"] = {"kind": "ada", "pipeline": "bgc", "p": p}
                report.append(f"augment_pipe: ADA with blits, geometry and colour (vidgen 'bgc'), p = {p:.4f}")
            else:
                report.append(f"augment_pipe: left out (operations {sorted(ops)} are not one of vidgen's pipelines)")
        tsk = tree.get("training_set_kwargs") if isinstance(tree, dict) else None
        if isinstance(tsk, dict):
            report.append(f"training_set_kwargs: left out (data path {tsk.get('path')!r}; give the frames with "
                          "`timelapse train --init RUN --data DIR`)")
            if tsk.get("xflip"):
                report.append("training_set_kwargs.xflip: left out (vidgen's time-lapse training does not mirror)")
        report.append("computed in vidgen with the reference's single-precision Fourier phase (model.time_phase float32)")
        m = re.fullmatch(r"network-snapshot-(\d+)\.pkl", Path(source).name)
        nimg = int(m[1]) * 1000 if m else 0  # the reference names snapshots after the kimg trained
        res = cfg.resolution
        return ImportedRun(family="timelapse", config=config, networks=networks, nimg=nimg,
                           resolution=f"{res}x{res}", report=report)


IMPORTER = TimelapseImporter()
