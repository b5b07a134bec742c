import pytest
import torch

from vidgen.nn.filters import binomial4_sum, upfirdn1d


@pytest.mark.parametrize("pad,down", [(0, 1), (1, 1), (2, 1), (3, 1), (1, 2), (3, 2), (0, 2)])
def test_binomial4_sum_values_and_gradients(pad, down):
    """Equals the generic FIR (taps [1, 3, 3, 1], zero padding, decimation) and its own
    backward passes gradcheck, along the middle axis of a 4-D tensor."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 11, 4, dtype=torch.float64, requires_grad=True)
    y = binomial4_sum(x, (2,), (pad,), down=down)
    ref = upfirdn1d(x, [1.0, 3.0, 3.0, 1.0], down=down, padding=(pad, pad), dim=2)
    assert y.shape == ref.shape == (2, 3, (11 + 2 * pad - 4) // down + 1, 4)
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
