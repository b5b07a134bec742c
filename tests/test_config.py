from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pytest

from vidgen.config import config_from_dict, config_to_dict, dump_yaml, load_config
from vidgen.errors import ConfigError
from vidgen.train.recipe import EMASpec, EngineConfig


@dataclass
class Data:
    path: str = "synthetic"
    size: tuple[int, int] = (16, 16)
    frames: Optional[int] = None
    scales: list[float] = field(default_factory=lambda: [1.0])


@dataclass
class Cfg:
    engine: EngineConfig = field(default_factory=EngineConfig)
    data: Data = field(default_factory=Data)
    ema: EMASpec = field(default_factory=EMASpec)
    lr: float = 1e-3
    flip: bool = True


def test_defaults_then_yaml_then_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("engine: {steps: 50, batch: 4}\ndata: {size: [8, 12]}\nlr: 2\n")
    cfg = load_config(Cfg, preset, ["engine.steps=7", "data.frames=3", "ema.sigma_rels=[0.05,0.1,0.2]",
                                    "flip=false", "data.path=123"])
    assert cfg.engine.steps == 7 and cfg.engine.batch == 4 and cfg.engine.accum == 1
    assert cfg.data.size == (8, 12) and cfg.data.frames == 3 and cfg.lr == 2.0 and isinstance(cfg.lr, float)
    assert cfg.ema.sigma_rels == (0.05, 0.1, 0.2) and cfg.flip is False
    assert cfg.data.path == "123"  # string fields keep the raw text
    assert load_config(Cfg, None, ["data.frames=null"]).data.frames is None


def test_round_trip_through_dict_and_yaml(tmp_path):
    cfg = load_config(Cfg, None, ["engine.seed=3", "data.scales=[0.5,2]"])
    assert config_from_dict(Cfg, config_to_dict(cfg)) == cfg
    text = dump_yaml(cfg, tmp_path / "c.yaml")
    assert load_config(Cfg, tmp_path / "c.yaml") == cfg and (tmp_path / "c.yaml").read_text() == text
    dump_yaml(load_config(Cfg, None, ["engine.seed=4"]), tmp_path / "c.yaml")  # replaced atomically
    assert load_config(Cfg, tmp_path / "c.yaml").engine.seed == 4
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]  # no temporary file left beside it


def test_misspelled_key_names_the_closest_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(Cfg, None, ["engine.stesp=5"])
    assert "'engine.stesp'" in str(exc.value) and "did you mean 'engine.steps'" in str(exc.value)
    preset = tmp_path / "bad.yaml"
    preset.write_text("engine:\n  chekpoint_every: 10\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Cfg, preset)
    assert str(preset) in str(exc.value) and "'engine.checkpoint_every'" in str(exc.value)


@pytest.mark.parametrize("override, message", [
    ("engine.steps=ten", "not a valid int"),
    ("engine.steps=1.5", "not a valid int"),
    ("lr=fast", "not a valid float"),
    ("flip=1", "not a valid bool"),
    ("data.size=[1,2,3]", "expected 2 values"),
    ("data.size.x=1", "has no sub-keys"),
    ("steps", "key=value"),
])
def test_wrong_types_are_rejected_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Cfg, None, [override])


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Cfg, tmp_path / "list.yaml")


def test_cli_prints_the_misspelled_key_without_traceback(capsys):
    from vidgen.cli import main
    code = main(["train", "toygan", "--data", "synthetic", "--set", "engine.stpes=3", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'engine.steps'" in err and "Traceback" not in err


def test_cli_dry_run_prints_config_and_parameter_counts(capsys):
    from vidgen.cli import main
    from vidgen.train.toy import ToyGANConfig, ToyGANRecipe
    import torch
    assert main(["train", "toygan", "--config", "configs/toygan-tiny.yaml", "--data", "synthetic",
                 "--set", "engine.steps=3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    cfg = load_config(ToyGANConfig, "configs/toygan-tiny.yaml")
    g = sum(p.numel() for p in ToyGANRecipe(cfg, torch.device("cpu")).G.parameters())
    assert "steps: 3" in out and f"{g:,d}" in out and "total" in out


def test_moved_keys_name_their_new_place_and_stored_configs_are_moved():
    """Every family has top-level `ema:` and `augment:` sections; the old places are errors that
    name the new key, in YAML files and in --set, and old stored configs still load."""
    from timelapse.recipe import TimelapseConfig
    from vidgen.lvg.recipe import LowResConfig
    from vidgen.lvg.recipe_superres import SuperResConfig
    from vidgen.train.toy import ToyGANConfig

    with pytest.raises(ConfigError, match="'loss.ema_kimg' has moved to 'ema.halflife_kimg'"):
        load_config(TimelapseConfig, None, ["loss.ema_kimg=3"])
    with pytest.raises(ConfigError, match="'loss.ema.beta' has moved to 'ema.beta'"):
        load_config(LowResConfig, None, ["loss.ema.beta=0.5"])
    with pytest.raises(ConfigError, match="'augment.ada_pipeline' has moved to 'augment.pipeline'"):
        load_config(SuperResConfig, None, ["augment.ada_pipeline=bg"])
    old = {"loss": {"augment": "off", "ada_kimg": 7.0, "ema_kimg": 2.5}}
    cfg = config_from_dict(TimelapseConfig, old)
    assert cfg.augment.kind == "none" and cfg.augment.speed_kimg == 7.0 and cfg.ema.halflife_kimg == 2.5
    assert cfg.ema.kind == "halflife"  # the family default fills what the old config did not say
    toy = config_from_dict(ToyGANConfig, {"model": {"ema": {"kind": "power", "snapshot_every": 3}}})
    assert toy.ema.kind == "power" and toy.ema.snapshot_every == 3
    low = config_from_dict(LowResConfig, {"loss": {"augment": {"xflip": 0.25}, "ema": {"beta": 0.5}}})
    assert low.augment.kind == "diffaug" and low.augment.xflip == 0.25 and low.ema.beta == 0.5


def test_every_family_config_has_the_same_ema_and_augment_sections():
    import dataclasses

    from timelapse.recipe import TimelapseConfig
    from vidgen.diffusion.recipe import DiffusionConfig
    from vidgen.lvg.recipe import LowResConfig
    from vidgen.lvg.recipe_superres import SuperResConfig
    from vidgen.train.recipe import AugmentSpec, EMASpec
    from vidgen.train.toy import ToyGANConfig

    for cls in (TimelapseConfig, DiffusionConfig, LowResConfig, SuperResConfig, ToyGANConfig):
        cfg = cls()
        assert isinstance(cfg.ema, EMASpec) and isinstance(cfg.augment, AugmentSpec), cls
        assert [f.name for f in dataclasses.fields(cls)][:2] == ["engine", "data"], cls
