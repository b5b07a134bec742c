"""Training logs: sample media through the renderer, JSONL lines after a crash, averages."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.render.writer import read_settings
from vidgen.train.log import StatsAverager, Timer, TrainLogger, save_samples


def test_sample_images_are_one_png_grid_with_exact_values(tmp_path):
    # two grey [1, 4, 4] images at -1 and +1 and a colour one: the grid is 2x2 tiles with 2-pixel gaps
    media = torch.stack([torch.full((3, 4, 4), -1.0), torch.full((3, 4, 4), 1.0), torch.zeros(3, 4, 4)])
    media[2, 0] = 0.5
    path = save_samples(media, tmp_path, step=7)
    assert path.name == "samples-000000007.png" and read_settings(path)["step"] == 7
    img = np.asarray(Image.open(path))
    assert img.shape == (10, 10, 3)
    assert (img[:4, :4] == 0).all() and (img[:4, 6:] == 255).all()
    assert tuple(img[6, 1]) == (191, 128, 128)  # (x + 1) * 127.5, rounded
    grey = save_samples(torch.full((1, 1, 4, 4), 0.0), tmp_path / "grey", step=1)
    assert (np.asarray(Image.open(grey)) == 128).all()  # one channel becomes grey RGB


def test_sample_clips_are_one_video_of_grids(tmp_path):
    import av
    media = torch.rand(4, 3, 5, 8, 8) * 2 - 1  # [N, C, T, H, W]
    path = save_samples(media, tmp_path, step=12, fps=4)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert path.suffix == ".mp4" and len(frames) == 5 and frames[0].shape == (18, 18, 3)
    with pytest.raises(ValueError, match="sample media"):
        save_samples(torch.zeros(3, 8, 8), tmp_path, step=1)


def test_stats_lines_after_the_resume_point_are_dropped(tmp_path):
    log = TrainLogger(tmp_path, total_steps=30, start_step=0)
    for step in (10, 20, 30):
        log.tick({"step": step, "kimg": step / 100})
    log.close()
    with open(tmp_path / "stats.jsonl", "a") as f:
        f.write('{"step": 40, "ki')  # cut short by a kill
    TrainLogger(tmp_path, 30, 20, enabled=False).truncate_after(20)  # other ranks: nothing happens
    assert len((tmp_path / "stats.jsonl").read_text().splitlines()) == 4
    log = TrainLogger(tmp_path, total_steps=30, start_step=20)
    log.truncate_after(20)
    log.close()
    assert [json.loads(s)["step"] for s in (tmp_path / "stats.jsonl").read_text().splitlines()] == [10, 20]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "tensorboard") == ["stats.jsonl"]


def test_averages_skip_nonfinite_values_and_timer_has_every_section():
    avg = StatsAverager()
    avg.add({"G/loss": 1.0, "D/loss": float("nan")})
    avg.add({"G/loss": 3.0, "D/loss": 2.0})
    assert avg.means() == {"D/loss": 2.0, "G/loss": 2.0} and avg.means() == {}
    timer = Timer()
    timer.lap("data")
    assert set(timer.reset()) == {"data", "fwd_bwd", "optimizer", "logging"}
