"""Running statistics kept alike over groups of the batch, and the rank consistency check
(vidgen/train/sync.py, vidgen/nn/stats.py)."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from vidgen.nn.stats import register_statistic, running_statistics
from vidgen.nn.style import MagnitudeEMA
from vidgen.train.dist import DistInfo, split_batch
from vidgen.train.sync import GroupStatistics, RankMismatchError, check_consistency, checksum


class RunningMean(nn.Module):
    """w_avg-style: ``s <- lerp(s, batch mean, 1 - beta)`` on every training forward."""

    def __init__(self, beta: float = 0.9):
        super().__init__()
        self.beta = beta
        register_statistic(self, "avg", torch.zeros(3))
        self.register_buffer("constant", torch.ones(2))

    def forward(self, x):
        with torch.no_grad():
            self.avg.copy_(x.mean(0).lerp(self.avg, self.beta))
        return x


def test_only_marked_buffers_are_running_statistics():
    net = nn.Sequential(RunningMean(), nn.Sequential(MagnitudeEMA()))
    assert [n for n, _ in running_statistics(net, "G/")] == ["G/0.avg", "G/1.0.magnitude"]
    assert "0.constant" in dict(net.named_buffers())


def test_groups_average_to_one_update_with_the_whole_batch():
    """Two groups that each move the mean from the same start, averaged, give the update with
    the mean of the whole batch (the running means are affine in the batch statistic)."""
    torch.manual_seed(0)
    x = torch.randn(8, 3)
    whole, split = RunningMean(), RunningMean()
    whole.avg.fill_(0.5)
    split.avg.fill_(0.5)
    whole(x)
    stats = GroupStatistics({"G": split})
    stats.begin()
    micros = split_batch(x, 2)
    for a, micro in enumerate(micros):
        split(micro)
        stats.end_group(last=a == 1)
    stats.apply(stats.local_delta())
    assert torch.allclose(split.avg, whole.avg, atol=1e-6)
    assert (whole.avg - 0.5).abs().max() > 1e-2  # the statistic did move
    # restore() drops a phase's changes (a skipped phase)
    stats.begin()
    split(x + 10)
    stats.end_group(last=True)
    stats.restore()
    assert torch.allclose(split.avg, whole.avg, atol=1e-6)


def test_split_batch_interleaves_rows():
    x = torch.arange(8)
    assert [m.tolist() for m in split_batch(x, 2)] == [[0, 2, 4, 6], [1, 3, 5, 7]]
    a, b = split_batch({"img": x, "t": (x * 10, "keep")}, 2)
    assert b["t"][0].tolist() == [10, 30, 50, 70] and b["t"][1] == "keep"


def test_checksum_sees_one_changed_bit():
    t = torch.randn(100)
    u = t.clone()
    u.view(torch.int32)[37] ^= 1  # the lowest mantissa bit of one element
    assert checksum(t) == checksum(t.clone()) and checksum(t) != checksum(u)
    for dtype in (torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.bool):
        v = torch.ones(4, dtype=dtype)
        assert checksum(v).dtype == torch.int64


def _rank(rank: int, port: int, queue) -> None:
    """Three checks in one process group: equal ranks, then rank 1 off in a running statistic,
    then off in a weight."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for differ in (None, "G/1.avg", "G/0.weight"):
            torch.manual_seed(0)
            net = nn.Sequential(nn.Linear(4, 4), RunningMean())
            tensors = [(f"G/{k}", t) for k, t in [*net.named_parameters(), *net.named_buffers()]]
            if differ is not None and rank == 1:
                with torch.no_grad():
                    dict(tensors)[differ].view(-1)[0] += 1e-6
            try:
                check_consistency(tensors, DistInfo(rank, 2), step=7)
                queue.put((differ, rank, None))
            except RankMismatchError as exc:
                queue.put((differ, rank, str(exc)))
    finally:
        dist.destroy_process_group()


def test_consistency_check_names_the_tensor_that_differs():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=_rank, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    out = {(d, r): msg for d, r, msg in (queue.get(timeout=120) for _ in range(6))}
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert out[None, 0] is None and out[None, 1] is None
    for differ in ("G/1.avg", "G/0.weight"):  # every rank stops, with the same message
        assert out[differ, 0] == out[differ, 1] and out[differ, 0] is not None, out
        assert f"{differ!r} on rank 1" in out[differ, 0] and "step 7" in out[differ, 0], out
        assert "more" not in out[differ, 0], out


def test_consistency_check_is_a_no_op_in_one_process():
    check_consistency([("x", torch.ones(2))], DistInfo(), step=0)
