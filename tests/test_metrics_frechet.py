"""Feature statistics and distances: identities, closed forms, streaming and merging."""

import numpy as np
import pytest
import torch

from vidgen.metrics.frechet import (FeatureStats, frechet_distance, frechet_from_stats,
                                    kernel_inception_distance, precision_recall)


def _stats(x, **kw):
    s = FeatureStats(x.shape[1], **kw)
    s.add(torch.as_tensor(x))
    return s


def _gaussian(n, mean, cov, seed):
    return np.random.default_rng(seed).multivariate_normal(mean, cov, size=n)


def test_fd_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 16)) * 3 + 1
    s = _stats(x)
    for method in ("sqrtm", "eigen"):
        assert abs(frechet_from_stats(s, s, method)) <= 1e-6


def test_fd_approaches_closed_form_between_gaussians():
    d = 4
    rng = np.random.default_rng(1)
    a = rng.normal(size=(d, d))
    b = rng.normal(size=(d, d))
    mu1, s1 = np.zeros(d), a @ a.T + np.eye(d)
    mu2, s2 = np.ones(d) * 0.5, b @ b.T + 0.5 * np.eye(d)
    exact = frechet_distance(mu1, s1, mu2, s2)
    # closed form check of the formula itself on commuting (diagonal) covariances
    d1, d2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    assert frechet_distance(np.zeros(2), d1, np.ones(2), d2) == pytest.approx(
        2 + (1 - 3) ** 2 + (2 - 1) ** 2, abs=1e-9)
    errors = []
    for n in (200, 2000, 20000):
        est = frechet_from_stats(_stats(_gaussian(n, mu1, s1, n)), _stats(_gaussian(n, mu2, s2, n + 1)))
        errors.append(abs(est - exact))
    assert errors[2] < errors[0] and errors[2] < 0.05 * exact


def test_fd_and_kid_are_symmetric():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 8)), rng.normal(size=(250, 8)) * 1.5 + 0.3
    sx, sy = _stats(x), _stats(y)
    for method in ("sqrtm", "eigen"):
        assert frechet_from_stats(sx, sy, method) == pytest.approx(frechet_from_stats(sy, sx, method), rel=1e-9)
    # with subsets covering each set the estimate is exactly symmetric
    k1 = kernel_inception_distance(x[:250], y, num_subsets=3, max_subset_size=250)
    k2 = kernel_inception_distance(y, x[:250], num_subsets=3, max_subset_size=250)
    assert k1.value == pytest.approx(k2.value, rel=1e-12)
    assert k1.value > 0.01


def test_kid_of_two_samples_of_one_distribution_is_unbiased_zero():
    rng = np.random.default_rng(3)
    values = [kernel_inception_distance(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)),
                                        num_subsets=10, max_subset_size=100, seed=s).value for s in range(10)]
    different = kernel_inception_distance(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 1,
                                          num_subsets=10, max_subset_size=100).value
    assert abs(np.mean(values)) < 0.02 * different
    assert min(values) < 0 < max(values) or abs(np.mean(values)) < 1e-3  # no positive bias


def test_streamed_equals_one_shot_and_weights_equal_repetition():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1000, 12)) + 5
    one = _stats(x)
    streamed = FeatureStats(12)
    for chunk in np.array_split(x, 37):
        streamed.add(torch.as_tensor(chunk))
    for a, b in zip(one.mean_cov(), streamed.mean_cov()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # integer weights == repeating rows
    w = rng.integers(1, 4, size=200)
    weighted = FeatureStats(12)
    weighted.add(torch.as_tensor(x[:200]), torch.as_tensor(w, dtype=torch.float64))
    repeated = _stats(np.repeat(x[:200], w, axis=0))
    for a, b in zip(weighted.mean_cov(), repeated.mean_cov()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


def test_merged_rank_stats_equal_single_process_and_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    x = torch.as_tensor(rng.normal(size=(900, 6)))
    single = FeatureStats(6, reservoir=50, seed=0)
    single.add(x)
    ranks = [FeatureStats(6, reservoir=50, seed=r + 1) for r in range(3)]
    for r, part in enumerate(x.chunk(3)):
        ranks[r].add(part)
    merged = ranks[0].merge(ranks[1]).merge(ranks[2])
    assert merged.num_items == single.num_items == 900
    for a, b in zip(single.mean_cov(), merged.mean_cov()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert merged.features().shape == (50, 6)
    merged.save(tmp_path / "s.safetensors", meta={"k": 1})
    back = FeatureStats.load(tmp_path / "s.safetensors")
    assert back.meta == {"k": 1} and back.num_items == 900
    np.testing.assert_array_equal(back.features(), merged.features())
    np.testing.assert_array_equal(back.mean_cov()[1], merged.mean_cov()[1])


def test_reservoir_is_capped_and_weighted():
    s = FeatureStats(1, reservoir=400, seed=0)
    for _ in range(20):  # value 1 has 9x the weight of value 0
        s.add(torch.tensor([[0.0]] * 100 + [[1.0]] * 100), torch.tensor([1.0] * 100 + [9.0] * 100))
    f = s.features()
    assert f.shape == (400, 1)
    assert 0.85 < f.mean() < 0.95


def test_precision_recall():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 4))
    same = precision_recall(x, x + 1e-6, k=3, batch=64)
    assert same.precision == 1.0 and same.recall == 1.0
    far = precision_recall(x, x + 100, k=3)
    assert far.precision == 0.0 and far.recall == 0.0
    # generated samples collapsed on a small part of the real distribution: precise, low recall
    collapsed = precision_recall(x, rng.normal(size=(300, 4)) * 0.1, k=3)
    assert collapsed.precision > 0.9 and collapsed.recall < 0.3


def _rank_worker(rank, world, port, path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    x = torch.load(path, weights_only=True)
    s = FeatureStats(x.shape[1], reservoir=20, seed=rank)
    s.add(x[rank::world])
    s.all_reduce()
    mean, cov = s.mean_cov()
    torch.save({"mean": torch.as_tensor(mean), "cov": torch.as_tensor(cov), "n": s.num_items,
                "res": torch.as_tensor(s.features())}, f"{path}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow  # two fresh interpreters: ~18 s on 2 cores
def test_all_reduce_over_two_gloo_processes(tmp_path):
    import socket

    import torch.multiprocessing as mp

    x = torch.as_tensor(np.random.default_rng(7).normal(size=(101, 5)))
    path = str(tmp_path / "x.pt")
    torch.save(x, path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank_worker, args=(2, port, path), nprocs=2, join=True)
    single = _stats(x.numpy())
    outs = [torch.load(f"{path}.{r}", weights_only=True) for r in range(2)]
    for out in outs:
        assert out["n"] == 101
        np.testing.assert_allclose(out["mean"].numpy(), single.mean_cov()[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out["cov"].numpy(), single.mean_cov()[1], rtol=1e-10, atol=1e-12)
        assert out["res"].shape == (20, 5)
    np.testing.assert_array_equal(outs[0]["res"].numpy(), outs[1]["res"].numpy())
