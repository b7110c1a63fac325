"""From-scratch operations against PyTorch, on random shapes (several seeds, not one hand-picked case)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from companion import cnn_math as cm
from companion import models

SEEDS = range(8)


def _random_conv_case(seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    kh, kw = r(1, 5), r(1, 5)
    stride = (r(1, 3), r(1, 3)) if seed % 2 else r(1, 3)
    padding = (r(0, kh // 2), r(0, kw // 2)) if seed % 3 else r(0, min(kh, kw) // 2)
    x = torch.randn(r(1, 3), r(1, 4), r(kh + 2, 14), r(kw + 2, 14), generator=g, dtype=torch.float64)
    w = torch.randn(r(1, 5), x.shape[1], kh, kw, generator=g, dtype=torch.float64)
    b = torch.randn(w.shape[0], generator=g, dtype=torch.float64)
    return x, w, b, stride, padding


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("impl", [cm.conv2d, cm.conv2d_loops])
def test_conv2d_equals_torch(seed, impl):
    x, w, b, stride, padding = _random_conv_case(seed)
    expected = F.conv2d(x, w, b, stride, padding)
    torch.testing.assert_close(impl(x, w, b, stride, padding), expected)
    torch.testing.assert_close(impl(x, w, None, stride, padding), F.conv2d(x, w, None, stride, padding))
    (sh, sw), (ph, pw) = cm._pair(stride), cm._pair(padding)
    assert expected.shape[2:] == (
        cm.conv_output_size(x.shape[2], w.shape[2], sh, ph),
        cm.conv_output_size(x.shape[3], w.shape[3], sw, pw),
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_conv2d_backward_equals_autograd(seed):
    x, w, b, stride, padding = _random_conv_case(seed)
    x.requires_grad_(True), w.requires_grad_(True), b.requires_grad_(True)
    y = F.conv2d(x, w, b, stride, padding)
    g = torch.randn_like(y)
    y.backward(g)
    gx, gw, gb = cm.conv2d_backward(x.detach(), w.detach(), g, stride, padding)
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad)
    torch.testing.assert_close(gb, b.grad)


@pytest.mark.parametrize("seed", SEEDS)
def test_pooling_equals_torch(seed):
    g = torch.Generator().manual_seed(seed)
    k = int(torch.randint(1, 5, (1,), generator=g))
    s = int(torch.randint(1, 4, (1,), generator=g))
    p = int(torch.randint(0, k // 2 + 1, (1,), generator=g))
    x = torch.randn(2, 3, 9 + seed, 11, generator=g)
    torch.testing.assert_close(cm.max_pool2d(x, k, s, p), F.max_pool2d(x, k, s, p))
    torch.testing.assert_close(cm.avg_pool2d(x, k, s, p), F.avg_pool2d(x, k, s, p))
    torch.testing.assert_close(cm.max_pool2d(x, k), F.max_pool2d(x, k))
    torch.testing.assert_close(cm.max_pool2d(x, (k, 1), (s, 2), (p, 0)), F.max_pool2d(x, (k, 1), (s, 2), (p, 0)))


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (cm.relu, F.relu),
        (cm.relu6, F.relu6),
        (cm.leaky_relu, F.leaky_relu),
        (cm.sigmoid, torch.sigmoid),
        (cm.tanh, torch.tanh),
        (cm.gelu, F.gelu),
    ],
)
def test_activations_equal_torch(ours, theirs):
    x = torch.cat([torch.randn(1000) * 5, torch.tensor([-1000.0, -30.0, 0.0, 6.0, 30.0, 1000.0])])
    torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("seed", SEEDS)
def test_linear_softmax_cross_entropy(seed):
    g = torch.Generator().manual_seed(seed)
    n, d, k = 1 + seed, 3 + seed, 2 + seed % 5
    x, w, b = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g), torch.randn(k, generator=g)
    torch.testing.assert_close(cm.linear(x, w, b), F.linear(x, w, b))
    z = torch.randn(n, k, generator=g) * 50 + 500  # huge logits: a naive softmax would overflow
    torch.testing.assert_close(cm.softmax(z, 1), F.softmax(z, 1))
    t = torch.randint(0, k, (n,), generator=g)
    torch.testing.assert_close(cm.cross_entropy(z, t), F.cross_entropy(z, t))


@pytest.mark.parametrize(
    "size,k,s,p,d", [(224, 11, 4, 2, 1), (27, 3, 2, 0, 1), (13, 3, 1, 1, 1), (32, 3, 1, 2, 2), (7, 7, 1, 0, 1)]
)
def test_conv_output_size_matches_torch(size, k, s, p, d):
    out = nn.Conv2d(1, 1, k, s, p, d)(torch.zeros(1, 1, size, size))
    assert cm.conv_output_size(size, k, s, p, d) == out.shape[-1]


def test_conv_output_size_rejects_too_small_input():
    with pytest.raises(ValueError, match="does not fit"):
        cm.conv_output_size(2, 5)


def test_receptive_field():
    # two 3x3 convolutions see 5x5; three see 7x7 (VGG's argument)
    assert cm.receptive_field([(3, 1)] * 2) == 5 and cm.receptive_field([(3, 1)] * 3) == 7
    # AlexNet's conv1 (11, stride 4) then max-pool (3, stride 2): 11 + 2*4 = 19
    alexnet = models.create("alexnet").features
    assert cm.receptive_fields(alexnet)[:2] == [(11, 4), (19, 8)]
    assert cm.receptive_field(alexnet) == 195


def test_counts_match_published_numbers():
    assert models.count_parameters(models.create("alexnet")) == 61_100_840
    assert models.count_parameters(models.create("vgg16")) == 138_357_544
    assert models.count_parameters(models.create("mobilenet_v2")) == 3_504_872
    # a careful count by hand of AlexNet's first convolution: 64 x 55 x 55 outputs, 3 x 11 x 11 each
    conv1 = nn.Conv2d(3, 64, 11, 4, 2)
    assert cm.count_macs(conv1, (3, 224, 224)) == 64 * 55 * 55 * 3 * 11 * 11
    assert cm.count_macs(nn.Linear(10, 4), (10,)) == 40
    macs = cm.count_macs(models.create("alexnet"), (3, 224, 224))
    assert 700e6 < macs < 730e6  # 714M MACs, the figure usually quoted for torchvision's AlexNet


def test_summary_table():
    table = models.summary(models.create("alexnet"), (3, 224, 224))
    assert table["parameters"].sum() == 61_100_840
    assert (table["type"] == "Conv2d").sum() == 5 and (table["type"] == "Linear").sum() == 3
    assert table.iloc[0]["output shape"] == (64, 55, 55)
    assert table["MACs"].sum() == cm.count_macs(models.create("alexnet"), (3, 224, 224))
