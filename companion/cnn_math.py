"""The operations of a CNN written from scratch, and the arithmetic of their sizes and costs.

Every function here is checked against PyTorch in the tests and in the chapter
"The mathematics of convolutional networks". Tensors are NCHW: ``x`` is ``(N, C, H, W)``,
a convolution weight ``(C_out, C_in, k_h, k_w)``. Like every deep-learning library, "convolution"
means cross-correlation: the kernel is not flipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import trace

IntPair = int | tuple[int, int]


def _pair(v: IntPair) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


# ----------------------------------------------------------------------------- sizes


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution or pooling along one axis:
    ``floor((size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1``."""
    out = (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    if out < 1:
        raise ValueError(
            f"a {kernel_size}-wide kernel (dilation {dilation}) does not fit an input of {size} with padding {padding}"
        )
    return out


def receptive_fields(layers: Sequence) -> list[tuple[int, int]]:
    """Receptive field and jump after each layer of a stack.

    Args:
        layers: ``(kernel_size, stride)`` or ``(kernel_size, stride, dilation)`` tuples, or
            ``nn.Conv2d`` / ``nn.MaxPool2d`` / ``nn.AvgPool2d`` modules (other modules are skipped).

    Returns:
        ``[(r, j), ...]``: after layer ``l`` one output pixel sees ``r`` input pixels per side, and
        neighbouring output pixels are ``j`` input pixels apart. ``r_l = r_{l-1} + d_l (k_l - 1) j_{l-1}``,
        ``j_l = j_{l-1} s_l``.
    """
    r, j, out = 1, 1, []
    for layer in layers:
        if isinstance(layer, nn.Module):
            if not isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                continue
            k, s = _pair(layer.kernel_size)[0], _pair(layer.stride)[0]
            d = _pair(getattr(layer, "dilation", 1))[0]
        else:
            k, s, d = (*layer, 1)[:3]
        r += d * (k - 1) * j
        j *= s
        out.append((r, j))
    return out


def receptive_field(layers: Sequence) -> int:
    """The receptive field (in input pixels per side) of the last layer of ``layers``."""
    fields = receptive_fields(layers)
    return fields[-1][0] if fields else 1


# ----------------------------------------------------------------------------- convolution


def conv2d_loops(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: IntPair = 1, padding: IntPair = 0
) -> torch.Tensor:
    """Convolution as the formula reads, summing over kernel positions:

    ``y[n, o, i, j] = b[o] + sum_c sum_p sum_q x[n, c, i*s + p, j*s + q] * w[o, c, p, q]``

    The two loops run over the kernel offsets ``p`` and ``q``; for each, the shifted,
    strided input window of *all* output positions is multiplied by ``w[:, :, p, q]``.
    Input ``(N, C_in, H, W)``, weight ``(C_out, C_in, k_h, k_w)``, output ``(N, C_out, H_out, W_out)``.
    """
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    n, c_in, h, w = x.shape
    c_out, c_w, kh, kw = weight.shape
    if c_w != c_in:
        raise ValueError(f"input has {c_in} channels but the weight expects {c_w}")
    ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    xp = F.pad(x, (pw, pw, ph, ph))
    y = x.new_zeros(n, c_out, ho, wo)
    for p in range(kh):
        for q in range(kw):
            window = xp[:, :, p : p + sh * (ho - 1) + 1 : sh, q : q + sw * (wo - 1) + 1 : sw]  # (N, C_in, H_out, W_out)
            y += torch.einsum("nchw,oc->nohw", window, weight[:, :, p, q])
    if bias is not None:
        y += bias.view(1, -1, 1, 1)
    return y


def im2col(
    x: torch.Tensor, kernel_size: IntPair, stride: IntPair = 1, padding: IntPair = 0, pad_value: float = 0.0
) -> torch.Tensor:
    """All sliding windows of ``x``: ``(N, C, H, W)`` -> ``(N, C, H_out, W_out, k_h, k_w)`` (a strided view
    of the padded input; nothing is copied)."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel_size), _pair(stride), _pair(padding)
    xp = F.pad(x, (pw, pw, ph, ph), value=pad_value) if (ph or pw) else x
    return xp.unfold(2, kh, sh).unfold(3, kw, sw)


def conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: IntPair = 1, padding: IntPair = 0
) -> torch.Tensor:
    """Convolution by im2col: gather every window, then one matrix product with the kernels.

    Equal to ``torch.nn.functional.conv2d(x, weight, bias, stride, padding)``.
    Input ``(N, C_in, H, W)``, weight ``(C_out, C_in, k_h, k_w)``, output ``(N, C_out, H_out, W_out)``.
    """
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"input has {x.shape[1]} channels but the weight expects {weight.shape[1]}")
    cols = im2col(x, weight.shape[-2:], stride, padding)  # (N, C_in, H_out, W_out, kh, kw)
    y = torch.einsum("nchwpq,ocpq->nohw", cols, weight)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


def _dilate(g: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Insert ``stride - 1`` zeros between neighbouring pixels of ``g`` ``(N, C, H, W)``."""
    sh, sw = stride
    if sh == sw == 1:
        return g
    n, c, h, w = g.shape
    out = g.new_zeros(n, c, (h - 1) * sh + 1, (w - 1) * sw + 1)
    out[:, :, ::sh, ::sw] = g
    return out


def conv2d_backward(
    x: torch.Tensor, weight: torch.Tensor, grad_output: torch.Tensor, stride: IntPair = 1, padding: IntPair = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of a convolution, each itself a convolution.

    Given ``y = conv2d(x, w, b, stride, padding)`` and ``g = dL/dy`` ``(N, C_out, H_out, W_out)``:

    * ``dL/dw[o, c, p, q] = sum_n sum_ij g[n, o, i, j] x_pad[n, c, i*s + p, j*s + q]`` — the input
      correlated with the output gradient;
    * ``dL/dx`` — the output gradient, dilated by the stride and padded by ``k - 1``, convolved
      with the kernels flipped in space and with input and output channels swapped (a
      "transposed convolution");
    * ``dL/db[o] = sum_n sum_ij g[n, o, i, j]``.

    Returns ``(grad_x (N, C_in, H, W), grad_w (C_out, C_in, k_h, k_w), grad_b (C_out,))``.
    """
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    kh, kw = weight.shape[-2:]
    n, c_in, h, w = x.shape
    ho, wo = grad_output.shape[-2:]
    cols = im2col(x, (kh, kw), (sh, sw), (ph, pw))[:, :, :ho, :wo]
    grad_w = torch.einsum("nohw,nchwpq->ocpq", grad_output, cols)
    grad_b = grad_output.sum(dim=(0, 2, 3))
    g = F.pad(_dilate(grad_output, (sh, sw)), (kw - 1, kw - 1, kh - 1, kh - 1))
    w_flipped = weight.flip(-1, -2).transpose(0, 1)  # (C_in, C_out, kh, kw)
    grad_xp = conv2d(g, w_flipped)  # covers the padded rows/columns the windows touched
    full = x.new_zeros(n, c_in, h + 2 * ph, w + 2 * pw)
    full[:, :, : grad_xp.shape[2], : grad_xp.shape[3]] = grad_xp
    return full[:, :, ph : ph + h, pw : pw + w], grad_w, grad_b


# ----------------------------------------------------------------------------- pooling


def max_pool2d(
    x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0
) -> torch.Tensor:
    """Max pooling: ``y[n, c, i, j] = max_{p, q} x_pad[n, c, i*s + p, j*s + q]`` with the padding
    set to -inf (it never wins). ``stride`` defaults to ``kernel_size``. Equal to ``F.max_pool2d``."""
    stride = kernel_size if stride is None else stride
    return im2col(x, kernel_size, stride, padding, pad_value=float("-inf")).amax(dim=(-2, -1))


def avg_pool2d(
    x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0
) -> torch.Tensor:
    """Average pooling: the mean of each ``k_h x k_w`` window, zero padding counted in the
    denominator (PyTorch's default ``count_include_pad=True``). Equal to ``F.avg_pool2d``."""
    stride = kernel_size if stride is None else stride
    return im2col(x, kernel_size, stride, padding).mean(dim=(-2, -1))


# ----------------------------------------------------------------------------- activations, linear, loss


def relu(x: torch.Tensor) -> torch.Tensor:
    """``max(0, x)``."""
    return torch.where(x > 0, x, torch.zeros_like(x))


def relu6(x: torch.Tensor) -> torch.Tensor:
    """``min(max(0, x), 6)``, MobileNetV2's activation."""
    return relu(x) - relu(x - 6)


def leaky_relu(x: torch.Tensor, negative_slope: float = 0.01) -> torch.Tensor:
    """``x`` for ``x > 0``, else ``negative_slope * x``."""
    return torch.where(x > 0, x, negative_slope * x)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``1 / (1 + exp(-x))``, computed without overflow for large ``|x|``."""
    z = torch.exp(-x.abs())
    return torch.where(x >= 0, 1 / (1 + z), z / (1 + z))


def tanh(x: torch.Tensor) -> torch.Tensor:
    """``2 sigmoid(2x) - 1``."""
    return 2 * sigmoid(2 * x) - 1


def gelu(x: torch.Tensor) -> torch.Tensor:
    """``x * Phi(x)`` with ``Phi`` the standard normal CDF, ``0.5 (1 + erf(x / sqrt 2))``."""
    return x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A fully connected layer: ``x W^T + b``; ``x`` ``(N, D_in)``, ``weight`` ``(D_out, D_in)``."""
    y = x @ weight.T
    return y + bias if bias is not None else y


def log_softmax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``z - log sum exp z``, with the maximum subtracted first so nothing overflows."""
    m = z.amax(dim=dim, keepdim=True)
    return z - m - torch.log(torch.exp(z - m).sum(dim=dim, keepdim=True))


def softmax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``exp(z_k) / sum_j exp(z_j)``, numerically stable (shift by the maximum)."""
    return torch.exp(log_softmax(z, dim))


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log softmax(logits)[target]``; ``logits`` ``(N, K)``, ``target`` ``(N,)`` int."""
    return -log_softmax(logits, dim=1).gather(1, target.view(-1, 1)).mean()


# ----------------------------------------------------------------------------- counting


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulate operations one call of ``module`` performs, for the layers that
    dominate cost (convolutions and linear layers; 0 for the rest). Counted for the whole
    batch in ``output``."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def count_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on one input of ``input_size``
    ``(C, H, W)`` (convolutions and linear layers; FLOPs are about twice this)."""
    total = 0

    def record(name: str, module: nn.Module, output: torch.Tensor) -> None:
        nonlocal total
        total += layer_macs(module, output)

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    trace(model, layers, tuple(input_size), record)
    return total
