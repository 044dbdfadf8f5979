"""Flattened convolution (Jin, Dundar, Culurciello, "Flattened Convolutional Neural Networks for
Feedforward Acceleration", arXiv 1412.5474, 2014).

Each k x k x M filter is the outer product of three 1-D filters, applied in sequence: lateral
(1 x 1 across channels, M -> N), vertical (k x 1 per channel, stride (s, 1), dilation (d, 1)) and
horizontal (1 x k per channel, stride (1, s), dilation (1, d)). Exact: output channel n equals one
k x k convolution with the rank-1 kernel K[n, m, i, j] = L[n, m] V[n, i] H[n, j]. Bare: the paper's
per-stage biases and nonlinearity are the block builder's business here.

Params N*M + 2*N*k. MACs per sample N*M at H x W, N*k at ceil(H/s) x W and N*k at
ceil(H/s) x ceil(W/s).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ConvOp, kaiming_, out_size, register


@register("flattened")
class FlattenedConv(ConvOp):
    order = 70

    @classmethod
    def params_formula(cls, in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> int:
        return out_channels * in_channels + 2 * out_channels * kernel_size

    @classmethod
    def macs_formula(
        cls, in_channels: int, out_channels: int, kernel_size: int, stride: int, height: int, width: int, **options: Any
    ) -> int:
        n, k, oh = out_channels, kernel_size, out_size(height, stride)
        return n * in_channels * height * width + n * k * oh * width + n * k * oh * out_size(width, stride)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias)
        k = self.kernel_size
        self.lateral = nn.Parameter(kaiming_(torch.empty(out_channels, in_channels, 1, 1), in_channels))
        self.vertical = nn.Parameter(kaiming_(torch.empty(out_channels, 1, k, 1), k))
        self.horizontal = nn.Parameter(kaiming_(torch.empty(out_channels, 1, 1, k), k))

    def macs_per_sample(self, height: int, width: int) -> int:
        out_h, out_w = self.output_size(height, width)
        n, k = self.out_channels, self.kernel_size
        return n * self.in_channels * height * width + n * k * out_h * width + n * k * out_h * out_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The lateral filter is a batched matmul that reads x in either layout and writes the maps in
        channels-last, where the two depthwise convs run several times faster than in NCHW."""
        b, m, h, w = x.shape
        n, s, d, p = self.out_channels, self.stride, self.dilation, self.padding
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        # reshape, not view: a sliced or transposed input cannot be viewed as (b, m, h*w)
        pixels = x.permute(0, 2, 3, 1).reshape(b, h * w, m) if channels_last else x.reshape(b, m, h * w).mT
        y = torch.bmm(pixels, self.lateral.view(n, m).t().expand(b, m, n)).view(b, h, w, n).permute(0, 3, 1, 2)
        y = F.conv2d(y, self.vertical, None, (s, 1), (p, 0), (d, 1), n)
        y = F.conv2d(y, self.horizontal, self.bias, (1, s), (0, p), (1, d), n)
        return y if channels_last else y.contiguous()

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """One k x k convolution with the rank-1 filters K[n, m, i, j] = L[n, m] V[n, i] H[n, j]."""
        kernel = torch.einsum(
            "nm,ni,nj->nmij", self.lateral[:, :, 0, 0], self.vertical[:, 0, :, 0], self.horizontal[:, 0, 0]
        )
        return self.conv(x, kernel, bias=self.bias)
