"""The code-free pickle loader: every reference pickle reads back as data, nothing in a pickle
ever runs, and bad files give one-line errors."""

from __future__ import annotations

import builtins  # noqa: F401 (named by a payload)
import hashlib
import importlib
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from vidgen import safe_pickle as sp

ROOT = Path(__file__).resolve().parents[1]

# Globals of the StyleGAN-T dill snapshot (its README): read as inert records, never imported.
STYLEGAN_T_STUBS = ("networks.*", "open_clip.*", "timm.*", "torchvision.transforms.*", "dill._dill", "dill._dill.*",
                    "builtins.getattr", "builtins.setattr", "builtins.__dict__", "_functools.reduce", "_operator.or_",
                    "_frozen_importlib.ModuleSpec", "_frozen_importlib_external.SourceFileLoader", "torch.Tensor",
                    "torch.nn.utils.spectral_norm.T_module", "typing.Any", "typing.TypeVar")
SRES_TRAIN_STUBS = ("re._compile", "torch_utils.training_stats.Collector")


def _ref(shared_data: Path, folder: str) -> Path:
    path = shared_data / "reference" / folder
    if not path.is_dir():
        pytest.skip(f"reference fixtures not found at {path}")
    return path


def _jsonable(obj):
    """As config.json records it (tuples become lists)."""
    return json.loads(json.dumps(obj))


def _sd_sha256(sd: dict[str, torch.Tensor]) -> str:
    """SHA-256 over (name, raw bytes) of each tensor in state_dict order (the fixtures' digest)."""
    h = hashlib.sha256()
    for k, v in sd.items():
        h.update(k.encode())
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


# --- the reference fixtures ----------------------------------------------------------------------
@pytest.mark.parametrize("folder", ["edm", "edm2"])
def test_diffusion_pickles_give_the_reference_state_dicts(shared_data, folder):
    ref = _ref(shared_data, folder)
    info = json.loads((ref / "pickle_globals.json").read_text())
    assert len(info) >= 3
    for name, entry in info.items():
        tree = sp.load(ref / name)
        sd = sp.state_dict(tree["ema"])
        expect = entry["code_free_extraction"]
        assert len(sd) == expect["tensors"], name
        assert sorted({str(v.dtype).removeprefix("torch.") for v in sd.values()}) == expect["dtypes"], name
        assert _sd_sha256(sd) == expect["state_dict_sha256"], name
        classes = {c for c in sp.summary(tree) if c not in ("ModuleDict",)}
        assert classes >= set(entry["persistent_classes"]) - {"AugmentPipe"}, name


def test_edm_records_hold_constructor_arguments(shared_data):
    ref = _ref(shared_data, "edm")
    nets = json.loads((ref / "config.json").read_text())["nets"]
    for net in nets.values():
        tree = sp.load(ref / net["file"])
        top = tree["ema"]
        assert top.class_name == net["class_name"].rpartition(".")[2]
        assert top.init_kwargs == net["init_kwargs_in_pickle"]
        assert sp.num_params(top) == net["param_count"]
        assert top.module_src_chars > 1000 and len(top.module_src_sha256) == 64


def test_edm2_float16_tensors_and_easydict(shared_data):
    ref = _ref(shared_data, "edm2")
    tree = sp.load(ref / "edm2-tiny-cond.pkl")
    assert isinstance(tree, dict) and tree.ema is tree["ema"]  # EasyDict read as a dict
    sd = sp.state_dict(tree["ema"])
    assert {v.dtype for v in sd.values()} == {torch.float16}
    main = json.loads((ref / "config.json").read_text())["nets"]["main"]
    assert sp.num_params(tree["ema"]) == main["param_count"]
    assert any(v.float().std() > 0 for v in sd.values() if v.numel() > 1)  # real data, not zeros


def test_lvg_pickles(shared_data):
    ref = _ref(shared_data, "lvg")
    cfg = json.loads((ref / "config.json").read_text())
    ck = cfg["checkpoints"]
    for name in ("lres_G_ema.pkl", "sres_G_ema.pkl"):
        G = sp.load(ref / name)
        assert isinstance(G, sp.PersistentObject) and G.class_name == "VideoGenerator"
        assert sp.num_params(G) == ck[name]["num_params"], name
        for path, expect in ck[name]["constructor"].items():
            rec = G if path == "<top>" else dict(sp.modules(G))[path]
            assert rec.class_name == expect["class_name"], (name, path)
            assert list(rec.init_args) == expect["init_args"], (name, path)
            assert _jsonable(rec.init_kwargs) == expect["init_kwargs"], (name, path)
        persistent = cfg["pickle_globals"][name]["persistent_classes"]
        nn_classes = {g.rpartition(".")[2] for g in cfg["pickle_globals"][name]["globals"] if g.startswith("torch.nn.")}
        counts = sp.summary(G)
        assert {k: v for k, v in counts.items() if k in persistent} == persistent, name
        assert set(counts) - set(persistent) == nn_classes, name
    train = sp.load(ref / "lres_train.pkl")
    assert set(train) == {"G_opt", "D_opt", "G", "D"}
    assert sp.num_params(train["D"]) == ck["lres_train.pkl"]["num_params_D"]
    assert sp.num_params(train["G"]) == ck["lres_G_ema.pkl"]["num_params"]
    assert train["G_opt"]["state"] == {} and len(train["G_opt"]["param_groups"]) >= 1
    g_ema = sp.state_dict(sp.load(ref / "lres_G_ema.pkl"))
    g = sp.state_dict(train["G"])
    assert list(g) == list(g_ema) and any(not torch.equal(g[k], g_ema[k]) for k in g)  # G != G_ema
    with pytest.raises(sp.UnsafePickleError, match="re._compile|Collector"):
        sp.load(ref / "sres_train.pkl")  # names two globals beyond the defaults
    sres = sp.load(ref / "sres_train.pkl", allow_stubs=SRES_TRAIN_STUBS)
    assert sp.num_params(sres["D"]) == ck["sres_train.pkl"]["num_params_D"]
    assert isinstance(sres["real_sign_collector"], sp.Stub)


@pytest.mark.parametrize("folder,file", [("stylegan3", "stylegan3-t-snapshot.pkl"),
                                         ("stylegan3", "stylegan3-r-snapshot.pkl"),
                                         ("timelapse", "network-snapshot.pkl")])
def test_stylegan_family_snapshots(shared_data, folder, file):
    ref = _ref(shared_data, folder)
    cfg = json.loads((ref / "config.json").read_text())
    entry = cfg["checkpoints"][file]
    tree = sp.load(ref / file)
    assert {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"} <= set(tree)
    for net, n in entry["num_params"].items():
        assert sp.num_params(tree[net]) == n, net
    assert _jsonable(tree["G_ema"].init_kwargs) == entry["G_constructor"]["<top>"]["init_kwargs"]
    counts = sp.summary(tree)
    assert counts == cfg["pickle_globals"][file]["persistent_classes"]
    # numpy values come back as numpy (e.g. the augmentation probability or dataset settings)
    assert isinstance(tree["training_set_kwargs"], dict)


def test_stylegan_t_dill_snapshot(shared_data):
    ref = _ref(shared_data, "stylegan-t")
    cfg = json.loads((ref / "config.json").read_text())
    entry = cfg["checkpoints"]["network-snapshot.pkl"]
    with pytest.raises(sp.UnsafePickleError, match="refused global"):
        sp.load(ref / "network-snapshot.pkl")  # dill and networks.* must be allowed explicitly
    tree = sp.load(ref / "network-snapshot.pkl", allow_stubs=STYLEGAN_T_STUBS)
    assert sp.num_params(tree["G"]) == entry["num_params"]["G"]
    assert sp.num_params(tree["D"]) == entry["num_params"]["D"]
    G = tree["G_ema"]
    assert isinstance(G, sp.Stub) and G.stub_name == "networks.generator.Generator"
    # dill's functions and types are inert records: a call of _create_function, never a function
    hooks = [r for _, r in sp.walk(tree) if r.class_name == "SpectralConv1d"]
    assert hooks
    pre = hooks[0].attr("_forward_pre_hooks")
    assert pre and all(isinstance(h, sp.Stub) for h in pre.values())
    assert not any(isinstance(v, types.FunctionType) for _, r in sp.walk(tree) for v in r.state.values())


def test_no_module_of_a_pickle_is_imported(shared_data):
    """Every reference pickle, read in a fresh process: none of the reference packages (nor dill,
    nor a persistence module) appears in sys.modules, and no file appears in the working folder."""
    ref = _ref(shared_data, "")
    code = textwrap.dedent(f"""
        import sys, glob
        before = set(sys.modules)
        from vidgen import safe_pickle as sp
        files = sorted(glob.glob({str(ref)!r} + '/**/*.pkl', recursive=True))
        stubs = {STYLEGAN_T_STUBS + SRES_TRAIN_STUBS!r}
        for f in files:
            sp.load(f, allow_stubs=stubs)
        new = set(sys.modules) - before
        bad = sorted(m for m in new if m.split('.')[0] in ('torch_utils', 'dnnlib', 'networks', 'training', 'model',
                     'dill', 'open_clip', 'timm', 'torchvision') or m.startswith('_imported_module'))
        print(len(files), bad)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    n, bad = out.stdout.split(maxsplit=1)
    assert int(n) >= 25 and bad.strip() == "[]"


# --- malicious payloads --------------------------------------------------------------------------
class _Reduce:
    """An object that pickles as ``func(*args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self):  # pickle wants the callable of a reduce to be callable; never called here
        raise AssertionError("not to be called")


class _NamingPickler(pickle._Pickler):
    """Writes types.CodeType / types.FunctionType / os.system under those names (the standard
    pickler refuses the first two, whose __qualname__ is 'code', and writes 'posix.system')."""

    NAMES = {types.CodeType: ("types", "CodeType"), types.FunctionType: ("types", "FunctionType"),
             os.system: ("os", "system")}

    def save_global(self, obj, name=None):
        if obj in self.NAMES:
            module, attr = self.NAMES[obj]
            self.write(pickle.GLOBAL + f"{module}\n{attr}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _code_payload(marker: Path) -> bytes:
    code = compile(f"open({str(marker)!r}, 'w').close()", "<payload>", "exec")
    fields = ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_nlocals", "co_stacksize", "co_flags",
              "co_code", "co_consts", "co_names", "co_varnames", "co_filename", "co_name", "co_qualname",
              "co_firstlineno", "co_linetable", "co_exceptiontable", "co_freevars", "co_cellvars")
    if sys.version_info < (3, 11):
        fields = tuple(f for f in fields if f not in ("co_qualname", "co_exceptiontable"))
    code_obj = _Reduce(types.CodeType, tuple(getattr(code, f) for f in fields))
    glob = {"__builtins__": _Reduce(importlib.import_module, ("builtins",))}
    func = _Reduce(types.FunctionType, (code_obj, glob))
    # the code object comes first in the stream, so it is the first global the loader meets
    return _dumps([code_obj, _Reduce(func, ())])


def _dumps(obj, protocol: int = 4) -> bytes:
    buf = io.BytesIO()
    _NamingPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def _legacy_blob(payload) -> bytes:
    """A legacy torch.save stream whose object pickle is ``payload`` (instead of a storage)."""
    buf = io.BytesIO()
    for part in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}, payload, []):
        buf.write(_dumps(part, protocol=2))
    return buf.getvalue()


def _payloads(marker: Path) -> dict[str, tuple[bytes, str]]:
    m = str(marker)
    touch = f"touch {m}"
    return {
        "os.system": (_dumps(_Reduce(os.system, (touch,))), "os.system"),
        "posix.system": (b"\x80\x04cposix\nsystem\n(X" + len(touch).to_bytes(4, "little") + touch.encode() + b"tR.",
                         "posix.system"),
        "builtins.eval": (pickle.dumps(_Reduce(eval, (f"open({m!r}, 'w').close()",)), protocol=4), "builtins.eval"),
        "subprocess.Popen": (pickle.dumps(_Reduce(subprocess.Popen, (["touch", m],)), protocol=4), "subprocess.Popen"),
        "types.CodeType": (_code_payload(marker), "types.CodeType"),
        "legacy storage blob": (pickle.dumps(_Reduce(torch.storage._load_from_bytes,
                                                     (_legacy_blob(_Reduce(os.system, (touch,))),)), protocol=4),
                                "os.system"),
    }


PAYLOAD_NAMES = list(_payloads(Path("x")))


def _payload(tmp_path: Path, name: str) -> tuple[Path, Path, str]:
    marker = tmp_path / "created-by-payload"
    data, refused = _payloads(marker)[name]
    path = tmp_path / "payload.pkl"
    path.write_bytes(data)
    return path, marker, refused


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_payload_is_live_under_plain_pickle(tmp_path, name):
    """The payloads are real: plain pickle.load (in a child process) creates the marker file."""
    path, marker, _ = _payload(tmp_path, name)
    code = ("import pickle, sys, time\nobj = pickle.load(open(sys.argv[1], 'rb'))\n"
            "getattr(obj, 'wait', lambda: None)()\n")
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=tmp_path, capture_output=True, timeout=120)
    assert marker.exists()


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_payload_is_refused_and_never_runs(tmp_path, name):
    path, marker, refused = _payload(tmp_path, name)
    with pytest.raises(sp.UnsafePickleError) as info:
        sp.load(path)
    msg = str(info.value)
    assert msg == f"{path}: refused global {refused!r}" + (" (inside a tensor storage blob)" if "blob" in name else "")
    assert "\n" not in msg
    assert not marker.exists()


def test_allow_stubs_never_calls_the_real_object(tmp_path):
    """Even an allowed name is only recorded: 'allowing' os.system runs nothing."""
    path, marker, _ = _payload(tmp_path, "os.system")
    obj = sp.load(path, allow_stubs=("posix.*", "os.*"))
    assert isinstance(obj, sp.Stub) and obj.stub_called and obj.stub_args == (f"touch {marker}",)
    assert not marker.exists()


# --- plain data and file errors ------------------------------------------------------------------
def test_plain_data_round_trip(tmp_path):
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    data = OrderedDict(
        a=t, view=t[1:, ::2], half=torch.randn(5).half(), long=torch.arange(3), flag=torch.tensor([True, False]),
        arr=np.linspace(0, 1, 7).reshape(7, 1), scalar=np.float32(2.5), i=np.int64(-3), dt=np.dtype("<u2"),
        nested={"x": [1, 2.0, "s", None, (True,)]}, s={1, 2}, b=b"\x00\x01")
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    out = sp.load(path)
    assert isinstance(out, OrderedDict) and list(out) == list(data)
    for k in ("a", "view", "half", "long", "flag"):
        assert out[k].dtype == data[k].dtype and torch.equal(out[k], data[k]), k
    assert out["view"].storage_offset() == 4 and out["view"].stride() == (4, 2)  # rebuilt as the same view
    np.testing.assert_array_equal(out["arr"], data["arr"])
    assert out["scalar"] == np.float32(2.5) and out["scalar"].dtype == np.float32 and out["i"] == -3
    assert out["dt"] == np.dtype("<u2")
    assert out["nested"] == data["nested"] and out["s"] == {1, 2} and out["b"] == b"\x00\x01"


def test_module_records_and_state_dict_names(tmp_path):
    """torch.nn modules read as records; state_dict() gives nn.Module's names (non-persistent
    buffers left out)."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ModuleList([torch.nn.Conv1d(4, 2, 3), torch.nn.Identity()]),
                              torch.nn.BatchNorm1d(2))
    net.register_buffer("scratch", torch.ones(2), persistent=False)
    path = tmp_path / "net.pkl"
    path.write_bytes(pickle.dumps(net, protocol=4))
    rec = sp.load(path)
    assert isinstance(rec, sp.Stub) and rec.class_name == "Sequential"
    sd = sp.state_dict(rec)
    ref = net.state_dict()
    assert list(sd) == list(ref)
    assert all(torch.equal(sd[k], ref[k]) for k in ref)
    assert sp.num_params(rec) == sum(p.numel() for p in net.parameters())
    assert [p for p, _ in sp.find(rec, "Conv1d")] == ["1.0"]


@pytest.mark.parametrize("content,pattern", [
    (b"", "is empty"),
    (b"hello world, not a pickle", "is not a pickle"),
    (b"PK\x03\x04rest-of-a-zip", "zip archive"),
])
def test_bad_files(tmp_path, content, pattern):
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    with pytest.raises(sp.PickleFormatError, match=pattern) as info:
        sp.load(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_truncated_files(tmp_path, shared_data):
    src = _ref(shared_data, "lvg") / "lres_G_ema.pkl"
    data = src.read_bytes()
    for cut in (20, len(data) // 3, len(data) - 1):
        path = tmp_path / f"cut{cut}.pkl"
        path.write_bytes(data[:cut])
        with pytest.raises(sp.PickleFormatError, match="truncated") as info:
            sp.load(path)
        assert "\n" not in str(info.value)


def test_truncated_plain_pickle(tmp_path):
    data = pickle.dumps({"w": torch.randn(100)}, protocol=4)
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(sp.PickleFormatError, match="truncated"):
        sp.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(sp.PickleFormatError, match="does not exist"):
        sp.load(tmp_path / "nope.pkl")
