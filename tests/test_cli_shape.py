"""One CLI shape: every family group answers the same verbs, and `vidgen timelapse` is the
`timelapse` script."""

from __future__ import annotations

import argparse

import pytest

from vidgen import registry
from vidgen.cli import build_parser


def _verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_family_group_has_train_eval_and_import_where_the_family_can():
    top = _verbs(build_parser())
    groups = {f.group for f in registry.families() if f.group}
    assert {"lvg", "timelapse", "diffusion"} <= groups
    for group in groups:
        verbs = _verbs(top[group])
        fams = [f for f in registry.families() if f.group == group]
        assert "eval" in verbs, group
        assert ("train" in verbs) == any(f.recipe for f in fams), group
        assert ("import" in verbs) == any(f.importer for f in fams), group
        # and a way to make samples: generate, render or sample
        assert {"generate", "render", "sample"} & set(verbs), group


def test_group_verbs_parse_like_the_generic_commands():
    parser = build_parser()
    a = parser.parse_args(["lvg", "train", "lvg-lowres", "--config", "c.yaml", "--set", "engine.steps=3"])
    b = parser.parse_args(["train", "lvg-lowres", "--config", "c.yaml", "--set", "engine.steps=3"])
    assert a.func is b.func and a.family == b.family == "lvg-lowres" and a.overrides == b.overrides
    c = parser.parse_args(["diffusion", "eval", "--real", "r", "--fake", "f", "--out", "o"])
    d = parser.parse_args(["eval", "--real", "r", "--fake", "f", "--out", "o"])
    assert c.func is d.func and (c.real, c.fake, c.out) == (d.real, d.fake, d.out)
    e = parser.parse_args(["diffusion", "import", "x.pkl", "--out", "run"])
    assert e.family == "diffusion" and e.import_families == ["diffusion"]
    with pytest.raises(SystemExit):  # a group's train takes only that group's families
        parser.parse_args(["lvg", "train", "timelapse"])


def test_vidgen_timelapse_is_the_timelapse_script():
    from timelapse.cli import build_parser as timelapse_parser

    mine = _verbs(_verbs(build_parser())["timelapse"])
    theirs = _verbs(timelapse_parser())
    assert set(theirs) <= set(mine)
    for name, p in theirs.items():
        assert [a.dest for a in p._actions] == [a.dest for a in mine[name]._actions], name
    args = build_parser().parse_args(["timelapse", "render", "sweep", "-c", "RUN", "--factor", "day"])
    assert args.mode == "sweep" and args.factor == "day" and args.func.__name__ == "run_render"
