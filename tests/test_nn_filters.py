import pytest
import torch

from vidgen.nn.filters import binomial4_sum, upfirdn1d


@pytest.mark.parametrize("pad,down", [(0, 1), (1, 1), (2, 1), (3, 1), (1, 2), (3, 2), (0, 2)])
@pytest.mark.parametrize("shape", [(2, 3, 11, 4), (2, 3, 11, 4, 2)], ids=["image-depthwise-conv", "5d-shifted-views"])
def test_binomial4_sum_values_and_gradients(pad, down, shape):
    """Equals the generic FIR (taps [1, 3, 3, 1], zero padding, decimation) and its
    backward passes gradcheck, along axis 2 of an image batch (one depthwise convolution)
    and of a 5-D tensor (sums of shifted views with their own backward)."""
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    y = binomial4_sum(x, (2,), (pad,), down=down)
    ref = upfirdn1d(x, [1.0, 3.0, 3.0, 1.0], down=down, padding=(pad, pad), dim=2)
    assert y.shape == ref.shape == (2, 3, (11 + 2 * pad - 4) // down + 1, *shape[3:])
    torch.testing.assert_close(y, ref)
    assert torch.autograd.gradcheck(lambda t: binomial4_sum(t, (2,), (pad,), down=down), (x,))
    # R1 and path-length penalties differentiate the backward again
    assert torch.autograd.gradgradcheck(lambda t: binomial4_sum(t, (2,), (pad,), down=down), (x,))


def test_binomial4_sum_several_axes_channels_last():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, 8, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y = binomial4_sum(x, (2, 3), (2, 1), down=2)
    ref = upfirdn1d(upfirdn1d(x, [1.0, 3.0, 3.0, 1.0], down=2, padding=(2, 2), dim=2),
                    [1.0, 3.0, 3.0, 1.0], down=2, padding=(1, 1), dim=3)
    torch.testing.assert_close(y, ref)
    assert torch.autograd.gradcheck(lambda t: binomial4_sum(t, (2, 3), (2, 1), down=2), (x,))
    with pytest.raises(AssertionError, match="outside 0..3"):
        binomial4_sum(x, (2,), (4,))


@pytest.mark.parametrize("down", [1, 2])
def test_binomial4_sum_both_forms_agree_in_float32(down):
    """The depthwise convolution (images) and the shifted-view sums (any shape) give the same
    values and input gradients up to float32 rounding, channels-last kept."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, 33, 32).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = binomial4_sum(x, (2, 3), (1, 1), down=down)
    y5 = binomial4_sum(x[..., None], (2, 3), (1, 1), down=down)[..., 0]
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert y.std() > 1.0  # 16 taps of unit-variance noise: a real signal, not a constant
    torch.testing.assert_close(y, y5, rtol=1e-6, atol=1e-5)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    (gx5,) = torch.autograd.grad(y5, x, g)
    assert gx.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(gx, gx5, rtol=1e-6, atol=1e-5)
