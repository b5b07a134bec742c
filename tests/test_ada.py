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
