"""Published time-lapse GAN networks (the reference release's snapshot dicts) -> vidgen's.

A snapshot holds ``G``, ``D``, ``G_ema`` (each with its constructor arguments and tensors),
``augment_pipe`` and ``training_set_kwargs``. The conditioning metadata lives in
``cond_args`` on G and D: the Fourier frequencies ``f_manual``, ``start_ts`` and ``num_days``
(the time axis), ``lin_lr`` (the trend's scale in c), ``lr`` (learning-rate multiplier of the
time map L), and the discriminator's per-frequency timestamp noise ``noise_f`` in units of
the mean frame interval ``t_delta``.

This module works on plain data (constructor kwargs as dicts, tensors by state-dict name), so
it knows nothing about how the file was read: :func:`model_config` maps the constructor
arguments onto :class:`timelapse.model.ModelConfig` and refuses what vidgen's networks do not
compute; :func:`convert_generator` / :func:`convert_discriminator` rename every tensor, check
the constant resampling filters, and report any tensor left over.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from vidgen.errors import ConfigError
from timelapse.model import ModelConfig
from timelapse.time import YEAR_DAYS, TimeAxis, TimeNoise

# Arguments of the reference constructors that vidgen reads, or may ignore because they only
# choose how a result is computed (precision, memory layout, kernel fusion), not what.
G_KWARGS = {"z_dim", "w_dim", "c_dim", "img_resolution", "img_channels", "cond_args", "mapping_kwargs",
            "channel_base", "channel_max", "out_rect", "num_fp16_res", "conv_clamp", "fused_modconv_default",
            "architecture", "resample_filter", "fp16_channels_last", "use_noise"}
D_KWARGS = {"c_dim", "img_resolution", "img_channels", "cond_args", "block_kwargs", "mapping_kwargs",
            "epilogue_kwargs", "channel_base", "channel_max", "num_fp16_res", "conv_clamp", "cmap_dim",
            "architecture"}
COMPUTE_ONLY = {"num_fp16_res", "fused_modconv_default", "fp16_channels_last"}
RESAMPLE_FILTER = [1, 3, 3, 1]


@dataclass
class Converted:
    """One network in vidgen's names, with what was done to every source tensor."""

    state: dict[str, torch.Tensor]
    used: list[str] = field(default_factory=list)  # source keys copied into ``state``
    checked: list[str] = field(default_factory=list)  # constant buffers verified (resampling filters)
    left_over: list[str] = field(default_factory=list)


def _unsupported(what: str, items: dict[str, Any]) -> ConfigError:
    listed = ", ".join(f"{k}={v!r}" for k, v in items.items())
    return ConfigError(f"{what}: vidgen's time-lapse networks do not compute {listed}")


def _check_kwargs(name: str, kwargs: dict, known: set[str]) -> None:
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown constructor arguments {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")


def _clamp(value) -> float:
    return 0.0 if value is None else float(value)


def time_axis(cond_args: dict) -> TimeAxis:
    """The time axis and the Fourier frequencies of ``cond_args``, checked against vidgen's:
    a trend term plus the yearly (num_days / 365.25) and daily (num_days) cycles that exceed
    one cycle per sequence, in that order."""
    ca = dict(cond_args)
    bad = {k: ca.get(k) for k, ok in (("type", ca.get("type") == "fourier"),
                                      ("include_lin", bool(ca.get("include_lin", False)))) if not ok}
    if ca.get("noise_f_int"):
        bad["noise_f_int"] = ca["noise_f_int"]
    if bad:
        raise _unsupported("cond_args", bad)
    missing = [k for k in ("f_manual", "start_ts", "num_days", "lin_lr") if k not in ca]
    if missing:
        raise ConfigError(f"cond_args lacks {', '.join(missing)}: the time axis cannot be rebuilt")
    axis = TimeAxis(start=float(ca["start_ts"]), num_days=int(ca["num_days"]), lin_scale=float(ca["lin_lr"]))
    got = [float(f) for f in ca["f_manual"]]
    want = axis.frequencies
    if len(got) != len(want) or any(not math.isclose(a, b, rel_tol=1e-9) for a, b in zip(got, want)):
        raise ConfigError(f"cond_args f_manual={got}: vidgen's time axis of {axis.num_days} days has the "
                          f"frequencies {want} (year num_days/{YEAR_DAYS}, day num_days, those above 1)")
    if int(ca.get("dims", axis.c_dim)) != axis.c_dim:
        raise _unsupported("cond_args", {"dims": ca.get("dims")})
    return axis


def time_noise(cond_args: dict, axis: TimeAxis) -> TimeNoise:
    """The discriminator's per-factor timestamp noise (vidgen's units) from ``noise_f``
    (standard deviations in mean frame intervals ``t_delta``, for [trend, year, day])."""
    ca = dict(cond_args)
    if float(ca.get("noise", 0) or 0) != 0:
        raise _unsupported("cond_args", {"noise": ca["noise"]})
    noise_f = [float(x) for x in ca.get("noise_f") or []]
    if not noise_f:
        return TimeNoise(0.0, 0.0, 0.0)
    if len(noise_f) != len(axis.factors):
        raise ConfigError(f"cond_args noise_f={noise_f}: expected one value per factor {axis.factors}")
    dt = float(ca.get("t_delta", 0) or 0)
    if dt <= 0:
        raise ConfigError("cond_args lacks t_delta, the unit of noise_f")
    sig = dict(zip(axis.factors, (x * dt for x in noise_f)))  # in units of the normalised t
    return TimeNoise(trend=sig["trend"], year_days=sig.get("year", 0.0) * axis.num_days,
                     day_days=sig.get("day", 0.0) * axis.num_days)


def model_config(g_kwargs: dict, d_kwargs: dict | None) -> tuple[ModelConfig, TimeAxis, tuple[int, int, int, int]]:
    """vidgen's ModelConfig, time axis and output rectangle from the constructor arguments
    of the reference Generator (and Discriminator, when present)."""
    _check_kwargs("Generator", g_kwargs, G_KWARGS)
    g = dict(g_kwargs)
    bad = {k: g[k] for k, ok in (("architecture", g.get("architecture", "skip") == "skip"),
                                 ("use_noise", g.get("use_noise", True) is True),
                                 ("resample_filter", list(g.get("resample_filter", RESAMPLE_FILTER)) == RESAMPLE_FILTER),
                                 ("img_channels", g.get("img_channels") == 3)) if not ok and k in g}
    mk = dict(g.get("mapping_kwargs") or {})
    _check_kwargs("Generator mapping_kwargs", mk, {"num_layers", "lr_multiplier", "layer_features", "activation",
                                                   "w_avg_beta", "embed_features"})
    for k, default in (("lr_multiplier", 0.01), ("activation", "lrelu"), ("w_avg_beta", 0.998)):
        if mk.get(k, default) != default:
            bad[f"mapping_kwargs.{k}"] = mk[k]
    if mk.get("layer_features") not in (None, g["w_dim"]):
        bad["mapping_kwargs.layer_features"] = mk["layer_features"]
    if bad:
        raise _unsupported("Generator", bad)
    axis = time_axis(g["cond_args"])
    res = int(g["img_resolution"])
    cfg = ModelConfig(resolution=res, channel_base=int(g.get("channel_base", 32768)),
                      channel_max=int(g.get("channel_max", 512)), z_dim=int(g["z_dim"]), w_dim=int(g["w_dim"]),
                      mapping_layers=int(mk.get("num_layers", 8)), time_lr=float(g["cond_args"].get("lr", 1)),
                      conv_clamp=_clamp(g.get("conv_clamp", 256)), img_channels=3, time_phase="float32")
    rect = tuple(int(v) for v in g.get("out_rect") or (0, 0, res, res))
    if len(rect) != 4 or not (0 <= rect[0] < rect[2] <= res and 0 <= rect[1] < rect[3] <= res):
        raise ConfigError(f"Generator out_rect={list(rect)} is not a rectangle inside {res}x{res}")
    if d_kwargs is not None:
        cfg = _with_discriminator(cfg, d_kwargs, axis)
    return cfg, axis, rect  # type: ignore[return-value]


def _with_discriminator(cfg: ModelConfig, d_kwargs: dict, axis: TimeAxis) -> ModelConfig:
    _check_kwargs("Discriminator", d_kwargs, D_KWARGS)
    d = dict(d_kwargs)
    bad: dict[str, Any] = {}
    for k, want in (("architecture", "resnet"), ("img_resolution", cfg.resolution), ("img_channels", 3),
                    ("channel_base", cfg.channel_base), ("channel_max", cfg.channel_max)):
        if k in d and d[k] != want:
            bad[k] = d[k]
    if _clamp(d.get("conv_clamp", 256)) != cfg.conv_clamp:
        bad["conv_clamp"] = d.get("conv_clamp")  # one clamp for G and D in vidgen
    bk = dict(d.get("block_kwargs") or {})
    _check_kwargs("Discriminator block_kwargs", bk, {"freeze_layers", "activation", "resample_filter",
                                                     "fp16_channels_last"})
    if bk.get("activation", "lrelu") != "lrelu":
        bad["block_kwargs.activation"] = bk["activation"]
    if list(bk.get("resample_filter", RESAMPLE_FILTER)) != RESAMPLE_FILTER:
        bad["block_kwargs.resample_filter"] = bk["resample_filter"]
    mk = dict(d.get("mapping_kwargs") or {})
    _check_kwargs("Discriminator mapping_kwargs", mk, {"num_layers", "lr_multiplier", "layer_features",
                                                       "activation", "embed_features"})
    if mk.get("activation", "lrelu") != "lrelu":
        bad["mapping_kwargs.activation"] = mk["activation"]
    ek = dict(d.get("epilogue_kwargs") or {})
    _check_kwargs("Discriminator epilogue_kwargs", ek, {"mbstd_group_size", "mbstd_num_channels", "activation"})
    if ek.get("mbstd_num_channels", 1) != 1:
        bad["epilogue_kwargs.mbstd_num_channels"] = ek["mbstd_num_channels"]
    if ek.get("activation", "lrelu") != "lrelu":
        bad["epilogue_kwargs.activation"] = ek["activation"]
    cmap = int(d.get("cmap_dim") or 0)
    for k in ("layer_features", "embed_features"):
        if mk.get(k) not in (None, cmap or min(cfg.channel_base // 4, cfg.channel_max)):
            bad[f"mapping_kwargs.{k}"] = mk[k]
    if bad:
        raise _unsupported("Discriminator", bad)
    d_axis = time_axis(d["cond_args"])
    if d_axis != axis:
        raise ConfigError(f"G and D disagree on the time axis: {axis} vs {d_axis}")
    group = ek.get("mbstd_group_size", 4)
    return ModelConfig(**{**cfg.__dict__, "cond_mlp_layers": int(mk.get("num_layers", 8)), "cmap_dim": cmap,
                          "cond_lr": float(mk.get("lr_multiplier", 0.01)),
                          "mbstd_group": 0 if group is None else int(group)})


# --- tensors ---------------------------------------------------------------------------------------
def _expected_filter() -> torch.Tensor:
    f = torch.tensor(RESAMPLE_FILTER, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _take(src: dict[str, torch.Tensor], out: Converted, mapping: list[tuple[str, str]]) -> None:
    for s, d in mapping:
        if s in src:
            out.state[d] = src[s]
            out.used.append(s)


def _finish(src: dict[str, torch.Tensor], out: Converted, where: str) -> Converted:
    ref = _expected_filter()
    for k, v in src.items():
        if k.endswith("resample_filter") and k not in out.used:
            if v.shape != ref.shape or not torch.allclose(v.float(), ref, atol=1e-7):
                raise ConfigError(f"{where}: {k} is not the [1, 3, 3, 1] filter vidgen resamples with")
            out.checked.append(k)
    done = set(out.used) | set(out.checked)
    out.left_over = [k for k in src if k not in done]
    return out


def convert_generator(src: dict[str, torch.Tensor], resolution: int) -> Converted:
    """Reference Generator tensors (``synthesis.b{res}.conv0|conv1|torgb...``, ``mapping.fc{i}``,
    ``mapping.w_avg``) -> vidgen Generator state-dict names (without the vidgen-only buffers
    ``out_rect`` and ``time.*``, which come from the constructor arguments)."""
    out = Converted({})
    pairs = [("synthesis.b4.const", "const"), ("mapping.w_avg", "w_avg")]
    for k in src:
        m = re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", k)
        if m:
            pairs.append((k, f"mapping.layers.{m[1]}.{m[2]}"))
    conv, block = 0, 0
    res_list = [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]
    layer_keys = {"weight": "weight", "bias": "bias", "noise_strength": "noise_strength",
                  "noise_const": "noise_const", "scaled_styles.w_affine.weight": "style.affine.weight",
                  "scaled_styles.w_affine.bias": "style.affine.bias",
                  "scaled_styles.c_to_scales.weight": "style.time.weight"}
    for res in res_list:
        for name in (("conv1",) if res == 4 else ("conv0", "conv1")):
            pairs += [(f"synthesis.b{res}.{name}.{a}", f"convs.{conv}.{b}") for a, b in layer_keys.items()]
            conv += 1
        pairs += [(f"synthesis.b{res}.torgb.{a}", f"torgbs.{block}.{b}") for a, b in layer_keys.items()
                  if not a.startswith("noise")]
        block += 1
    _take(src, out, pairs)
    return _finish(src, out, "Generator")


def convert_discriminator(src: dict[str, torch.Tensor], resolution: int) -> Converted:
    """Reference Discriminator tensors (``b{res}.fromrgb|conv0|conv1|skip``, ``mapping.embed``,
    ``mapping.fc{i}``, ``b4.conv|fc|out``) -> vidgen Discriminator state-dict names."""
    out = Converted({})
    pairs = [(f"b4.{n}.{p}", f"{n}.{p}") for n in ("conv", "fc", "out") for p in ("weight", "bias")]
    pairs += [(f"mapping.embed.{p}", f"embed.{p}") for p in ("weight", "bias")]
    for k in src:
        m = re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", k)
        if m:
            pairs.append((k, f"cond_mlp.layers.{m[1]}.{m[2]}"))
    res_list = [2 ** i for i in range(int(math.log2(resolution)), 2, -1)]
    for i, res in enumerate(res_list):
        pairs += [(f"b{res}.{n}.{p}", f"blocks.{i}.{n}.{p}") for n in ("fromrgb", "conv0", "conv1", "skip")
                  for p in ("weight", "bias")]
    _take(src, out, pairs)
    return _finish(src, out, "Discriminator")
