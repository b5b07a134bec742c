"""Windowed rendering of long videos (vidgen/render/stream.py) and the long-video GAN's windowed
generators (vidgen/lvg/family.py)."""

import numpy as np
import pytest
import torch

from vidgen.errors import VidgenError
from vidgen.lvg.latent import LatentConfig
from vidgen.lvg.lowres import LowResGConfig, LowResGenerator
from vidgen.lvg.family import LowResVideo, SuperResVideo
from vidgen.render.stream import VideoGenerator, render_to_file, stream_frames
from vidgen.render.writer import read_settings

MICRO_G = LowResGConfig(temporal_channels=(8,) * 7, spatial_channels=(8, 8, 8, 4, 4),
                        latent=LatentConfig(noise_channels=2, num_filters=4, min_rate=20.0, max_rate=60.0, w_dim=8))


pytestmark = pytest.mark.usefixtures("one_thread")


class Ramp:
    """A video whose frame t is a known function of (seed, t)."""

    frame_size = (4, 6)

    def __init__(self):
        self.calls = []

    def render(self, seed, start, stop):
        self.calls.append((start, stop))
        t = torch.arange(start, stop, dtype=torch.float32)
        return (torch.sin(t * 0.1 + seed) * 0.9)[None, :, None, None].expand(3, -1, 4, 6)


def test_stream_frames_chunks_cover_the_range():
    gen = Ramp()
    assert isinstance(gen, VideoGenerator)
    chunks = list(stream_frames(gen, seed=2, num_frames=25, window=7, start=5))
    assert [len(c) for c in chunks] == [7, 7, 7, 4]
    assert gen.calls == [(5, 12), (12, 19), (19, 26), (26, 30)]
    whole = np.concatenate(chunks)
    assert whole.dtype == np.uint8 and whole.shape == (25, 4, 6, 3)
    one = next(stream_frames(Ramp(), seed=2, num_frames=25, window=25, start=5))
    np.testing.assert_array_equal(whole, one)
    with pytest.raises(VidgenError):
        next(stream_frames(gen, 0, 10, window=0))
    with pytest.raises(VidgenError, match="super-res"):
        next(stream_frames(gen, 0, 10, window=4, with_lowres=True))


def lowres_video(frames: int = 90):
    torch.manual_seed(0)
    return LowResVideo(LowResGenerator(MICRO_G, 18, 32), frames)


def test_lowres_windows_equal_one_shot():
    gen = lowres_video()
    whole = gen.render(1, 0, 90)
    windows = torch.cat([gen.render(1, a, min(a + 16, 90)) for a in range(0, 90, 16)], dim=1)
    assert whole.shape == (3, 90, 18, 32)
    assert (windows - whole).abs().max().item() <= 1e-5
    assert whole.abs().max() <= 1.0


def small_superres():
    from vidgen.lvg.superres import SuperResGenerator, SuperResModelConfig

    cfg = SuperResModelConfig(lowres=(18, 32), highres=(36, 64), channel_base=512, channel_max=16, num_layers=4,
                              num_critical=1, z_dim=8, w_dim=8)
    torch.manual_seed(0)
    return SuperResGenerator(cfg)


def test_superres_windows_equal_one_shot(tmp_path):
    gen = SuperResVideo(lowres_video(40), small_superres(), segment=16)
    hi, lo = gen.render_both(2, 0, 40)
    assert hi.shape == (3, 40, 36, 64) and lo.shape == (3, 40, 18, 32)
    torch.testing.assert_close(lo, gen.lowres.render(2, 0, 40))
    windows = torch.cat([gen.render(2, a, min(a + 12, 40)) for a in range(0, 40, 12)], dim=1)
    assert (windows - hi).abs().max().item() <= 1e-5

    out = tmp_path / "sr.mp4"
    render_to_file(gen, 2, 20, out, fps=10, window=8, settings={"seed": 2}, lowres_out=tmp_path / "sr_lowres.mp4",
                   progress=False)
    assert read_settings(out)["seed"] == 2 and read_settings(tmp_path / "sr_lowres.mp4")["lowres"] is True
