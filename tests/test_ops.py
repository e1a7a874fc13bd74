"""The pure ops: boundary rules of Eq. 3-5 on hand-computed arrays, gradchecks, warp."""

from __future__ import annotations

import pytest
import torch

from tvnet_cli.model import ops

# A 3x4 image with distinct values: x[r, c] = 10 r + c^2
X = torch.tensor([[0.0, 1.0, 4.0, 9.0],
                  [10.0, 11.0, 14.0, 19.0],
                  [20.0, 21.0, 24.0, 29.0]]).view(1, 1, 3, 4)


def test_centred_gradient_eq3_by_hand():
    gx, gy = ops.centred_gradient(X)
    # interior columns: (x[c+1] - x[c-1]) / 2; first/last column 0 (Eq. 3)
    exp_gx = torch.tensor([[0.0, 2.0, 4.0, 0.0]] * 3).view(1, 1, 3, 4)
    exp_gy = torch.tensor([[0.0] * 4, [10.0] * 4, [0.0] * 4]).view(1, 1, 3, 4)
    torch.testing.assert_close(gx, exp_gx)
    torch.testing.assert_close(gy, exp_gy)


def test_forward_gradient_eq4_by_hand():
    gx, gy = ops.forward_gradient(X)
    exp_gx = torch.tensor([[1.0, 3.0, 5.0, 0.0]] * 3).view(1, 1, 3, 4)  # last column 0
    exp_gy = torch.tensor([[10.0] * 4, [10.0] * 4, [0.0] * 4]).view(1, 1, 3, 4)  # last row 0
    torch.testing.assert_close(gx, exp_gx)
    torch.testing.assert_close(gy, exp_gy)


def test_divergence_eq5_by_hand():
    px = torch.tensor([[1.0, 2.0, 4.0, 8.0]] * 2).view(1, 1, 2, 4)
    py = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 5.0, 7.0, 9.0]]).view(1, 1, 2, 4)
    div = ops.divergence(px, py)
    # x part: p(1) on the first column, p(i) - p(i-1) inside, -p(W-1) on the last: 1, 1, 2, -4
    # y part (H = 2): p(1) on the first row, -p(H-1) on the last row
    exp = torch.tensor([[1 + 1, 1 + 1, 2 + 1, -4 + 1],
                        [1 - 1, 1 - 1, 2 - 1, -4 - 1]], dtype=torch.float32).view(1, 1, 2, 4)
    torch.testing.assert_close(div, exp)


def test_divergence_is_negative_adjoint_of_forward_gradient():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 2, 7, 9, generator=g, dtype=torch.float64)
    px, py = torch.randn(2, 2, 2, 7, 9, generator=g, dtype=torch.float64)
    ux, uy = ops.forward_gradient(u)
    lhs = (ux * px).sum() + (uy * py).sum()
    rhs = -(u * ops.divergence(px, py)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_grey_and_normalisation():
    rgb = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert ops.to_grey(rgb).flatten()[0].item() == pytest.approx(0.299 * 255)
    a = torch.full((1, 1, 2, 2), 10.0)
    b = torch.full((1, 1, 2, 2), 30.0)
    na, nb = ops.normalize_pair(a, b)  # joint min/max: 10 -> 0, 30 -> 255
    assert na.max().item() == 0.0 and nb.min().item() == pytest.approx(255.0)
    ca, cb = ops.normalize_pair(a, a.clone())  # constant pair: no division by zero
    assert torch.isfinite(ca).all() and torch.isfinite(cb).all()
    with pytest.raises(ValueError):
        ops.to_grey(torch.zeros(1, 2, 4, 4))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_warp_integer_shift_and_border(mode):
    x = torch.arange(42.0).view(1, 1, 6, 7)
    flow = torch.zeros(1, 2, 6, 7)
    flow[:, 0] = 1.0  # sample one pixel to the right
    out = ops.warp(x, flow, mode)
    torch.testing.assert_close(out[..., :6], x[..., 1:])
    torch.testing.assert_close(out[..., 6], x[..., 6])  # past the right edge: border value
    half = torch.zeros(1, 2, 6, 7)
    half[:, 1] = 0.5  # half a row down on a linear ramp: the mean of two rows (away from the
    # border, where bicubic's extra taps are clamped)
    torch.testing.assert_close(ops.warp(x, half, mode)[..., 1:4, :], x[..., 1:4, :] + 3.5)


def test_pyramid_sizes_follow_authors_rule():
    # diag of 256x340 = 425.6; 1 + log2(425.6 / 4) = 7.7 -> 7 levels, capped by max_scales
    assert len(ops.pyramid_sizes(256, 340, 10, 0.5)) == 7
    sizes = ops.pyramid_sizes(256, 340, 5, 0.5)
    assert sizes == [(256, 340), (128, 170), (64, 85), (32, 42), (16, 21)]
    assert ops.pyramid_sizes(8, 8, 5, 0.5) == [(8, 8), (4, 4)]
    # with a minimum side (OpenCV's 16): 16x21 stays, 12x16 goes; the first level always stays
    assert ops.pyramid_sizes(256, 340, 5, 0.5, 16)[-1] == (16, 21)
    assert ops.pyramid_sizes(192, 256, 5, 0.5, 16)[-1] == (24, 32)
    assert ops.pyramid_sizes(8, 8, 5, 0.5, 16) == [(8, 8)]


def test_resize_flow_rescales_units():
    flow = torch.ones(1, 2, 8, 10)
    out = ops.resize_flow(flow, (16, 20))
    torch.testing.assert_close(out, torch.full((1, 2, 16, 20), 2.0))


@pytest.mark.parametrize("name", ["centred", "forward", "divergence", "warp", "warp_bicubic", "blur", "blur_conv",
                                  "resize", "normalize"])
def test_gradcheck(name):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    taps3 = torch.tensor(ops.CENTRED_TAPS, dtype=torch.float64, requires_grad=True)
    taps2 = torch.tensor(ops.FORWARD_TAPS, dtype=torch.float64, requires_grad=True)
    fns = {
        "centred": (lambda a, t: ops.centred_gradient(a, t), (x, taps3)),
        "forward": (lambda a, t: ops.forward_gradient(a, t), (x, taps2)),
        "divergence": (lambda a, b, t: ops.divergence(a, b, t), (x, y, taps2)),
        # keep samples away from pixel centres, where bilinear is not differentiable
        "warp": (lambda a, f: ops.warp(a, f), (x, (y * 0.8 + 0.1).detach().requires_grad_())),
        "warp_bicubic": (lambda a, f: ops.warp(a, f, "bicubic"), (x, (y * 0.8 + 0.1).detach().requires_grad_())),
        "blur": (lambda a: ops.gaussian_blur(a, 0.8), (x,)),
        "blur_conv": (lambda a: ops.gaussian_blur(a, 0.8, shifted=False), (x,)),
        "resize": (lambda a: ops.resize(a, (3, 4)), (x,)),
        "normalize": (lambda a, b: ops.normalize_pair(a[:, :1], b[:, :1]), (x, y)),
    }
    fn, args = fns[name]
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 1, 9, 13), (1, 3, 1, 1), (3, 2, 2, 7), (1, 1, 40, 3)])
def test_blur_by_convolution_equals_blur_by_shifted_sums(shape):
    """The GPU form (depthwise conv) and the CPU form (shifted sums) of the same gaussian."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3)) * 255
    torch.testing.assert_close(ops.gaussian_blur(x, 0.8, shifted=False), ops.gaussian_blur(x, 0.8, shifted=True),
                               rtol=1e-5, atol=1e-4)
    flat = torch.full(shape, 7.0)  # a constant image stays constant (replicated border, normalised taps)
    torch.testing.assert_close(ops.gaussian_blur(flat, 0.8, shifted=False), flat)


def test_centred_gradient_replicate_border_is_one_sided_there():
    """Hand-computed: inside 0.5 (x[i+1] - x[i-1]); at the borders 0.5 (x1 - x0) and
    0.5 (x[-1] - x[-2]) (OpenCV's TV-L1); the paper's 'zero' border gives 0 there."""
    x = torch.tensor([[[[1.0, 4.0, 9.0, 16.0]]]])  # (1, 1, 1, 4)
    gx, gy = ops.centred_gradient(x, border="replicate")
    torch.testing.assert_close(gx, torch.tensor([[[[1.5, 4.0, 6.0, 3.5]]]]))
    torch.testing.assert_close(gy, torch.zeros_like(x))  # one row: replicated, no change
    gx0, _ = ops.centred_gradient(x, border="zero")
    torch.testing.assert_close(gx0, torch.tensor([[[[0.0, 4.0, 6.0, 0.0]]]]))
    _, gy = ops.centred_gradient(x.transpose(-1, -2), border="replicate")
    torch.testing.assert_close(gy, gx.transpose(-1, -2))


def test_inside_marks_where_the_warp_leaves_the_image():
    flow = torch.zeros(1, 2, 2, 3)
    flow[0, 0, 0, 2] = 0.6  # x 2.6 > 2 + 0.5: out
    flow[0, 0, 1, 0] = -0.4  # x -0.4 >= -0.5: in (within the border pixel)
    flow[0, 1, 1, 1] = -1.5  # y -0.5: in (on the edge of the margin)
    flow[0, 1, 0, 1] = 1.7  # y 1.7 > 1.5: out
    flow[0, 0, 1, 2] = -2.6  # x -0.6: out
    expected = torch.tensor([[[[True, False, False], [True, True, False]]]])
    assert torch.equal(ops.inside(flow), expected)
    assert torch.equal(ops.inside(flow, margin=0.0), torch.tensor([[[[True, False, False], [False, False, False]]]]))
