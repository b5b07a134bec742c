"""vidgen's FID Inception computes the published FID graph: checked against torch-fidelity's
TF-exact port (`FeatureExtractorInceptionV3`) with the same seeded, non-degenerate weights,
on real frames and random images at 299, 256, 128 and 64 input, and FID against
`torch_fidelity.calculate_metrics` on the same two image sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidgen.metrics.inception import FIDInceptionV3
from vidgen.metrics.preprocess import inception_input, tf1_resize_bilinear
from vidgen.optional import available, require

pytestmark = pytest.mark.skipif(not available("torch_fidelity"), reason="torch-fidelity (the dev extra) is not installed")

SIZES = (299, 256, 128, 64)


def he_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights under which the network's features differ between images: He-normal
    convs, BatchNorm close to the identity with perturbed scales, shifts and statistics, a
    random classifier. (PyTorch's default init makes the features constant across images.)"""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in FIDInceptionV3().state_dict().items()}

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    sd = {}
    for k, shape in shapes.items():
        if k.endswith("conv.weight"):
            sd[k] = torch.randn(shape, generator=g) * math.sqrt(2 / math.prod(shape[1:]))
        elif k.endswith("bn.weight") or k.endswith("running_var"):
            sd[k] = uniform(shape, 0.9, 1.1)
        elif k.endswith("bn.bias") or k.endswith("running_mean"):
            sd[k] = 0.1 * torch.randn(shape, generator=g)
        elif k.endswith("num_batches_tracked"):
            sd[k] = torch.zeros((), dtype=torch.long)
        elif k == "fc.weight":
            sd[k] = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        elif k == "fc.bias":
            sd[k] = 0.1 * torch.randn(shape, generator=g)
        else:
            raise AssertionError(f"unexpected state entry {k}")
    return sd


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    sd = he_weights()
    path = tmp_path_factory.mktemp("inception") / "he-seed0.pth"
    torch.save(sd, path)  # torch-fidelity reads its weights with torch.load
    ours = FIDInceptionV3()
    ours.load_state_dict(sd, strict=True)
    return ours.eval(), path


@pytest.fixture(scope="module")
def oracle(weights):
    tf = require("torch_fidelity.feature_extractor_inceptionv3", "dev")
    return tf.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits"],
                                          feature_extractor_weights_path=str(weights[1]))


def real_frames(shared: str, size: int, n: int) -> np.ndarray:
    """n square crops of real webcam frames, resized to size x size: uint8 [n, S, S, 3]."""
    from PIL import Image

    files = sorted((shared / "timelapse" / "chamonix").glob("*.jpg"))[::7][:n]
    out = []
    for i, f in enumerate(files):
        img = Image.open(f).convert("RGB")
        left, top = 40 + 60 * i, 30 + 20 * i
        crop = img.crop((left, top, left + 480, top + 480))
        out.append(np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR)))
    return np.stack(out)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_tf1_resize_matches_the_formula():
    """Output pixel i samples input coordinate i * in / out (no half-pixel centres)."""
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(1, 2, 5, 7) ** 1.5
    y = tf1_resize_bilinear(x, (8, 3))
    for i in range(8):
        for j in range(3):
            sy, sx = i * 5 / 8, j * 7 / 3
            y0, x0 = int(sy), int(sx)
            y1, x1 = min(y0 + 1, 4), min(x0 + 1, 6)
            fy, fx = sy - y0, sx - x0
            top = x[0, :, y0, x0] * (1 - fx) + x[0, :, y0, x1] * fx
            bot = x[0, :, y1, x0] * (1 - fx) + x[0, :, y1, x1] * fx
            torch.testing.assert_close(y[0, :, i, j], top * (1 - fy) + bot * fy, rtol=1e-5, atol=1e-4)
    assert torch.equal(tf1_resize_bilinear(x, (5, 7)), x)  # same size: the identity
    u = torch.randint(0, 256, (1, 3, 20, 30), dtype=torch.uint8)
    v = inception_input(u)
    assert v.shape == (1, 3, 299, 299) and v.min() >= -1 and v.max() < 1
    assert torch.equal(v[..., 0, 0], (u[..., 0, 0].float() - 128) / 128)  # pixel (0, 0) is sampled as is


def test_preprocessing_matches_torch_fidelity_at_every_size():
    """The resize + normalisation (the only size-dependent part) against the oracle's own TF1
    resize, at every input size and a non-square one."""
    tf_resize = require("torch_fidelity.interpolate_compat_tensorflow", "dev").interpolate_bilinear_2d_like_tensorflow1x
    rng = np.random.default_rng(0)
    for h, w in [(s, s) for s in SIZES] + [(36, 64)]:
        x = torch.from_numpy(rng.integers(0, 256, (2, 3, h, w), dtype=np.uint8))
        ref = (tf_resize(x.float(), size=(299, 299), align_corners=False) - 128) / 128
        assert torch.equal(inception_input(x), ref), (h, w)
        if (h, w) != (299, 299):  # torch's half-pixel bilinear resize (the old input) is measurably off
            old = F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False) / 128 - 1
            assert float((old - ref).abs().max()) > 0.01


def compare_with_oracle(ours, oracle, shared, size: int, n_real: int, n_random: int) -> tuple[float, float]:
    """(features, logits) max|diff| / max|ref| on real and random uint8 images of one size."""
    rng = np.random.default_rng(size)
    imgs = np.concatenate([real_frames(shared, size, n_real),
                           rng.integers(0, 256, (n_random, size, size, 3), dtype=np.uint8)])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        spatial = ours.spatial(x)
        feat = spatial.mean(dim=(2, 3))
        logits = ours.classify(feat)
        ref_feat, ref_logits = oracle(x)
    assert spatial.shape == (len(x), 2048, 8, 8) and torch.equal(ours(x), feat)
    # the compared quantities vary across images (a degenerate network would pass anything)
    for ref in (ref_feat, ref_logits):
        spread = float(ref.std(0).mean() / ref.abs().mean())
        assert spread > 0.05, f"outputs nearly constant across images at {size}: {spread:.2e}"
    return rel_err(feat, ref_feat), rel_err(logits, ref_logits)


def test_features_and_logits_match_torch_fidelity_at_64(weights, oracle, shared_data):
    err = compare_with_oracle(weights[0], oracle, shared_data, 64, 1, 1)
    assert max(err) < 1e-5, err


@pytest.mark.slow
def test_features_and_logits_match_torch_fidelity_at_every_size(weights, oracle, shared_data, capsys):
    worst = {size: compare_with_oracle(weights[0], oracle, shared_data, size, 3, 2) for size in SIZES}
    with capsys.disabled():
        print("\nInception vs torch-fidelity, max|diff| / max|ref| (features, logits): "
              + ", ".join(f"{s}: {f:.1e}, {lg:.1e}" for s, (f, lg) in worst.items()))
    for size, err in worst.items():
        assert max(err) < 1e-5, (size, err)


def _vidgen_stats(det, images: np.ndarray):
    """Features of a set of images through vidgen's frame pipeline (one 'video', equal weights)."""
    from vidgen.metrics.image import real_frame_stats
    from vidgen.metrics.inputs import ArrayVideo, RealVideos

    return real_frame_stats(det, RealVideos([ArrayVideo(images)], "set"), 0, 0, 8, progress=False)


def test_frechet_statistics_match_torch_fidelity():
    """vidgen's streamed statistics with the unbiased covariance and its Frechet distance give
    torch-fidelity's FID of the same features (random 64-d features, two set sizes)."""
    from vidgen.metrics.frechet import FeatureStats, frechet_from_stats

    mf = require("torch_fidelity.metric_fid", "dev")
    rng = np.random.default_rng(0)
    for n in (40, 300):
        a = rng.gamma(1.0, 0.3, (n, 64)).astype(np.float32)
        b = (rng.gamma(1.2, 0.3, (n + 7, 64)) + 0.05).astype(np.float32)
        ref = mf.fid_statistics_to_metric(*(mf.fid_features_to_statistics(torch.from_numpy(v)) for v in (a, b)),
                                          False)["frechet_inception_distance"]
        stats = []
        for v in (a, b):
            s = FeatureStats(64)
            for chunk in np.array_split(v, 3):  # streamed in pieces
                s.add(torch.from_numpy(chunk))
            stats.append(s)
        ours = frechet_from_stats(*stats, unbiased=True)
        assert abs(ours - ref) / ref < 1e-6, (n, ours, ref)
        biased = frechet_from_stats(*stats)  # 1/n covariances: a different, documented protocol
        assert abs(biased - ref) / ref > 1e-4


@pytest.mark.slow
def test_fid_matches_torch_fidelity_calculate_metrics(weights, shared_data, capsys):
    """FID of two small image sets by vidgen's pipeline and by torch_fidelity.calculate_metrics
    with the same weight file: within 1e-4 relative."""
    from vidgen.metrics.detectors import NetworkDetector
    from vidgen.metrics.frechet import frechet_from_stats

    tfid = require("torch_fidelity", "dev")
    ours, path = weights
    real = real_frames(shared_data, 96, 6)
    rng = np.random.default_rng(1)
    fake = np.clip(real[::-1].astype(np.int16) + rng.integers(-60, 60, real.shape), 0, 255).astype(np.uint8)
    fake[:2] = rng.integers(0, 256, fake[:2].shape, dtype=np.uint8)

    class Images(torch.utils.data.Dataset):
        def __init__(self, arr):
            self.arr = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

        def __len__(self):
            return len(self.arr)

        def __getitem__(self, i):
            return self.arr[i]

    ref = tfid.calculate_metrics(input1=Images(real), input2=Images(fake), fid=True, cuda=False, cache=False,
                                 verbose=False, batch_size=6, samples_shuffle=False,
                                 feature_extractor="inception-v3-compat",
                                 feature_extractor_weights_path=str(path))["frechet_inception_distance"]
    det = NetworkDetector("inception", ours, "he-seed0")
    value = frechet_from_stats(_vidgen_stats(det, real), _vidgen_stats(det, fake), unbiased=True)
    with capsys.disabled():
        print(f"\nFID vidgen {value:.8g} vs torch-fidelity {ref:.8g}: relative {abs(value - ref) / ref:.1e}")
    assert ref > 1 and abs(value - ref) / ref < 1e-4
