from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import pytest

from vidgen.config import (AllowInf, NonNegativeInt, PositiveFloat, PositiveInt, UnitFloat, config_from_dict,
                           config_to_dict, dump_yaml, load_config)
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


# --- ranges, finiteness, cross-field checks, scientific notation --------------------------------
@dataclass
class Ranged:
    count: PositiveInt = 1
    workers: NonNegativeInt = 0
    rate: PositiveFloat = 0.1
    p: UnitFloat = 0.5
    gain: float = 1.0
    top: Annotated[float, AllowInf] = math.inf
    maybe: Optional[PositiveInt] = None
    pair: tuple[PositiveInt, PositiveInt] = (1, 2)

    def check(self) -> None:
        if self.workers > self.count:
            raise ConfigError(f"workers ({self.workers}) must not exceed count ({self.count})")


@pytest.mark.parametrize("override, message", [
    ("count=0", "'count': 0 is out of range (must be > 0)"),
    ("count=-3", "'count': -3 is out of range"),
    ("workers=-1", "'workers': -1 is out of range (must be >= 0)"),
    ("rate=0", "'rate': 0.0 is out of range (must be > 0)"),
    ("p=1.5", "'p': 1.5 is out of range (must be >= 0 and <= 1)"),
    ("gain=.nan", "'gain': nan is not a finite number"),
    ("gain=.inf", "'gain': inf is not a finite number"),
    ("rate=-.inf", "not a finite number"),
    ("top=.nan", "'top': nan is not a finite number"),
    ("maybe=0", "'maybe'"),
    ("pair=[1,0]", "'pair[1]': 0 is out of range"),
    ("workers=5", "workers (5) must not exceed count (1)"),
])
def test_ranges_and_checks_are_enforced(override, message):
    with pytest.raises(ConfigError) as exc:
        load_config(Ranged, None, [override])
    assert message in str(exc.value)


def test_values_inside_the_ranges_pass_and_checks_see_the_final_config(tmp_path):
    cfg = load_config(Ranged, None, ["top=.inf", "p=1", "maybe=null", "workers=5", "count=8", "gain=-2"])
    assert cfg.top == math.inf and cfg.p == 1.0 and cfg.maybe is None and cfg.workers == 5 and cfg.gain == -2.0
    # a cross-field check runs once, after every override: workers=5 before count=8 is fine
    with pytest.raises(ConfigError, match="must not exceed"):
        config_from_dict(Ranged, {"workers": 2})  # dicts (checkpoints' configs) are checked too
    preset = tmp_path / "r.yaml"
    preset.write_text("count: 0\n")
    with pytest.raises(ConfigError, match=f"{preset}: config key 'count'"):
        load_config(Ranged, preset)


def test_scientific_notation_reads_as_a_float(tmp_path):
    cfg = load_config(Cfg, None, ["lr=1e6"])
    assert cfg.lr == 1e6 and isinstance(cfg.lr, float)
    assert load_config(Cfg, None, ["lr=3e-4"]).lr == 3e-4 and load_config(Cfg, None, ["lr=-2E+3"]).lr == -2000.0
    preset = tmp_path / "p.yaml"
    preset.write_text("lr: 1e-5\ndata: {scales: [1e0, 2.5e-1]}\n")
    cfg = load_config(Cfg, preset)
    assert cfg.lr == 1e-5 and cfg.data.scales == [1.0, 0.25]
    assert load_config(Cfg, None, ["data.path=1e6"]).data.path == "1e6"  # a string field keeps the text
    assert load_config(Cfg, None, ["engine.steps=1e3"]).engine.steps == 1000  # a whole float is an int
    with pytest.raises(ConfigError, match="not a valid int"):
        load_config(Cfg, None, ["engine.steps=1.5e0"])


PRESETS = {"toygan-tiny.yaml": "toygan", "lvg/lowres-": "lvg-lowres", "lvg/superres-": "lvg-superres",
           "diffusion/": "diffusion", "timelapse/": "timelapse", "sg3/": "sg3", "stylegan-t/": "stylegan-t"}


def test_every_family_default_and_preset_passes_its_own_checks():
    from vidgen import registry
    from vidgen.families import load_families
    load_families()
    root = Path(__file__).resolve().parents[1] / "configs"
    seen = set()
    for path in sorted(root.rglob("*.yaml")):
        rel = str(path.relative_to(root))
        family = next(f for prefix, f in PRESETS.items() if rel.startswith(prefix))
        cls = registry.recipe_class(family).config_class
        cfg = load_config(cls, path)
        # as a checkpoint stores it (JSON; an infinite default becomes Infinity) and reads it back
        assert config_from_dict(cls, json.loads(json.dumps(config_to_dict(cfg)))) == cfg
        seen.add(family)
    assert seen == set(PRESETS.values())


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
