"""Published time-lapse GAN networks -> vidgen's (timelapse/convert.py): full-size layouts of
the reference release, constructor arguments, refusals."""

import json

import pytest
import torch

from vidgen.errors import ConfigError
from timelapse.convert import convert_discriminator, convert_generator, model_config, time_noise
from timelapse.model import Discriminator, Generator
from vidgen.nn import count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def paper_shapes(shared_data):
    return json.loads((shared_data / "reference/timelapse/paper_shapes.json").read_text())["networks"]


FILTER = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64


def _kwargs(constructor: dict) -> dict:
    return {k: v for k, v in constructor.items() if k != "class_name"}


@pytest.mark.parametrize("res", [256, 1024])
def test_paper_layouts_import_every_key(paper_shapes, res):
    """Every tensor of the published layouts lands in a vidgen network built from the
    constructor arguments, none is left over, and the parameter counts are the reference's."""
    g_net, d_net = paper_shapes[f"G_{res}"], paper_shapes[f"D_{res}"]
    cfg, axis, rect = model_config(_kwargs(g_net["constructor"]), _kwargs(d_net["constructor"]))
    assert (cfg.resolution, cfg.channel_base, cfg.channel_max, cfg.mapping_layers, cfg.cond_mlp_layers) == \
        (res, 32768, 512, 2, 8)
    assert axis.num_days == 2225 and axis.factors == ("trend", "year", "day")
    for spec, convert, build in ((g_net, convert_generator, lambda: Generator(cfg, axis, rect)),
                                 (d_net, convert_discriminator, lambda: Discriminator(cfg, axis))):
        # shapes only (meta tensors), except the constant filters a real file holds
        src = {k: FILTER if k.endswith("resample_filter") else torch.zeros(shape, device="meta")
               for k, shape, _, _ in spec["state_dict"]}
        out = convert(src, res)
        assert out.left_over == []
        assert len(out.used) + len(out.checked) == len(src)
        assert all(k.endswith("resample_filter") for k in out.checked)
        with torch.device("meta"):
            net = build()
        own = net.state_dict()
        vidgen_only = {k for k in own if k not in out.state}
        assert vidgen_only <= {"out_rect", "time.freqs", "time.axis_start", "time.axis_days"}
        assert all(own[k].shape == v.shape for k, v in out.state.items())
        assert count_parameters(net) == spec["num_params"]


def test_time_noise_in_vidgen_units(paper_shapes):
    ca = paper_shapes["G_256"]["constructor"]["cond_args"]
    _, axis, _ = model_config(_kwargs(paper_shapes["G_256"]["constructor"]), None)
    noise = time_noise(ca, axis)
    # 'auto' noise of the reference: a fifth of the sequence on the trend, 4 days on the year
    assert noise.trend == pytest.approx(0.2, abs=1e-3)
    assert noise.year_days == pytest.approx(4.0, rel=1e-6)
    assert noise.day_days == 0


def test_unsupported_arguments_are_named(paper_shapes):
    g = _kwargs(paper_shapes["G_256"]["constructor"])
    with pytest.raises(ConfigError, match="unknown constructor arguments bogus"):
        model_config({**g, "bogus": 1}, None)
    with pytest.raises(ConfigError, match="architecture='resnet'"):
        model_config({**g, "architecture": "resnet"}, None)
    with pytest.raises(ConfigError, match="type='concat'"):
        model_config({**g, "cond_args": {**g["cond_args"], "type": "concat"}}, None)
    with pytest.raises(ConfigError, match="f_manual"):
        model_config({**g, "cond_args": {**g["cond_args"], "f_manual": [52.0, 2225]}}, None)
    d = _kwargs(paper_shapes["D_256"]["constructor"])
    with pytest.raises(ConfigError, match="mbstd_num_channels=2"):
        model_config(g, {**d, "epilogue_kwargs": {"mbstd_group_size": 4, "mbstd_num_channels": 2}})


def test_a_different_resampling_filter_is_refused():
    src = {"synthesis.b4.const": torch.zeros(8, 4, 4), "synthesis.b4.resample_filter": torch.full((4, 4), 1 / 16)}
    with pytest.raises(ConfigError, match=r"synthesis.b4.resample_filter is not the \[1, 3, 3, 1\] filter"):
        convert_generator(src, 4)
    out = convert_generator({**src, "synthesis.b4.resample_filter": FILTER, "extra.tensor": torch.zeros(1)}, 4)
    assert out.used == ["synthesis.b4.const"] and out.left_over == ["extra.tensor"]
