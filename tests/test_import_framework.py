"""`vidgen import` framework: importer choice, the run-folder writer, --resume and --init on
imported runs, the one checkpoint-to-network loader. A published-checkpoint stand-in for the
toy GAN (a plain pickle of state dicts) exercises it without any real family's converter."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidgen import registry
from vidgen.config import config_from_dict, load_config
from vidgen.errors import VidgenError
from vidgen.train import checkpoint as ckpt
from vidgen.train.dist import DistInfo
from vidgen.train.engine import Run
from vidgen.train.published import ImportedRun, UnsupportedCheckpoint, load_and_convert, write_run
from vidgen.train.toy import ToyGANConfig, ToyGANRecipe

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
TOY_SET = ["engine.steps=9", "engine.batch=4", "engine.checkpoint_every=100", "model.channels=8", "model.z_dim=8",
           "data.resolution=8", "data.num=16", "engine.log_every=100"]


class ToyImporter:
    """Reads {"format": "toy-published", "G": state_dict, ...} files for the toy GAN."""

    allow_stubs = ()

    def detect(self, tree) -> bool:
        return isinstance(tree, dict) and tree.get("format") == "toy-published"

    def convert(self, tree, source) -> ImportedRun:
        nets = {k: tree[k] for k in ("G", "D", "G_ema") if k in tree}
        opts = {}
        for k in ("G", "D"):
            if f"{k}_opt" in tree:  # reference optimisers index parameters by position
                names = [f"{k}.{n}" for n in tree[f"{k}_param_names"]]
                opts[k] = {"state": {names[i]: st for i, st in tree[f"{k}_opt"]["state"].items()}}
        return ImportedRun(family="toygan", config={"model": {"channels": 8, "z_dim": 8},
                                                    "data": {"resolution": 8, "num": 16}},
                           networks=nets, optimizers=opts, step=tree.get("step", 0), nimg=tree.get("nimg", 0),
                           resolution="8x8", report=[f"read {', '.join(nets)}"])


TOY_IMPORTER = ToyImporter()


class EverythingImporter(ToyImporter):
    def detect(self, tree) -> bool:
        return True


EVERYTHING_IMPORTER = EverythingImporter()


@pytest.fixture
def toy_importer(monkeypatch):
    fam = registry.get("toygan")
    monkeypatch.setitem(registry._FAMILIES, "toygan", dataclasses.replace(fam, importer=f"{__name__}:TOY_IMPORTER"))


def _toy_cfg(tmp_path: Path, *extra: str) -> ToyGANConfig:
    return load_config(ToyGANConfig, None, TOY_SET + [f"engine.out_dir={tmp_path / 'runs'}", *extra])


def _published(tmp_path: Path, with_train: bool = True, name: str = "toy.pkl") -> tuple[Path, dict]:
    """A 'published' toy checkpoint: networks of a toy recipe with random weights, Adam moments."""
    torch.manual_seed(3)
    recipe = ToyGANRecipe(_toy_cfg(tmp_path), torch.device("cpu"))
    G, D = recipe.G, recipe.D
    for p in list(G.parameters()) + list(D.parameters()):
        p.data.normal_()
    G_ema = {k: v + 0.5 for k, v in G.state_dict().items()}
    tree = {"format": "toy-published", "G_ema": G_ema, "step": 7, "nimg": 28}
    if with_train:
        tree.update(G=G.state_dict(), D=D.state_dict())
        for k, net in (("G", G), ("D", D)):
            names = [n for n, _ in net.named_parameters()]
            tree[f"{k}_param_names"] = names
            tree[f"{k}_opt"] = {"state": {i: {"step": torch.tensor(7.0), "exp_avg": torch.randn_like(p),
                                              "exp_avg_sq": torch.rand_like(p)}
                                          for i, (_, p) in enumerate(net.named_parameters())}}
    path = tmp_path / name
    path.write_bytes(pickle.dumps(tree, protocol=4))
    return path, tree


def test_import_writes_a_checkpoint_every_reader_takes(tmp_path, toy_importer):
    path, tree = _published(tmp_path)
    run = load_and_convert(path)
    written = write_run(run, tmp_path / "imported", path)
    assert written.resumable
    c = ckpt.read_checkpoint(tmp_path / "imported")  # checksums verified
    assert c.family == "toygan" and c.step == 7 and c.nimg == 28
    assert set(c.network_names) == {"G", "D", "G_ema"}
    for name in ("G", "D", "G_ema"):
        sd = c.network_state(name)
        assert all(torch.equal(sd[k], tree[name][k]) for k in tree[name])
    meta = json.loads((tmp_path / "imported" / "import.json").read_text())
    assert meta["family"] == "toygan" and len(meta["sha256"]) == 64 and meta["report"] == ["read G, D, G_ema"]
    assert (tmp_path / "imported" / "config.yaml").is_file()
    assert written.parameters["G"] == sum(p.numel() for p in ToyGANRecipe(_toy_cfg(tmp_path), "cpu").G.parameters())
    G = ckpt.load_network(c, ("G_ema", "G"), lambda cfg: ToyGANRecipe(config_from_dict(ToyGANConfig, cfg), "cpu").G)
    assert torch.equal(G.state_dict()["fc.weight"], tree["G_ema"]["fc.weight"])


def test_resume_continues_an_imported_run(tmp_path, toy_importer):
    path, tree = _published(tmp_path)
    write_run(load_and_convert(path), tmp_path / "imported", path)
    run = Run(ToyGANRecipe, _toy_cfg(tmp_path), str(tmp_path / "imported"), DistInfo())
    try:
        assert run.tr.step == 7 and run.tr.nimg == 28
        assert torch.equal(run.tr.nets["D"].state_dict()["head.weight"], tree["D"]["head.weight"])
        opt = run.tr.opts["G"]
        params = [p for g in opt.param_groups for p in g["params"]]
        for i, (name, _) in enumerate(run.tr.nets["G"].named_parameters()):
            src = tree["G_opt"]["state"][tree["G_param_names"].index(name)]
            assert torch.equal(opt.state[params[i]]["exp_avg"], src["exp_avg"]), name
        run.step()
        run.step()
        assert run.done
    finally:
        run.close()
    assert ckpt.read_checkpoint(tmp_path / "imported").step == 9


def test_init_starts_a_new_run_from_an_ema_only_import(tmp_path, toy_importer, capsys):
    path, tree = _published(tmp_path, with_train=False)
    written = write_run(load_and_convert(path), tmp_path / "imported", path)
    assert not written.resumable and any("--init" in line for line in written.report)
    with pytest.raises(ckpt.CheckpointError, match="cannot be resumed; start a new run from it with --init"):
        Run(ToyGANRecipe, _toy_cfg(tmp_path), str(tmp_path / "imported"), DistInfo())
    run = Run(ToyGANRecipe, _toy_cfg(tmp_path, "model.lr_g=0.0005"), None, DistInfo(), init=str(tmp_path / "imported"))
    try:
        assert run.tr.step == 0 and run.run_dir != tmp_path / "imported"
        for name in ("G", "G_ema"):  # G starts from the published G_ema
            net = run.tr.all_networks()[name]
            assert all(torch.equal(v, tree["G_ema"][k]) for k, v in net.state_dict().items())
        assert run.tr.opts["G"].param_groups[0]["lr"] == pytest.approx(0.0005)
        err = capsys.readouterr().err
        assert "G: from G_ema" in err and "D: not in" in err and "freshly initialised" in err
    finally:
        run.close()


def test_init_takes_compatible_optimizer_moments_and_this_runs_lr(tmp_path, toy_importer):
    path, tree = _published(tmp_path)
    write_run(load_and_convert(path), tmp_path / "imported", path)
    c = ckpt.read_checkpoint(tmp_path / "imported")
    run = Run(ToyGANRecipe, _toy_cfg(tmp_path, "model.lr_d=0.0001"), None, DistInfo())
    try:
        notes = run.tr.init_from(c)
        assert "optimizer D: moments of" in " ".join(notes)
        opt = run.tr.opts["D"]
        assert opt.param_groups[0]["lr"] == pytest.approx(0.0001 * 4 / 5)  # this run's, with lazy-R1 factor
        first = opt.param_groups[0]["params"][0]
        assert torch.equal(opt.state[first]["exp_avg"], tree["D_opt"]["state"][0]["exp_avg"])
    finally:
        run.close()
    # a checkpoint whose moments do not fit (other widths) is ignored, not forced in
    other = Run(ToyGANRecipe, _toy_cfg(tmp_path / "o", "model.channels=4"), None, DistInfo())
    try:
        with pytest.raises(ckpt.CheckpointError, match="do not fit the network"):
            other.tr.init_from(c)
        assert other.tr._init_optimizer(other.tr.opts["D"], c.state["optimizers"]["D"], c.train_tensors()) \
            .startswith("fresh")
    finally:
        other.close()


def test_writer_checks_every_key_and_shape(tmp_path, toy_importer):
    path, tree = _published(tmp_path)
    run = load_and_convert(path)
    bad = dataclasses.replace(run, networks={**run.networks, "D": {k: v for k, v in run.networks["D"].items()
                                                                   if k != "head.bias"}})
    bad.networks["G"] = {**run.networks["G"], "fc.weight": torch.zeros(3, 3), "extra.weight": torch.zeros(1)}
    bad.networks["H"] = {}
    with pytest.raises(UnsupportedCheckpoint) as info:
        write_run(bad, tmp_path / "out", path)
    msg = str(info.value)
    for part in ("D: 1 missing: head.bias", "G: 1 unexpected: extra.weight", "fc.weight (3, 3) vs", "network 'H'"):
        assert part in msg
    assert "\n" not in msg and not (tmp_path / "out").exists()


def test_out_folder_is_never_overwritten(tmp_path, toy_importer):
    path, _ = _published(tmp_path)
    out = tmp_path / "busy"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(VidgenError, match="already exists and is not empty"):
        write_run(load_and_convert(path), out, path)
    assert (out / "mine.txt").read_text() == "keep"


def test_importer_choice(tmp_path, toy_importer, monkeypatch):
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"weights": torch.zeros(2)}, protocol=4))
    with pytest.raises(UnsupportedCheckpoint, match="no model family recognises this pickle.*top-level keys weights"):
        load_and_convert(plain)
    with pytest.raises(UnsupportedCheckpoint, match="is not a toygan checkpoint"):
        load_and_convert(plain, "toygan")
    fam = registry.get("toygan")
    monkeypatch.setitem(registry._FAMILIES, "toy-plain", dataclasses.replace(fam, name="toy-plain", importer=""))
    with pytest.raises(VidgenError, match="'toy-plain' cannot import published checkpoints"):
        load_and_convert(plain, "toy-plain")
    monkeypatch.setitem(registry._FAMILIES, "toygan-copy",
                        dataclasses.replace(fam, name="toygan-copy", importer=f"{__name__}:EVERYTHING_IMPORTER"))
    path, _ = _published(tmp_path)
    with pytest.raises(UnsupportedCheckpoint, match=r"several families \(toygan, toygan-copy\); pass --family"):
        load_and_convert(path)
    assert load_and_convert(path, "toygan").family == "toygan"


def test_load_network_names_what_does_not_fit(tmp_path, toy_importer):
    path, _ = _published(tmp_path)
    write_run(load_and_convert(path), tmp_path / "imported", path)
    wider = _toy_cfg(tmp_path, "model.channels=16")
    with pytest.raises(ckpt.CheckpointError, match=r"the G_ema weights do not fit .*wrong shape fc.weight"):
        ckpt.load_network(tmp_path / "imported", ("G_ema", "G"), lambda cfg: ToyGANRecipe(wider, "cpu").G)
    with pytest.raises(ckpt.CheckpointError, match="has none of the networks X, Y"):
        ckpt.load_network(tmp_path / "imported", ("X", "Y"), lambda cfg: ToyGANRecipe(wider, "cpu").G)


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidgen", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_refuses_a_malicious_pickle_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    payload = tmp_path / "evil.pkl"
    cmd = f"touch {marker}"
    payload.write_bytes(b"\x80\x04cos\nsystem\n(X" + len(cmd).to_bytes(4, "little") + cmd.encode() + b"tR.")
    out = _cli("import", str(payload), "--out", str(tmp_path / "run"))
    assert out.returncode == 2
    assert out.stderr == f"vidgen: error: {payload}: refused global 'os.system'\n"
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("content,what", [(b"", "is empty"), (b"GIF89a....", "is not a pickle"),
                                          (pickle.dumps({"a": torch.ones(3)}, protocol=4)[:40], "truncated")])
def test_cli_bad_files_in_one_line(tmp_path, content, what):
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    out = _cli("import", str(path), "--out", str(tmp_path / "run"))
    assert out.returncode == 2 and out.stderr.startswith("vidgen: error: ") and what in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_cli_unknown_network_in_one_line(tmp_path):
    path = tmp_path / "net.pkl"
    path.write_bytes(pickle.dumps(torch.nn.Linear(2, 3), protocol=4))
    out = _cli("import", str(path), "--out", str(tmp_path / "run"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "no model family recognises this pickle (it holds objects of classes Linear)" in out.stderr
