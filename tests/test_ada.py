import pytest
import torch

from vidgen.train.ada import AdaController


def test_ada_moves_towards_target_and_clips():
    ada = AdaController(target=0.6, speed_kimg=0.001, interval=1, p_max=0.5)
    for step in range(5):
        ada.accumulate(torch.ones(8))  # D is sure every real is real: overfitting, r_t = 1 > 0.6
        ada.step(step)
    assert ada.p == pytest.approx(0.5)  # clipped at p_max
    for step in range(5, 100):
        ada.accumulate(-torch.ones(8))
        ada.step(step)
    assert ada.p == 0.0


def test_ada_state_round_trip():
    ada = AdaController(interval=4)
    ada.accumulate(torch.tensor([1.0, -1.0, 1.0]))
    other = AdaController(interval=4)
    other.load_state_dict(ada.state_dict())
    assert other.state_dict() == ada.state_dict()
    assert other.r_t == pytest.approx(1 / 3)


def _rank(rank: int, world: int, init: str, out: str) -> None:
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    ada = AdaController(target=0.6, speed_kimg=0.1, interval=2, p_max=1.0)
    g = torch.Generator().manual_seed(rank)
    for step in range(6):  # rank 0 alone would raise p, rank 1 alone lower it
        ada.accumulate(torch.randn(5, generator=g) + (3.0 if rank == 0 else 0.6))
        ada.step(step)
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"p": ada.p, "state": ada.state_dict()}, f)
    dist.destroy_process_group()


def test_ada_statistic_is_summed_over_ranks(tmp_path):
    """Two gloo ranks end with the same p, equal to one controller fed both ranks' logits."""
    import json

    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'store'}"
    mp.spawn(_rank, args=(2, init, str(tmp_path / "r")), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"r.{i}").read_text()) for i in range(2)]
    assert got[0] == got[1]
    one = AdaController(target=0.6, speed_kimg=0.1, interval=2, p_max=1.0)
    gens = [torch.Generator().manual_seed(r) for r in range(2)]
    for step in range(6):
        for r in range(2):
            one.accumulate(torch.randn(5, generator=gens[r]) + (3.0 if r == 0 else 0.6))
        one.step(step)
    assert got[0]["p"] == pytest.approx(one.p) and 0 < one.p < 1
