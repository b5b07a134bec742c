"""Detectors: verified loading, clear errors, reference layer names, the Detector interface."""

import hashlib

import pytest
import torch

from vidgen.errors import VidgenError
from vidgen.metrics.detectors import WEIGHTS, Detector, RandomDetector, load_detector, resolve_weights


def test_missing_detector_file_names_file_digest_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDGEN_CACHE", str(tmp_path / "cache"))
    for name in ("inception", "i3d", "dinov2"):
        spec = WEIGHTS[name]
        with pytest.raises(VidgenError) as err:
            load_detector(name)
        msg = str(err.value)
        assert spec.filename in msg and spec.sha256 in msg
        assert str(tmp_path / "cache" / "detectors" / spec.filename) in msg
        assert spec.url in msg


def test_mismatching_detector_file_is_refused(tmp_path):
    bad = tmp_path / "i3d_torchscript.pt"
    bad.write_bytes(b"not the network")
    with pytest.raises(VidgenError) as err:
        load_detector("i3d", detector_dir=tmp_path)
    msg = str(err.value)
    assert hashlib.sha256(b"not the network").hexdigest() in msg
    assert WEIGHTS["i3d"].sha256 in msg and str(bad) in msg
    with pytest.raises(VidgenError, match="i3d_torchscript.pt"):  # explicit path: same check
        resolve_weights("i3d", path=bad)


def test_unknown_detector_name():
    with pytest.raises(VidgenError, match="unknown detector"):
        resolve_weights("vgg")


def test_fid_inception_has_the_reference_layout():
    from vidgen.metrics.inception import FIDInceptionV3

    with torch.device("meta"):
        net = FIDInceptionV3()
    sd = net.state_dict()
    assert len(sd) == 566  # entries of pt_inception-2015-12-05 (incl. BatchNorm counters)
    assert sd["fc.weight"].shape == (1008, 2048)
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert "Mixed_6e.branch7x7dbl_5.bn.running_var" in sd


def test_fid_inception_loads_its_state_and_gives_2048_features():
    from vidgen.metrics.inception import FIDInceptionV3
    from vidgen.metrics.detectors import NetworkDetector

    torch.manual_seed(0)
    a, b = FIDInceptionV3(), FIDInceptionV3()
    b.load_state_dict(a.state_dict(), strict=True)
    det = NetworkDetector("inception", b, "0" * 64)
    x = torch.randint(0, 256, (1, 3, 40, 56), dtype=torch.uint8)
    out = det(x)
    assert out.shape == (1, 2048)
    assert torch.equal(out, NetworkDetector("inception", a, "0" * 64)(x))


def test_dinov2_vitl14_has_the_official_layout():
    from vidgen.metrics.dinov2 import DinoV2ViT

    with torch.device("meta"):
        net = DinoV2ViT()
    sd = net.state_dict()
    assert sd["pos_embed"].shape == (1, 1370, 1024)
    assert sd["patch_embed.proj.weight"].shape == (1024, 3, 14, 14)
    assert sd["blocks.23.attn.qkv.weight"].shape == (3072, 1024)
    assert sd["blocks.0.ls1.gamma"].shape == (1024,) and sd["mask_token"].shape == (1, 1024)
    assert sum(p.numel() for p in net.parameters()) == 304_368_640
    assert not any(k in sd for k in ("mean", "std"))  # preprocessing constants are not weights


def test_dinov2_resizes_any_input_to_224():
    from vidgen.metrics.dinov2 import DinoV2ViT, ViTConfig

    net = DinoV2ViT(ViTConfig(dim=32, depth=1, heads=2)).eval()
    seen = {}
    net.patch_embed.register_forward_hook(lambda m, i, o: seen.update(x=i[0].shape))
    out = net(torch.randint(0, 256, (2, 3, 37, 91), dtype=torch.uint8))
    assert out.shape == (2, 32) and seen["x"] == (2, 3, 224, 224)


def test_detector_interface_checks_input_and_output():
    class Mean(Detector):  # a detector built in the test itself
        name, feature_dim, sha256 = "mean", 3, "x" * 64

        def features(self, x):
            return x.float().mean(dim=(2, 3))

    det = Mean()
    out = det(torch.full((4, 3, 5, 5), 7, dtype=torch.uint8))
    assert out.shape == (4, 3) and torch.all(out == 7)
    with pytest.raises(AssertionError, match="uint8"):
        det(torch.zeros(1, 3, 5, 5))
    video = RandomDetector(8, temporal=True)
    assert video(torch.zeros(2, 3, 4, 9, 9, dtype=torch.uint8)).shape == (2, 8)
    with pytest.raises(AssertionError):
        video(torch.zeros(2, 3, 9, 9, dtype=torch.uint8))
    assert RandomDetector(8).sha256 == RandomDetector(8).sha256 != RandomDetector(8, seed=1).sha256
