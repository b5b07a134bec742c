"""Time conditioning of the time-lapse GAN (docs/METHODS.md 2): axis, features, overrides, noise."""

import math
from datetime import datetime, timezone

import numpy as np
import pytest
import torch

from vidgen.errors import ConfigError
from timelapse.time import (DAY, TimeAxis, TimeFeatures, TimeNoise, d_noise, date_range, dequant_sigmas,
                            dequantize, hold, phase_of_hour)


def ts(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def test_axis_starts_at_midnight_and_rounds_span_up_to_days():
    axis = TimeAxis.from_times([ts(2021, 1, 1, 6), ts(2022, 12, 31, 18)])
    assert axis.start == ts(2021, 1, 1)
    assert axis.num_days == 730  # 729.75 days rounded up
    assert axis.factors == ("trend", "year", "day") and axis.c_dim == 6
    assert axis.frequencies == pytest.approx([730 / 365.25, 730.0])
    short = TimeAxis.from_times([ts(2021, 6, 1, 3), ts(2021, 6, 30, 20)])
    assert short.factors == ("trend", "day") and short.c_dim == 4  # no yearly term under a year


def test_conditioning_values_for_known_dates():
    axis = TimeAxis.from_times([ts(2021, 1, 1, 6), ts(2022, 12, 31, 18)])
    feats = TimeFeatures(axis)
    when = ts(2021, 7, 2, 18)  # 182.75 days after the start, 18:00 UTC
    t = axis.normalize([when])
    assert t[0] == pytest.approx(182.75 / 730)
    c = feats(torch.tensor(t, dtype=torch.float64))[0]
    year_phase = 2 * math.pi * 182.75 / 365.25
    expect = [1.0, 0.01 * 182.75 / 730, math.cos(year_phase), math.sin(year_phase), 0.0, -1.0]  # 18:00 -> 3/4 turn
    assert c.tolist() == pytest.approx(expect, abs=1e-9)
    # noon on any day: the daily pair is (cos, sin) = (-1, 0)
    noon = feats(torch.tensor(axis.normalize([ts(2022, 3, 9, 12)]), dtype=torch.float64))[0]
    assert noon[4:].tolist() == pytest.approx([-1.0, 0.0], abs=1e-9)
    # round trip seconds <-> t
    assert axis.seconds(t)[0] == pytest.approx(when)


def test_single_precision_phase_rounds_like_the_reference():
    # float32 phase: (float32(2 pi) * float32(f)) * float32(t), as the reference release computes
    # it; it differs from the float64 phase by the rounding of a phase of thousands of radians.
    axis = TimeAxis(start=ts(2010, 1, 1), num_days=2225)
    t = torch.rand(64, dtype=torch.float64)
    c32, c64 = TimeFeatures(axis, "float32")(t.float()), TimeFeatures(axis, "float64")(t)
    two_pi_f = torch.tensor(2 * math.pi, dtype=torch.float32) * torch.tensor(2225.0)
    assert torch.equal(c32[:, 4], torch.cos(two_pi_f * t.float()))
    assert torch.equal(c32[:, 1], torch.tensor(0.01, dtype=torch.float32) * t.float())
    diff = float((c32.double() - c64).abs().max())
    assert 1e-6 < diff < 2e-3


def test_trend_harmonics_extend_c_and_follow_the_trend_time():
    axis = TimeAxis.from_times([ts(2021, 6, 1), ts(2021, 6, 20)], lin_scale=0.5)  # 19 days: trend and day
    bent = TimeAxis(axis.start, axis.num_days, axis.lin_scale, trend_harmonics=3)
    assert bent.c_dim == axis.c_dim + 6 and TimeAxis.from_dict(bent.to_dict()) == bent
    t = torch.rand(32, dtype=torch.float64)
    c0, c3 = TimeFeatures(axis)(t), TimeFeatures(bent)(t)
    assert torch.equal(c3[:, :axis.c_dim], c0)  # the method's c is a prefix, unchanged
    for k in (1, 2, 3):
        i = axis.c_dim + 2 * (k - 1)
        assert torch.allclose(c3[:, i], 0.5 * torch.cos(math.pi * k * t))
        assert torch.allclose(c3[:, i + 1], 0.5 * torch.sin(math.pi * k * t))
    assert float(c3[:, axis.c_dim:].std(0).min()) > 0.05  # every harmonic varies over the sequence
    # the harmonics belong to the trend factor: moving the day alone leaves them where they are
    tf = torch.stack([t, torch.rand(32, dtype=torch.float64)], dim=1)
    moved = tf.clone()
    moved[:, 1] += 0.3
    feats = TimeFeatures(bent)
    assert torch.equal(feats(tf)[:, axis.c_dim:], feats(moved)[:, axis.c_dim:])
    assert not torch.equal(feats(tf)[:, 2:4], feats(moved)[:, 2:4])
    assert TimeFeatures(bent).axis == bent and TimeFeatures(bent, "float32")(t.float()).shape == (32, bent.c_dim)


def test_per_factor_and_per_layer_overrides():
    axis = TimeAxis.from_times([ts(2021, 1, 1), ts(2023, 1, 1)])
    feats = TimeFeatures(axis)
    t = torch.tensor([0.1, 0.6], dtype=torch.float64)
    held = hold(t, axis, {"day": phase_of_hour(12, axis)})
    assert held.shape == (2, 3)
    assert held[:, 0].tolist() == t.tolist() and held[:, 1].tolist() == t.tolist()
    c = feats(held)
    assert torch.allclose(c[0, 4:], c[1, 4:]) and not torch.allclose(c[0, 2:4], c[1, 2:4])
    per_layer = hold(t, axis, {"year": 0.0}, layers=(2, 5), num_ws=8)
    assert per_layer.shape == (2, 8, 3)
    assert (per_layer[:, 2:5, 1] == 0).all() and torch.equal(per_layer[:, :2, 1], t[:, None].expand(2, 2))
    with pytest.raises(ConfigError, match="unknown time factor"):
        hold(t, axis, {"week": 0.0})


def test_dequantisation_noise_statistics():
    # gaps: 1, 3, 0.5 (in t units * 0.01) -> sigma = 0.5 * larger neighbouring gap
    t = np.array([0.0, 0.01, 0.04, 0.045])
    sig = dequant_sigmas(t)
    assert sig.tolist() == pytest.approx([0.005, 0.015, 0.015, 0.0025])
    assert dequant_sigmas(t[::-1]).tolist() == pytest.approx(sig[::-1].tolist())  # order does not matter
    torch.manual_seed(0)
    n = 40000
    draws = dequantize(torch.full((n,), 0.01, dtype=torch.float64), torch.full((n,), 0.015, dtype=torch.float64))
    assert float(draws.mean()) == pytest.approx(0.01, abs=3 * 0.015 / math.sqrt(n))
    assert float(draws.std()) == pytest.approx(0.015, rel=0.03)
    # one draw per frame, shared by its factors
    multi = dequantize(torch.zeros(5, 3), torch.ones(5))
    assert torch.equal(multi[:, 0], multi[:, 2])


def test_discriminator_noise_per_factor():
    axis = TimeAxis.from_times([ts(2020, 1, 1), ts(2022, 1, 1)])  # 731 days
    sigmas = TimeNoise().sigmas(axis)
    assert sigmas == pytest.approx([0.2, 4 / 731, 0.0])
    torch.manual_seed(1)
    t = torch.full((50000,), 0.5, dtype=torch.float64)
    noisy = d_noise(t, sigmas)
    assert noisy.shape == (50000, 3)
    assert noisy.std(0).tolist() == pytest.approx(sigmas, rel=0.03, abs=1e-12)
    assert torch.equal(noisy[:, 2], t)  # daily: no noise


def test_date_ranges():
    s = date_range("2021-03-01..2021-10-31", "1d", hour=12)
    assert len(s) == 245
    assert s[0] == ts(2021, 3, 1, 12) and s[-1] == ts(2021, 10, 31, 12)
    assert len(date_range("2021-03-01..2021-03-02", "6h")) == 5
    assert np.allclose(np.diff(date_range("2021-03-01..2021-03-08", "1w")), 7 * DAY)
    for bad in ("2021-03-01", "2021-02-30..2021-03-01", "2021-03-05..2021-03-01"):
        with pytest.raises(ConfigError):
            date_range(bad)
    with pytest.raises(ConfigError, match="--every"):
        date_range("2021-03-01..2021-03-02", "1 fortnight")
