import math

import torch

from vidgen.train.gan import PathLengthRegularizer, ns_loss_d, ns_loss_g, r1_penalty


def test_ns_losses_match_the_logistic_formulas():
    real, fake = torch.tensor([2.0, -1.0, 0.0]), torch.tensor([[0.5], [-3.0], [1.0]])
    assert torch.allclose(ns_loss_g(fake), torch.log1p(torch.exp(-fake.squeeze(1))))
    expected = torch.log1p(torch.exp(fake.squeeze(1))) + torch.log1p(torch.exp(-real))
    assert torch.allclose(ns_loss_d(real, fake), expected)
    # the generator's loss falls as the discriminator is fooled
    assert ns_loss_g(torch.tensor([5.0])) < ns_loss_g(torch.tensor([-5.0]))


def test_r1_is_the_squared_input_gradient_and_backpropagates():
    w = torch.randn(3, 4, 4, requires_grad=True)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * w).sum((1, 2, 3)) + (x ** 2).sum((1, 2, 3))  # grad = w + 2x
    pen = r1_penalty(logits, x)
    assert pen.shape == (5,)
    expected = (w + 2 * x).square().sum((1, 2, 3))
    assert torch.allclose(pen, expected, atol=1e-5)
    pen.sum().backward()  # create_graph: the penalty reaches D's weights
    assert torch.allclose(w.grad, (2 * (w + 2 * x)).sum(0).detach(), atol=1e-4)


def test_path_length_penalty_and_its_running_mean():
    torch.manual_seed(0)
    ws = torch.randn(6, 2, 8, requires_grad=True)  # [B, layers, D]
    a = torch.randn(8, 3 * 4 * 4)
    fake = torch.tanh(ws.mean(1) @ a).reshape(6, 3, 4, 4)
    reg = PathLengthRegularizer(decay=0.01)
    pen = reg(fake, ws)
    assert pen.shape == (6,)
    # lengths ~ |J^T y| with y scaled by 1/sqrt(16): finite, positive, and pl_mean moved by 1%
    assert 0 < float(reg.pl_mean) < 10
    first = float(reg.pl_mean)
    reg(fake, ws)
    assert math.isclose(float(reg.pl_mean) / first, 1.99, rel_tol=0.2)  # lerp 0.01 of a similar mean
    pen.mean().backward()
    assert ws.grad is not None and torch.isfinite(ws.grad).all()
    assert "pl_mean" in reg.state_dict()
